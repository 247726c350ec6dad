"""Reward terms: group normalisation, per-segment advantages, the failure policy, concurrency."""

from __future__ import annotations

import math
import threading
import time

import numpy as np
import pytest
from PIL import Image

from coevolve.trajectory import IMAGE, PLAN, VERDICT, Segment, Trajectory
from rewards import RewardConfig, RewardTerm, RewardTerms, ScoreBatch, Scorer, ScorerError, TermConfig, normalize

IMG = Image.new("RGB", (4, 4))


def batch(groups: dict[str, list[float]]) -> list[Trajectory]:
    """Trajectories `g/i` whose `info["value"]` a `Lookup` scorer returns."""
    return [
        Trajectory(
            id=f"{group}/{i}",
            group=group,
            prompt="p",
            program="test",
            segments=[
                Segment(PLAN, "text", text="x"),
                Segment(IMAGE, "image", image=IMG),
                Segment(VERDICT, "text", text="y"),
            ],
            info={"value": value},
        )
        for group, values in groups.items()
        for i, value in enumerate(values)
    ]


class Lookup(Scorer):
    def __init__(self, key: str = "value"):
        self.key = key

    def score(self, trajectories):
        return ScoreBatch([t.info[self.key] for t in trajectories], details=[{"seen": t.id} for t in trajectories])


class Raising(Scorer):
    def __init__(self, bad_group: str | None = None):
        self.bad_group = bad_group

    def score(self, trajectories):
        if self.bad_group is None or any(t.group == self.bad_group for t in trajectories):
            raise RuntimeError("judge server unreachable")
        return ScoreBatch([1.0] * len(trajectories))


class Sleeping(Scorer):
    def __init__(self, seconds: float, max_concurrency: int = 1, slow_group: str | None = None):
        self.seconds, self.max_concurrency, self.slow_group = seconds, max_concurrency, slow_group
        self.threads: set[int] = set()

    def score(self, trajectories):
        self.threads.add(threading.get_ident())
        if self.slow_group is None or any(t.group == self.slow_group for t in trajectories):
            time.sleep(self.seconds)
        return ScoreBatch([t.info["value"] for t in trajectories])


class Returning(Scorer):
    def __init__(self, result):
        self.result = result

    def score(self, trajectories):
        return self.result(trajectories)


def terms(*specs, **kwargs) -> RewardTerms:
    return RewardTerms(
        [RewardTerm(name, scorer, weight, segments, **extra) for name, scorer, weight, segments, extra in specs],
        **kwargs,
    )


# -- normalisation -------------------------------------------------------------------------------


def test_group_normalisation_matches_trl_and_zero_spread_is_exactly_zero():
    values = np.array([1.0, 0.0, 0.5, 0.7, 0.7, 0.7])
    groups = np.array([0, 0, 0, 1, 1, 1])
    out = normalize(values, groups, "group")
    first = values[:3]
    np.testing.assert_allclose(out[:3], (first - first.mean()) / (first.std(ddof=1) + 1e-4))
    assert (out[3:] == 0.0).all()
    np.testing.assert_allclose(normalize(values, groups, "none")[:3], first - first.mean())
    np.testing.assert_allclose(
        normalize(values, groups, "batch")[:3], (first - first.mean()) / (values.std(ddof=1) + 1e-4)
    )


