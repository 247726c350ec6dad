"""The rollout driver on real Ray actors (a local cluster per module): 2 actors give the in-process
program's trajectories token for token, a weight update changes outputs and is recorded, a worker
killed mid-batch costs no trajectory and duplicates none, reward workers score."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from coevolve.config import compose_config, to_typed
from coevolve.rollout.driver import RolloutDriver, split_units
from coevolve.rollout.items import shapes_items
from coevolve.rollout.programs import IntrospectiveT2I

pytestmark = pytest.mark.slow

ROLLOUT = ["rollout.num_generations=2", "rollout.num_workers=2", "rollout.unit_size=2", "rollout.max_plan_tokens=8",
           "rollout.max_verdict_tokens=8", "rollout.max_reflection_tokens=8", "rollout.regenerate=always"]  # fmt: skip
STEP = 3


@pytest.fixture(scope="module")
def config():
    return to_typed(compose_config(ROLLOUT))


@pytest.fixture(scope="module")
def driver(ray_session, sft_checkpoint, config):
    driver = RolloutDriver(str(sft_checkpoint), config.rollout, seed=11, reward=config.reward)
    yield driver
    driver.shutdown()


@pytest.fixture(scope="module")
def items():
    return shapes_items("introspective_t2i", 8, seed=7)


@pytest.fixture(scope="module")
def new_weights(sft_adapter):
    generator = torch.Generator().manual_seed(0)
    return {
        key: value + 0.05 * torch.randn(value.shape, generator=generator) if value.is_floating_point() else value
        for key, value in sft_adapter.model.state_dict().items()
    }


def test_units_are_balanced():
    sizes = [len(unit) for unit in split_units(list(range(10)), unit_size=4, num_workers=2)]
    assert sizes == [4, 3, 3] and [len(u) for u in split_units(list(range(3)), 4, 8)] == [1, 1, 1]


def test_two_actors_match_the_in_process_program_token_for_token(driver, sft_adapter, config, items, same_tokens):
    program = IntrospectiveT2I(sft_adapter, seed=11, **config.rollout.program_kwargs("pad"))
    expected = program(items, step=STEP)
    got = driver.generate(items, step=STEP)
    assert [t.id for t in got] == [t.id for t in expected] == [f"p{i:04d}/{k}" for i in range(8) for k in range(2)]
    assert all(same_tokens(a, b) for a, b in zip(got, expected))
    assert {t.policy_version for t in got} == {0} and driver.stats["units"] == 4


def test_a_weight_update_changes_outputs_and_each_trajectory_records_its_version(
    driver, items, new_weights, same_tokens
):
    before = driver.generate(items, step=STEP)
    driver.push_weights(new_weights, version=1)
    after = driver.generate(items, step=STEP)
    assert {t.policy_version for t in before} == {0} and {t.policy_version for t in after} == {1}
    assert sum(not same_tokens(a, b) for a, b in zip(before, after)) == len(items) * 2
    with pytest.raises(ValueError, match="must increase"):
        driver.push_weights(new_weights, version=1)


def test_a_worker_killed_mid_batch_costs_no_trajectory_and_duplicates_none(driver, ray_session, items, same_tokens):
    reference = driver.generate(items, step=STEP)  # version 1 (the previous test pushed it)
    reissued = driver.stats["reissued"]
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(out=driver.generate(items, step=STEP)))
    thread.start()
    deadline = time.monotonic() + 60
    while 0 not in driver.in_flight() and time.monotonic() < deadline:
        time.sleep(0.01)
    victim = driver.workers[0]
    ray_session.kill(victim, no_restart=False)  # Ray restarts it; its unit was in flight
    thread.join(timeout=300)
    got = result["out"]
    assert driver.stats["reissued"] == reissued + 1
    assert [t.id for t in got] == [t.id for t in reference] and len({t.id for t in got}) == len(got)
    # The restarted worker got the current weights back: same version, same tokens.
    assert {t.policy_version for t in got} == {1}
    assert all(same_tokens(a, b) for a, b in zip(got, reference))


def test_the_reward_worker_scores_a_batch(driver, items):
    rewards = driver.score(driver.generate(items[:2], step=0))
    assert set(rewards.raw) == {"image_alignment", "self_consistency"} and len(rewards.ids) == 4
