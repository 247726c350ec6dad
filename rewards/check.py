"""The reward designer's sanity check (`coevolve rewards`): do the terms rank right on known pairs?

A seeded set of shapes pairs, one group per pair, cycling over the GenEval categories. Both
trajectories of a pair answer the same prompt with the same plan:

- positive: the ground-truth render that satisfies the prompt, the honest verdict (Yes,
  `info["p_yes"] = 1`), its caption; `source_image` is the render itself, so a reconstruction
  term compares a render with itself;
- negative: the labelled violation of the prompt (`sample_example(..., satisfies=False)`) with
  the same Yes verdict — the self-check of a model that always says Yes — and its caption;
  `source_image` is the positive's render, so a reconstruction term compares two different renders.

Every term should score the positive above the negative. The report gives per term the mean raw
score on positives and on negatives, the fraction of pairs where the positive outranks its
negative (and the ties), the same per GenEval category, and each segment's mean advantage on
positives and negatives.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from coevolve.data.shapes import TAGS, derive_seed, sample_example
from coevolve.model.introspection import YES_VERDICT
from coevolve.trajectory import CAPTION, IMAGE, PLAN, VERDICT, Segment, Trajectory
from rewards.shapes_verifier import GENEVAL
from rewards.terms import RewardTerms

POSITIVE, NEGATIVE = "positive", "negative"


def shapes_pairs(num_pairs: int, seed: int) -> list[Trajectory]:
    """`2 * num_pairs` trajectories: pair i is group `pair{i}`, positive first (see the module doc)."""
    out = []
    for i in range(num_pairs):
        tag = TAGS[i % len(TAGS)]
        positive = sample_example(derive_seed(seed, i), tag, satisfies=True)
        negative = sample_example(derive_seed(seed, i), tag, satisfies=False)
        source = positive.render()
        for role, example in ((POSITIVE, positive), (NEGATIVE, negative)):
            out.append(
                Trajectory(
                    id=f"pair{i}/{role}",
                    group=f"pair{i}",
                    prompt=positive.prompt,
                    program="check",
                    segments=[
                        Segment(PLAN, "text", text=" " + positive.plan),
                        Segment(IMAGE, "image", image=source if role == POSITIVE else example.render()),
                        Segment(VERDICT, "text", text=YES_VERDICT),
                        Segment(CAPTION, "text", text=" " + example.caption),
                    ],
                    metadata={GENEVAL: positive.metadata, "tag": tag, "role": role},
                    source_image=source,
                    info={"p_yes": 1.0},
                )
            )
    return out


def _ranking(pos: np.ndarray, neg: np.ndarray) -> dict[str, Any]:
    return {
        "n": len(pos),
        "positive_outranks_negative": float((pos > neg).mean()) if len(pos) else None,
        "ties": float((pos == neg).mean()) if len(pos) else None,
    }


def check_report(terms: RewardTerms, trajectories: list[Trajectory]) -> dict[str, Any]:
    """Score `shapes_pairs` output with `terms` and summarise how each term ranks the pairs."""
    rewards = terms(trajectories)
    roles = [trajectories[i].metadata["role"] for i in rewards.kept]
    tags = [trajectories[i].metadata["tag"] for i in rewards.kept]
    pos = np.array([r == POSITIVE for r in roles])
    neg = ~pos
    pair_tags = [tag for tag, p in zip(tags, pos) if p]
    report: dict[str, Any] = {
        "num_pairs": int(pos.sum()),
        "dropped_groups": rewards.num_dropped_groups,
        "terms": {},
        "advantages": {},
    }
    for name, values in rewards.raw.items():
        p, n = values[pos], values[neg]  # pairs are adjacent and positive-first, so p[k] pairs with n[k]
        per_tag = {
            tag: _ranking(p[[t == tag for t in pair_tags]], n[[t == tag for t in pair_tags]])
            for tag in dict.fromkeys(pair_tags)
        }
        report["terms"][name] = {
            "mean_positive": float(p.mean()),
            "mean_negative": float(n.mean()),
            **_ranking(p, n),
            "per_category": per_tag,
            "seconds": round(rewards.seconds[name], 3),
            "dropped_groups": rewards.dropped_groups.get(name, []),
        }
    for segment, values in rewards.advantages.items():
        report["advantages"][segment] = {
            "mean_positive": float(values[pos].mean()),
            "mean_negative": float(values[neg].mean()),
        }
    return report
