"""`self_consistency`: does the model's own verdict on its image agree with a judge?

Janus-Pro-R1's self-evaluation reward, `1 - |judge - self|`, where `judge` is any other scorer
(the shapes verifier, a yes/no VLM judge, ...) whose scores lie in [0, 1], and `self` is what the
model said about the same image:

- `self_source: p_yes` — P(Yes) of the self-check's first answer token, recorded by the rollout
  in `trajectory.info["p_yes"]`;
- `self_source: verdict` — the verdict segment's text parsed as Yes (1) or No (0).

A verdict that does not parse has no Yes/No to compare: by default that is an error naming the
sample; `unparsed_score` sets an explicit score for it instead (a format penalty).

`balance_classes: true` weights each sample by the inverse frequency, in the batch scored, of its
image's class under the judge (matches / does not match), so that the batch mean is the balanced
agreement. Without it, a self-check that cannot tell the classes apart earns most by giving the
majority answer to everything, and the policy gradient drives it there (the shapes recipe's RL
did: P(yes) < 0.5 for every image, balanced accuracy exactly 50%); with it, every constant answer
earns the same, and only telling the classes apart pays. It needs a yes/no judge (scores 0 or 1)
and a term whose advantages are not divided by the group's std (`scale_rewards: batch` or `none`
on the term): most groups hold images of one class, and dividing by their std divides the weight
out again.
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
        balance_classes: weight each score by n / (k * n_c), n_c the number of samples of its
            image's class among the n scored, k the number of classes present (module doc).
    """

    nested_scorers = ("judge",)
    # The class frequencies of `balance_classes` are those of the whole batch: never score parts.
    max_concurrency = 1

    def __init__(
        self,
        judge: Mapping | Scorer,
        self_source: str = "p_yes",
        unparsed_score: float | None = None,
        balance_classes: bool = False,
    ):
        if self_source not in SELF_SOURCES:
            raise ValueError(f"self_consistency: self_source must be one of {SELF_SOURCES}, got {self_source!r}")
        if unparsed_score is not None and self_source != "verdict":
            raise ValueError("self_consistency: unparsed_score applies to self_source 'verdict' only")
        if unparsed_score is not None and not math.isfinite(unparsed_score):
            raise ValueError(f"self_consistency: unparsed_score must be finite, got {unparsed_score}")
        self.judge = build_scorer(judge, "self_consistency.judge")
        if not isinstance(balance_classes, bool):
            raise TypeError(f"self_consistency: balance_classes must be true or false, got {balance_classes!r}")
        self.self_source, self.unparsed_score, self.balance_classes = self_source, unparsed_score, balance_classes
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
        weights = self._class_weights(trajectories, judge_scores) if self.balance_classes else [1.0] * len(trajectories)
        scores, details = [], []
        for own, judge, weight in zip(selves, judge_scores, weights):
            agreement = self.unparsed_score if own is None else 1.0 - abs(judge - own)
            scores.append(weight * agreement)
            details.append({"judge": judge, "self": own} | ({"weight": weight} if self.balance_classes else {}))
        return ScoreBatch(scores, details)

    def _class_weights(self, trajectories: Sequence[Trajectory], judge_scores: Sequence[float]) -> list[float]:
        graded = [t.id for t, s in zip(trajectories, judge_scores) if s not in (0.0, 1.0)]
        if graded:
            raise ValueError(
                f"self_consistency: balance_classes needs a yes/no judge (scores 0 or 1); judge {self.judge!r} "
                f"gave graded scores for {graded}"
            )
        counts = {label: judge_scores.count(label) for label in set(judge_scores)}
        return [len(judge_scores) / (len(counts) * counts[s]) for s in judge_scores]
