"""Ray actors: rollout workers (a policy + a program) and reward workers (the reward terms).

Plain classes; the driver makes them actors (`ray.remote(RolloutWorker).options(...)`) with the
resources from config. A few coarse methods each, as verl's workers have: `generate`,
`set_weights` (weights through Ray's object store) or `join_weight_group` + `receive_weights` (a
broadcast from the learner, coevolve/utils/collective.py), `score`; `weights_checksum`, `node_id`
and `gpu_ids` say what weights an actor holds and where it runs. Nothing here decides what to do
when an actor dies: the driver does.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from coevolve.rollout.programs import PROGRAMS, RolloutItem
from coevolve.trajectory import Trajectory
from coevolve.utils.checksum import state_checksums
from coevolve.utils.collective import Manifest, WeightGroup, check_targets
from rewards.base import resolve_scorer_spec
from rewards.config import RewardConfig


class RolloutWorker:
    """Holds the policy (loaded from `checkpoint` through `JanusAdapter`) and one rollout program.

    Starts at policy version 0 (the checkpoint's weights); `set_weights` installs newer ones. With
    `text_backend="vllm"` its text segments are drawn by a vLLM engine (`model/vllm_text.py`, built
    with `vllm_kwargs`) that every weight update refreshes.
    """

    def __init__(self, checkpoint: str, program: str, program_kwargs: Mapping[str, Any], seed: int,
                 dtype: str = "float32", device: str = "cpu", text_backend: str = "native",
                 vllm_kwargs: Mapping[str, Any] | None = None):  # fmt: skip
        from coevolve.model.adapter import JanusAdapter

        self.adapter = JanusAdapter.from_pretrained(checkpoint, dtype=getattr(torch, dtype), device=device)
        if text_backend == "vllm":
            from coevolve.model.vllm_text import VLLMText

            self.adapter.text_backend = VLLMText(self.adapter, **dict(vllm_kwargs or {}))
        elif text_backend != "native":
            raise ValueError(f"rollout worker: unknown text_backend {text_backend!r} (native or vllm)")
        self.program = PROGRAMS[program](self.adapter, seed=seed, **program_kwargs)
        self.version = 0
        self._weight_group: WeightGroup | None = None  # none after a restart: the actor must join again

    def ping(self) -> tuple[int, int]:
        """(process id, policy version): answers once the actor is up."""
        return os.getpid(), self.version

    def check(self, items: Sequence[RolloutItem]) -> None:
        self.program.check(items)

    def set_weights(self, state_dict: Mapping[str, torch.Tensor], version: int) -> int:
        """Load a full state dict of the policy (strict: every key, no extra) and record `version`."""
        self.adapter.model.load_state_dict(state_dict, strict=True)
        self._weights_changed()
        self.version = version
        return version

    def join_weight_group(self, store_host: str, port: int, generation: int, rank: int, world_size: int,
                          backend: str, manifest: Manifest, bucket_bytes: int, timeout_s: float) -> None:  # fmt: skip
        """Join generation `generation` of the learner's weight group as `rank` (blocks until every
        member joined), then check that the learner's tensors are this policy's."""
        if self._weight_group is not None:
            self._weight_group.close()
            self._weight_group = None
        group = WeightGroup(store_host, port, rank, world_size, generation, backend, manifest, bucket_bytes,
                            timeout_s, _node_ip())  # fmt: skip
        check_targets(manifest, self.adapter.model.state_dict())  # after the rendezvous: no member waits on us
        self._weight_group = group

    def weight_group(self) -> int | None:
        """The generation of the weight group this actor is in (None: none, e.g. after a restart)."""
        return None if self._weight_group is None else self._weight_group.generation

    def receive_weights(self, generation: int, version: int) -> int:
        """Receive the learner's `broadcast_weights` into the policy in place, as `version`; returns the bytes."""
        group = self._weight_group
        if group is None or group.generation != generation:
            raise RuntimeError(
                f"rollout worker: not in weight group generation {generation} (in {self.weight_group()})"
            )
        received = group.receive(self.adapter.model.state_dict())
        self._weights_changed()
        self.version = version
        return received

    def _weights_changed(self) -> None:
        """The policy's tensors were replaced: a text backend's copy of them (vLLM's) follows."""
        if self.adapter.text_backend is not None:
            self.adapter.text_backend.refresh()

    def gpu_ids(self) -> tuple[str, ...]:
        """The ids of the GPUs Ray gave this actor (on its node)."""
        import ray

        return tuple(str(gpu) for gpu in ray.get_gpu_ids())

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


def _node_ip() -> str:
    import ray

    return ray.util.get_node_ip_address()


def reward_resources(config: RewardConfig) -> tuple[float, float]:
    """(num_cpus, num_gpus) a reward worker reserves: the most any of its scorers declares (they run
    one after another), read from the scorer classes and specs without building them; `reward.num_gpus`,
    when set, replaces the GPUs (a fraction shares one)."""
    cpus, gpus, on_cuda = 0.0, 0.0, []
    for name, term in config.terms.items():
        cls, kwargs = resolve_scorer_spec(term.scorer, f"reward.terms.{name}.scorer")
        device = str(kwargs.get("device") or cls.device)
        cpus = max(cpus, float(cls.num_cpus))
        if torch.device(device).type == "cuda":
            gpus = 1.0
            on_cuda.append(name)
    if config.num_gpus is not None:
        if on_cuda and config.num_gpus == 0:
            raise ValueError(f"reward.num_gpus is 0 but the scorers of {on_cuda} run on cuda: give them a GPU share")
        gpus = float(config.num_gpus)
    return cpus, gpus
