"""Checkpoints compared over seeds from their `coevolve eval` run directories: the README's tables
of rounds that evaluate with a larger eval than the pipeline's own.

`--base` lists one eval run directory per seed (typically the SFT checkpoints'); each `--other
LABEL DIR...` lists the same seeds' directories of another checkpoint (typically an RL run from
that SFT checkpoint), in the same order. Every directory must hold one `eval/*/eval.json` written
with the same eval config (same prompts), so each seed's difference is paired:

    python benchmarks/eval_table.py --base runs/e/sft0 runs/e/sft1 runs/e/sft2 \
        --other "RL" runs/e/rl0 runs/e/rl1 runs/e/rl2 --other "no reconstruction" runs/e/nr0 runs/e/nr1 runs/e/nr2

Prints a Markdown table: for each metric of `coevolve.eval.seeds_table`, the base's mean (per
seed), then for each other its mean (per seed) and its difference from the base, mean ± std over
seeds (per seed). Percent, the AUCs and the reconstruction score as they are.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from coevolve.eval.seeds_table import METRICS


def load_eval(run_dir: Path) -> dict:
    found = sorted(run_dir.glob("eval/*/eval.json"))
    if len(found) != 1:
        raise SystemExit(f"{run_dir}: expected one eval/*/eval.json, found {len(found)}")
    return json.loads(found[0].read_text())


def _scale(label: str) -> tuple[int, str]:
    return (1, "{:.3f}") if "AUC" in label or "reconstruction" in label else (100, "{:.1f}")


def _cell(values: list[float | None], label: str, signed: bool = False) -> str:
    scale, fmt = _scale(label)
    if any(v is None for v in values):
        return "n/a"
    show = lambda v: (("+" if v >= 0 else "−") + fmt.format(abs(scale * v))) if signed else fmt.format(scale * v)
    mean = statistics.mean(values)
    spread = f" ± {fmt.format(scale * statistics.stdev(values))}" if signed and len(values) > 1 else ""
    return f"{show(mean)}{spread} ({', '.join(show(v) for v in values)})"


def table(base: list[dict], others: list[tuple[str, list[dict]]]) -> str:
    header = "| metric | base | " + " | ".join(f"{label} | − base" for label, _ in others) + " |"
    lines = [header, "| --- " * (2 + 2 * len(others)) + "|"]
    for label, get in METRICS:
        b = [get(f) for f in base]
        cells = [_cell(b, label)]
        for _, figures in others:
            o = [get(f) for f in figures]
            cells.append(_cell(o, label))
            cells.append(_cell([None if None in (x, y) else y - x for x, y in zip(b, o)], label, signed=True))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", nargs="+", type=Path, required=True, help="eval run directories, one per seed")
    parser.add_argument("--other", nargs="+", action="append", default=[], metavar=("LABEL", "DIR"),
                        help="a label, then the eval run directories of the same seeds in the same order")  # fmt: skip
    args = parser.parse_args()
    base = [load_eval(d) for d in args.base]
    others = []
    for label, *dirs in args.other:
        if len(dirs) != len(args.base):
            raise SystemExit(f"--other {label!r}: {len(dirs)} directories for {len(args.base)} in --base")
        figures = [load_eval(Path(d)) for d in dirs]
        for d, f, b, bd in zip(dirs, figures, base, args.base):
            if f["config"] != b["config"]:
                raise SystemExit(f"{d}: its eval config differs from {bd}'s (not the same prompts): "
                                 f"{ {k: v for k, v in f['config'].items() if b['config'].get(k) != v} }")  # fmt: skip
        others.append((label, figures))
    print(table(base, others))


if __name__ == "__main__":
    main()
