"""Evaluation of a checkpoint: `evaluate_shapes` on the built-in shapes world (DESIGN.md section 4).

Its introspective trajectories are sampled by the rollout program (`coevolve.rollout.programs`).
"""

from coevolve.eval.shapes import ShapesEvalConfig, evaluate_shapes

__all__ = ["ShapesEvalConfig", "evaluate_shapes"]
