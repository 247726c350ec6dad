"""`coevolve rollout`: the configured program, once, on a prompt set, on Ray rollout workers.

A standalone way to see what a checkpoint does: `run_rollout` loads the items
(`rollout.source`), joins or starts the cluster, checks the items on a worker, samples every
item's `rollout.num_generations` trajectories, scores them with the `reward` terms (when there
are any) in a reward worker, and writes to `out_dir`, which appears only once complete:

- `trajectories.pt`: the `coevolve.trajectory.Trajectory` list (`torch.load(..., weights_only=False)`);
- `traces/`: a trace store (coevolve/traces/store.py) holding one shard, step 0: a
  `coevolve.traces.trace_row` per trajectory, PNGs under `traces/images/`
  (`coevolve traces ls|show|query|export OUT_DIR`);
- `summary.json`: counts, each term's mean raw score, trajectories/s, seconds per phase.

Every check (config, items, cluster address, prompt lengths, reward specs) runs before sampling;
nothing is written when one fails.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import ray
import torch

from coevolve.config.schema import Config
from coevolve.rollout.cluster import connect
from coevolve.rollout.driver import RolloutDriver, demand
from coevolve.rollout.items import load_items
from coevolve.traces.record import trace_row
from coevolve.traces.store import TraceWriter
from coevolve.utils.fs import atomic_output_dir, check_output_dir


def run_rollout(config: Config, out_dir: str | Path, run: str = "rollout", overwrite: bool = True) -> dict:
    """Sample, score and write (see the module docstring); returns the summary."""
    out_dir = Path(out_dir).absolute()
    check_output_dir(out_dir, overwrite)
    checkpoint = Path(config.model.path)
    if not (checkpoint / "config.json").is_file():
        raise FileNotFoundError(f"model.path: {checkpoint} is not a Hugging Face checkpoint directory (no config.json)")
    rollout = config.rollout
    items = load_items(rollout.source, rollout.program, rollout.num_prompts, config.seed)
    reward = config.reward if config.reward.terms else None
    started = connect(config.cluster, demand(rollout, reward))
    driver = None
    try:
        driver = RolloutDriver(
            str(checkpoint), rollout, config.model.unconditional, config.seed, reward=reward, dtype=config.model.dtype
        )
        driver.check(items)
        start = time.perf_counter()
        trajectories = driver.generate(items, step=0)
        sampling_seconds = time.perf_counter() - start
        rewards = driver.score(trajectories) if reward is not None else None
        timings = dict(driver.timings)
    finally:
        if driver is not None:
            driver.shutdown()
        if started:
            ray.shutdown()
    by_id = {row["id"]: row for row in rewards.rows()} if rewards is not None else {}
    summary = {
        "program": rollout.program,
        "checkpoint": str(checkpoint),
        "counts": {
            "items": len(items),
            "trajectories": len(trajectories),
            "workers": rollout.num_workers,
        },
        "rewards": None
        if rewards is None
        else {
            **{term: float(np.mean(values)) if len(values) else None for term, values in rewards.raw.items()},
            "dropped_groups": rewards.num_dropped_groups,
        },
        "trajectories_per_s": round(len(trajectories) / sampling_seconds, 3),
        "sampling_seconds": round(sampling_seconds, 3),
        "phase_seconds": {phase: round(seconds, 3) for phase, seconds in timings.items()},
        "out_dir": str(out_dir),
    }
    if rollout.program == "introspective_t2i":
        summary["counts"]["images_drawn"] = _counts([t.info["rounds"] for t in trajectories])
        summary["counts"]["final_image"] = _counts([t.final_image_name for t in trajectories])
    with atomic_output_dir(out_dir, overwrite=overwrite) as staging:
        programs = {rollout.program: {"rollout": dataclasses.asdict(rollout), "reward": dataclasses.asdict(config.reward)}}
        traces = TraceWriter(staging / "traces", dataclasses.asdict(config), programs=programs)
        rows = []
        for trajectory in trajectories:
            row = trace_row(trajectory, traces.root, run, 0, by_id.get(trajectory.id))
            if rewards is not None:
                row["dropped"] = trajectory.id not in by_id
            rows.append(row)
        traces.write_step(0, rows)
        torch.save(trajectories, staging / "trajectories.pt")
        (staging / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _counts(values: list) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in values:
        counts[str(value)] = counts.get(str(value), 0) + 1
    return counts
