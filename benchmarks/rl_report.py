"""Co-evolution figures of `coevolve rl` runs: SFT (step 0) vs the end of each run, mean and spread over seeds.

Each run directory is one seed of one configuration; its `rl/summary.json` holds the `coevolve eval`
scalars at step 0 (the SFT checkpoint, with `rl.eval_steps` > 0) and at the end of the stage.
Runs are grouped by `--label` (one `--runs ... --label NAME` pair per configuration):

    python benchmarks/rl_report.py --runs runs/s0 runs/s1 runs/s2 --label full \
        --runs runs/nosc0 --label "no self-consistency"

Prints, per configuration and metric, the SFT value, the final mean ± std over seeds and the
per-seed values (JSON with --json).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

METRICS = (
    "eval/image_accuracy",
    "eval/final_image_accuracy",
    "eval/verdict_accuracy_own/p_yes",
    "eval/verdict_accuracy_own/text",
    "eval/verdict_accuracy_own/p_yes/balanced_accuracy",
    "eval/verdict_accuracy_own/text/balanced_accuracy",
    "eval/verdict_accuracy_own/p_yes/auc",
    "eval/verdict_accuracy_own/p_yes/auc_within_category",
    "eval/verdict_accuracy_heldout/p_yes/auc",
    "eval/verdict_accuracy_heldout/p_yes",
    "eval/verdict_accuracy_heldout/text",
    "eval/caption_accuracy",
    "eval/caption_objects",
    "eval/caption_shapes",
    "eval/reconstruction",
    "eval/format_rate",
)
CATEGORIES = ("single_object", "two_object", "counting", "colors", "position", "color_attr")


def load(run: Path) -> tuple[dict, dict]:
    summary = json.loads((run / "rl" / "summary.json").read_text())
    evals = summary["eval"]
    steps = sorted(int(step) for step in evals)
    if steps[0] != 0:
        raise ValueError(f"{run}: no step-0 evaluation (run with rl.eval_steps > 0)")
    return evals["0"], evals[str(steps[-1])]


def report(groups: list[tuple[str, list[Path]]]) -> dict:
    out = {}
    for label, runs in groups:
        pairs = [load(run) for run in runs]
        keys = [*METRICS, *(f"eval/image_accuracy/{c}" for c in CATEGORIES),
                *(f"eval/final_image_accuracy/{c}" for c in CATEGORIES)]  # fmt: skip
        rows = {}
        for key in keys:
            start = [before[key] for before, _ in pairs if key in before]
            end = [after[key] for _, after in pairs if key in after]
            if not end:
                continue
            rows[key] = {
                "sft": statistics.mean(start) if start else None,
                "rl_mean": statistics.mean(end),
                "rl_std": statistics.stdev(end) if len(end) > 1 else 0.0,
                "per_seed": end,
            }
        out[label] = {"runs": [str(run) for run in runs], "metrics": rows}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", action="append", required=True, type=Path)
    parser.add_argument("--label", action="append", required=True)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if len(args.runs) != len(args.label):
        parser.error("give one --label per --runs")
    result = report(list(zip(args.label, args.runs)))
    if args.json:
        print(json.dumps(result, indent=2))
        return
    for label, group in result.items():
        print(f"== {label} ({len(group['runs'])} runs)")
        for key, row in group["metrics"].items():
            seeds = " ".join(f"{v:.3f}" for v in row["per_seed"])
            sft = "-" if row["sft"] is None else f"{row['sft']:.3f}"
            print(f"{key:45s} sft {sft}  rl {row['rl_mean']:.3f} ± {row['rl_std']:.3f}  [{seeds}]")


if __name__ == "__main__":
    main()
