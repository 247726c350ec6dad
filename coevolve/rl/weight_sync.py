"""How the learner's new weights reach every rollout worker after an update (`rl.weight_sync`).

- `object_store` (`ObjectStoreSync`): the controller fetches the learner's full policy state dict
  once (`Learner.policy_state_dict`, CPU tensors) and each program's driver `ray.put`s it once for
  its workers, which load it (GPU workers copy it onto their device). Simple, any placement.
- `collective` (`CollectiveSync`): the learner (rank 0) and every rollout worker of every program
  form one torch.distributed group (coevolve/utils/collective.py: nccl when they hold GPUs, gloo on
  CPU) once at the start, over a store the learner hosts on a free port of its node; each sync the
  learner broadcasts its tensors in buckets and the workers copy them into their model in place.
  Nothing passes through the controller or the object store.

Either way the drivers record the policy version, which each trajectory carries.

Workers that were restarted or replaced under the collective: a worker Ray restarts mid-batch
loses its group, and the others are busy sampling, so the driver brings it to the current
weights alone through the object store (`RolloutDriver.record_weights`: fetched from the learner
only then). At the next sync the group is formed again (a new generation on the same store) with
every current worker, so from then on it receives by broadcast again. A broadcast that fails
(a member died during it) is completed through the object store, and the group re-formed next time.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import ray
from ray.exceptions import ActorUnavailableError, GetTimeoutError, RayActorError, RayTaskError

from coevolve.rl.config import RLConfig
from coevolve.rollout.driver import RolloutDriver
from coevolve.utils.collective import check_distinct_gpus

log = logging.getLogger(__name__)

TIMEOUT_S = 300.0  # a member that has not joined or answered a broadcast by then has failed


def sync_weights(learner, drivers: Mapping[str, RolloutDriver], version: int) -> None:
    """The object-store path: the learner actor's policy weights to every rollout worker of every
    driver, as `version` (fetched once; each driver puts them in Ray's object store once)."""
    state = ray.get(learner.policy_state_dict.remote())
    for driver in drivers.values():
        driver.push_weights(state, version)


class ObjectStoreSync:
    name = "object_store"

    def __init__(self, learner, drivers: Mapping[str, RolloutDriver]):
        self.learner, self.drivers = learner, drivers
        self.stats: dict[str, int] = {}

    @classmethod
    def build(cls, rl: RLConfig, learner, drivers: Mapping[str, RolloutDriver]) -> ObjectStoreSync:
        return cls(learner, drivers)

    def start(self) -> None:
        pass

    def __call__(self, version: int) -> None:
        sync_weights(self.learner, self.drivers, version)


class CollectiveSync:
    """See the module docstring. `start()` forms the group (before the first rollout, so that a
    placement NCCL cannot serve fails early); each call brings every worker to `version`."""

    name = "collective"

    def __init__(self, learner, drivers: Mapping[str, RolloutDriver], backend: str, bucket_bytes: int,
                 timeout_s: float = TIMEOUT_S):  # fmt: skip
        self.learner, self.drivers = learner, drivers
        self.backend, self.bucket_bytes, self.timeout_s = backend, int(bucket_bytes), timeout_s
        self.generation = 0
        self.members: list = []  # worker actor handles in rank order (rank = position + 1)
        self.manifest = None
        self.address: tuple[str, int] | None = None
        self.stats = {"groups_formed": 0, "broadcasts": 0, "object_store_fallbacks": 0, "bytes_per_broadcast": 0}

    @classmethod
    def build(cls, rl: RLConfig, learner, drivers: Mapping[str, RolloutDriver]) -> CollectiveSync:
        return cls(learner, drivers, rl.weight_sync_backend(), int(rl.weight_sync_bucket_mb * 2**20))

    def _workers(self) -> list:
        return [worker for driver in self.drivers.values() for worker in driver.workers]

    def _current(self, workers: list) -> bool:
        """Every worker is the one that joined, still in the current generation (a restarted actor is not)."""
        if len(workers) != len(self.members) or any(a is not b for a, b in zip(workers, self.members)):
            return False
        return ray.get([worker.weight_group.remote() for worker in workers]) == [self.generation] * len(workers)

    def _check_gpus(self, workers: list) -> None:
        names = ["learner"] + [f"{name}/rollout/{i}" for name, d in self.drivers.items() for i in range(len(d.workers))]
        actors = [self.learner, *workers]
        nodes = ray.get([actor.node_id.remote() for actor in actors])
        gpus = ray.get([actor.gpu_ids.remote() for actor in actors])
        check_distinct_gpus(list(zip(names, nodes, gpus)))

    def start(self) -> None:
        """Form the group with the learner and every current rollout worker (a new generation)."""
        workers = self._workers()
        if self.backend == "nccl":
            self._check_gpus(workers)
        if self.address is None:
            self.address = tuple(ray.get(self.learner.open_weight_group.remote(self.timeout_s)))
            self.manifest = ray.get(self.learner.weight_manifest.remote())
        self.generation += 1
        host, port = self.address
        world = 1 + len(workers)
        common = (self.backend, self.manifest, self.bucket_bytes, self.timeout_s)
        refs = [self.learner.join_weight_group.remote(self.generation, world, *common)]
        refs += [worker.join_weight_group.remote(host, port, self.generation, rank, world, *common)
                 for rank, worker in enumerate(workers, start=1)]  # fmt: skip
        ray.get(refs)
        self.members = workers
        self.stats["groups_formed"] += 1

    def __call__(self, version: int) -> None:
        if not self._current(self._workers()):
            self.start()
        refs = [self.learner.broadcast_weights.remote(self.generation)]
        refs += [worker.receive_weights.remote(self.generation, version) for worker in self.members]
        try:
            sent, *_ = ray.get(refs, timeout=self.timeout_s)
        except (RayActorError, ActorUnavailableError, RayTaskError, GetTimeoutError) as error:
            log.warning("weight broadcast failed (%s); version %d goes through the object store", error, version)
            self.members = []  # formed again at the next sync
            self.stats["object_store_fallbacks"] += 1
            sync_weights(self.learner, self.drivers, version)
            return
        self.stats["broadcasts"] += 1
        self.stats["bytes_per_broadcast"] = sent
        learner = self.learner
        for driver in self.drivers.values():
            driver.record_weights(version, lambda: learner.policy_state_dict.remote())


WEIGHT_SYNC = {"object_store": ObjectStoreSync, "collective": CollectiveSync}


def build_weight_sync(rl: RLConfig, learner, drivers: Mapping[str, RolloutDriver]):
    """The `rl.weight_sync` path over the run's learner actor and drivers (`start()` it once they are up)."""
    return WEIGHT_SYNC[rl.weight_sync].build(rl, learner, drivers)
