"""`coevolve bench rl-step`: where the time of full RL steps goes, phase by phase.

Runs `steps` steps of `coevolve rl recipe=shapes` from `checkpoint` at small sizes (`SMALL`: 2
prompts x 2 trajectories of the introspective program, 1 render x 2 of the reconstruction program,
one rollout worker each) in a temporary run directory, on a local Ray cluster, and reports each
step's `timing/*` metrics — the keys `coevolve rl` writes to `metrics.jsonl`: per program
`rollout_s` (and the program's phases), `reward_s` (and each term's seconds); `learner_s` (of which
`learner_fixed_logprobs_s` and `learner_update_s`), `weight_sync_s`, `traces_s`, `eval_s` (the last
step: a stage's end is evaluated) and `step_s`. The first step includes the actors' warm-up.

`device="cuda"` puts the learner (0.5) and both rollout workers (0.25 each) on one GPU; the
reward terms of the shapes recipe run on CPU. `weight_sync` is `rl.weight_sync` (a collective on
one shared GPU is refused: NCCL needs a GPU per rank). `overrides` are more `KEY=VALUE` config
overrides, applied last.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from coevolve.config import compose_config, to_typed

INTRO = "rl.programs.introspective.rollout"
RECON = "rl.programs.reconstruction.rollout"
SMALL = [
    "recipe=shapes",
    f"{INTRO}.num_prompts=2",
    f"{INTRO}.num_generations=2",
    f"{INTRO}.num_workers=1",
    f"{INTRO}.max_plan_tokens=6",
    f"{INTRO}.max_verdict_tokens=4",
    f"{INTRO}.max_reflection_tokens=4",
    f"{RECON}.num_prompts=1",
    f"{RECON}.num_generations=2",
    f"{RECON}.num_workers=1",
    f"{RECON}.max_caption_tokens=6",
    "rl.eval_steps=0",
    "rl.learner.num_cpus=1",
    "rl.learner.micro_batch_size=4",
    "eval.num_prompts_per_category=1",
    "eval.num_heldout_renders=4",
    "eval.num_caption_images=2",
    "logging.tensorboard=false",
]
ONE_GPU = ["rl.learner.num_gpus=0.5", f"{INTRO}.worker.num_gpus=0.25", f"{RECON}.worker.num_gpus=0.25"]


def rl_step_report(
    checkpoint: str,
    steps: int = 2,
    weight_sync: str = "object_store",
    device: str = "cpu",
    overrides: tuple[str, ...] = (),
) -> dict:
    """Run the steps (see the module doc); returns each step's seconds by timing key."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be cpu or cuda, got {device!r}")
    from coevolve.rl.run import run_rl

    with tempfile.TemporaryDirectory(prefix="coevolve-rl-step-") as tmp:
        run_dir = Path(tmp) / "run"
        config = to_typed(
            compose_config(
                [
                    *SMALL,
                    f"run_dir={run_dir}",
                    f"rl.checkpoint={checkpoint}",
                    f"rl.stages=[{{name: bench, steps: {steps}}}]",
                    f"rl.save_steps={steps}",
                    f"rl.weight_sync={weight_sync}",
                    *(ONE_GPU if device == "cuda" else []),
                    *overrides,
                ]
            )
        )
        summary = run_rl(config, run_dir)
        rows = [json.loads(line) for line in (run_dir / "rl" / "metrics.jsonl").read_text().splitlines()]
    return {
        "checkpoint": str(checkpoint),
        "device": device,
        "dtype": config.model.dtype,
        "weight_sync": summary["weight_sync"],
        "trajectories_per_step": {
            name: p.rollout.num_prompts * p.rollout.num_generations for name, p in config.rl.programs.items()
        },
        "steps": [
            {
                "step": row["step"],
                "seconds": {
                    key.removeprefix("timing/"): round(value, 4)
                    for key, value in row.items()
                    if key.startswith("timing/")
                },
            }
            for row in rows
            if row["step"] > 0
        ],
        "run_seconds": summary["seconds"],
    }
