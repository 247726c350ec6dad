"""Evaluation of a checkpoint (`coevolve eval`), one suite per module:

- `shapes`: `evaluate_shapes` on the built-in shapes world (DESIGN.md section 4); its introspective
  trajectories are sampled by the rollout program (`coevolve.rollout.programs`);
- `geneval`, `dpg`: images for GenEval's and DPG-Bench's prompts in the layouts their scorers read;
- `geneval_score`: GenEval's scorer and summary on shapes-world images, with the shapes verifier.

`config` is the `eval` config group. Names are imported on first use: the scorer needs no torch.
"""

from __future__ import annotations

_EXPORTS = {
    "ShapesEvalConfig": "coevolve.eval.shapes",
    "evaluate_shapes": "coevolve.eval.shapes",
    "EvalConfig": "coevolve.eval.config",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["EvalConfig", "ShapesEvalConfig", "evaluate_shapes"]
