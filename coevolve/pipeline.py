"""`coevolve pipeline`: the main job on the built-in shapes world.

Stages, each in its own directory under the run directory and skipped when its output is
complete: bootstrap the tiny checkpoint -> demo (generate and verify). SFT, RL, evaluation
and the trace report join this chain as they are built.
"""

from __future__ import annotations

from pathlib import Path

from coevolve.bootstrap.tiny import MANIFEST, build_tiny_checkpoint
from coevolve.demo import run_demo


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
