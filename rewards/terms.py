"""Reward terms: scores of a batch of trajectories → per-term values → per-segment advantages.

`RewardTerms.from_config(config.reward)` builds every term's scorer (all specs are checked first,
so a misspelt key or unknown scorer fails before any model loads); calling it on a batch gives
`Rewards`: each term's raw score and group-normalised value per trajectory, each trained
segment's advantage, and what was dropped.

Normalisation (rewards/advantages.py): within a group (the trajectories of one prompt), subtract
the baseline of `advantage_estimator` (the group mean for grpo/dr_grpo, the other members' mean
for rloo), then divide by the group's std (`scale_rewards: group`, unbiased like TRL's, + 1e-4),
the batch's std (`batch`) or nothing (`none`). A group whose values are all equal gets exactly 0.
With `multi_objective_aggregation: normalize_then_sum` a segment's advantage is
`sum_t weight_t * normalised_t` over the terms t that train it; with `sum_then_normalize` it is
the normalised `sum_t weight_t * raw_t`. Unlike TRL's normalize_then_sum, the sum is not
normalised again over the batch: per segment that would cancel the weights. A segment no term
trains has no entry. Under normalize_then_sum a term may set its own `scale_rewards`.

Dynamic sampling (DAPO): a group in which no advantage can be non-zero — every term's raw score
constant in it (normalize_then_sum), or every segment's weighted raw sum constant
(sum_then_normalize) — has zero spread. Such groups are counted; with `drop_zero_spread_groups`
they are removed from the result before normalising (so `scale_rewards: batch` uses the rest).

Failure policy (DESIGN.md section 5): a scorer call that raises, exceeds the term's
`timeout_s`, returns something other than a `ScoreBatch`, the wrong number of scores, or a
NaN/inf is a failure of the samples it covered. `on_error: raise` raises a `ScorerError` naming
the term, the scorer class and the sample ids; `on_error: drop_group` removes every group holding
one of them from the result (for every term: a group is trained on all its terms or not at all)
and counts it. No failed score is ever replaced by a number.

Concurrency: a scorer with `max_concurrency = k > 1` gets its batch in k parts of whole groups,
scored on a thread pool. A timed-out call's thread is abandoned, not killed (Python cannot stop a
thread): its result is ignored.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from coevolve.trajectory import Trajectory
from rewards.advantages import check_estimator, check_loo_groups, normalize, zero_spread_groups
from rewards.base import ScoreBatch, Scorer, ScorerError, build_scorer, class_path, resolve_scorer_spec
from rewards.config import AGGREGATIONS, ON_ERROR, RewardConfig, check_term_scale


@dataclass
class RewardTerm:
    name: str
    scorer: Scorer
    weight: float
    segments: tuple[str, ...]
    on_error: str = "raise"
    timeout_s: float | None = None
    scale_rewards: str | None = None  # None: the RewardTerms' own (normalize_then_sum only)

    def __post_init__(self) -> None:
        if self.on_error not in ON_ERROR:
            raise ValueError(f"reward term {self.name!r}: on_error must be one of {ON_ERROR}, got {self.on_error!r}")
        self.segments = tuple(self.segments)


@dataclass
class Rewards:
    """What one batch's rewards came to. Arrays are over the kept trajectories, in input order."""

    ids: list[str]
    groups: list[str]
    kept: np.ndarray  # (N,) int: index of each kept trajectory in the input batch
    raw: dict[str, np.ndarray]  # term -> (N,) raw scores
    normalized: dict[str, np.ndarray]  # term -> (N,) group-normalised scores
    advantages: dict[str, np.ndarray]  # segment -> (N,)
    details: dict[str, list[dict] | None]  # term -> per kept trajectory, or None
    dropped_groups: dict[str, list[str]] = field(default_factory=dict)  # term -> groups its failures dropped
    errors: dict[str, list[str]] = field(default_factory=dict)  # term -> messages of the dropped failures
    seconds: dict[str, float] = field(default_factory=dict)  # term -> wall time
    # Groups (scored without failure) in which no advantage can be non-zero; removed from the arrays
    # above when `zero_spread_dropped`, otherwise kept with advantage 0.
    zero_spread_groups: list[str] = field(default_factory=list)
    zero_spread_dropped: bool = False

    @property
    def num_dropped_groups(self) -> int:
        return len({group for groups in self.dropped_groups.values() for group in groups})

    def rows(self) -> list[dict[str, Any]]:
        """One dict per kept trajectory: id, group, each term's raw and normalised score, each advantage."""
        rows = []
        for i, (sample, group) in enumerate(zip(self.ids, self.groups)):
            row: dict[str, Any] = {"id": sample, "group": group}
            for term in self.raw:
                row[f"reward/{term}"] = float(self.raw[term][i])
                row[f"reward/{term}/normalized"] = float(self.normalized[term][i])
                if self.details[term] is not None:
                    row[f"reward/{term}/details"] = self.details[term][i]
            for segment, values in self.advantages.items():
                row[f"advantage/{segment}"] = float(values[i])
            rows.append(row)
        return rows

    def metrics(self) -> dict[str, float]:
        """Scalars for the logs: per term mean/std of raw scores, seconds and dropped groups; groups
        with zero spread (counted whether or not they were dropped) and those dropped for it."""
        zero_spread = len(self.zero_spread_groups)
        out: dict[str, float] = {
            "rewards/num_samples": len(self.ids),
            "rewards/dropped_groups": self.num_dropped_groups,
            "rewards/zero_spread_groups": zero_spread,
            "rewards/dropped_zero_spread_groups": zero_spread if self.zero_spread_dropped else 0,
        }
        for term, values in self.raw.items():
            out[f"reward/{term}/mean"] = float(values.mean()) if len(values) else math.nan
            out[f"reward/{term}/std"] = float(values.std()) if len(values) else math.nan
            out[f"reward/{term}/seconds"] = self.seconds.get(term, 0.0)
            out[f"reward/{term}/dropped_groups"] = len(self.dropped_groups.get(term, []))
        return out


