"""The `rollout` and `cluster` config groups (conf/rollout/, conf/cluster/).

`RolloutConfig` says which program samples trajectories and how (read by `programs.py` through
`program_kwargs`), how many Ray workers run it and with what resources (`driver.py`), and which
prompt set `coevolve rollout` samples. `ClusterConfig` says which Ray cluster the actors live in.
The CFG unconditional context is `model.unconditional` (one definition, shared with SFT and eval).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from coevolve.model.guidance import Guidance
from coevolve.model.sampling import Sampling
from coevolve.model.vllm_text import OWNED as VLLM_OWNED
from coevolve.rollout.programs import PROGRAMS, REGENERATE

TEXT_BACKENDS = ("native", "vllm")


@dataclass
class WorkerConfig:
    """What each rollout worker actor reserves in the Ray cluster (torch in it uses num_cpus threads)."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0  # > 0: the worker samples on its GPU; a fraction (<= 1) shares it with other actors


@dataclass
class RolloutConfig:
    # "introspective_t2i" (plan → image → verdict → reflection → image), "reconstruction" (UAE:
    # image → caption → image) or "self_check" (image + prompt → verdict: the self-check turn alone,
    # on given images); coevolve/rollout/programs.py.
    program: str = "introspective_t2i"
    # Trajectories per prompt (GRPO's group size, TRL's name).
    num_generations: int = 4
    # introspective_t2i: when a round of reflection + new image follows a verdict: "on_no" (the
    # verdict parses as a No), "always", "never".
    regenerate: str = "on_no"
    # introspective_t2i: images drawn per trajectory at most (1: no regeneration).
    max_rounds: int = 2
    # CFG weight of every image (1 = no guidance; the unconditional context is model.unconditional).
    guidance_weight: float = 3.0
    # Sampling of every token: temperature (0 = greedy), top-k (0 = off), top-p (1 = off).
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    # Token budgets of the text pieces; a piece that reaches its budget ends there.
    max_plan_tokens: int = 48
    max_verdict_tokens: int = 48
    max_reflection_tokens: int = 64
    max_caption_tokens: int = 32  # reconstruction's caption; a describing self-check's description
    # reconstruction: redraw the image from the caption (false: the trajectory ends at the caption,
    # for a reward that redraws it with a frozen decoder, `caption_reconstruction`).
    redraw: bool = True
    # self_check: the verdict is its drawn Yes/No alone, no reason sampled (score it with
    # self_consistency's `self_source: answer`): a term on it trains the decision alone, whose
    # advantage a dozen reason tokens would otherwise share.
    answer_only: bool = False
    # self_check with answer_only: each description is followed by both answers, two trajectories
    # taken with probability 1, instead of one drawn answer; under `coevolve rl` the learner's IS
    # correction weighs each by its probability, which makes the policy gradient the exact
    # expectation over the answer (programs.py, `SelfCheck`).
    enumerate_answers: bool = False
    # Who draws the text segments (plan, verdict reason, reflection, caption): "native" (coevolve's
    # sampler, coevolve/model/sampler.py) or "vllm" (coevolve/model/vllm_text.py: a vLLM engine in
    # each rollout worker serving the trunk + LM head, refreshed after every weight update; the
    # optional extra `pip install 'coevolve[vllm]'`). Images are always drawn by the native sampler.
    text_backend: str = "native"
    # text_backend=vllm: extra keyword arguments of `vllm.LLM` (e.g. gpu_memory_utilization — default
    # 0.4 on a GPU, which the engine shares with the policy —, kv_cache_memory_bytes — default 1 GiB
    # on CPU —, enforce_eager, max_num_seqs).
    vllm: dict[str, Any] = field(default_factory=dict)
    # Rollout worker actors, each holding the policy.
    num_workers: int = 2
    worker: WorkerConfig = field(default_factory=WorkerConfig)
    # Prompts (or source images) per work unit: a worker gets one unit at a time; a unit lost with
    # its worker is sampled again.
    unit_size: int = 4
    # How often Ray restarts a dead worker before the driver replaces it with a new actor.
    max_restarts: int = 3
    # coevolve rollout: "shapes" (seeded shapes prompts / renders, `seed`-derived) or a path —
    # a .txt file of prompts (one per line; introspective_t2i) or a data source in the record
    # schema of coevolve/data/records.py (prompt + image).
    source: str = "shapes"
    # coevolve rollout: how many prompts or source images (a path: the first this many).
    num_prompts: int = 12

    def __post_init__(self) -> None:
        if self.program not in PROGRAMS:
            raise ValueError(f"rollout.program must be one of {tuple(PROGRAMS)}, got {self.program!r}")
        if self.regenerate not in REGENERATE:
            raise ValueError(f"rollout.regenerate must be one of {REGENERATE}, got {self.regenerate!r}")
        if not self.redraw and self.program != "reconstruction":
            raise ValueError(f"rollout.redraw=false applies to the reconstruction program only, not {self.program!r}")
        if self.answer_only and self.program != "self_check":
            raise ValueError(f"rollout.answer_only=true applies to the self_check program only, not {self.program!r}")
        if self.enumerate_answers and not self.answer_only:
            raise ValueError("rollout.enumerate_answers=true needs rollout.answer_only=true: both answers follow the "
                             "description, and a reason follows a drawn answer only")  # fmt: skip
        for key in (
            "num_generations",
            "max_rounds",
            "max_plan_tokens",
            "max_verdict_tokens",
            "max_reflection_tokens",
            "max_caption_tokens",
            "num_workers",
            "unit_size",
            "num_prompts",
        ):
            if getattr(self, key) < 1:
                raise ValueError(f"rollout.{key} must be >= 1, got {getattr(self, key)}")
        if self.text_backend not in TEXT_BACKENDS:
            raise ValueError(f"rollout.text_backend must be one of {TEXT_BACKENDS}, got {self.text_backend!r}")
        if self.vllm and self.text_backend != "vllm":
            raise ValueError(f"rollout.vllm ({sorted(self.vllm)}) is read only with rollout.text_backend=vllm")
        if owned := sorted(set(self.vllm) & set(VLLM_OWNED)):
            raise ValueError(f"rollout.vllm may not set {owned}: the vLLM text backend sets {list(VLLM_OWNED)} itself")
        if self.max_restarts < 0:
            raise ValueError(f"rollout.max_restarts must be >= 0, got {self.max_restarts}")
        if self.worker.num_cpus <= 0 or self.worker.num_gpus < 0:
            raise ValueError(f"rollout.worker needs num_cpus > 0 and num_gpus >= 0, got {self.worker}")
        if self.worker.num_gpus > 1:
            raise ValueError(
                "rollout.worker.num_gpus must be at most 1 (a worker is one process on one GPU; a fraction shares it "
                f"with other actors; more workers: rollout.num_workers), got {self.worker.num_gpus}"
            )
        try:
            Sampling(self.temperature, self.top_k, self.top_p)
            Guidance(self.guidance_weight)
        except ValueError as error:
            raise ValueError(f"rollout: {error}") from None

    @property
    def trajectories_per_item(self) -> int:
        """`num_generations` drawn trajectories per item; both answers of each with `enumerate_answers`."""
        return self.num_generations * (2 if self.enumerate_answers else 1)

    @property
    def sampling(self) -> Sampling:
        return Sampling(self.temperature, self.top_k, self.top_p)

    def guidance(self, unconditional: str) -> Guidance:
        return Guidance(self.guidance_weight, unconditional)

    def program_kwargs(self, unconditional: str) -> dict[str, Any]:
        """Constructor kwargs of `programs.PROGRAMS[self.program]` (besides adapter and seed)."""
        if self.program == "self_check":  # draws no image: no guidance
            return {
                "num_generations": self.num_generations,
                "sampling": self.sampling,
                "max_verdict_tokens": self.max_verdict_tokens,
                "max_caption_tokens": self.max_caption_tokens,
                "answer_only": self.answer_only,
                "enumerate_answers": self.enumerate_answers,
            }
        common = {
            "num_generations": self.num_generations,
            "guidance": self.guidance(unconditional),
            "sampling": self.sampling,
        }
        if self.program == "reconstruction":
            return {**common, "max_caption_tokens": self.max_caption_tokens, "redraw": self.redraw}
        return {
            **common,
            "regenerate": self.regenerate,
            "max_rounds": self.max_rounds,
            "max_plan_tokens": self.max_plan_tokens,
            "max_verdict_tokens": self.max_verdict_tokens,
            "max_reflection_tokens": self.max_reflection_tokens,
            "max_caption_tokens": self.max_caption_tokens,
        }


@dataclass
class ClusterConfig:
    # null: start a local Ray cluster in this process; "auto": join the cluster `ray start` began on
    # this machine; "HOST:PORT" (or "ray://HOST:PORT"): join that one.
    address: str | None = None
    # Local cluster only: logical CPUs it offers (null: the machine's cores, or what the run's
    # actors reserve when that is more — rollout and reward actors take turns within a step).
    num_cpus: int | None = None
    # Seconds to wait for an address to answer before failing with an error naming it.
    connect_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if self.num_cpus is not None and self.num_cpus < 1:
            raise ValueError(f"cluster.num_cpus must be >= 1 or null, got {self.num_cpus}")
        if self.address is not None and self.num_cpus is not None:
            raise ValueError("cluster.num_cpus sizes a local cluster; a joined cluster (cluster.address) has its own")
        if not self.connect_timeout_s > 0:
            raise ValueError(f"cluster.connect_timeout_s must be > 0, got {self.connect_timeout_s}")
