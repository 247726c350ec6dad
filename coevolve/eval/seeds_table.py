"""The README's results table: `coevolve pipeline` over seeds, untrained / SFT / RL, mean ± std.

Each argument is the run directory of one `coevolve pipeline seed=S run_dir=DIR`; its
`pipeline.json` holds the eval figures of the three checkpoints and each stage's wall time:

    for s in 0 1 2; do coevolve pipeline seed=$s run_dir=runs/seed$s; done
    python -m coevolve.eval.seeds_table runs/seed0 runs/seed1 runs/seed2

Prints a Markdown table (percent; reconstruction as a score in [0, 1]) whose last column is the
paired difference RL − SFT (mean ± std over seeds: the seeds share nothing, so the spread of the
difference is the noise a gain has to clear), then each stage's wall time, then the per-seed
values as JSON with --json.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

CHECKPOINTS = ("tiny", "sft", "rl")
TAGS = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
METRICS = (
    ("image accuracy, first image", lambda f: f["image_accuracy"]["accuracy"]),
    *((f"… {tag}", lambda f, tag=tag: f["image_accuracy"]["per_category"][tag]["accuracy"]) for tag in TAGS),
    ("image accuracy, final image", lambda f: f["final_image_accuracy"]["accuracy"]),
    ("own verdicts vs verifier, P(yes) > 0.5", lambda f: f["verdict_accuracy_own"]["p_yes"]["accuracy"]),
    ("own verdicts vs verifier, verdict text", lambda f: f["verdict_accuracy_own"]["text"]["accuracy"]),
    # Balanced: the mean of the accuracy on accepted and on rejected images (0.5 for a judge that
    # always gives one answer, whatever the share of bad images).
    ("own verdicts, P(yes), balanced", lambda f: f["verdict_accuracy_own"]["p_yes"]["balanced_accuracy"]),
    ("own verdicts, verdict text, balanced", lambda f: f["verdict_accuracy_own"]["text"]["balanced_accuracy"]),
    # AUC: does P(yes) rank accepted images above rejected ones, wherever the 0.5 threshold sits
    ("own verdicts, P(yes) AUC", lambda f: f["verdict_accuracy_own"]["p_yes"].get("auc")),
    # … over pairs of one category: what knowing which prompts one fails cannot raise
    ("own verdicts, P(yes) AUC within a category", lambda f: f["verdict_accuracy_own"]["p_yes"].get("auc_within_category")),
    ("held-out verdicts, P(yes) > 0.5", lambda f: f["verdict_accuracy_heldout"]["p_yes"]["accuracy"]),
    ("held-out verdicts, P(yes) AUC", lambda f: f["verdict_accuracy_heldout"]["p_yes"].get("auc")),
    ("caption accuracy", lambda f: f["caption_accuracy"]["accuracy"]),
    # .get: records written before these figures existed show n/a
    ("captions naming the objects", lambda f: f.get("caption_objects", {}).get("accuracy")),
    ("captions naming the shapes", lambda f: f.get("caption_shapes", {}).get("accuracy")),
    ("full introspective format", lambda f: f["format_rate"]["rate"]),
    ("reconstruction score", lambda f: f["reconstruction"]["mean_similarity"]),
    # the caption drawn by the world's renderer (a frozen decoder that follows captions)
    ("caption reconstruction (renderer)", lambda f: (f.get("caption_reconstruction") or {}).get("mean_similarity")),
)
STAGES = ("bootstrap", "demo", "sft", "rl", "eval_tiny", "eval_sft", "eval_rl", "report")


def load(run: Path) -> dict:
    path = run / "pipeline.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not a finished `coevolve pipeline` run directory")
    record = json.loads(path.read_text())
    if "eval" not in record:
        raise ValueError(f"{path}: the pipeline has not reached its end (no eval figures)")
    return record


def _spread(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def table(records: list[dict]) -> tuple[str, dict]:
    """(Markdown, per-seed values) for the pipeline records of several seeds."""
    seeds = [record["seed"] for record in records]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"two runs share a seed: {seeds}")
    percent = lambda label: "reconstruction" not in label
    lines = [
        f"| metric (mean ± std over seeds {', '.join(map(str, seeds))}) | untrained | SFT | RL | RL − SFT |",
        "| --- | --- | --- | --- | --- |",
    ]
    values = {}
    for label, get in METRICS:
        per = {name: [get(record["eval"][name]) for record in records] for name in CHECKPOINTS}
        per["rl - sft"] = [None if None in (rl, sft) else rl - sft for rl, sft in zip(per["rl"], per["sft"])]
        values[label] = per
        scale, fmt = (100, "{:.1f}") if percent(label) else (1, "{:.3f}")
        cells = []
        for name in (*CHECKPOINTS, "rl - sft"):
            # None: undefined for that seed (a balanced accuracy when the verifier accepted none of
            # the checkpoint's images); the cell then says over how many seeds it is taken.
            defined = [value for value in per[name] if value is not None]
            if not defined:
                cells.append("n/a")
                continue
            mean, std = _spread(defined)
            sign = "+" if name == "rl - sft" and mean > 0 else ""
            note = "" if len(defined) == len(records) else f" ({len(defined)} seed{'s' if len(defined) > 1 else ''})"
            cells.append(f"{sign}{fmt.format(scale * mean)} ± {fmt.format(scale * std)}{note}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "| stage | wall time, min (per seed) |", "| --- | --- |"]
    times = {}
    for stage in STAGES:
        entries = [record["stages"].get(stage) for record in records]
        times[stage] = entries
        cells = [
            "not timed (reused)" if entry is None else f"{entry['seconds'] / 60:.1f}" + (" (resumed)" if entry.get("resumed") else "")
            for entry in entries
        ]
        lines.append(f"| {stage} | " + " / ".join(cells) + " |")
    return "\n".join(lines), {"seeds": seeds, "metrics": values, "stage_seconds": times}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories of `coevolve pipeline`, one per seed")
    parser.add_argument("--json", action="store_true", help="also print the per-seed values")
    args = parser.parse_args()
    markdown, values = table([load(run) for run in args.runs])
    print(markdown)
    if args.json:
        print(json.dumps(values, indent=2))


if __name__ == "__main__":
    main()
