"""Evaluation of a checkpoint: `evaluate_shapes` on the built-in shapes world (DESIGN.md section 4)."""

from coevolve.eval.introspective import Trajectory, continuation_context, regenerate, sample_trajectories
from coevolve.eval.shapes import ShapesEvalConfig, evaluate_shapes

__all__ = [
    "ShapesEvalConfig",
    "Trajectory",
    "continuation_context",
    "evaluate_shapes",
    "regenerate",
    "sample_trajectories",
]
