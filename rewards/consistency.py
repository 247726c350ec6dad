"""`self_consistency`: does the model's own verdict on its image agree with a judge?

Janus-Pro-R1's self-evaluation reward, `1 - |judge - self|`, where `judge` is any other scorer
(the shapes verifier, a yes/no VLM judge, ...) whose scores lie in [0, 1], and `self` is what the
model said about the same image:

- `self_source: p_yes` — P(Yes) of the self-check's first answer token, recorded by the rollout
  in `trajectory.info["p_yes"]`;
- `self_source: verdict` — the verdict segment's text parsed as Yes (1) or No (0).

A verdict that does not parse has no Yes/No to compare: by default that is an error naming the
sample; `unparsed_score` sets an explicit score for it instead (a format penalty).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from coevolve.model.introspection import parse_verdict
from coevolve.trajectory import VERDICT, Trajectory
from rewards.base import ScoreBatch, Scorer, build_scorer, register_scorer

SELF_SOURCES = ("p_yes", "verdict")


@register_scorer("self_consistency")
class SelfConsistency(Scorer):
    """`1 - |judge - self|` per trajectory.

    Args:
        judge: a scorer spec (`{name: ...}` or `{_target_: ...}`) or a built scorer; its scores
            must lie in [0, 1] (1 = the image matches the prompt).
        self_source: "p_yes" (`info["p_yes"]`) or "verdict" (the parsed verdict segment).
        unparsed_score: with `self_source: verdict`, the score of a verdict that does not parse;
            None (default) makes such a verdict an error.
    """

    nested_scorers = ("judge",)

    def __init__(self, judge: Mapping | Scorer, self_source: str = "p_yes", unparsed_score: float | None = None):
        if self_source not in SELF_SOURCES:
            raise ValueError(f"self_consistency: self_source must be one of {SELF_SOURCES}, got {self_source!r}")
        if unparsed_score is not None and self_source != "verdict":
            raise ValueError("self_consistency: unparsed_score applies to self_source 'verdict' only")
        if unparsed_score is not None and not math.isfinite(unparsed_score):
            raise ValueError(f"self_consistency: unparsed_score must be finite, got {unparsed_score}")
        self.judge = build_scorer(judge, "self_consistency.judge")
        self.self_source, self.unparsed_score = self_source, unparsed_score
        self.device = self.judge.device
        self.num_cpus = self.judge.num_cpus

    def _self(self, trajectory: Trajectory) -> float | None:
        if self.self_source == "p_yes":
            if "p_yes" not in trajectory.info:
                raise KeyError(f"trajectory {trajectory.id!r} has no info['p_yes'] (self_source: p_yes)")
            value = float(trajectory.info["p_yes"])
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"trajectory {trajectory.id!r}: info['p_yes'] = {value} is not a probability")
            return value
        parsed = parse_verdict(trajectory.text(VERDICT))
        if parsed is None:
            if self.unparsed_score is None:
                raise ValueError(
                    f"trajectory {trajectory.id!r}: verdict {trajectory.text(VERDICT)!r} does not parse as Yes/No "
                    f"(set unparsed_score to score such verdicts)"
                )
            return None
        return 1.0 if parsed.matches else 0.0

    def score(self, trajectories: Sequence[Trajectory]) -> ScoreBatch:
        selves = [self._self(t) for t in trajectories]  # before the judge runs: a bad sample fails cheaply
        judged = self.judge.score(trajectories)
        judge_scores = [float(s) for s in judged.scores]
        if len(judge_scores) != len(trajectories):
            raise ValueError(
                f"judge {self.judge!r} returned {len(judge_scores)} scores for {len(trajectories)} trajectories"
            )
        bad = [t.id for t, s in zip(trajectories, judge_scores) if not 0.0 <= s <= 1.0]
        if bad:
            raise ValueError(f"judge {self.judge!r} gave scores outside [0, 1] (or NaN) for {bad}")
        scores, details = [], []
        for own, judge in zip(selves, judge_scores):
            scores.append(self.unparsed_score if own is None else 1.0 - abs(judge - own))
            details.append({"judge": judge, "self": own})
        return ScoreBatch(scores, details)
