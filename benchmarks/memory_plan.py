"""Memory plan for RL on Janus-Pro-1B and -7B: computed, not measured (no GPU was available).

    python benchmarks/memory_plan.py > memory_plan.md

Prints markdown tables (the README's "Memory plan for Janus-Pro-1B and -7B" is this output):

- parameter counts, from `JanusForConditionalGeneration` built on the `meta` device from each
  model's shape (no weights are read or allocated). transformers' `JanusConfig()` defaults are
  Janus-Pro-1B's for the vision encoder and VQ tokenizer, but its text config defaults to
  `LlamaConfig()` (hidden 4096, 32 layers, vocabulary 32000), so the LLM is set explicitly;
- the learner's states per GPU — bf16 weights (2 bytes per parameter), bf16 gradients (2) and
  AdamW's fp32 master copy and two moments (12) of the trained parameters — under ZeRO 0-3 on 1, 2,
  4 and 8 GPUs: ZeRO-1 partitions the optimizer states, ZeRO-2 also the gradients, ZeRO-3 also the
  weights (frozen ones too). Full fine-tuning trains everything but the VQ tokenizer (as
  coevolve/learner/engine.py does); LoRA (rank 16 / 64 on the LLM's q, k, v, o, gate, up and down
  projections) trains the adapters only;
- activations of one micro-batch of trajectories: prompt 100 + plan 64 + image 576 + verdict 64 +
  reflection 64 + image 576 = 1,444 tokens in the conditional row, plus one unconditional row per
  image for guided CFG scoring, each the image's prefix in Janus' "pad" context + its 576 codes
  (164 + 576 and 868 + 576): 3,628 trunk tokens per trajectory. Bytes saved for backward per token
  and decoder layer are counted, not guessed: a transformers `LlamaDecoderLayer` in bf16 with SDPA
  attention runs forward on CPU at two small sizes under `saved_tensors_hooks`, and the count is
  fitted as a·hidden + b·intermediate (it is linear: no T² term with a fused attention kernel).
  With gradient checkpointing (per layer) a layer keeps its input only (2·hidden bytes per token)
  and one layer's activations are alive again during its recomputation. Outside the layers: 16·hidden
  bytes per token (embeddings, final norm, the positions gathered for the heads), and one chunk of
  head logits (`coevolve.model.scoring`: 1,024 positions x the text vocabulary x ~16 bytes for the
  bf16 logits, fp32 log-softmax, entropy and their gradients) — estimates;
- the frozen reference copy (beta > 0 without LoRA: a full bf16 copy on the learner's GPU, never
  partitioned; with LoRA the reference is the adapter switched off, free);
- a rollout worker: its bf16 copy of the policy and the KV cache of one group of G samples at the
  end of the second image: 2 rows per sample (CFG), the 100-token prompt held once per group, each
  sample's own 1,344 tokens after it; 2 (K, V) x layers x hidden x 2 bytes per token (Janus-Pro has
  as many KV heads as query heads). A worker sampling several prompts at once holds one such
  cache per prompt;
- what fits on one GPU: usable memory 79.6 GiB (H100 80 GB: 81,559 MiB) and 140.4 GiB (H200
  141 GB: 143,771 MiB), with 10% kept free for the CUDA context, allocator fragmentation and
  communication buffers.

Not included: DeepSpeed's bf16 optimizer keeps an fp32 gradient accumulation buffer (4 bytes per
trained parameter, partitioned from ZeRO-1 on) in some configurations; the plain engine keeps AdamW
states in the parameters' dtype (bf16: 4 bytes, no master copy). The learner is one Ray actor
today, so the N > 1 columns describe SFT under a launcher, or a learner group.
"""

from __future__ import annotations

import argparse

import torch
from transformers import JanusConfig, JanusForConditionalGeneration, LlamaConfig
from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRotaryEmbedding

GIB = 2**30
USABLE_GIB = {"80 GB": 81559 / 1024, "141 GB": 143771 / 1024}
HEADROOM = 0.9
GPUS = (1, 2, 4, 8)
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