def test_per_segment_advantages_normalize_then_sum():
    trajectories = batch({"a": [1.0, 0.0], "b": [0.2, 0.6]})
    for t, other in zip(trajectories, [0.0, 1.0, 5.0, 5.0]):
        t.info["other"] = other
    result = terms(
        ("align", Lookup(), 2.0, [PLAN, IMAGE], {}),
        ("check", Lookup("other"), 0.5, [VERDICT, IMAGE], {}),
    )(trajectories)
    np.testing.assert_array_equal(result.raw["align"], [1.0, 0.0, 0.2, 0.6])
    # A two-sample group (x, y) normalises to +-(|x - y| / 2) / (std + eps), std = |x - y| / sqrt(2).
    za, zb = 0.5 / (math.sqrt(0.5) + 1e-4), 0.2 / (0.4 / math.sqrt(2) + 1e-4)
    np.testing.assert_allclose(result.normalized["align"], [za, -za, -zb, zb], rtol=1e-9)
    np.testing.assert_allclose(result.normalized["check"], [-za, za, 0.0, 0.0], rtol=1e-9)  # group b: zero spread
    np.testing.assert_allclose(result.advantages[PLAN], 2.0 * result.normalized["align"])
    np.testing.assert_allclose(result.advantages[VERDICT], 0.5 * result.normalized["check"])
    np.testing.assert_allclose(
        result.advantages[IMAGE], 2.0 * result.normalized["align"] + 0.5 * result.normalized["check"]
    )
    rows = result.rows()
    assert (
        rows[0]["id"] == "a/0" and rows[0]["reward/align"] == 1.0 and rows[0]["reward/align/details"] == {"seen": "a/0"}
    )
    assert set(rows[0]) >= {"advantage/plan", "advantage/image", "advantage/verdict", "reward/check/normalized"}
    assert result.metrics()["reward/align/mean"] == pytest.approx(0.45)


def test_sum_then_normalize_sums_raw_scores_per_segment():
    trajectories = batch({"a": [1.0, 0.0, 0.5]})
    for t, other in zip(trajectories, [0.0, 3.0, 1.0]):
        t.info["other"] = other
    result = terms(
        ("align", Lookup(), 1.0, [IMAGE], {}),
        ("check", Lookup("other"), 0.5, [IMAGE], {}),
        multi_objective_aggregation="sum_then_normalize",
    )(trajectories)
    summed = np.array([1.0, 1.5, 1.0])
    np.testing.assert_allclose(result.advantages[IMAGE], (summed - summed.mean()) / (summed.std(ddof=1) + 1e-4))


def test_groups_need_not_be_contiguous():
    trajectories = batch({"a": [1.0], "b": [0.0], "c": [3.0]})
    trajectories[2].group = "a"  # groups a = {0, 2}, b = {1}
    result = terms(("align", Lookup(), 1.0, [IMAGE], {}))(trajectories)
    assert result.normalized["align"][1] == 0.0
    assert result.normalized["align"][0] < 0 < result.normalized["align"][2]


# -- failure policy ------------------------------------------------------------------------------

FAILURES = {
    "exception": (lambda: Raising(), "raised RuntimeError: judge server unreachable"),
    "timeout": (lambda: Sleeping(1.0), "timed out after 0.2s"),
    "nan": (
        lambda: Returning(lambda ts: ScoreBatch([math.nan if t.id == "b/1" else 1.0 for t in ts])),
        r"non-finite scores \[nan\]",
    ),
    "inf": (
        lambda: Returning(lambda ts: ScoreBatch([math.inf if t.id == "b/1" else 1.0 for t in ts])),
        r"non-finite scores \[inf\]",
    ),
    "wrong_length": (
        lambda: Returning(lambda ts: ScoreBatch([1.0] * (len(ts) - 1))),
        r"returned \(5,\) scores for 6 samples",
    ),
    "not_a_batch": (lambda: Returning(lambda ts: [1.0] * len(ts)), "returned a list, not a ScoreBatch"),
    "not_floats": (lambda: Returning(lambda ts: ScoreBatch(["high"] * len(ts))), "not floats"),
}


@pytest.mark.parametrize("case", sorted(FAILURES))
def test_each_failure_raises_a_scorer_error_naming_term_scorer_and_samples(case):
    make, message = FAILURES[case]
    scorer = make()
    reward_terms = terms(("judged", scorer, 1.0, [IMAGE], {"timeout_s": 0.2}))
    with pytest.raises(ScorerError, match=message) as error:
        reward_terms(batch({"a": [1.0, 0.0], "b": [0.5, 0.5], "c": [0.1, 0.2]}))
    assert error.value.term == "judged"
    assert error.value.scorer == f"{type(scorer).__module__}.{type(scorer).__qualname__}"
    assert "reward term 'judged'" in str(error.value) and type(scorer).__qualname__ in str(error.value)
    expected = ["b/1"] if case in ("nan", "inf") else ["a/0", "a/1", "b/0", "b/1", "c/0", "c/1"]
    assert error.value.sample_ids == expected
    if case == "exception":
        assert isinstance(error.value.__cause__, RuntimeError)


