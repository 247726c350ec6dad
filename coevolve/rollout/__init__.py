"""Rollouts (DESIGN.md sections 2 and 7): programs that sample trajectories, Ray actors that run them.

- `programs`: `IntrospectiveT2I` (plan → image → verdict → reflection → image) and `Reconstruction`
  (UAE: image → caption → image), batched through `JanusAdapter`, producing `coevolve.trajectory.Trajectory`;
- `config`: the `rollout` and `cluster` config groups;
- `workers`: the rollout and reward worker actors; `driver`: work units, weight sync, restarts;
- `cluster`: joining or starting the Ray cluster; `items`: the prompt sets `coevolve rollout` samples.
"""

from coevolve.rollout.programs import PROGRAMS, IntrospectiveT2I, Program, Reconstruction, RolloutItem

__all__ = ["PROGRAMS", "IntrospectiveT2I", "Program", "Reconstruction", "RolloutItem"]
