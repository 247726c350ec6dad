"""Group-relative advantages: one value per trajectory from the values of its group (DESIGN.md sections 5-6).

`normalize` turns values (N,) — one term's raw scores, or a segment's weighted sum of them — into
advantages within groups (the trajectories of one prompt). Two choices, named as TRL/verl name them:

- `advantage_estimator`, the baseline subtracted from r_i:
    "grpo"    the group mean (GRPO);
    "dr_grpo" the group mean, never divided by a std (Dr. GRPO). It is `grpo` with
              `scale_rewards: none`, spelt as the paper spells it; with any other `scale_rewards`
              the two settings contradict each other, which is an error, not a silent override;
    "rloo"    the mean of the *other* members, r_i - (sum_j r_j - r_i) / (n - 1) (REINFORCE
              leave-one-out; = n / (n - 1) times the mean-centred value). A group of one has no
              other member: an error naming the group.
- `scale_rewards`, the division after subtracting the baseline (TRL's name): "group" by the
  group's std, "batch" by the std of all N values (both unbiased, + 1e-4, as TRL), "none" not at all.

A group whose values are all equal gets exactly 0 under every estimator (no rounding residue).
`zero_spread_groups` finds the groups in which every given value source is constant: DAPO's
dynamic sampling drops them, since they cannot move the policy.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

ADVANTAGE_ESTIMATORS = ("grpo", "dr_grpo", "rloo")
SCALE_REWARDS = ("group", "batch", "none")
EPS = 1e-4  # added to the std before dividing, as TRL does


def check_estimator(advantage_estimator: str, scale_rewards: str, where: str = "") -> None:
    """Reject an unknown estimator or scale, or a combination that contradicts itself.

    `where` prefixes the key names in the message (e.g. "reward." for the run config)."""
    if advantage_estimator not in ADVANTAGE_ESTIMATORS:
        raise ValueError(
            f"{where}advantage_estimator must be one of {ADVANTAGE_ESTIMATORS}, got {advantage_estimator!r}"
        )
    if scale_rewards not in SCALE_REWARDS:
        raise ValueError(f"{where}scale_rewards must be one of {SCALE_REWARDS}, got {scale_rewards!r}")
    if advantage_estimator == "dr_grpo" and scale_rewards != "none":
        raise ValueError(
            f"{where}advantage_estimator='dr_grpo' never divides by a std, but {where}scale_rewards={scale_rewards!r}; "
            f"set {where}scale_rewards=none (or use {where}advantage_estimator=grpo to scale)"
        )


def check_loo_groups(group_index: np.ndarray) -> None:
    """RLOO needs another member in every group: name the first group that has only one."""
    labels, counts = np.unique(np.asarray(group_index), return_counts=True)
    lonely = labels[counts < 2]
    if len(lonely):
        raise ValueError(
            f"advantage_estimator='rloo' needs at least 2 trajectories per group (num_generations >= 2); "
            f"group {lonely[0].item()!r} has 1"
        )


def normalize(
    values: np.ndarray,
    group_index: np.ndarray,
    scale_rewards: str = "group",
    advantage_estimator: str = "grpo",
) -> np.ndarray:
    """Advantages (N,) float64 of `values` (N,) within the groups `group_index` (N,) labels (ints or
    names; a name appears in errors). See the module doc for the estimators and scales."""
    check_estimator(advantage_estimator, scale_rewards)
    values = np.asarray(values, dtype=np.float64)
    group_index = np.asarray(group_index)
    if advantage_estimator == "rloo":
        check_loo_groups(group_index)
    out = np.zeros_like(values)
    batch_std = values.std(ddof=1) if len(values) > 1 else 0.0
    for g in np.unique(group_index):
        member = group_index == g
        group = values[member]
        if group.max() == group.min():
            continue  # zero spread: exactly 0
        if advantage_estimator == "rloo":
            centered = group - (group.sum() - group) / (len(group) - 1)
        else:
            centered = group - group.mean()
        if scale_rewards == "group":
            centered = centered / (group.std(ddof=1) + EPS)
        elif scale_rewards == "batch":
            centered = centered / (batch_std + EPS)
        out[member] = centered
    return out


def zero_spread_groups(sources: Iterable[np.ndarray], groups: Sequence[str]) -> list[str]:
    """The groups (in first-seen order) in which every source (N,) is constant.

    With no source at all every group qualifies: nothing can give it a non-zero advantage."""
    sources = [np.asarray(source, dtype=np.float64) for source in sources]
    labels = np.asarray(groups)
    out = []
    for group in dict.fromkeys(groups):
        member = labels == group
        if all(source[member].max() == source[member].min() for source in sources):
            out.append(group)
    return out
