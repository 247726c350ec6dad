"""The rollout driver: work units to rollout actors, trajectories back in prompt order.

- `generate(items, step)` splits the items into balanced work units (`split_units`: at least one
  per worker, at most `unit_size` items each, sizes differing by at most one), hands each idle
  worker the next unit, and gathers the trajectories in item order.
- `push_weights(state_dict, version)` puts the weights in Ray's object store once and loads them
  into every worker; each trajectory records the version it was sampled under. When the weights
  reached the workers by another path (a broadcast from the learner, `rl.weight_sync: collective`),
  `record_weights(version, fetch)` records the version, and `fetch` gives the weights to a worker
  that must be brought up to date alone.
- A worker that dies (its unit fails with an actor error) is restarted by Ray (up to
  `rollout.max_restarts`; past that the driver creates a new actor in its place); the driver waits
  for it, re-sends the current weights and version (through the object store, whichever path
  brought them to the others), and puts the lost unit back in the queue.
  Results are kept by unit id, so a unit that comes back twice counts once: every trajectory of
  the batch comes back exactly once.
- `score(trajectories)` runs the reward terms in a reward worker (when a reward config was given).
- `weights_checksums()` and `placement()` say what weights each worker holds and which Ray node
  each actor runs on.

The caller joins or starts the cluster first (`cluster.connect`, with `demand`).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence

import ray
from ray.exceptions import ActorUnavailableError, GetTimeoutError, RayActorError, RayTaskError

from coevolve.rollout.cluster import Demand
from coevolve.rollout.config import RolloutConfig
from coevolve.rollout.programs import RolloutItem
from coevolve.rollout.workers import RewardWorker, RolloutWorker, reward_resources
from coevolve.trajectory import Trajectory
from rewards.config import RewardConfig

LOST = (RayActorError, ActorUnavailableError)  # the actor died or is restarting


def split_units(items: Sequence[RolloutItem], unit_size: int, num_workers: int) -> list[list[RolloutItem]]:
    """Consecutive units: max(num_workers, ceil(len / unit_size)) of them (no more than the items),
    sizes differing by at most one."""
    count = min(len(items), max(num_workers, -(-len(items) // unit_size)))
    base, extra = divmod(len(items), count)
    units, start = [], 0
    for index in range(count):
        size = base + (index < extra)
        units.append(list(items[start : start + size]))
        start += size
    return units


def demand(rollout: RolloutConfig, reward: RewardConfig | None = None) -> Demand:
    """The CPUs/GPUs the driver's actors reserve together."""
    cpus = rollout.num_workers * rollout.worker.num_cpus
    gpus = rollout.num_workers * rollout.worker.num_gpus
    if reward is not None and reward.terms:
        reward_cpus, reward_gpus = reward_resources(reward)
        cpus, gpus = cpus + reward_cpus, gpus + reward_gpus
    return Demand(cpus, gpus)


def _cause(error: RayTaskError) -> BaseException:
    """The exception an actor method raised (Ray wraps it with the remote traceback)."""
    return error.cause if getattr(error, "cause", None) is not None else error


