"""Advantage estimators × scale_rewards and dynamic sampling, against values computed by hand.

The batch used throughout: group a = [1, 2, 6], group b = [4, 4], group c = [0, 2].

    a: mean 3, centred [-2, -1, 3], unbiased var (4 + 1 + 9) / 2 = 7, std sqrt(7)
       leave-one-out: 1 - (2+6)/2 = -3, 2 - (1+6)/2 = -1.5, 6 - (1+2)/2 = 4.5
    b: zero spread: 0 under every estimator and scale
    c: mean 1, centred [-1, 1], unbiased var (1 + 1) / 1 = 2, std sqrt(2)
       leave-one-out: 0 - 2 = -2, 2 - 0 = 2
    batch: 7 values, mean 19/7; squared deviations (in 49ths) 144, 25, 529, 81, 81, 361, 25 = 1246,
       unbiased var 1246 / 49 / 6 = 1246 / 294, std sqrt(1246 / 294)
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from coevolve.trajectory import IMAGE, PLAN, VERDICT, Segment, Trajectory
from rewards import RewardConfig, RewardTerm, RewardTerms, ScoreBatch, Scorer, normalize, zero_spread_groups

VALUES = np.array([1.0, 2.0, 6.0, 4.0, 4.0, 0.0, 2.0])
GROUPS = np.array(["a", "a", "a", "b", "b", "c", "c"])
EPS = 1e-4  # TRL's
A_STD, C_STD, BATCH_STD = math.sqrt(7) + EPS, math.sqrt(2) + EPS, math.sqrt(1246 / 294) + EPS

CENTRED = [-2, -1, 3, 0, 0, -1, 1]
LOO = [-3, -1.5, 4.5, 0, 0, -2, 2]
EXPECTED = {
    ("grpo", "none"): CENTRED,
    ("grpo", "group"): [-2 / A_STD, -1 / A_STD, 3 / A_STD, 0, 0, -1 / C_STD, 1 / C_STD],
    ("grpo", "batch"): [x / BATCH_STD for x in CENTRED],
    ("dr_grpo", "none"): CENTRED,
    ("rloo", "none"): LOO,
    ("rloo", "group"): [-3 / A_STD, -1.5 / A_STD, 4.5 / A_STD, 0, 0, -2 / C_STD, 2 / C_STD],
    ("rloo", "batch"): [x / BATCH_STD for x in LOO],
}


def assert_exact(actual, expected) -> None:
    torch.testing.assert_close(
        torch.as_tensor(np.asarray(actual), dtype=torch.float64),
        torch.tensor(expected, dtype=torch.float64),
        rtol=1e-12,
        atol=1e-12,
    )


@pytest.mark.parametrize("estimator, scale", sorted(EXPECTED))
def test_estimator_and_scale_give_the_hand_computed_advantages(estimator, scale):
    assert_exact(normalize(VALUES, GROUPS, scale, estimator), EXPECTED[(estimator, scale)])


def test_batch_std_is_the_std_of_all_values():
    assert BATCH_STD - EPS == pytest.approx(2.058663, abs=1e-6)  # the hand value above, as a decimal
    assert VALUES.std(ddof=1) == pytest.approx(BATCH_STD - EPS, rel=1e-12)


def test_zero_spread_is_exactly_zero_not_a_rounding_residue():
    values = np.array([0.1, 0.1, 0.1, 0.7, 0.2])
    groups = np.array([0, 0, 0, 1, 1])
    for estimator, scale in EXPECTED:
        assert (normalize(values, groups, scale, estimator)[:3] == 0.0).all(), (estimator, scale)


@pytest.mark.parametrize("scale", ["group", "batch"])
def test_dr_grpo_with_a_std_scale_is_an_error_naming_both_keys(scale):
    with pytest.raises(ValueError, match=r"advantage_estimator='dr_grpo'.*scale_rewards='" + scale):
        normalize(VALUES, GROUPS, scale, "dr_grpo")
    with pytest.raises(ValueError, match=r"reward\.advantage_estimator='dr_grpo'.*reward\.scale_rewards=none"):
        RewardConfig(advantage_estimator="dr_grpo", scale_rewards=scale)


def test_rloo_group_of_one_is_an_error_naming_the_group():
    with pytest.raises(ValueError, match=r"group 'lonely' has 1"):
        normalize(np.array([1.0, 2.0, 5.0]), np.array(["a", "a", "lonely"]), "none", "rloo")


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"advantage_estimator": "ppo"}, "reward.advantage_estimator"),
        ({"scale_rewards": "std"}, "reward.scale_rewards"),
        ({"drop_zero_spread_groups": "yes"}, "reward.drop_zero_spread_groups"),
    ],
)
def test_bad_config_values_name_the_key(kwargs, key):
    with pytest.raises((ValueError, TypeError), match=key.replace(".", r"\.")):
        RewardConfig(**kwargs)


# -- through RewardTerms: per-term estimators, dynamic sampling ------------------------------------

IMG = Image.new("RGB", (4, 4))


class Lookup(Scorer):
    def __init__(self, key: str):
        self.key = key

    def score(self, trajectories):
        return ScoreBatch([t.info[self.key] for t in trajectories])


def batch(**groups: list[tuple[float, float]]) -> list[Trajectory]:
    """Trajectories `g/i` with info x, y (the two terms' scores)."""
    segments = [Segment(PLAN, "text", text="p"), Segment(IMAGE, "image", image=IMG), Segment(VERDICT, "text", text="v")]
    return [
        Trajectory(id=f"{g}/{i}", group=g, prompt="p", program="t", segments=segments, info={"x": x, "y": y})
        for g, rows in groups.items()
        for i, (x, y) in enumerate(rows)
    ]


def terms(aggregation="normalize_then_sum", **kwargs) -> RewardTerms:
    return RewardTerms(
        [RewardTerm("x", Lookup("x"), 1.0, (PLAN, IMAGE)), RewardTerm("y", Lookup("y"), 1.0, (VERDICT,))],
        multi_objective_aggregation=aggregation,
        **kwargs,
    )


def test_each_term_uses_the_estimator_and_each_segment_sums_the_terms_that_train_it():
    # x: group a = [1, 2, 6] -> rloo [-3, -1.5, 4.5]; y: group a = [0, 0, 3] -> rloo
    # 0 - (0+3)/2 = -1.5, -1.5, 3 - 0 = 3. scale none. plan/image train on x, verdict on y.
    result = terms(advantage_estimator="rloo", scale_rewards="none")(batch(a=[(1, 0), (2, 0), (6, 3)]))
    assert_exact(result.normalized["x"], [-3, -1.5, 4.5])
    assert_exact(result.advantages[PLAN], [-3, -1.5, 4.5])
    assert_exact(result.advantages[IMAGE], [-3, -1.5, 4.5])
    assert_exact(result.advantages[VERDICT], [-1.5, -1.5, 3])


def test_zero_spread_groups_are_dropped_and_counted():
    # a has spread in x; b is constant in both terms; c has spread in y only (still trains the verdict);
    # d is constant in both. So b and d carry no signal.
    trajectories = batch(a=[(1, 5), (2, 5), (6, 5)], b=[(4, 1), (4, 1)], c=[(3, 0), (3, 1)], d=[(0, 0), (0, 0), (0, 0)])
    result = terms(drop_zero_spread_groups=True)(trajectories)
    assert result.zero_spread_groups == ["b", "d"]
    assert result.groups == ["a", "a", "a", "c", "c"] and result.kept.tolist() == [0, 1, 2, 5, 6]
    metrics = result.metrics()
    assert metrics["rewards/zero_spread_groups"] == 2 and metrics["rewards/dropped_zero_spread_groups"] == 2
    # grpo/group on what is left: x in a -> [-2, -1, 3] / (sqrt7 + eps); y in c = [0, 1]: centred
    # [-0.5, 0.5], std sqrt(0.5); x in c and y in a are constant -> 0.
    s05 = math.sqrt(0.5) + EPS
    assert_exact(result.advantages[PLAN], [-2 / A_STD, -1 / A_STD, 3 / A_STD, 0, 0])
    assert_exact(result.advantages[VERDICT], [0, 0, 0, -0.5 / s05, 0.5 / s05])

    kept_all = terms()(trajectories)  # the option off: counted, kept, advantage exactly 0
    assert kept_all.zero_spread_groups == ["b", "d"] and len(kept_all.ids) == 10
    assert kept_all.metrics()["rewards/dropped_zero_spread_groups"] == 0
    assert (kept_all.advantages[PLAN][[3, 4, 7, 8, 9]] == 0).all()


def test_dropping_before_normalising_changes_the_batch_std():
    # a = [1, 2, 6] and b = [4, 4] (y constant). Kept: only a, so the batch std is a's own, sqrt(7).
    result = terms(scale_rewards="batch", drop_zero_spread_groups=True)(
        batch(a=[(1, 0), (2, 0), (6, 0)], b=[(4, 0)] * 2)
    )
    assert_exact(result.advantages[PLAN], [-2 / A_STD, -1 / A_STD, 3 / A_STD])


def test_zero_spread_follows_the_aggregation():
    # One segment trained by both terms: x = [1, 0], y = [0, 1]. Summed first, x + y = [1, 1] has no
    # spread (sum_then_normalize drops it); normalised first, each term has spread (kept).
    def both(aggregation):
        return RewardTerms(
            [RewardTerm("x", Lookup("x"), 1.0, (PLAN,)), RewardTerm("y", Lookup("y"), 1.0, (PLAN,))],
            multi_objective_aggregation=aggregation,
            drop_zero_spread_groups=True,
        )

    trajectories = batch(g=[(1, 0), (0, 1)], h=[(1, 0), (0, 0)])
    assert both("sum_then_normalize")(trajectories).zero_spread_groups == ["g"]
    assert both("normalize_then_sum")(trajectories).zero_spread_groups == []


def test_zero_spread_groups_function():
    assert zero_spread_groups([np.array([1, 1, 2, 3]), np.array([0, 0, 5, 5])], ["p", "p", "q", "q"]) == ["p"]
    assert zero_spread_groups([], ["p", "q", "p"]) == ["p", "q"]  # no source: nothing can be non-zero


def test_rloo_group_of_one_is_an_error_even_when_zero_spread_groups_are_dropped():
    with pytest.raises(ValueError, match=r"group 'solo' has 1"):
        terms(advantage_estimator="rloo", drop_zero_spread_groups=True)(batch(a=[(1, 0), (2, 1)], solo=[(3, 3)]))


def test_the_composed_config_carries_the_options_to_the_terms():
    from coevolve.config import compose_config, to_typed

    overrides = ["reward.advantage_estimator=rloo", "reward.scale_rewards=none", "reward.drop_zero_spread_groups=true"]
    built = RewardTerms.from_config(to_typed(compose_config(overrides)).reward)
    assert (built.advantage_estimator, built.scale_rewards, built.drop_zero_spread_groups) == ("rloo", "none", True)
    defaults = RewardTerms.from_config(to_typed(compose_config([])).reward)
    assert (defaults.advantage_estimator, defaults.drop_zero_spread_groups) == ("grpo", False)