PROMPT, PLAN, IMAGE, VERDICT, REFLECTION = 100, 64, 576, 64, 64
CONDITIONAL = PROMPT + PLAN + IMAGE + VERDICT + REFLECTION + IMAGE  # 1,444
UNCONDITIONAL = (PROMPT + PLAN + IMAGE) + (PROMPT + PLAN + IMAGE + VERDICT + REFLECTION + IMAGE)  # 740 + 1,444
TRUNK_TOKENS = CONDITIONAL + UNCONDITIONAL  # 3,628 per trajectory
HEAD_CHUNK = 1024
HEAD_BYTES_PER_LOGIT = 16
OUTSIDE_LAYERS_PER_HIDDEN = 16

MODELS = {
    # Janus-Pro-1B: DeepSeek-LLM-1.5B-class trunk; SigLIP-L encoder; 16,384-code VQ at 384 px (576 tokens).
    "Janus-Pro-1B": {
        "hidden_size": 2048,
        "intermediate_size": 5632,
        "num_hidden_layers": 24,
        "num_attention_heads": 16,
    },
    # Janus-Pro-7B: DeepSeek-LLM-7B trunk, the same encoder and VQ.
    "Janus-Pro-7B": {
        "hidden_size": 4096,
        "intermediate_size": 11008,
        "num_hidden_layers": 30,
        "num_attention_heads": 32,
    },
}


def janus_config(text: dict) -> JanusConfig:
    hidden = text["hidden_size"]
    llm = LlamaConfig(
        vocab_size=102400, max_position_embeddings=16384, num_key_value_heads=text["num_attention_heads"], **text
    )
    return JanusConfig(
        text_config=llm.to_dict(),
        vision_config={"projection_dim": hidden},  # the rest: JanusVisionConfig's defaults (SigLIP-L, 384 px)
        vq_config={"projection_dim": hidden, "image_token_embed_dim": hidden},  # JanusVQVAEConfig's defaults
    )


def parameter_counts(config: JanusConfig) -> dict[str, int]:
    with torch.device("meta"):
        model = JanusForConditionalGeneration(config)
    numel = {name: sum(p.numel() for p in module.parameters()) for name, module in model.model.named_children()}
    counts = {
        "total": sum(p.numel() for p in model.parameters()),
        "language_model": numel["language_model"],
        "vision_model": numel["vision_model"],
        "vqmodel": numel["vqmodel"],
        "heads_and_aligners": sum(p.numel() for p in model.lm_head.parameters())
        + sum(numel[k] for k in ("aligner", "generation_embeddings", "generation_aligner", "generation_head")),
    }
    counts["trainable_full"] = counts["total"] - counts["vqmodel"]  # the engine freezes the VQ tokenizer
    linears = [m for name, m in model.model.language_model.named_modules() if name.rsplit(".", 1)[-1] in LORA_TARGETS]
    for rank in (16, 64):
        counts[f"lora_r{rank}"] = sum(rank * (m.in_features + m.out_features) for m in linears)
    return counts


def defaults_check() -> str:
    """What transformers' JanusConfig() defaults are (the 1B's vision/VQ, but LlamaConfig()'s LLM)."""
    default = JanusConfig()
    text, vision, vq = default.text_config, default.vision_config, default.vq_config
    return (
        f"transformers' `JanusConfig()` defaults: LLM hidden {text.hidden_size}, {text.num_hidden_layers} layers, "
        f"vocabulary {text.vocab_size} (LlamaConfig's, not Janus-Pro-1B's 2048 / 24 / 102400); vision encoder hidden "
        f"{vision.hidden_size}, {vision.num_hidden_layers} layers, {vision.image_size} px, projection "
        f"{vision.projection_dim}; VQ {vq.num_embeddings} codes, projection {vq.projection_dim} (Janus-Pro-1B's). "
        "The LLM is therefore set explicitly below."
    )


