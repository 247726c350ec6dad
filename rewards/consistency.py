"""`self_consistency`: does the model's own verdict on its image agree with a judge?

Janus-Pro-R1's self-evaluation reward, `1 - |judge - self|`, where `judge` is any other scorer
(the shapes verifier, a yes/no VLM judge, ...) whose scores lie in [0, 1], and `self` is what the
model said about the same image:

- `self_source: p_yes` — P(Yes) of the self-check's first answer token, recorded by the rollout
  in `trajectory.info["p_yes"]`;
- `self_source: verdict` — the verdict segment's text parsed as Yes (1) or No (0);
- `self_source: answer` — the answer the self-check drew (the verdict's text starts with " Yes" or
  " No"), Yes (1) or No (0), whatever follows it: the self-check program's `answer_only` verdicts,
  which are the answer alone.

A verdict that does not parse has no Yes/No to compare: by default that is an error naming the
sample; `unparsed_score` sets an explicit score for it instead (a format penalty).

`balance_classes` weights each sample by the inverse frequency of its image's class under the
judge (matches / does not match), so that a constant answer earns exactly what its opposite earns.
Without it, a self-check that cannot tell the classes apart earns most by giving the majority
answer to everything, and the policy gradient drives it there (the shapes recipe's RL did: P(yes)
< 0.5 for every image, balanced accuracy exactly 50%). Two scopes:

- `batch`: the frequencies of the whole batch scored (its mean is then the balanced agreement).
  An answer that follows the *prompt* still pays: a category the policy mostly fails is answered
  No, one it mostly draws right Yes — the shapes recipe's RL learned exactly that (own P(yes) AUC
  0.41 -> 0.80 pooled, 0.45 -> 0.57 within a category, held-out at chance; README "Ninth round").
- `group`: the frequencies within each group (the images of one prompt); a group whose images
  are all of one class weighs 0, since all it can teach is its prompt's prior. What differs
  between images of the same prompt is then the only thing that pays: for an answer that ignores
  the image the expected policy-gradient push is exactly zero in every group.
- `tag`: the frequencies within each prompt category (`metadata["tag"]`, the GenEval category of
  a shapes prompt); a category whose images are all of one class weighs 0. Knowing which
  categories the policy fails earns nothing; unlike `group`, knowing which prompts of a category
  it fails still pays, and a prompt whose images are all of one class still teaches.

Each needs a yes/no judge (scores 0 or 1) and a term whose advantages are not divided by the
group's std (`scale_rewards: batch` or `none` on the term): the std of a group is computed from
the sampled answers, so dividing by it brings back a push towards the group's majority answer.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence

from coevolve.model.introspection import parse_verdict
from coevolve.trajectory import VERDICT, Trajectory
from rewards.base import ScoreBatch, Scorer, build_scorer, register_scorer

SELF_SOURCES = ("p_yes", "verdict", "answer")
# The answer token is drawn among " Yes"/" No"; a reason, if any, follows it with no separator of
# its own (" Yes" + "w" decodes to " Yesw"): the answer is the prefix, not a word.
_ANSWER = re.compile(r"\s*(Yes|No)")
BALANCE_SCOPES = ("none", "batch", "group", "tag")


@register_scorer("self_consistency")
class SelfConsistency(Scorer):
    """`1 - |judge - self|` per trajectory.

    Args:
        judge: a scorer spec (`{name: ...}` or `{_target_: ...}`) or a built scorer; its scores
            must lie in [0, 1] (1 = the image matches the prompt).
        self_source: "p_yes" (`info["p_yes"]`), "verdict" (the parsed verdict segment) or "answer"
            (the Yes/No the verdict starts with).
        unparsed_score: with `self_source: verdict`, the score of a verdict that does not parse;
            None (default) makes such a verdict an error.
        balance_classes: "none", or weight each score by n / (k * n_c), n_c the number of samples
            of its image's class among the n of its scope ("batch": all scored; "group": its
            prompt's group, "tag": its prompt's category, where k = 1 weighs 0), k the number of
            classes there (module doc).
    """

    nested_scorers = ("judge",)
    # The class frequencies of `balance_classes` are those of the whole batch or of whole groups:
    # never score parts.
    max_concurrency = 1

    def __init__(
        self,
        judge: Mapping | Scorer,
        self_source: str = "p_yes",
        unparsed_score: float | None = None,
        balance_classes: str = "none",
    ):
        if self_source not in SELF_SOURCES:
            raise ValueError(f"self_consistency: self_source must be one of {SELF_SOURCES}, got {self_source!r}")
        if unparsed_score is not None and self_source != "verdict":
            raise ValueError("self_consistency: unparsed_score applies to self_source 'verdict' only")
        if unparsed_score is not None and not math.isfinite(unparsed_score):
            raise ValueError(f"self_consistency: unparsed_score must be finite, got {unparsed_score}")
        self.judge = build_scorer(judge, "self_consistency.judge")
        if balance_classes not in BALANCE_SCOPES:
            raise ValueError(f"self_consistency: balance_classes must be one of {BALANCE_SCOPES}, got {balance_classes!r}")
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
        if self.self_source == "answer":
            found = _ANSWER.match(trajectory.text(VERDICT))
            if found is None:  # the self-check draws its first token among Yes/No: not one of its verdicts
                raise ValueError(
                    f"trajectory {trajectory.id!r}: verdict {trajectory.text(VERDICT)!r} does not start with Yes or No"
                )
            return 1.0 if found.group(1) == "Yes" else 0.0
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
        balanced = self.balance_classes != "none"
        weights = self._class_weights(trajectories, judge_scores) if balanced else [1.0] * len(trajectories)
        scores, details = [], []
        for own, judge, weight in zip(selves, judge_scores, weights):
            agreement = self.unparsed_score if own is None else 1.0 - abs(judge - own)
            scores.append(weight * agreement)
            details.append({"judge": judge, "self": own} | ({"weight": weight} if balanced else {}))
        return ScoreBatch(scores, details)

    def _class_weights(self, trajectories: Sequence[Trajectory], judge_scores: Sequence[float]) -> list[float]:
        graded = [t.id for t, s in zip(trajectories, judge_scores) if s not in (0.0, 1.0)]
        if graded:
            raise ValueError(
                f"self_consistency: balance_classes needs a yes/no judge (scores 0 or 1); judge {self.judge!r} "
                f"gave graded scores for {graded}"
            )
        if self.balance_classes == "group":
            scopes = [t.group for t in trajectories]
        elif self.balance_classes == "tag":
            untagged = [t.id for t in trajectories if t.metadata.get("tag") is None]
            if untagged:
                raise ValueError(
                    f"self_consistency: balance_classes 'tag' needs metadata['tag'] (the prompt's category); "
                    f"trajectories {untagged} have none"
                )
            scopes = [t.metadata["tag"] for t in trajectories]
        else:
            scopes = [None] * len(trajectories)
        return class_balance_weights(scopes, judge_scores, one_class_weighs_zero=self.balance_classes != "batch")


def class_balance_weights(scopes: Sequence, labels: Sequence, one_class_weighs_zero: bool) -> list[float]:
    """Per sample, n / (k * n_c): n the samples of its scope, k the classes present there, n_c
    those of its class — so within each scope every class weighs the same in all. With
    `one_class_weighs_zero`, a scope holding a single class weighs 0 (all it can teach is its prior)."""
    counts = Counter(zip(scopes, labels))
    classes = Counter(scope for scope, _ in counts)  # the number of classes present in each scope
    sizes = Counter(scopes)
    weights = []
    for scope, label in zip(scopes, labels):
        if one_class_weighs_zero and classes[scope] == 1:
            weights.append(0.0)
        else:
            weights.append(sizes[scope] / (classes[scope] * counts[scope, label]))
    return weights
