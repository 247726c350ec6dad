"""The `reward` config group: reward terms and how they become advantages (conf/reward/).

One definition, used by the typed run config (`coevolve/config/schema.py`) and by code that
builds reward terms directly. Names follow TRL's `GRPOConfig` where it has one
(`multi_objective_aggregation`, `scale_rewards`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from coevolve.trajectory import SEGMENT_NAMES

ON_ERROR = ("raise", "drop_group")
AGGREGATIONS = ("normalize_then_sum", "sum_then_normalize")
SCALE_REWARDS = ("group", "batch", "none")


@dataclass
class TermConfig:
    """One reward term: a scorer, its weight, and the segments whose tokens it trains."""

    # The scorer: `{name: BUILTIN, **kwargs}` (shapes_verifier, yes_no_judge, self_consistency,
    # reconstruction, clip_score) or `{_target_: my_module.MyScorer, **kwargs}` (rewards/base.py).
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
    # Division after subtracting the group mean: "group" by the group's std, "batch" by the
    # batch's std, "none" not at all (Dr. GRPO). Zero-spread groups get advantage 0.
    scale_rewards: str = "group"
    check: RewardCheckConfig = field(default_factory=RewardCheckConfig)

    def __post_init__(self) -> None:
        if self.multi_objective_aggregation not in AGGREGATIONS:
            raise ValueError(
                f"reward.multi_objective_aggregation must be one of {AGGREGATIONS}, "
                f"got {self.multi_objective_aggregation!r}"
            )
        if self.scale_rewards not in SCALE_REWARDS:
            raise ValueError(f"reward.scale_rewards must be one of {SCALE_REWARDS}, got {self.scale_rewards!r}")
        for name, term in self.terms.items():
            term.validate(f"reward.terms.{name}")
        self.check.validate("reward.check")
