"""Ray actors: rollout workers (a policy + a program) and reward workers (the reward terms).

Plain classes; the driver makes them actors (`ray.remote(RolloutWorker).options(...)`) with the
resources from config. A few coarse methods each, as verl's workers have: `generate`,
`set_weights`, `score`; `weights_checksum` and `node_id` say what weights an actor holds and
where it runs. Nothing here decides what to do when an actor dies: the driver does.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from coevolve.rollout.programs import PROGRAMS, RolloutItem
from coevolve.trajectory import Trajectory
from coevolve.utils.checksum import state_checksums
from rewards.base import resolve_scorer_spec
from rewards.config import RewardConfig


class RolloutWorker:
    """Holds the policy (loaded from `checkpoint` through `JanusAdapter`) and one rollout program.

    Starts at policy version 0 (the checkpoint's weights); `set_weights` installs newer ones.
    """

    def __init__(self, checkpoint: str, program: str, program_kwargs: Mapping[str, Any], seed: int,
                 dtype: str = "float32", device: str = "cpu"):  # fmt: skip
        from coevolve.model.adapter import JanusAdapter

        self.adapter = JanusAdapter.from_pretrained(checkpoint, dtype=getattr(torch, dtype), device=device)
        self.program = PROGRAMS[program](self.adapter, seed=seed, **program_kwargs)
        self.version = 0

    def ping(self) -> tuple[int, int]:
        """(process id, policy version): answers once the actor is up."""
        return os.getpid(), self.version

    def check(self, items: Sequence[RolloutItem]) -> None:
        self.program.check(items)

    def set_weights(self, state_dict: Mapping[str, torch.Tensor], version: int) -> int:
        """Load a full state dict of the policy (strict: every key, no extra) and record `version`."""
        self.adapter.model.load_state_dict(state_dict, strict=True)
        self.version = version
        return version

    def weights_checksum(self) -> dict[str, str]:
        """Key -> sha256 of every tensor of the policy it samples with (`utils.checksum.state_checksums`)."""
        return state_checksums(self.adapter.model.state_dict())

    def node_id(self) -> str:
        return _node_id()

    def generate(self, unit_id: str, items: Sequence[RolloutItem], step: int) -> tuple[str, list[Trajectory], dict]:
        """Sample the unit's trajectories; returns (unit_id, trajectories, the program's seconds per phase)."""
        trajectories = self.program(items, step=step, policy_version=self.version)
        return unit_id, trajectories, dict(self.program.timings)


class RewardWorker:
    """Hosts the reward terms of a `RewardConfig` (their scorers, with whatever models they hold)."""

    def __init__(self, config: RewardConfig):
        from rewards.terms import RewardTerms

        self.terms = RewardTerms.from_config(config)

    def score(self, trajectories: Sequence[Trajectory]):
        """`rewards.terms.Rewards` of the batch."""
        return self.terms(trajectories)

    def node_id(self) -> str:
        return _node_id()


def _node_id() -> str:
    """The id of the Ray node the calling actor runs on (hex, as `ray.nodes()` names it)."""
    import ray

    return ray.get_runtime_context().get_node_id()


def reward_resources(config: RewardConfig) -> tuple[float, float]:
    """(num_cpus, num_gpus) a reward worker reserves: the most any of its scorers declares (they run
    one after another), read from the scorer classes and specs without building them."""
    cpus, gpus = 0.0, 0.0
    for name, term in config.terms.items():
        cls, kwargs = resolve_scorer_spec(term.scorer, f"reward.terms.{name}.scorer")
        device = str(kwargs.get("device") or cls.device)
        cpus = max(cpus, float(cls.num_cpus))
        gpus = max(gpus, 1.0 if torch.device(device).type == "cuda" else 0.0)
    return cpus, gpus
