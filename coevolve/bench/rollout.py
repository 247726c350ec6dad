"""`coevolve bench rollout`: trajectories/s with 1 and with 2 rollout actors, side by side, and the
share of a batch's time in each phase of the introspective program.

One local Ray cluster; for each worker count a fresh driver (actors of 1 CPU each, so torch in an
actor runs one thread), one warm-up batch, then `repeats` timed batches of the same seeded shapes
prompts (`num_prompts` × `num_generations` trajectories); the figure is from the median batch.
Phase shares come from the program's own timers (`Program.timings`, summed over the actors' units):
plan, image, decode, verdict, regeneration (reflection + new image + its decode and judgement).
"""

from __future__ import annotations

import statistics
import time

import ray

from coevolve.config import compose_config, to_typed
from coevolve.rollout.driver import RolloutDriver
from coevolve.rollout.items import shapes_items


def rollout_report(
    checkpoint: str, num_prompts: int = 8, num_generations: int = 2, repeats: int = 2, workers=(1, 2)
) -> dict:
    config = to_typed(
        compose_config(
            [f"rollout.num_generations={num_generations}", "rollout.unit_size=2", "rollout.worker.num_cpus=1"]
        )
    )
    items = shapes_items(config.rollout.program, num_prompts, seed=0)
    trajectories = num_prompts * num_generations
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=max(workers), include_dashboard=False, logging_level="warning", log_to_driver=False)
    cases = {}
    try:
        for count in workers:
            config.rollout.num_workers = count
            driver = RolloutDriver(checkpoint, config.rollout, config.model.unconditional, seed=0)
            try:
                driver.generate(items, step=0)  # warm-up
                seconds, phases = [], []
                for repeat in range(repeats):
                    start = time.perf_counter()
                    driver.generate(items, step=1 + repeat)
                    seconds.append(time.perf_counter() - start)
                    phases.append(dict(driver.timings))
            finally:
                driver.shutdown()
            median = statistics.median(seconds)
            total = {phase: sum(p[phase] for p in phases) for phase in phases[0]}
            cases[f"{count}_actors"] = {
                "trajectories_per_s": round(trajectories / median, 3),
                "batch_seconds": [round(s, 3) for s in seconds],
                "phase_share": {phase: round(value / sum(total.values()), 3) for phase, value in total.items()},
            }
    finally:
        if started:
            ray.shutdown()
    one, two = (cases.get(f"{count}_actors") for count in (1, 2))
    return {
        "checkpoint": checkpoint,
        "batch": {"prompts": num_prompts, "num_generations": num_generations, "trajectories": trajectories},
        "program": config.rollout.program,
        "regenerate": config.rollout.regenerate,
        "cases": cases,
        "speedup_2_vs_1": round(two["trajectories_per_s"] / one["trajectories_per_s"], 3) if one and two else None,
    }
