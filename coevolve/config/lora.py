"""PEFT LoRA settings, shared by SFT (`sft.lora`) and the RL learner (`rl.learner.lora`)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class LoraConfig:
    """PEFT LoRA on the trunk; `lora: null` trains every weight (the VQ tokenizer stays frozen either way)."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    # What the final checkpoint holds: "merged" (a plain Janus checkpoint) or "adapter" (the PEFT
    # adapter, its base_model_name_or_path the untouched base checkpoint).
    save: str = "merged"

    def __post_init__(self) -> None:
        if self.save not in ("merged", "adapter"):
            raise ValueError(f"lora.save must be 'merged' or 'adapter', got {self.save!r}")
