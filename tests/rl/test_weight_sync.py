"""Weight sync on real Ray actors (CPU, the object-store path): after a learner update and
`run.sync_weights`, the learner actor and every rollout worker actor hold the same weights, bit for
bit (per-tensor sha256 from the actors' `weights_checksum()`); the update did change them, and a
worker that misses a sync is seen holding the old ones."""

from __future__ import annotations

import pytest
import ray

from coevolve.config import compose_config, to_typed
from coevolve.learner.learner import Learner, ProgramScoring, Sample
from coevolve.rl.run import sync_weights
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
