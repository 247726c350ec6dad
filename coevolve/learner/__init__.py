"""The GRPO learner (DESIGN.md section 6). So far its maths: pure functions over padded tensors.

- `losses`: `policy_loss` (clipped-ratio GRPO objective, KL to a reference, truncated importance
  sampling, TRL's `loss_type` aggregations) with its `LossConfig`, and `entropy_stats`.

Advantages are computed where rewards become advantages: `rewards.advantages`.
"""

from coevolve.learner.losses import LOSS_TYPES, LossConfig, entropy_stats, kl_divergence, policy_loss

__all__ = ["LOSS_TYPES", "LossConfig", "entropy_stats", "kl_divergence", "policy_loss"]
