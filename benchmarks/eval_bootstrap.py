"""How much of an RL − SFT difference in the own verdicts' AUC within a category is the eval's noise?

Two `coevolve eval` run directories of the same eval prompts (same `seed` and sizes: the rows of
their `trajectories.jsonl` pair up by prompt) — typically an SFT checkpoint and the RL checkpoint
trained from it. Prints the difference in P(yes)'s AUC within a category (the eval's
`auc_within_category`) and, resampling the prompts with replacement (the same draw for both),
its standard deviation and 95% interval.

    python benchmarks/eval_bootstrap.py --base runs/evalsft --other runs/evalrl
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from coevolve.eval.shapes import p_yes_auc


def eval_rows(run_dir: str) -> list[dict]:
    found = sorted(Path(run_dir).glob("eval/*/trajectories.jsonl"))
    if len(found) != 1:
        raise SystemExit(f"{run_dir}: expected one eval/*/trajectories.jsonl, found {len(found)}")
    return [json.loads(line) for line in found[0].read_text().splitlines()]


def within(rows: list[dict], picks: np.ndarray) -> float:
    chosen = [rows[i] for i in picks]
    return p_yes_auc([r["p_yes"] for r in chosen], [r["image_correct"] for r in chosen], [r["tag"] for r in chosen])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the eval run directory subtracted (e.g. the SFT checkpoint's)")
    parser.add_argument("--other", required=True, help="the eval run directory compared (e.g. the RL checkpoint's)")
    parser.add_argument("--resamples", type=int, default=1000)
    args = parser.parse_args()
    base, other = eval_rows(args.base), eval_rows(args.other)
    if [r["prompt"] for r in base] != [r["prompt"] for r in other]:
        raise SystemExit(f"{args.base} and {args.other} did not evaluate the same prompts in the same order")
    everything = np.arange(len(base))
    difference = within(other, everything) - within(base, everything)
    rng = np.random.default_rng(0)
    draws = []
    for _ in range(args.resamples):
        picks = rng.integers(0, len(base), len(base))
        draws.append(within(other, picks) - within(base, picks))
    low, high = np.percentile(draws, [2.5, 97.5])
    print(f"{len(base)} prompts: own P(yes) AUC within a category {difference:+.3f}, bootstrap sd "
          f"{np.std(draws):.3f}, 95% interval [{low:+.3f}, {high:+.3f}]")  # fmt: skip


if __name__ == "__main__":
    main()
