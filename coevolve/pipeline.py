"""`coevolve pipeline`: the main job on the built-in shapes world.

Stages, each in its own directory under the run directory and skipped when its output is
complete: bootstrap the tiny checkpoint -> demo (generate and verify) -> SFT (`recipe=shapes`)
-> RL (`coevolve rl recipe=shapes`, resumed when interrupted) -> evaluation of the bootstrap,
SFT and RL checkpoints side by side. The trace report joins this chain when it is built.
"""

from __future__ import annotations

import json
from pathlib import Path

from coevolve.bootstrap.tiny import MANIFEST, build_tiny_checkpoint
from coevolve.config import compose_config, to_typed
from coevolve.demo import run_demo

HEADLINE = ("image_accuracy", "final_image_accuracy", "verdict_accuracy_own", "verdict_accuracy_heldout",
            "caption_accuracy", "reconstruction")


def run_pipeline(run_dir: Path, seed: int = 0) -> None:
    checkpoint = run_dir / "checkpoints" / "tiny"
    if (checkpoint / MANIFEST).is_file():
        print(f"[pipeline] bootstrap: reusing {checkpoint}")
    else:
        print(f"[pipeline] bootstrap: building the tiny checkpoint in {checkpoint}")
        manifest = build_tiny_checkpoint(checkpoint, seed=seed, overwrite=False)
        print(f"[pipeline] bootstrap: done in {manifest['seconds']} s")
    print("[pipeline] demo")
    run_demo(str(checkpoint), run_dir / "demo", seed=seed)

    config = to_typed(compose_config(["recipe=shapes", f"run_dir={run_dir}", f"seed={seed}"]))
    sft_checkpoint = run_dir / "checkpoints" / "sft"
    if (sft_checkpoint / "config.json").is_file():
        print(f"[pipeline] sft: reusing {sft_checkpoint}")
    else:
        from coevolve.sft.run import run_sft

        print("[pipeline] sft: coevolve sft recipe=shapes")
        print(json.dumps(run_sft(config, run_dir), indent=2))

    stage = config.rl.stages[-1].name
    rl_checkpoint = run_dir / "checkpoints" / "rl" / stage
    if (rl_checkpoint / "config.json").is_file():
        print(f"[pipeline] rl: reusing {rl_checkpoint}")
    else:
        from coevolve.rl.run import run_rl

        print("[pipeline] rl: coevolve rl recipe=shapes")
        summary = run_rl(config, run_dir)
        print(json.dumps({key: summary[key] for key in ("resumed_from", "steps", "seconds")}, indent=2))

    from coevolve.eval.shapes import evaluate_shapes
    from coevolve.model import JanusAdapter

    report = {}
    for name, path in (("tiny", checkpoint), ("sft", sft_checkpoint), ("rl", rl_checkpoint)):
        print(f"[pipeline] eval: {path}")
        figures = evaluate_shapes(
            JanusAdapter.from_pretrained(path),
            config.eval,
            unconditional=config.model.unconditional,
            out_dir=run_dir / "eval" / name,
            overwrite=True,
        )
        report[name] = {key: figures[key] for key in HEADLINE} | {"format_rate": figures["format_rate"]}
    print(json.dumps(report, indent=2))
