"""The `rl` config group (conf/rl/): what `coevolve rl` samples, how it rewards, how it learns.

- `programs`: the rollout programs sampled every step, each with its own `rollout` settings
  (the `rollout` group's type: `num_prompts` prompts per step from `source`, `num_generations`
  per prompt, ...) and the `reward` terms that train it. The shapes recipe samples the
  introspective program (image alignment, self-consistency) and the reconstruction program (UAE's
  Unified-GRPO term) side by side; an ablation removes one (`~rl.programs.reconstruction`).
- `stages`: consecutive phases of the run, each with its steps, the programs it samples and the
  segments it trains (UAE: "generation for understanding" trains the caption, then
  "understanding for generation" the image). Null `programs`: every program; null `segments`:
  every segment a reward term of its programs trains.
- `learner`: the GRPO learner (coevolve/learner): loss (`LossConfig`, TRL's names), optimiser,
  micro-batching, LoRA, the Ray resources of its actor. The engine is the shared `engine` group.
- `weight_sync`: how the new weights reach the rollout workers after each update
  (coevolve/rl/weight_sync.py).

GPU resources: an actor is one process on one GPU at most, so `rl.learner.num_gpus` and each
`rollout.worker.num_gpus` are 0, a fraction or 1; fractions let Ray place several actors on one GPU
(e.g. learner 0.5 + rollout worker 0.25 + reward worker 0.25, `reward.num_gpus`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import MISSING

from coevolve.config.lora import LoraConfig
from coevolve.learner.losses import LossConfig
from coevolve.model.guidance import CFGMode
from coevolve.rollout.config import RolloutConfig
from coevolve.rollout.items import drawn_program
from rewards.config import RewardConfig

RESUME = ("auto", "never")
WEIGHT_SYNCS = ("object_store", "collective")

PROGRAM_SEGMENTS = {
    # "description": written when the checkpoint's self-check describes the image first.
    "introspective_t2i": ("plan", "image", "description", "verdict", "reflection", "regen_image"),
    "reconstruction": ("caption", "image"),
    "self_check": ("description", "verdict"),
}
"""The segment names each built-in program writes that a reward term may train."""


@dataclass
class ProgramConfig:
    """One rollout program of the RL step and the reward terms that train its trajectories."""

    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)


@dataclass
class StageConfig:
    name: str = MISSING
    steps: int = MISSING
    # Programs this stage samples (names under rl.programs); null: all of them.
    programs: list[str] | None = None
    # Segments this stage trains (their advantages reach the loss); null: all that reward terms train.
    segments: list[str] | None = None

    def samples(self, program: str) -> bool:
        return self.programs is None or program in self.programs


@dataclass
class OptimizerConfig:
    learning_rate: float = 1e-5
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0
    lr_scheduler: str = "constant"  # any transformers SchedulerType name
    warmup_steps: int = 0


@dataclass
class LearnerConfig:
    loss: LossConfig = field(default_factory=LossConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    # Trajectories per forward/backward pass; a step's gradient accumulates over all of them.
    micro_batch_size: int = 8
    # PPO epochs over one batch of rollouts (TRL's name); > 1 scores old log-probs at the step's start.
    num_iterations: int = 1
    # Optimiser steps per batch of rollouts (TRL's name): the batch is cut into this many mini-batches.
    steps_per_generation: int = 1
    # Image-token log-probs: "guided" (the CFG logits the rollout sampled from; gradient through
    # both branches), "guided_detach" (unconditional branch detached) or "conditional".
    image_logprob_mode: str = "guided"
    gradient_checkpointing: bool = False
    lora: LoraConfig | None = None
    # What the learner's Ray actor reserves (torch in it uses num_cpus threads).
    num_cpus: float = 2.0
    num_gpus: float = 0.0

    def __post_init__(self) -> None:
        for key in ("micro_batch_size", "num_iterations", "steps_per_generation"):
            if getattr(self, key) < 1:
                raise ValueError(f"rl.learner.{key} must be >= 1, got {getattr(self, key)}")
        modes = tuple(mode.value for mode in CFGMode)
        if self.image_logprob_mode not in modes:
            raise ValueError(f"rl.learner.image_logprob_mode must be one of {modes}, got {self.image_logprob_mode!r}")
        if self.num_cpus <= 0 or self.num_gpus < 0:
            raise ValueError(f"rl.learner needs num_cpus > 0 and num_gpus >= 0, got {self.num_cpus}, {self.num_gpus}")
        if self.num_gpus > 1:
            raise ValueError(
                f"rl.learner.num_gpus must be at most 1 (the learner is one process on one GPU; a fraction shares "
                f"it with other actors), got {self.num_gpus}"
            )
        if not self.optimizer.learning_rate > 0:
            raise ValueError(f"rl.learner.optimizer.learning_rate must be > 0, got {self.optimizer.learning_rate}")


@dataclass
class RLConfig:
    # The checkpoint RL starts from (the SFT warm start's output by default).
    checkpoint: str = "${run_dir}/checkpoints/sft"
    programs: dict[str, ProgramConfig] = field(default_factory=dict)
    stages: list[StageConfig] = field(default_factory=list)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    # A resumable checkpoint (policy in HF format + learner state) every this many steps.
    save_steps: int = 10
    save_total_limit: int | None = 2
    # `coevolve eval` figures (the `eval` group) every this many steps, at step 0 and at the end
    # of each stage; 0: only at the end of each stage.
    eval_steps: int = 0
    # "auto": continue from the latest checkpoint in RUN_DIR/rl when there is one; "never": start
    # from model.path (an existing RUN_DIR/rl is then an error, so nothing is overwritten).
    resume: str = "auto"
    # How new weights reach the rollout workers after an update (each time with the policy version):
    # "object_store": the controller fetches the learner's state dict and each program's driver
    # `ray.put`s it once for its workers, which load it; "collective": the learner and every rollout
    # worker form a torch.distributed group (nccl when they hold GPUs, each its own; gloo on CPU)
    # and the learner broadcasts the weights, which the workers copy into their model in place.
    weight_sync: str = "object_store"
    # collective: tensors travel packed in buckets of at most this many MiB (one broadcast each).
    weight_sync_bucket_mb: float = 256.0

    def __post_init__(self) -> None:
        if self.resume not in RESUME:
            raise ValueError(f"rl.resume must be one of {RESUME}, got {self.resume!r}")
        if self.weight_sync not in WEIGHT_SYNCS:
            raise ValueError(f"rl.weight_sync must be one of {WEIGHT_SYNCS}, got {self.weight_sync!r}")
        if not self.weight_sync_bucket_mb > 0:
            raise ValueError(f"rl.weight_sync_bucket_mb must be > 0, got {self.weight_sync_bucket_mb}")
        if self.save_steps < 1:
            raise ValueError(f"rl.save_steps must be >= 1, got {self.save_steps}")
        if self.eval_steps < 0:
            raise ValueError(f"rl.eval_steps must be >= 0, got {self.eval_steps}")
        names = [stage.name for stage in self.stages]
        if len(set(names)) != len(names):
            raise ValueError(f"rl.stages: stage names repeat: {names}")
        for index, stage in enumerate(self.stages):
            if stage.steps < 1:
                raise ValueError(f"rl.stages[{index}] ({stage.name}): steps must be >= 1, got {stage.steps}")
        for name, program in self.programs.items():
            self._check_program(name, program)

    def _check_program(self, name: str, program: ProgramConfig) -> None:
        where = f"rl.programs.{name}"
        if program.rollout.num_generations < 2:
            raise ValueError(
                f"{where}.rollout.num_generations must be >= 2 for group-relative advantages, "
                f"got {program.rollout.num_generations}"
            )
        if not program.reward.terms:
            raise ValueError(f"{where}.reward.terms is empty: nothing would train this program's trajectories")
        if program.rollout.enumerate_answers:
            self._check_enumerated_answers(where)
        writes = PROGRAM_SEGMENTS[program.rollout.program]
        if not program.rollout.redraw:
            writes = tuple(segment for segment in writes if segment != "image")
        for term_name, term in program.reward.terms.items():
            for segment in term.segments:
                if segment not in writes:
                    raise ValueError(
                        f"{where}.reward.terms.{term_name}.segments: the {program.rollout.program} program writes "
                        f"no segment {segment!r} (it writes {list(writes)})"
                    )

    def _check_enumerated_answers(self, where: str) -> None:
        """Enumerated answers are weighed by their probability through the IS correction alone
        (`SelfCheck`): without it, or with bounds that move a weight below 1, each answer would
        count as if drawn and the gradient would no longer be the policy's."""
        loss, key = self.learner.loss, "rl.learner.loss.importance_sampling"
        if not loss.importance_sampling_correction:
            raise ValueError(f"{where}.rollout.enumerate_answers=true needs {key}_correction=true: it weighs each "
                             "enumerated answer by its probability")  # fmt: skip
        if loss.importance_sampling_clip_min:
            raise ValueError(f"{where}.rollout.enumerate_answers=true needs {key}_clip_min=null: an answer's weight "
                             f"is its probability, which {loss.importance_sampling_clip_min} would "
                             f"{'raise' if loss.importance_sampling_mode.endswith('truncate') else 'zero'} below it")  # fmt: skip
        if loss.importance_sampling_clip_max is not None and loss.importance_sampling_clip_max < 1:
            raise ValueError(f"{where}.rollout.enumerate_answers=true needs {key}_clip_max >= 1 (or null): an "
                             f"answer's weight is its probability, up to 1, got {loss.importance_sampling_clip_max}")  # fmt: skip

    def check(self) -> None:
        """Checks needing the whole group (run before any actor starts)."""
        if not self.programs:
            raise ValueError("rl.programs is empty: give at least one rollout program (see recipes/shapes.yaml)")
        if not self.stages:
            raise ValueError("rl.stages is empty: give at least one stage with its steps")
        if self.weight_sync == "collective":
            self.weight_sync_backend()  # raises for a group of GPU and CPU actors
        for index, stage in enumerate(self.stages):
            where = f"rl.stages[{index}] ({stage.name})"
            if stage.programs is not None:
                unknown = [name for name in stage.programs if name not in self.programs]
                if unknown or not stage.programs:
                    raise ValueError(
                        f"{where}.programs: {unknown or 'empty'}; name programs of rl.programs ({sorted(self.programs)})"
                    )
            trained = {segment for name, program in self.programs.items() if stage.samples(name)
                       for term in program.reward.terms.values() for segment in term.segments}  # fmt: skip
            for segment in stage.segments or ():
                if segment not in trained:
                    raise ValueError(
                        f"{where}.segments: no reward term of its programs trains {segment!r} "
                        f"(trained: {sorted(trained)})"
                    )
        for name, program in self.programs.items():
            if (source := drawn_program(program.rollout.source)) is not None:
                self._check_drawn_source(name, program, source)

    def _check_drawn_source(self, name: str, program: ProgramConfig, source: str) -> None:
        """A `program:SOURCE` stream judges the first images SOURCE drew earlier in the same step."""
        where = f"rl.programs.{name}.rollout.source ({program.rollout.source})"
        if program.rollout.program != "self_check":
            raise ValueError(f"{where}: another program's images are judged by the self_check program only, "
                             f"not {program.rollout.program!r}")  # fmt: skip
        names = list(self.programs)
        if source not in self.programs or names.index(source) >= names.index(name):
            raise ValueError(f"{where}: name a program listed before {name!r} under rl.programs (listed: {names})")
        drawing = self.programs[source].rollout
        if drawing.program != "introspective_t2i":
            raise ValueError(f"{where}: {source!r} is a {drawing.program} program; its first images come from "
                             "introspective_t2i")  # fmt: skip
        for index, stage in enumerate(self.stages):
            if stage.samples(name) and not stage.samples(source):
                raise ValueError(f"rl.stages[{index}] ({stage.name}).programs: samples {name!r} but not {source!r}, "
                                 "whose images it judges")  # fmt: skip
        available = drawing.num_prompts * drawing.num_generations
        if program.rollout.num_prompts > available:
            raise ValueError(
                f"rl.programs.{name}.rollout.num_prompts={program.rollout.num_prompts}: {source!r} draws "
                f"{available} first images a step ({drawing.num_prompts} prompts x {drawing.num_generations})"
            )

    def weight_sync_backend(self) -> str:
        """The collective's backend: "nccl" when the learner and every rollout worker hold a GPU, "gloo"
        when none does; a mix is an error naming the keys."""
        holders = {"rl.learner.num_gpus": self.learner.num_gpus}
        for name, program in self.programs.items():
            holders[f"rl.programs.{name}.rollout.worker.num_gpus"] = program.rollout.worker.num_gpus
        on_gpu = {key for key, gpus in holders.items() if gpus > 0}
        if on_gpu and len(on_gpu) != len(holders):
            raise ValueError(
                "rl.weight_sync=collective needs the learner and every rollout worker on GPUs (nccl) or all on CPU "
                f"(gloo): {sorted(on_gpu)} > 0 but {sorted(set(holders) - on_gpu)} = 0; use rl.weight_sync=object_store "
                "for a mix"
            )
        return "nccl" if on_gpu else "gloo"

    @property
    def total_steps(self) -> int:
        return sum(stage.steps for stage in self.stages)

    def stage_at(self, step: int) -> tuple[int, StageConfig]:
        """(index, stage) of 0-based `step`."""
        end = 0
        for index, stage in enumerate(self.stages):
            end += stage.steps
            if step < end:
                return index, stage
        raise ValueError(f"step {step} is past the run's {self.total_steps} steps")
