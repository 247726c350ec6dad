"""Weight sync, object store vs collective broadcast, side by side on the same actors.

    python benchmarks/weight_sync.py --model runs/shapes/checkpoints/tiny [--workers 2] [--repeats 5]

One local Ray cluster; a learner actor and a rollout driver with `--workers` rollout workers (CPU,
1 CPU each) on `--model`; then, alternating, `--repeats` syncs through each path
(`coevolve.rl.weight_sync`: `ObjectStoreSync`, and `CollectiveSync` over gloo, its group formed
once before the timed syncs). The weights do not change between syncs: each one still moves the
whole policy. Prints JSON: seconds per sync (median and all), the bytes, and the checksums check.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import ray

from coevolve.config import compose_config, to_typed
from coevolve.learner.learner import Learner, ProgramScoring
from coevolve.rl.weight_sync import CollectiveSync, ObjectStoreSync
from coevolve.rollout.driver import RolloutDriver


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a Janus checkpoint (HF format)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--bucket-mb", type=float, default=256.0)
    args = parser.parse_args()

    config = to_typed(compose_config([f"rollout.num_workers={args.workers}", "rollout.worker.num_cpus=1"]))
    rollout = config.rollout
    scoring = {"bench": ProgramScoring(rollout.guidance("pad"), rollout.sampling)}
    ray.init(num_cpus=args.workers + 1, include_dashboard=False, logging_level="warning", log_to_driver=False)
    try:
        learner = ray.remote(Learner).options(num_cpus=1).remote(args.model, config.rl.learner, config.engine,
                                                                 scoring, 1, args.dtype)  # fmt: skip
        driver = RolloutDriver(args.model, rollout, dtype=args.dtype)
        ray.get(learner.ping.remote())
        drivers = {"bench": driver}
        paths = {
            "object_store": ObjectStoreSync(learner, drivers),
            "collective": CollectiveSync(learner, drivers, "gloo", int(args.bucket_mb * 2**20)),
        }
        for sync in paths.values():
            sync.start()
        seconds: dict[str, list[float]] = {name: [] for name in paths}
        version = 0
        for _ in range(args.repeats):
            for name, sync in paths.items():
                version += 1
                started = time.perf_counter()
                sync(version)
                seconds[name].append(time.perf_counter() - started)
        expected = ray.get(learner.weights_checksum.remote())
        same = driver.weights_checksums() == [expected] * args.workers
        report = {
            "model": args.model,
            "dtype": args.dtype,
            "workers": args.workers,
            "bytes": paths["collective"].stats["bytes_per_broadcast"],
            "seconds_per_sync": {name: round(statistics.median(s), 4) for name, s in seconds.items()},
            "seconds": {name: [round(x, 4) for x in s] for name, s in seconds.items()},
            "workers_hold_the_learners_weights": same,
        }
        driver.shutdown()
    finally:
        ray.shutdown()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
