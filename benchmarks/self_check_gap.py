"""Does the self-check read the image? P(yes) on images that match their prompt minus on images that
do not, per step of an RL run's trace store, for the trajectories of one program.

    python benchmarks/self_check_gap.py runs/shapes/rl/traces --program self_check --term self_consistency

The class of each image is the judge's score in the term's details (`self_consistency`: "judge"),
so the gap is measured against the same verifier the reward used. A self-check that ignores the
image has a gap of 0 whatever its mean P(yes) (printed beside it).
"""

from __future__ import annotations

import argparse
import json

from coevolve.traces.store import TraceStore


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("traces", help="a trace store directory (RUN_DIR/rl/traces)")
    parser.add_argument("--program", default="self_check", help="the rl.programs name of the program")
    parser.add_argument("--term", default="self_consistency", help="the reward term whose details hold 'judge'")
    args = parser.parse_args()
    frame = TraceStore.open(args.traces).frame()
    frame = frame[frame["program"] == args.program]
    details = f"reward/{args.term}/details"
    if frame.empty or details not in frame:
        raise SystemExit(f"{args.traces}: no {args.program!r} trajectories with column {details!r}")
    frame = frame.assign(judge=frame[details].map(lambda cell: json.loads(cell)["judge"]))
    print("step  gap (P(yes) true - violating)  mean P(yes)  images")
    for step, rows in frame.groupby("step"):
        true, violating = rows[rows["judge"] == 1.0], rows[rows["judge"] == 0.0]
        gap = true["p_yes"].mean() - violating["p_yes"].mean()
        print(f"{step:4d}  {gap:+.3f}  {rows['p_yes'].mean():.2f}  {len(true)} / {len(violating)}")


if __name__ == "__main__":
    main()
