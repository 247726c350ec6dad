"""The answer-only self-check with both answers enumerated, on real Ray actors (a local cluster for
this module): the driver expects `trajectories_per_item` trajectories an item, two per drawn
description, and gets the in-process program's pairs token for token, recorded log-prob 0."""

from __future__ import annotations

import pytest
import torch

from coevolve.config import compose_config, to_typed
from coevolve.rollout.driver import RolloutDriver
from coevolve.rollout.items import shapes_items
from coevolve.rollout.programs import SelfCheck

pytestmark = pytest.mark.slow

ROLLOUT = ["rollout.program=self_check", "rollout.answer_only=true", "rollout.enumerate_answers=true",
           "rollout.num_generations=2", "rollout.num_workers=2", "rollout.unit_size=2",
           "rollout.max_caption_tokens=8"]  # fmt: skip
STEP = 5


@pytest.fixture(scope="module")
def config():
    return to_typed(compose_config(ROLLOUT))


@pytest.fixture(scope="module")
def driver(ray_session, sft_checkpoint, config):
    driver = RolloutDriver(str(sft_checkpoint), config.rollout, seed=11)
    yield driver
    driver.shutdown()


def test_the_driver_returns_both_answers_after_each_drawn_description(driver, sft_adapter, config, same_tokens):
    items = shapes_items("self_check", 5, seed=7)
    expected = SelfCheck(sft_adapter, seed=11, **config.rollout.program_kwargs("pad"))(items, step=STEP)
    got = driver.generate(items, step=STEP)
    assert config.rollout.trajectories_per_item == 4 and len(got) == len(items) * 4
    assert [t.id for t in got] == [t.id for t in expected]
    assert [t.id.rsplit("/", 1)[1] for t in got] == ["yes", "no"] * (len(items) * 2)
    assert all(same_tokens(a, b) for a, b in zip(got, expected))
    for yes, no in zip(got[::2], got[1::2]):
        assert torch.equal(yes.segment("description").ids, no.segment("description").ids)
        assert [t.segment("verdict").text for t in (yes, no)] == [" Yes", " No"]
        assert not yes.segment("verdict").logprobs.any() and not no.segment("verdict").logprobs.any()
    assert driver.stats["units"] == 3