def _chunks(groups: dict[str, list[int]], parts: int) -> list[list[int]]:
    """Split the batch into at most `parts` lists of sample indices, each of whole groups."""
    order = list(groups.values())
    parts = max(1, min(parts, len(order)))
    bounds = np.linspace(0, len(order), parts + 1).round().astype(int)
    return [[i for members in order[a:b] for i in members] for a, b in itertools.pairwise(bounds) if b > a]


class RewardTerms:
    """The reward terms of a run; call on a batch of trajectories to get `Rewards`."""

    def __init__(
        self,
        terms: Sequence[RewardTerm],
        multi_objective_aggregation: str = "normalize_then_sum",
        scale_rewards: str = "group",
        advantage_estimator: str = "grpo",
        drop_zero_spread_groups: bool = False,
    ):
        if not terms:
            raise ValueError("no reward terms given")
        names = [term.name for term in terms]
        if len(set(names)) != len(names):
            raise ValueError(f"reward term names repeat: {names}")
        if multi_objective_aggregation not in AGGREGATIONS:
            raise ValueError(f"multi_objective_aggregation must be one of {AGGREGATIONS}")
        check_estimator(advantage_estimator, scale_rewards)
        for term in terms:
            check_term_scale(
                term.scale_rewards, multi_objective_aggregation, advantage_estimator, f"reward term {term.name!r}: "
            )
        self.terms = list(terms)
        self.aggregation, self.scale_rewards = multi_objective_aggregation, scale_rewards
        self.advantage_estimator, self.drop_zero_spread_groups = advantage_estimator, bool(drop_zero_spread_groups)

    @classmethod
    def from_config(cls, config: RewardConfig) -> RewardTerms:
        """Check every term's scorer spec, then build them (models load only after all checks pass)."""
        config.__post_init__()  # a config built by hand gets the same checks as a composed one
        for name, term in config.terms.items():
            resolve_scorer_spec(term.scorer, f"reward.terms.{name}.scorer")
        terms = [
            RewardTerm(
                name=name,
                scorer=build_scorer(term.scorer, f"reward.terms.{name}.scorer"),
                weight=term.weight,
                segments=tuple(term.segments),
                on_error=term.on_error,
                timeout_s=term.timeout_s,
                scale_rewards=term.scale_rewards,
            )
            for name, term in config.terms.items()
        ]
        return cls(
            terms,
            config.multi_objective_aggregation,
            config.scale_rewards,
            config.advantage_estimator,
            config.drop_zero_spread_groups,
        )

    # -- scoring ---------------------------------------------------------------------------------

    def _score(
        self, term: RewardTerm, trajectories: Sequence[Trajectory], groups: dict[str, list[int]]
    ) -> tuple[np.ndarray, list[dict] | None, list[ScorerError]]:
        """Raw scores (N,) (NaN where failed), details, and the failures."""
        scorer_name = class_path(type(term.scorer))
        scores = np.full(len(trajectories), np.nan)
        details: list[dict] | None = [{} for _ in trajectories]
        failures: list[ScorerError] = []

        def fail(indices: Sequence[int], reason: str, cause: BaseException | None = None) -> None:
            error = ScorerError(term.name, scorer_name, [trajectories[i].id for i in indices], reason)
            error.__cause__ = cause
            failures.append(error)

        chunks = _chunks(groups, term.scorer.max_concurrency)
        executor = ThreadPoolExecutor(max_workers=len(chunks), thread_name_prefix=f"reward-{term.name}")
        deadline = None if term.timeout_s is None else time.monotonic() + term.timeout_s
        try:
            futures = [executor.submit(term.scorer.score, [trajectories[i] for i in chunk]) for chunk in chunks]
            for future, chunk in zip(futures, chunks):
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                try:
                    batch = future.result(timeout=remaining)
                except FutureTimeout:
                    fail(chunk, f"timed out after {term.timeout_s}s")
                    continue
                except Exception as error:  # noqa: BLE001 - any scorer failure is reported, with its cause
                    fail(chunk, f"raised {type(error).__name__}: {error}", error)
                    continue
                if not isinstance(batch, ScoreBatch):
                    fail(chunk, f"returned a {type(batch).__name__}, not a ScoreBatch")
                    continue
                try:
                    values = np.asarray(batch.scores, dtype=np.float64)
                except (TypeError, ValueError) as error:
                    fail(chunk, f"returned scores that are not floats: {error}", error)
                    continue
                if values.shape != (len(chunk),):
                    fail(chunk, f"returned {values.shape} scores for {len(chunk)} samples")
                    continue
                if batch.details is not None and len(batch.details) != len(chunk):
                    fail(chunk, f"returned {len(batch.details)} details for {len(chunk)} samples")
                    continue
                bad = ~np.isfinite(values)
                if bad.any():
                    fail([i for i, b in zip(chunk, bad) if b], f"returned non-finite scores {values[bad].tolist()}")
                scores[chunk] = np.where(bad, np.nan, values)
                if batch.details is None:
                    details = None
                elif details is not None:
                    for i, detail in zip(chunk, batch.details):
                        details[i] = dict(detail)
        finally:
            executor.shutdown(wait=False, cancel_futures=True)
        return scores, details, failures

    def __call__(self, trajectories: Sequence[Trajectory]) -> Rewards:
        """Score `trajectories` with every term; see the module doc for normalisation and failures."""
        if not trajectories:
            raise ValueError("no trajectories to score")
        ids = [t.id for t in trajectories]
        if len(set(ids)) != len(ids):
            raise ValueError(f"trajectory ids repeat in the batch: {sorted({i for i in ids if ids.count(i) > 1})}")
        groups: dict[str, list[int]] = {}
        for index, trajectory in enumerate(trajectories):
            groups.setdefault(trajectory.group, []).append(index)

        raw, details, seconds = {}, {}, {}
        dropped: dict[str, list[str]] = {}
        errors: dict[str, list[str]] = {}
        for term in self.terms:
            start = time.perf_counter()
            raw[term.name], details[term.name], failures = self._score(term, trajectories, groups)
            seconds[term.name] = time.perf_counter() - start
            if failures and term.on_error == "raise":
                raise failures[0]  # carries the scorer's own exception as __cause__
            if failures:
                failed = {sample for failure in failures for sample in failure.sample_ids}
                bad = {t.group for t in trajectories if t.id in failed}
                dropped[term.name] = sorted(bad)
                errors[term.name] = [str(failure) for failure in failures]

        lost = {group for groups_ in dropped.values() for group in groups_}
        kept = np.array([i for i, t in enumerate(trajectories) if t.group not in lost], dtype=np.int64)
        kept_groups = [trajectories[i].group for i in kept]
        raw = {name: values[kept] for name, values in raw.items()}
        for name, values in raw.items():  # the guarantee, checked: no failed score survives
            assert np.isfinite(values).all(), f"reward term {name!r}: a failed score reached the result"
        if self.advantage_estimator == "rloo":  # before dropping: a group of one is a config error, not "no spread"
            check_loo_groups(np.asarray(kept_groups))

        segments = list(dict.fromkeys(s for term in self.terms for s in term.segments))
        training = {segment: [term for term in self.terms if segment in term.segments] for segment in segments}
        if self.aggregation == "normalize_then_sum":
            sources = [raw[term.name] for term in self.terms if term.weight != 0]
        else:
            sources = [sum(term.weight * raw[term.name] for term in training[s]) for s in segments]
        zero_spread = zero_spread_groups(sources, kept_groups)
        if self.drop_zero_spread_groups and zero_spread:
            keep = np.array([group not in zero_spread for group in kept_groups])
            kept, raw = kept[keep], {name: values[keep] for name, values in raw.items()}
            kept_groups = [trajectories[i].group for i in kept]

        group_index = np.asarray(kept_groups)
        details = {name: None if d is None else [d[i] for i in kept] for name, d in details.items()}
        scales = {term.name: term.scale_rewards or self.scale_rewards for term in self.terms}
        normalized = {name: self._normalize(values, group_index, scales[name]) for name, values in raw.items()}
        advantages: dict[str, np.ndarray] = {}
        for segment in segments:
            if self.aggregation == "normalize_then_sum":
                advantages[segment] = sum(term.weight * normalized[term.name] for term in training[segment])
            else:
                summed = sum(term.weight * raw[term.name] for term in training[segment])
                advantages[segment] = self._normalize(summed, group_index, self.scale_rewards)
        return Rewards(
            ids=[trajectories[i].id for i in kept],
            groups=kept_groups,
            kept=kept,
            raw=raw,
            normalized=normalized,
            advantages=advantages,
            details=details,
            dropped_groups=dropped,
            errors=errors,
            seconds=seconds,
            zero_spread_groups=zero_spread,
            zero_spread_dropped=self.drop_zero_spread_groups,
        )

    def _normalize(self, values: np.ndarray, group_index: np.ndarray, scale_rewards: str) -> np.ndarray:
        return normalize(values, group_index, scale_rewards, self.advantage_estimator)