def saved_bytes_per_token(hidden: int, intermediate: int, tokens: int = 128) -> float:
    """Bytes a bf16 LlamaDecoderLayer (SDPA) saves for backward per token (parameters and rotary tables excluded)."""
    config = LlamaConfig(
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_attention_heads=hidden // 64,
        num_key_value_heads=hidden // 64,
        head_dim=64,
    )
    config._attn_implementation = "sdpa"
    layer = LlamaDecoderLayer(config, 0).to(torch.bfloat16)
    x = torch.randn(1, tokens, hidden, dtype=torch.bfloat16, requires_grad=True)
    positions = torch.arange(tokens)[None]
    cos, sin = LlamaRotaryEmbedding(config)(x, positions)
    skip = {t.untyped_storage().data_ptr() for t in (*layer.parameters(), cos, sin)}
    storages: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in skip:
            storages[storage.data_ptr()] = max(storages.get(storage.data_ptr(), 0), storage.nbytes())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        layer(x, position_embeddings=(cos, sin), position_ids=positions)
    return sum(storages.values()) / tokens


def layer_activation_fit() -> tuple[float, float, float]:
    """(a, b, c): bytes per token and layer = a·hidden + b·intermediate + c, from three small layers."""
    base = saved_bytes_per_token(256, 704)
    a = (saved_bytes_per_token(512, 704) - base) / 256
    b = (saved_bytes_per_token(256, 1408) - base) / 704
    return a, b, base - a * 256 - b * 704


def learner_states(counts: dict, trained: int, stage: int, gpus: int) -> dict[str, float]:
    """Bytes per GPU of bf16 weights, bf16 gradients and fp32 AdamW states under ZeRO `stage`."""
    weights = 2 * counts["total"] + 2 * (trained if trained != counts["trainable_full"] else 0)
    return {
        "weights": weights / (gpus if stage >= 3 else 1),
        "gradients": 2 * trained / (gpus if stage >= 2 else 1),
        "optimizer": 12 * trained / (gpus if stage >= 1 else 1),
    }


def activations(text: dict, fit: tuple[float, float, float], micro_batch: int, checkpointing: bool) -> float:
    a, b, c = fit
    hidden, layers = text["hidden_size"], text["num_hidden_layers"]
    per_layer = a * hidden + b * text["intermediate_size"] + c
    tokens = micro_batch * TRUNK_TOKENS
    kept = layers * (2 * hidden if checkpointing else per_layer) + (per_layer if checkpointing else 0)
    return tokens * (kept + OUTSIDE_LAYERS_PER_HIDDEN * hidden)


def head_transient() -> float:
    return HEAD_CHUNK * 102400 * HEAD_BYTES_PER_LOGIT


def kv_cache(text: dict, group: int) -> float:
    tokens = 2 * (PROMPT + group * (CONDITIONAL - PROMPT))
    return tokens * 2 * text["num_hidden_layers"] * text["hidden_size"] * 2


def gib(value: float) -> str:
    return f"{value / GIB:.1f}"