class RolloutDriver:
    def __init__(
        self,
        checkpoint: str,
        rollout: RolloutConfig,
        unconditional: str = "pad",
        seed: int = 0,
        reward: RewardConfig | None = None,
        dtype: str = "float32",
        restart_timeout_s: float = 300.0,
    ):
        self.rollout, self.restart_timeout_s = rollout, restart_timeout_s
        device = "cuda" if rollout.worker.num_gpus > 0 else "cpu"
        self._worker_args = (
            str(checkpoint),
            rollout.program,
            rollout.program_kwargs(unconditional),
            seed,
            dtype,
            device,
            rollout.text_backend,
            dict(rollout.vllm),
        )
        self.workers = [self._new_worker() for _ in range(rollout.num_workers)]
        self.version = 0
        self._weights = None  # ObjectRef of the current state dict (None: the checkpoint's, or not fetched yet)
        self._fetch: Callable[[], ray.ObjectRef] | None = None  # gives it when the weights came by broadcast
        self.stats = {"units": 0, "reissued": 0, "replaced": 0}
        self.timings: dict[str, float] = {}  # the last batch's program seconds per phase, summed over units
        self._in_flight: dict[int, str] = {}
        self.reward_worker = None
        if reward is not None and reward.terms:
            cpus, gpus = reward_resources(reward)
            self.reward_worker = ray.remote(RewardWorker).options(num_cpus=cpus, num_gpus=gpus).remote(reward)
        self._wait_ready(range(len(self.workers)))

    def _new_worker(self):
        worker = self.rollout.worker
        return (
            ray.remote(RolloutWorker)
            .options(num_cpus=worker.num_cpus, num_gpus=worker.num_gpus, max_restarts=self.rollout.max_restarts)
            .remote(*self._worker_args)
        )

    def _wait_ready(self, indices) -> None:
        refs = [self.workers[i].ping.remote() for i in indices]
        try:
            ray.get(refs, timeout=self.restart_timeout_s)
        except RayActorError as error:
            raise RuntimeError(f"a rollout worker failed to start: {error}") from error

    # -- weights ---------------------------------------------------------------------------------

    def push_weights(self, state_dict: Mapping, version: int) -> None:
        """Load `state_dict` into every worker as policy `version` (put in the object store once)."""
        if version <= self.version:
            raise ValueError(f"policy version must increase: got {version} after {self.version}")
        self._weights = ray.put(dict(state_dict))
        self._fetch = None
        self.version = version
        for index in range(len(self.workers)):
            self._sync(index)

    def record_weights(self, version: int, fetch: Callable[[], ray.ObjectRef]) -> None:
        """Every worker received policy `version` by another path (a broadcast from the learner).
        `fetch()` returns an ObjectRef of the same state dict (e.g. `learner.policy_state_dict.remote()`);
        it is called only if a worker must be brought up to date alone, once per version."""
        if version <= self.version:
            raise ValueError(f"policy version must increase: got {version} after {self.version}")
        self._weights, self._fetch, self.version = None, fetch, version

    def _sync(self, index: int) -> None:
        """Bring worker `index` to the current weights, waiting for a restart or replacing a dead actor."""
        deadline = time.monotonic() + self.restart_timeout_s
        while True:
            worker = self.workers[index]
            if self._weights is None and self._fetch is not None:
                self._weights = self._fetch()  # the broadcast weights, for this worker alone
            try:
                if self._weights is None:
                    ray.get(worker.ping.remote(), timeout=self.restart_timeout_s)
                else:
                    ray.get(worker.set_weights.remote(self._weights, self.version), timeout=self.restart_timeout_s)
                return
            except ActorUnavailableError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)  # restarting: try again
            except (RayActorError, GetTimeoutError):
                # Restarts used up (or it never came back): a new actor takes its place.
                ray.kill(worker, no_restart=True)
                self.workers[index] = self._new_worker()
                self.stats["replaced"] += 1
                if time.monotonic() > deadline:
                    raise

    def weights_checksums(self) -> list[dict[str, str]]:
        """Per worker (in index order), key -> sha256 of each tensor of the policy it holds."""
        return ray.get([worker.weights_checksum.remote() for worker in self.workers])

    def placement(self) -> dict[str, str]:
        """Actor name (`rollout/INDEX`, `reward`) -> the id of the Ray node it runs on."""
        actors = {f"rollout/{i}": worker for i, worker in enumerate(self.workers)}
        if self.reward_worker is not None:
            actors["reward"] = self.reward_worker
        return dict(zip(actors, ray.get([actor.node_id.remote() for actor in actors.values()])))

    # -- sampling --------------------------------------------------------------------------------

    def check(self, items: Sequence[RolloutItem]) -> None:
        """The program's input checks, run on one worker: a ValueError naming the item, before any sampling."""
        try:
            ray.get(self.workers[0].check.remote(list(items)))
        except RayTaskError as error:
            cause = _cause(error)
            if isinstance(cause, ValueError):
                raise ValueError(str(cause)) from None  # noqa: TRY004 - the program's own error
            raise

    def in_flight(self) -> dict[int, str]:
        """Worker index -> the unit id it is sampling now."""
        return dict(self._in_flight)

    def generate(self, items: Sequence[RolloutItem], step: int = 0) -> list[Trajectory]:
        """Every item's trajectories (`rollout.trajectories_per_item`), in item order; see the module docstring."""
        self.check(items)
        units = {
            f"{step}:{i}": unit for i, unit in enumerate(split_units(items, self.rollout.unit_size, len(self.workers)))
        }
        pending = deque(units)
        running: dict[ray.ObjectRef, tuple[int, str]] = {}
        idle = deque(range(len(self.workers)))
        results: dict[str, list[Trajectory]] = {}
        self.timings = {}
        self._in_flight = {}
        while pending or running:
            while pending and idle:
                index, unit_id = idle.popleft(), pending.popleft()
                running[self.workers[index].generate.remote(unit_id, units[unit_id], step)] = (index, unit_id)
                self._in_flight[index] = unit_id
            ready, _ = ray.wait(list(running), num_returns=1)
            for ref in ready:
                index, unit_id = running.pop(ref)
                self._in_flight.pop(index, None)
                try:
                    got_id, trajectories, timings = ray.get(ref)
                except LOST:
                    self.stats["reissued"] += 1
                    pending.appendleft(unit_id)
                    self._sync(index)  # waits for the restart and re-sends the current weights
                    idle.append(index)
                    continue
                except RayTaskError as error:
                    raise _cause(error) from error
                idle.append(index)
                if got_id in results:
                    continue  # a unit sampled twice counts once
                results[got_id] = trajectories
                self.stats["units"] += 1
                for phase, seconds in timings.items():
                    self.timings[phase] = self.timings.get(phase, 0.0) + seconds
        out = [trajectory for unit_id in units for trajectory in results[unit_id]]
        expected = len(items) * self.rollout.trajectories_per_item
        ids = {trajectory.id for trajectory in out}
        if len(out) != expected or len(ids) != expected:
            raise RuntimeError(f"rollout returned {len(out)} trajectories ({len(ids)} distinct) for {expected}")
        return out

    def score(self, trajectories: Sequence[Trajectory]):
        """The reward terms' `Rewards` for `trajectories`, computed in the reward worker."""
        if self.reward_worker is None:
            raise ValueError("this driver has no reward terms (give it a reward config with terms)")
        try:
            return ray.get(self.reward_worker.score.remote(list(trajectories)))
        except RayTaskError as error:
            raise _cause(error) from error

    def shutdown(self) -> None:
        for worker in [*self.workers, self.reward_worker]:
            if worker is not None:
                ray.kill(worker, no_restart=True)
        self.workers, self.reward_worker = [], None
