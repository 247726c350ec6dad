"""The typed configuration of every coevolve run: one tree, one dataclass per group.

Hydra composes `conf/config.yaml` (its defaults list picks one option per group from `conf/<group>/`)
and then the recipe (`recipe=NAME`, from `recipes/`) on top of `Config` below. Because the root is
this dataclass, every key that is merged in — from a group file, a recipe or the command line —
is checked against it: a misspelt key or a value of the wrong type fails at composition, before
any work starts, with the full key named. `__post_init__` hooks reject bad combinations.

Groups join as the stages that read them are built: a key that nothing reads does not exist. `rollout` and `cluster` are read by `coevolve rollout` and the
rollout driver (coevolve/rollout/config.py). `reward` is read by `coevolve rewards` (the
reward designer's check) until RL reads it too.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from omegaconf import MISSING

from coevolve.config.lora import LoraConfig
from coevolve.eval.config import EvalConfig
from coevolve.rl.config import RLConfig
from coevolve.rollout.config import ClusterConfig, RolloutConfig
from rewards.config import RewardConfig

DTYPES = ("float32", "bfloat16")
TASKS = ("t2i", "judge", "regen", "caption", "draw_caption")


@dataclass
class ModelConfig:
    # A Janus checkpoint in Hugging Face format: `coevolve bootstrap tiny` output, an SFT/RL result,
    # or Janus-Pro-1B/7B.
    path: str = MISSING
    # Weights' dtype for training and sampling.
    dtype: str = "float32"
    # How the unconditional (CFG) context of an image is built: "pad" (Janus' own) or "bos"
    # (coevolve/model/guidance.py). SFT's prompt dropout trains exactly this context.
    unconditional: str = "pad"

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"model.dtype must be one of {DTYPES}, got {self.dtype!r}")


@dataclass
class DataConfig:
    # "shapes": the built-in shapes world; otherwise a local path that HF `datasets` reads:
    # a .jsonl/.json/.parquet file, a folder of them, or a `save_to_disk` folder, in the record
    # schema of coevolve/data/records.py. Given by the group option: conf/data/shapes.yaml says
    # "shapes", conf/data/records.yaml leaves it to the command line (a `???` in a config cannot
    # replace a default, so the schema has none).
    source: str = MISSING
    # shapes: how many records are drawn (each with its negative); a path: at most this many rows
    # are read (null: all).
    num_examples: int | None = 6000

    def __post_init__(self) -> None:
        if self.num_examples is not None and self.num_examples < 1:
            raise ValueError(f"data.num_examples must be >= 1 or null, got {self.num_examples}")


@dataclass
class TaskMixture:
    """Relative sampling weights of the SFT tasks (normalised; their sum must be positive)."""

    # A task left out has weight 0, so a phase's `tasks: {t2i: 1}` trains t2i alone; `sft.tasks`
    # starts from `default()`.
    t2i: float = 0.0  # prompt -> plan + image (plan and image tokens trained)
    judge: float = 0.0  # image (understanding path) + prompt -> Yes/No verdict with a reason; half negatives
    regen: float = 0.0  # prompt + plan + wrong image + its No verdict -> reflection + correct image
    caption: float = 0.0  # image (understanding path) -> caption
    draw_caption: float = 0.0  # caption -> image (UAE's decoder side)

    @classmethod
    def default(cls) -> TaskMixture:
        return cls(t2i=0.35, judge=0.25, regen=0.15, caption=0.15, draw_caption=0.10)

    def weights(self) -> dict[str, float]:
        weights = {task: float(getattr(self, task)) for task in TASKS}
        for task, weight in weights.items():
            if not weight >= 0:
                raise ValueError(f"sft.tasks.{task} must be a non-negative weight, got {weight}")
        if not sum(weights.values()) > 0:
            raise ValueError(f"sft.tasks must sum to a positive number, got {weights}")
        return weights


@dataclass
class LossWeights:
    """Per-segment weights of the token losses (a token's loss is multiplied by its segment's weight)."""

    plan: float = 1.0
    image: float = 1.0
    # The first answer token of a verdict (" Yes"/" No"): P(yes) is read from it, so it is
    # up-weighted as Janus-Pro-R1 does for its self-evaluation answer.
    verdict_answer: float = 3.0
    verdict: float = 1.0  # the rest of the verdict: the reason
    reflection: float = 1.0
    caption: float = 1.0


@dataclass
class SFTPhase:
    """One phase of a phased SFT run. It starts from the model the previous phase ended with (the
    first from `model.path`) with a fresh optimizer and schedule; a key left null takes the value
    of the same key under `sft`."""

    name: str = MISSING  # its directory under RUN_DIR/sft/
    max_steps: int | None = None
    tasks: TaskMixture | None = None
    # Keys of `sft.loss_weights` this phase weighs otherwise (the rest are sft's), e.g. the answer
    # token of a phase that trains the self-check.
    loss_weights: dict[str, float] | None = None
    learning_rate: float | None = None
    lr_scheduler: str | None = None
    warmup_steps: int | None = None


@dataclass
class SFTConfig:
    tasks: TaskMixture = field(default_factory=TaskMixture.default)
    loss_weights: LossWeights = field(default_factory=LossWeights)
    # Probability that an image-drawing example loses its condition (the context becomes the
    # unconditional one of model.unconditional), so the CFG branch is trained.
    prompt_dropout: float = 0.1
    # Share of judge examples that see the image decoded from the render's VQ codes instead of
    # the render: the model's own images reach the self-check that way (at RL and eval time), and
    # a self-check trained on renders alone writes unparsable verdicts on them.
    decoded_images: float = 0.5
    # Share of caption and judge examples whose image carries 1-6 debris fragments (shapes world
    # only; `coevolve.data.shapes.add_debris`): shapes narrower than the verifier's smallest object,
    # as the tiny generator leaves beside its own. A reader trained on clean renders counts them:
    # three take the SFT checkpoint's caption accuracy from 0.46 to 0.12 (README, "Twelfth round").
    debris_images: float = 0.0
    max_steps: int = 1000
    per_device_batch_size: int = 32
    gradient_accumulation_steps: int = 1
    learning_rate: float = 1e-3
    lr_scheduler: str = "cosine"  # any transformers SchedulerType name
    warmup_steps: int = 50
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    activation_checkpointing: bool = False  # recompute layer activations in backward: less memory, more time
    save_steps: int = 250  # a resumable checkpoint every this many steps
    save_total_limit: int | None = 2
    # Resume from the latest checkpoint in the run's sft/ directory when there is one.
    resume: bool = True
    lora: LoraConfig | None = None
    # Empty: one phase made of the keys above. Otherwise the phases run in order (e.g. t2i alone so
    # the trunk learns to bind words to pixels, then the full mixture; recipes/shapes.yaml) and the
    # last one's model is the SFT checkpoint.
    phases: list[SFTPhase] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.phases:
            self.tasks.weights()  # raises for a negative weight or a mixture that sums to 0
        if not 0.0 <= self.prompt_dropout < 1.0:
            raise ValueError(f"sft.prompt_dropout must be in [0, 1), got {self.prompt_dropout}")
        if not 0.0 <= self.decoded_images <= 1.0:
            raise ValueError(f"sft.decoded_images must be in [0, 1], got {self.decoded_images}")
        if not 0.0 <= self.debris_images <= 1.0:
            raise ValueError(f"sft.debris_images must be in [0, 1], got {self.debris_images}")
        for key in ("max_steps", "per_device_batch_size", "gradient_accumulation_steps", "save_steps"):
            if getattr(self, key) < 1:
                raise ValueError(f"sft.{key} must be >= 1, got {getattr(self, key)}")
        names = [phase.name for phase in self.phases]
        for name in names:
            if not name or "/" in name or name.startswith((".", "checkpoint-")):
                raise ValueError(f"sft.phases: {name!r} cannot name a phase's directory under RUN_DIR/sft/")
        if len(set(names)) != len(names):
            raise ValueError(f"sft.phases must have distinct names, got {names}")
        if self.phases and self.lora is not None:
            raise ValueError(
                "sft.phases and sft.lora together are not supported: a later phase would train on a merged earlier adapter"
            )
        for index, phase in enumerate(self.phases):
            try:
                self.phase_config(index)
            except ValueError as error:
                raise ValueError(f"sft.phases[{index}] ({phase.name}): {error}") from None

    def phase_config(self, index: int) -> SFTConfig:
        """Phase `index` as a one-phase SFT config: its keys over the ones of `sft`."""
        phase = self.phases[index]
        overrides = {
            key: getattr(phase, key)
            for key in ("max_steps", "tasks", "learning_rate", "lr_scheduler", "warmup_steps")
            if getattr(phase, key) is not None
        }
        if phase.loss_weights:
            known = [f.name for f in dataclasses.fields(LossWeights)]
            unknown = sorted(set(phase.loss_weights) - set(known))
            if unknown:
                raise ValueError(f"loss_weights: unknown segment weights {unknown}; known: {known}")
            overrides["loss_weights"] = dataclasses.replace(self.loss_weights, **phase.loss_weights)
        return dataclasses.replace(self, phases=[], **overrides)

    def phase_configs(self) -> list[tuple[str | None, SFTConfig]]:
        """(name, config) of each phase in order; one unnamed phase when `phases` is empty."""
        if not self.phases:
            return [(None, self)]
        return [(phase.name, self.phase_config(index)) for index, phase in enumerate(self.phases)]


@dataclass
class EngineConfig:
    # "plain": torch on the HF Trainer's own loop; "deepspeed": a DeepSpeed engine (runs on CPU too).
    name: str = "plain"
    # DeepSpeed ZeRO stage 0-3 (deepspeed only).
    zero_stage: int | None = None

    def __post_init__(self) -> None:
        if self.name not in ("plain", "deepspeed"):
            raise ValueError(f"engine.name must be 'plain' or 'deepspeed', got {self.name!r}")
        if self.name == "plain" and self.zero_stage is not None:
            raise ValueError("engine.zero_stage is a DeepSpeed setting; choose engine=deepspeed")
        if self.name == "deepspeed" and self.zero_stage not in (0, 1, 2, 3):
            raise ValueError(f"engine.zero_stage must be 0, 1, 2 or 3, got {self.zero_stage}")


WANDB_MODES = ("offline", "online", "disabled")


@dataclass
class LoggingConfig:
    logging_steps: int = 10
    tensorboard: bool = True  # event files under the stage's directory, `tensorboard --logdir RUN_DIR`
    progress_bar: bool = True
    # coevolve rl: also log its metric rows (the names of metrics.jsonl) to Weights & Biases
    # (`pip install 'coevolve[wandb]'`; coevolve/utils/metrics_log.py).
    wandb: bool = False
    wandb_project: str = "coevolve"
    # "offline": run files under RUN_DIR/rl/wandb/ (`wandb sync` uploads them later); "online"; "disabled".
    wandb_mode: str = "offline"

    def __post_init__(self) -> None:
        if self.wandb_mode not in WANDB_MODES:
            raise ValueError(f"logging.wandb_mode must be one of {WANDB_MODES}, got {self.wandb_mode!r}")


@dataclass
class Config:
    seed: int = 0
    # Where a run writes: stages below it (sft/, eval/), checkpoints/ and the resolved config.
    run_dir: str = "runs/shapes"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)  # coevolve/eval/config.py; `coevolve eval`, RL's eval
    reward: RewardConfig = field(default_factory=RewardConfig)  # rewards/config.py; `coevolve rewards` checks it
    rollout: RolloutConfig = field(default_factory=RolloutConfig)  # coevolve/rollout/config.py
    cluster: ClusterConfig = field(default_factory=ClusterConfig)  # the Ray cluster of the actors
    rl: RLConfig = field(default_factory=RLConfig)  # coevolve/rl/config.py; `coevolve rl`
    # Named paths a recipe refers to as `${paths.NAME}`, so that one value given on the command
    # line reaches every key that uses it (a judge model loaded by several reward terms, a prompt
    # file). A recipe marks the ones the user must give with `???` (recipes/janus_pro_r1.yaml).
    paths: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.sft.debris_images > 0 and self.data.source != "shapes":
            raise ValueError(
                f"sft.debris_images={self.sft.debris_images} draws the shapes world's debris on its renders; "
                f"data.source is {self.data.source!r}: set sft.debris_images=0"
            )