def fits(total: float) -> str:
    return " / ".join("yes" if total / GIB <= HEADROOM * usable else "no" for usable in USABLE_GIB.values())


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    fit = layer_activation_fit()
    out = ["**Computed, not measured: no GPU was available.** `python benchmarks/memory_plan.py`", ""]
    out += [defaults_check(), ""]
    out += [
        (
            f"Activations saved per token and decoder layer (bf16, SDPA), counted: {fit[0]:.2f}·hidden + "
            f"{fit[1]:.2f}·intermediate + {fit[2]:.0f} bytes. Trunk tokens per trajectory: {CONDITIONAL:,} "
            f"conditional + {UNCONDITIONAL:,} unconditional (CFG) = {TRUNK_TOKENS:,}. GiB = 2^30 bytes."
        ),
        "",
    ]
    counts = {name: parameter_counts(janus_config(text)) for name, text in MODELS.items()}
    out += ["| parameters | " + " | ".join(MODELS) + " |", "| --- | " + " | ".join("---:" for _ in MODELS) + " |"]
    for key in (
        "total",
        "language_model",
        "vision_model",
        "vqmodel",
        "heads_and_aligners",
        "trainable_full",
        "lora_r16",
        "lora_r64",
    ):
        out.append(f"| {key} | " + " | ".join(f"{counts[name][key]:,}" for name in MODELS) + " |")
    modes = {"full": "trainable_full", "LoRA r16": "lora_r16", "LoRA r64": "lora_r64"}

    out += ["", "Learner states per GPU, GiB (bf16 weights + bf16 gradients + fp32 AdamW master and moments):", ""]
    out += [
        "| model | training | ZeRO | " + " | ".join(f"{n} GPU" for n in GPUS) + " |",
        "| --- | --- | --- | " + " | ".join("---:" for _ in GPUS) + " |",
    ]
    for name in MODELS:
        for mode, key in modes.items():
            for stage in range(4):
                cells = [gib(sum(learner_states(counts[name], counts[name][key], stage, n).values())) for n in GPUS]
                out.append(f"| {name} | {mode} | {stage} | " + " | ".join(cells) + " |")
    out += ["", "Of which, on 1 GPU (any stage), GiB:", ""]
    out += ["| model | training | weights | gradients | optimizer |", "| --- | --- | ---: | ---: | ---: |"]
    for name in MODELS:
        for mode, key in modes.items():
            parts = learner_states(counts[name], counts[name][key], 0, 1)
            out.append(f"| {name} | {mode} | " + " | ".join(gib(v) for v in parts.values()) + " |")

    out += [
        "",
        (
            "Activations of one micro-batch (its trajectories' rows in one pass), GiB; plus one head chunk "
            f"≈ {gib(head_transient())} GiB:"
        ),
        "",
    ]
    out += ["| model | micro-batch | no checkpointing | gradient checkpointing |", "| --- | ---: | ---: | ---: |"]
    for name, text in MODELS.items():
        for micro in (1, 4, 8):
            out.append(
                f"| {name} | {micro} | {gib(activations(text, fit, micro, False))} | "
                f"{gib(activations(text, fit, micro, True))} |"
            )

    out += ["", "Reference copy and rollout worker, GiB:", ""]
    out += [
        "| model | frozen reference (beta > 0, no LoRA) | rollout weights | KV cache G=8 | KV cache G=16 |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, text in MODELS.items():
        weights = 2 * counts[name]["total"]
        out.append(
            f"| {name} | {gib(weights)} | {gib(weights)} | {gib(kv_cache(text, 8))} | {gib(kv_cache(text, 16))} |"
        )

    out += [
        "",
        (
            "One GPU (ZeRO brings nothing on one GPU), GiB; fits = total within 90% of 79.6 / 140.4 GiB "
            "(80 GB / 141 GB). Learner = states + activations + head chunk (+ reference when beta > 0); "
            "colocated = learner + one rollout worker (weights + KV cache of one group):"
        ),
        "",
    ]
    out += [
        (
            "| model | training | ckpt | micro-batch | learner | fits 80 / 141 | colocated G=8 | fits 80 / 141 "
            "| colocated G=16 | fits 80 / 141 |"
        ),
        "| --- | --- | --- | ---: | ---: | --- | ---: | --- | ---: | --- |",
    ]
    variants = {
        "full, beta 0": ("trainable_full", False),
        "full, beta > 0": ("trainable_full", True),
        "LoRA r16": ("lora_r16", False),
        "LoRA r64": ("lora_r64", False),
    }
    for name, text in MODELS.items():
        rollout = {g: 2 * counts[name]["total"] + kv_cache(text, g) for g in (8, 16)}
        for variant, (key, reference) in variants.items():
            for checkpointing in (False, True):
                for micro in (1, 8):
                    states = sum(learner_states(counts[name], counts[name][key], 0, 1).values())
                    learner = states + activations(text, fit, micro, checkpointing) + head_transient()
                    learner += 2 * counts[name]["total"] if reference else 0
                    row = [name, variant, "on" if checkpointing else "off", str(micro), gib(learner), fits(learner)]
                    for g in (8, 16):
                        row += [gib(learner + rollout[g]), fits(learner + rollout[g])]
                    out.append("| " + " | ".join(row) + " |")
    print("\n".join(out))


if __name__ == "__main__":
    main()
