"""The `reward` config group: reward terms and how they become advantages (conf/reward/).

One definition, used by the typed run config (`coevolve/config/schema.py`) and by code that
builds reward terms directly. Names follow TRL's `GRPOConfig` where it has one
(`multi_objective_aggregation`, `scale_rewards`) and verl's where TRL has none (`advantage_estimator`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from coevolve.trajectory import SEGMENT_NAMES
from rewards.advantages import check_estimator

ON_ERROR = ("raise", "drop_group")
AGGREGATIONS = ("normalize_then_sum", "sum_then_normalize")


def check_term_scale(scale_rewards: str | None, aggregation: str, advantage_estimator: str, where: str) -> None:
    """A term's own `scale_rewards` (None: the run's) must suit the aggregation and the estimator."""
    if scale_rewards is None:
        return
    if aggregation != "normalize_then_sum":
        raise ValueError(
            f"{where}scale_rewards is set, but multi_objective_aggregation={aggregation!r} normalises the sum "
            f"of the terms, not each term; remove it or use normalize_then_sum"
        )
    check_estimator(advantage_estimator, scale_rewards, where=where)


@dataclass
class TermConfig:
    """One reward term: a scorer, its weight, and the segments whose tokens it trains."""

    # The scorer: `{name: BUILTIN, **kwargs}` (shapes_verifier, yes_no_judge, self_consistency, introspective_format, shapes_caption_format,
    # reconstruction, caption_reconstruction, clip_score) or `{_target_: my_module.MyScorer, **kwargs}` (rewards/base.py).
    scorer: dict[str, Any] = field(default_factory=dict)
    # Multiplies the term's normalised score (normalize_then_sum) or raw score (sum_then_normalize).
    weight: float = 1.0
    # Segment names (coevolve/trajectory.py) whose tokens this term's advantage trains,
    # e.g. [plan, image] for image alignment, [verdict] for self-consistency.
    segments: list[str] = field(default_factory=list)
    # A score that could not be computed (exception, timeout, NaN/inf, wrong length):
    # "raise" stops with a ScorerError naming the term, scorer and samples; "drop_group" removes
    # the affected groups from the batch and counts them.
    on_error: str = "raise"
    # Seconds the term may take to score one batch (null: no limit); past it the term has failed.
    timeout_s: float | None = None
    # This term's division after the baseline, in place of `reward.scale_rewards` (null: that one).
    # normalize_then_sum only: under sum_then_normalize terms are not normalised one by one.
    # E.g. `batch` for a class-balanced self_consistency, whose weights a group's std would undo.
    scale_rewards: str | None = None

    def validate(self, where: str) -> None:
        if not self.scorer:
            raise ValueError(f"{where}.scorer is empty; give `name` or `_target_`")
        if not math.isfinite(self.weight):
            raise ValueError(f"{where}.weight must be finite, got {self.weight}")
        if not self.segments:
            raise ValueError(f"{where}.segments is empty: name the segments this term trains")
        for segment in self.segments:
            if segment not in SEGMENT_NAMES:
                raise ValueError(f"{where}.segments: unknown segment {segment!r}; expected one of {SEGMENT_NAMES}")
        if len(set(self.segments)) != len(self.segments):
            raise ValueError(f"{where}.segments repeats a segment: {list(self.segments)}")
        if self.on_error not in ON_ERROR:
            raise ValueError(f"{where}.on_error must be one of {ON_ERROR}, got {self.on_error!r}")
        if self.timeout_s is not None and not self.timeout_s > 0:
            raise ValueError(f"{where}.timeout_s must be positive or null, got {self.timeout_s}")


@dataclass
class RewardCheckConfig:
    """`coevolve rewards`: the seeded set of shapes pairs the terms are checked on (rewards/check.py)."""

    num_pairs: int = 36  # (positive, negative) pairs, cycling over the GenEval categories
    seed: int = 4321

    def validate(self, where: str) -> None:
        if self.num_pairs < 1:
            raise ValueError(f"{where}.num_pairs must be >= 1, got {self.num_pairs}")
        if self.seed < 0:
            raise ValueError(f"{where}.seed must be >= 0, got {self.seed}")


@dataclass
class RewardConfig:
    # Term name -> term. Each term's raw and normalised scores are logged and traced under its name.
    terms: dict[str, TermConfig] = field(default_factory=dict)
    # "normalize_then_sum": each term is normalised within its group, then a segment's advantage
    # is the weighted sum of the normalised terms that train it. "sum_then_normalize": a
    # segment's advantage is the weighted sum of the raw scores of the terms that train it,
    # normalised within the group.
    multi_objective_aggregation: str = "normalize_then_sum"
    # The baseline subtracted within a group (rewards/advantages.py): "grpo" the group mean;
    # "dr_grpo" the group mean with no std division (Dr. GRPO; needs scale_rewards: none);
    # "rloo" the mean of the other members (leave-one-out; needs >= 2 trajectories per group).
    advantage_estimator: str = "grpo"
    # Division after subtracting the baseline: "group" by the group's std, "batch" by the
    # batch's std, "none" not at all (Dr. GRPO). Zero-spread groups get advantage 0.
    scale_rewards: str = "group"
    # Dynamic sampling (DAPO): drop the groups in which no advantage can be non-zero (every term's
    # raw score constant under normalize_then_sum; every segment's weighted sum constant under
    # sum_then_normalize) and count them. Off: they stay, with advantage 0, and are counted.
    drop_zero_spread_groups: bool = False
    check: RewardCheckConfig = field(default_factory=RewardCheckConfig)
    # GPUs the reward worker hosting these terms reserves. Null: 1 when a scorer runs on "cuda", else 0;
    # a fraction (<= 1) lets it share a GPU with other actors (e.g. learner 0.5 + rollout 0.25 + reward 0.25).
    num_gpus: float | None = None

    def __post_init__(self) -> None:
        if self.multi_objective_aggregation not in AGGREGATIONS:
            raise ValueError(
                f"reward.multi_objective_aggregation must be one of {AGGREGATIONS}, "
                f"got {self.multi_objective_aggregation!r}"
            )
        check_estimator(self.advantage_estimator, self.scale_rewards, where="reward.")
        if not isinstance(self.drop_zero_spread_groups, bool):
            raise TypeError(
                f"reward.drop_zero_spread_groups must be true or false, got {self.drop_zero_spread_groups!r}"
            )
        if self.num_gpus is not None and not 0 <= self.num_gpus <= 1:
            raise ValueError(
                f"reward.num_gpus must be in [0, 1] (a reward worker is one process on one GPU at most) or null, "
                f"got {self.num_gpus}"
            )
        for name, term in self.terms.items():
            term.validate(f"reward.terms.{name}")
            check_term_scale(
                term.scale_rewards, self.multi_objective_aggregation, self.advantage_estimator, f"reward.terms.{name}."
            )
        self.check.validate("reward.check")