@pytest.mark.parametrize("case", sorted(FAILURES))
def test_drop_group_removes_the_affected_groups_and_counts_them(case):
    make, _ = FAILURES[case]
    good = Lookup()
    result = terms(
        ("align", good, 1.0, [PLAN, IMAGE], {}),
        ("judged", make(), 1.0, [VERDICT], {"on_error": "drop_group", "timeout_s": 0.2}),
    )(batch({"a": [1.0, 0.0], "b": [0.5, 0.25], "c": [0.1, 0.2]}))
    lost = ["b"] if case in ("nan", "inf") else ["a", "b", "c"]  # a whole-batch failure loses every group
    assert result.dropped_groups == {"judged": lost} and result.num_dropped_groups == len(lost)
    assert result.metrics()["rewards/dropped_groups"] == len(lost)
    assert not set(result.groups) & set(lost)
    assert len(result.errors["judged"]) == 1 and "reward term 'judged'" in result.errors["judged"][0]
    # No substitute value: the surviving samples carry exactly their true scores, and nothing is NaN.
    survivors = [t for t in batch({"a": [1.0, 0.0], "b": [0.5, 0.25], "c": [0.1, 0.2]}) if t.group not in lost]
    np.testing.assert_array_equal(result.raw["align"], [t.info["value"] for t in survivors])
    for values in [*result.raw.values(), *result.advantages.values()]:
        assert np.isfinite(values).all() and len(values) == len(survivors)


def test_dropping_only_the_failing_group_when_the_scorer_splits_by_group():
    scorer = Raising(bad_group="b")
    scorer.max_concurrency = 3  # one call per group, so an exception is attributable to its group
    result = terms(("judged", scorer, 1.0, [IMAGE], {"on_error": "drop_group"}))(
        batch({"a": [1, 0], "b": [1, 0], "c": [0, 1]})
    )
    assert result.dropped_groups == {"judged": ["b"]}
    assert result.ids == ["a/0", "a/1", "c/0", "c/1"]
    np.testing.assert_array_equal(result.raw["judged"], [1.0, 1.0, 1.0, 1.0])
    assert (result.advantages[IMAGE] == 0).all()  # zero spread within each surviving group


def test_timeout_is_per_term_and_a_slow_group_is_dropped_alone():
    scorer = Sleeping(2.0, max_concurrency=3, slow_group="c")
    start = time.monotonic()
    result = terms(("judged", scorer, 1.0, [IMAGE], {"on_error": "drop_group", "timeout_s": 0.5}))(
        batch({"a": [1.0, 0.0], "b": [0.5, 0.25], "c": [0.1, 0.2]})
    )
    assert time.monotonic() - start < 1.5  # the abandoned call is not waited for
    assert result.dropped_groups == {"judged": ["c"]} and result.groups == ["a", "a", "b", "b"]


# -- concurrency ---------------------------------------------------------------------------------


def test_max_concurrency_scores_parts_of_whole_groups_at_once():
    trajectories = batch({g: [float(i), float(i) + 1] for i, g in enumerate("abcd")})
    scorer = Sleeping(0.4, max_concurrency=4)
    start = time.monotonic()
    result = terms(("io", scorer, 1.0, [IMAGE], {}))(trajectories)
    elapsed = time.monotonic() - start
    assert elapsed < 1.0, f"4 parts of 0.4 s took {elapsed:.2f} s: not concurrent"
    assert len(scorer.threads) == 4
    np.testing.assert_array_equal(result.raw["io"], [t.info["value"] for t in trajectories])  # order kept
    serial = Sleeping(0.2, max_concurrency=1)
    start = time.monotonic()
    terms(("io", serial, 1.0, [IMAGE], {}))(trajectories)
    assert len(serial.threads) == 1 and time.monotonic() - start < 0.4  # one call for the whole batch


