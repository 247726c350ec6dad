"""Weight sync on real Ray actors (CPU): after a learner update and a sync — through the object
store (`weight_sync.sync_weights`) or broadcast over a gloo group (`CollectiveSync`) — the learner
actor and every rollout worker actor hold the same weights, bit for bit (per-tensor sha256 from the
actors' `weights_checksum()`); the update did change them, and a worker that misses a sync is seen
holding the old ones. Under the collective, a worker killed mid-batch is brought to the current
weights through the object store and joins a re-formed group at the next sync."""

from __future__ import annotations

import threading
import time

import pytest
import ray

from coevolve.config import compose_config, to_typed
from coevolve.learner.learner import Learner, ProgramScoring, Sample
from coevolve.rl.weight_sync import CollectiveSync, sync_weights
from coevolve.rollout.driver import RolloutDriver
from coevolve.rollout.items import shapes_items

INTRO = "rl.programs.introspective.rollout"

pytestmark = pytest.mark.slow  # three Ray actors start (about 40 s on 2 cores)


@pytest.fixture(scope="module")
def actors(tmp_path_factory, tiny_checkpoint, rl_overrides):
    """(learner actor, rollout driver with 2 workers) of the short RL run's introspective program."""
    run_dir = tmp_path_factory.mktemp("sync")
    config = to_typed(compose_config([*rl_overrides(run_dir, tiny_checkpoint), f"{INTRO}.num_workers=2"]))
    rollout = config.rl.programs["introspective"].rollout
    scoring = {"introspective": ProgramScoring(rollout.guidance(config.model.unconditional), rollout.sampling)}
    ray.init(num_cpus=3, include_dashboard=False, logging_level="warning", log_to_driver=False)
    try:
        learner = (
            ray.remote(Learner)
            .options(num_cpus=1)
            .remote(str(tiny_checkpoint), config.rl.learner, config.engine, scoring, 2, config.model.dtype)
        )
        driver = RolloutDriver(tiny_checkpoint, rollout, config.model.unconditional, seed=3, dtype=config.model.dtype)
        ray.get(learner.ping.remote())
        yield learner, driver
        driver.shutdown()
    finally:
        ray.shutdown()


def stale(expected: dict[str, str], workers: list[dict[str, str]]) -> dict[int, list[str]]:
    """Worker index -> the tensors whose checksum differs from `expected` (workers in sync: empty)."""
    out = {i: sorted(k for k in expected if sums.get(k) != expected[k]) for i, sums in enumerate(workers)}
    return {i: keys for i, keys in out.items() if keys or workers[i].keys() != expected.keys()}


def update(learner, driver, step: int) -> dict[str, str]:
    """One learner update on the workers' trajectories (advantages +1/-1 alternating within each
    group, so the gradient is not zero); returns the learner's checksums after it."""
    trajectories = driver.generate(shapes_items("introspective_t2i", 2, seed=step), step=step)
    samples = [
        Sample("introspective", t, {s: (1.0 if i % 2 else -1.0) for s in ("plan", "image") if t.has(s)})
        for i, t in enumerate(trajectories)
    ]
    assert all(sample.advantages for sample in samples)
    ray.get(learner.train.remote(samples))
    return ray.get(learner.weights_checksum.remote())


def test_after_an_update_and_the_sync_every_worker_holds_the_learners_weights_bit_for_bit(actors):
    learner, driver = actors
    start = ray.get(learner.weights_checksum.remote())
    assert len(start) > 10 and driver.weights_checksums() == [start, start]  # one checkpoint, version 0

    updated = update(learner, driver, step=0)
    changed = [key for key in start if updated[key] != start[key]]
    assert updated.keys() == start.keys() and changed  # the update moved the weights
    # Before the sync both workers hold the old weights: the check sees every changed tensor.
    assert stale(updated, driver.weights_checksums()) == {0: sorted(changed), 1: sorted(changed)}

    sync_weights(learner, {"introspective": driver}, version=1)
    after = driver.weights_checksums()
    assert stale(updated, after) == {} and after == [updated, updated]
    assert all(sums != start for sums in after)
    assert [ray.get(worker.ping.remote())[1] for worker in driver.workers] == [1, 1]


def test_a_worker_that_misses_the_sync_is_caught(actors):
    learner, driver = actors
    before = ray.get(learner.weights_checksum.remote())  # what the previous test synced (version 1)
    assert driver.weights_checksums() == [before, before]
    updated = update(learner, driver, step=1)
    assert updated != before
    # The new weights reach worker 0 only, as if worker 1 had been skipped.
    weights = ray.put(ray.get(learner.policy_state_dict.remote()))
    ray.get(driver.workers[0].set_weights.remote(weights, 2))
    sums = driver.weights_checksums()
    assert sums[0] == updated and sums[1] == before
    assert list(stale(updated, sums)) == [1] and stale(updated, sums)[1]


def test_collective_broadcast_after_an_update_every_worker_holds_the_learners_weights(actors):
    learner, driver = actors
    sync = CollectiveSync(learner, {"introspective": driver}, backend="gloo", bucket_bytes=2**18)
    sync.start()
    assert sync.stats["groups_formed"] == 1
    assert ray.get([worker.weight_group.remote() for worker in driver.workers]) == [1, 1]
    before = ray.get(learner.weights_checksum.remote())
    updated = update(learner, driver, step=2)
    changed = sorted(key for key in before if updated[key] != before[key])
    assert changed
    assert all(stale(updated, driver.weights_checksums()).values())  # no worker has them yet

    version = driver.version + 1
    started = time.perf_counter()
    sync(version)
    seconds = time.perf_counter() - started
    after = driver.weights_checksums()
    assert stale(updated, after) == {} and after == [updated, updated]
    assert [ray.get(worker.ping.remote())[1] for worker in driver.workers] == [version, version]
    assert driver.version == version and sync.stats["broadcasts"] == 1 and sync.stats["object_store_fallbacks"] == 0
    # The tiny policy (about 11 MB in float32) in buckets of 256 KiB: several broadcasts, every byte once.
    assert sync.stats["bytes_per_broadcast"] > 2**20
    print(f"collective sync of {sync.stats['bytes_per_broadcast']} bytes: {seconds:.3f} s")

    # A worker killed mid-batch: the driver gives the restarted actor the current weights through the
    # object store (fetched from the learner), so the batch is sampled under `version` throughout.
    items = shapes_items("introspective_t2i", 2, seed=5)
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(out=driver.generate(items, step=3)))
    thread.start()
    deadline = time.monotonic() + 60
    while 0 not in driver.in_flight() and time.monotonic() < deadline:
        time.sleep(0.01)
    ray.kill(driver.workers[0], no_restart=False)
    thread.join(timeout=300)
    assert {t.policy_version for t in result["out"]} == {version}
    assert driver.stats["reissued"] >= 1
    assert driver.weights_checksums() == [updated, updated]
    assert ray.get(driver.workers[0].weight_group.remote()) is None  # the restarted actor left the group

    # The next sync forms the group again with the restarted worker, and broadcasts to it.
    again = update(learner, driver, step=4)
    assert again != updated
    sync(version + 1)
    assert sync.stats["groups_formed"] == 2 and sync.stats["broadcasts"] == 2
    assert ray.get([worker.weight_group.remote() for worker in driver.workers]) == [2, 2]
    assert driver.weights_checksums() == [again, again]
