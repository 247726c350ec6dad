"""Building scorers from config: registry names, `_target_` class paths, and checks before any build."""

from __future__ import annotations

import pytest

from rewards import SCORERS, Resources, ScoreBatch, Scorer, SelfConsistency, ShapesVerifier, build_scorer
from rewards.base import resolve_scorer_spec

BUILT = []


class Counting(Scorer):
    """A test scorer that records its construction (so 'nothing was built' is observable)."""

    def __init__(self, value: float = 1.0, device: str = "cpu"):
        BUILT.append(self)
        self.value, self.device = value, device

    def score(self, trajectories):
        return ScoreBatch([self.value] * len(trajectories))


class NotAScorer:
    def __init__(self):
        pass


def test_builtins_are_registered_by_name():
    assert set(SCORERS) == {
        "shapes_verifier", "yes_no_judge", "self_consistency", "reconstruction", "caption_reconstruction", "clip_score", "introspective_format",
        "shapes_caption_format",
    }  # fmt: skip
    scorer = build_scorer({"name": "shapes_verifier", "graded": True})
    assert isinstance(scorer, ShapesVerifier) and scorer.graded


def test_target_builds_a_class_from_any_module():
    scorer = build_scorer({"_target_": f"{__name__}.Counting", "value": 0.25})
    assert isinstance(scorer, Counting) and scorer.value == 0.25
    assert build_scorer({"_target_": "rewards.ShapesVerifier"}).graded is False


def test_nested_judge_spec_by_name_or_target():
    by_name = build_scorer({"name": "self_consistency", "judge": {"name": "shapes_verifier"}})
    by_target = build_scorer({"name": "self_consistency", "judge": {"_target_": f"{__name__}.Counting"}})
    assert isinstance(by_name, SelfConsistency) and isinstance(by_name.judge, ShapesVerifier)
    assert isinstance(by_target.judge, Counting)


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"name": "shapes_verifyer"}, r"scorer.name: unknown scorer 'shapes_verifyer'; built-in scorers: caption_reconstruction, clip_score"),
        ({"name": "shapes_verifier", "gradd": True}, r"ShapesVerifier got an unexpected keyword argument 'gradd'"),
        ({"_target_": "no_such_module.Thing"}, r"scorer._target_: cannot import 'no_such_module.Thing'"),
        ({"_target_": f"{__name__}.NotAScorer"}, r"is not a subclass of rewards.Scorer"),
        ({"value": 1}, r"needs `_target_` \(a Scorer class path\) or `name`"),
        ({"name": "shapes_verifier", "_target_": "rewards.ShapesVerifier"}, "both `_target_` and `name`"),
        ({"name": "self_consistency", "judge": {"name": "nope"}}, r"scorer.judge.name: unknown scorer 'nope'"),
        (
            {"name": "self_consistency", "judge": {"_target_": f"{__name__}.Counting", "valu": 2}},
            r"scorer.judge: .*'valu'",
        ),
    ],
)
def test_bad_specs_are_named_before_anything_is_built(spec, message):
    BUILT.clear()
    with pytest.raises(ValueError, match=message):
        resolve_scorer_spec(spec)
    with pytest.raises(ValueError, match=message):
        build_scorer(spec)
    assert BUILT == []


def test_constructor_errors_name_the_config_key():
    with pytest.raises(ValueError, match=r"reward.terms.x.scorer: .*self_source must be one of"):
        build_scorer(
            {"name": "self_consistency", "judge": {"name": "shapes_verifier"}, "self_source": "vibes"},
            "reward.terms.x.scorer",
        )


def test_resources_follow_the_device():
    assert build_scorer({"_target_": f"{__name__}.Counting"}).resources == Resources(
        num_cpus=1.0, num_gpus=0.0, device="cpu"
    )
    assert build_scorer({"_target_": f"{__name__}.Counting", "device": "cuda:0"}).resources.num_gpus == 1.0
    # self_consistency runs where its judge runs.
    wrapped = build_scorer(
        {"name": "self_consistency", "judge": {"_target_": f"{__name__}.Counting", "device": "cuda"}}
    )
    assert wrapped.resources.num_gpus == 1.0