# -- from config ---------------------------------------------------------------------------------


def test_from_config_checks_every_spec_before_building_any():
    from test_scorer_base import BUILT

    BUILT.clear()
    config = RewardConfig(
        terms={
            "first": TermConfig(scorer={"_target_": "test_scorer_base.Counting"}, segments=[IMAGE]),
            "second": TermConfig(
                scorer={"name": "shapes_verifier", "graded": "yes", "segmnt": "image"}, segments=[IMAGE]
            ),
        }
    )
    with pytest.raises(ValueError, match=r"reward.terms.second.scorer: .*unexpected keyword argument 'segmnt'"):
        RewardTerms.from_config(config)
    assert BUILT == []


@pytest.mark.parametrize(
    "term, message",
    [
        (TermConfig(scorer={"name": "shapes_verifier"}, segments=[]), "reward.terms.t.segments is empty"),
        (TermConfig(scorer={"name": "shapes_verifier"}, segments=["imag"]), "unknown segment 'imag'"),
        (
            TermConfig(scorer={"name": "shapes_verifier"}, segments=[IMAGE], on_error="ignore"),
            "reward.terms.t.on_error",
        ),
        (TermConfig(scorer={"name": "shapes_verifier"}, segments=[IMAGE], timeout_s=0), "reward.terms.t.timeout_s"),
        (TermConfig(scorer={}, segments=[IMAGE]), "reward.terms.t.scorer is empty"),
        (TermConfig(scorer={"name": "shapes_verifier"}, segments=[IMAGE], weight=math.nan), "reward.terms.t.weight"),
        (
            TermConfig(scorer={"name": "shapes_verifier"}, segments=[IMAGE], scale_rewards="prompt"),
            "reward.terms.t.scale_rewards must be one of",
        ),
    ],
)
def test_bad_term_config_is_named(term, message):
    with pytest.raises(ValueError, match=message):
        RewardConfig(terms={"t": term})


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"multi_objective_aggregation": "sum_then_normalize"}, r"reward.terms.t.scale_rewards is set, but .*sum_then"),
        ({"advantage_estimator": "dr_grpo", "scale_rewards": "none"}, r"reward.terms.t.scale_rewards='batch'"),
    ],
)
def test_a_term_scale_that_the_aggregation_or_estimator_contradicts_is_named(settings, message):
    term = TermConfig(scorer={"name": "shapes_verifier"}, segments=[IMAGE], scale_rewards="batch")
    with pytest.raises(ValueError, match=message):
        RewardConfig(terms={"t": term}, **settings)


def test_a_term_scale_is_checked_when_terms_are_built_by_hand_too():
    with pytest.raises(ValueError, match=r"reward term 'x': scale_rewards is set, but .*sum_then_normalize"):
        terms(("x", Lookup(), 1.0, [IMAGE], {"scale_rewards": "batch"}), multi_objective_aggregation="sum_then_normalize")


def test_a_term_scale_overrides_the_runs_for_that_term_only():
    trajectories = batch({"a": [1.0, 0.0, 0.5], "b": [2.0, 2.0, 0.0]})
    values = np.array([1.0, 0.0, 0.5, 2.0, 2.0, 0.0])
    groups = np.array(["a"] * 3 + ["b"] * 3)
    out = terms(
        ("grouped", Lookup(), 1.0, [IMAGE], {}),
        ("batched", Lookup(), 1.0, [VERDICT], {"scale_rewards": "batch"}),
        scale_rewards="group",
    )(trajectories)
    np.testing.assert_allclose(out.advantages[IMAGE], normalize(values, groups, "group"))
    np.testing.assert_allclose(out.advantages[VERDICT], normalize(values, groups, "batch"))
    assert not np.allclose(out.advantages[IMAGE], out.advantages[VERDICT])
