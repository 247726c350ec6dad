"""GRPO's policy loss over padded token tensors (DESIGN.md section 6), with TRL's names and maths.

Every tensor is (B, T): B sequences (a trajectory's trained segments, text and image tokens alike,
laid side by side and right-padded), T positions; `mask` (B, T) is True where a token is trained.
Inputs at masked positions are replaced by 0 before any arithmetic, so padding may hold anything
(even NaN), and adding padded columns changes neither the loss, nor a statistic, nor a gradient.

Per active token t of sequence i, as TRL's `GRPOTrainer._compute_loss` computes it:

    r      = exp(logp - old_logp)                           importance_sampling_level "token"
           = exp(mean over i's active t of (logp - old_logp))                 "sequence" (GSPO)
    policy = -min(r * A, clip(r, 1 - epsilon, 1 + epsilon_high) * A)      PPO clip, DAPO clip-higher
    w      = IS weight of the sampler's log-probs against the trainer's (detached; see below)
    loss_t = policy * w + beta * KL_t                                     KL to the reference policy

With d = ref_logp - logp, KL_t is Schulman's k1 = -d, k2 = d^2 / 2 or k3 = exp(d) - d - 1 (TRL: k3).
Tokens are then aggregated per `loss_type`:

    grpo     mean over sequences of (sum_t loss_t / active tokens of the sequence); a sequence
             with no active token counts as 0 in the mean, as in TRL
    bnpo     sum of loss_t / active tokens of this call
    dr_grpo  sum of loss_t / (B * max_completion_length), the longest a sequence's trained tokens
             (text and image together) can be
    dapo     sum of loss_t / num_items_in_batch (the active tokens of the whole accumulated batch,
             which the caller knows; by default this call's, where dapo equals bnpo)

The IS correction (TRL's vllm_importance_sampling_*): rollout actors sample under their own
numerics (CFG, kernels, stale weights), so the log-probs the trainer recomputes at the start of the
step (`old_logprobs`) differ from the sampling ones. ratio = exp(old_logprobs - sampling_logprobs)
per token (`token_*` modes) or per sequence (`sequence_*`: exp of the sum over active tokens);
`*_truncate` clamps it to [clip_min, clip_max], `*_mask` sets it to 0 outside. It multiplies the
policy term only, as in TRL.

Departures from TRL, and why:
- `kl_estimator` chooses k1/k2/k3 (TRL has k3 only): DESIGN.md asks for all three.
- IS names drop TRL's `vllm_` prefix (the sampler is coevolve's own) and the default mode is
  `token_truncate`, not TRL's `sequence_mask`: an image is hundreds of tokens, and a sequence
  ratio, their product, would mask most images.
- Not here (yet): `delta`, `use_bias_correction_kl`, the cispo/sapo/luspo/vespo losses,
  `top_entropy_quantile`, off-policy masking.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

LOSS_TYPES = ("grpo", "dr_grpo", "dapo", "bnpo")
IMPORTANCE_SAMPLING_LEVELS = ("token", "sequence")
KL_ESTIMATORS = ("k1", "k2", "k3")
IMPORTANCE_SAMPLING_MODES = ("token_truncate", "token_mask", "sequence_truncate", "sequence_mask")


@dataclass
class LossConfig:
    """The loss's settings, named as TRL's `GRPOConfig` names them (see the module doc)."""

    # Token aggregation: grpo | dr_grpo | dapo | bnpo (TRL's default: dapo).
    loss_type: str = "dapo"
    # Lower clip: the ratio is clipped below at 1 - epsilon.
    epsilon: float = 0.2
    # Upper clip, 1 + epsilon_high (DAPO's clip-higher recommends 0.28); null: epsilon.
    epsilon_high: float | None = None
    # dr_grpo's constant denominator per sequence; required by dr_grpo, unused otherwise.
    max_completion_length: int | None = None
    # "token": one ratio per token; "sequence": one per sequence, from the mean log-ratio (GSPO).
    importance_sampling_level: str = "token"
    # KL coefficient; 0 skips the reference policy entirely.
    beta: float = 0.0
    # KL estimator: k1 | k2 | k3 (Schulman, "Approximating KL divergence").
    kl_estimator: str = "k3"
    # Weight the policy term by exp(old - sampling log-probs), bounded per the mode below
    # (TRL: vllm_importance_sampling_correction). On, every call needs `sampling_logprobs`.
    importance_sampling_correction: bool = True
    # token_truncate | token_mask | sequence_truncate | sequence_mask (TRL: vllm_importance_sampling_mode).
    importance_sampling_mode: str = "token_truncate"
    # Upper/lower IS bounds C_max, C_min (TRL: vllm_importance_sampling_clip_max/_min); null: no bound.
    importance_sampling_clip_max: float | None = 3.0
    importance_sampling_clip_min: float | None = None

    def __post_init__(self) -> None:
        if self.loss_type not in LOSS_TYPES:
            raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {self.loss_type!r}")
        if not 0 <= self.epsilon < 1:
            raise ValueError(f"epsilon must be in [0, 1), got {self.epsilon}")
        if self.epsilon_high is not None and not self.epsilon_high >= 0:
            raise ValueError(f"epsilon_high must be >= 0 or null, got {self.epsilon_high}")
        if self.loss_type == "dr_grpo" and not (self.max_completion_length or 0) > 0:
            raise ValueError(f"loss_type='dr_grpo' needs max_completion_length > 0, got {self.max_completion_length}")
        if self.importance_sampling_level not in IMPORTANCE_SAMPLING_LEVELS:
            raise ValueError(
                f"importance_sampling_level must be one of {IMPORTANCE_SAMPLING_LEVELS}, "
                f"got {self.importance_sampling_level!r}"
            )
        if not (math.isfinite(self.beta) and self.beta >= 0):
            raise ValueError(f"beta must be finite and >= 0, got {self.beta}")
        if self.kl_estimator not in KL_ESTIMATORS:
            raise ValueError(f"kl_estimator must be one of {KL_ESTIMATORS}, got {self.kl_estimator!r}")
        if self.importance_sampling_mode not in IMPORTANCE_SAMPLING_MODES:
            raise ValueError(
                f"importance_sampling_mode must be one of {IMPORTANCE_SAMPLING_MODES}, "
                f"got {self.importance_sampling_mode!r}"
            )
        low, high = self.importance_sampling_clip_min, self.importance_sampling_clip_max
        for key, bound in (("importance_sampling_clip_min", low), ("importance_sampling_clip_max", high)):
            if bound is not None and not bound >= 0:
                raise ValueError(f"{key} must be >= 0 or null, got {bound}")
        if low is not None and high is not None and low >= high:
            raise ValueError(f"importance_sampling_clip_min ({low}) must be < importance_sampling_clip_max ({high})")
        if self.importance_sampling_mode.endswith("_truncate") and low is None and high is None:
            raise ValueError(
                f"importance_sampling_mode={self.importance_sampling_mode!r} needs importance_sampling_clip_max "
                "or importance_sampling_clip_min"
            )

    @property
    def upper_epsilon(self) -> float:
        return self.epsilon if self.epsilon_high is None else self.epsilon_high


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of x (B, T) over active tokens, or of x (B, 1) over sequences with one; NaN if none."""
    if x.shape[-1] == 1 and mask.shape[-1] != 1:
        rows = mask.any(-1, keepdim=True)
        return torch.where(rows, x, 0).sum() / rows.sum()
    return torch.where(mask, x, 0).sum() / mask.sum()


def _masked_extreme(x: torch.Tensor, mask: torch.Tensor, largest: bool) -> torch.Tensor:
    """Max (or min) of x (B, T) over active tokens, or of x (B, 1) over sequences with one; NaN if none."""
    where = mask.any(-1, keepdim=True) if x.shape[-1] == 1 and mask.shape[-1] != 1 else mask
    fill = -math.inf if largest else math.inf
    values = torch.where(where, x, fill)
    value = values.max() if largest else values.min()
    return torch.where(where.any(), value, math.nan)


def _importance_weights(
    old: torch.Tensor, sampling: torch.Tensor, mask: torch.Tensor, config: LossConfig
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """IS weights (B, T) or (B, 1) between trainer (`old`) and sampler log-probs, both zeroed at padding."""
    log_ratio = old - sampling  # (B, T), 0 at padding
    if config.importance_sampling_mode.startswith("sequence"):
        log_ratio = log_ratio.sum(-1, keepdim=True)  # (B, 1): the product of the token ratios
    ratio = torch.exp(log_ratio)
    low, high = config.importance_sampling_clip_min, config.importance_sampling_clip_max
    outside = torch.zeros_like(ratio, dtype=torch.bool)
    if low is not None:
        outside |= ratio < low
    if high is not None:
        outside |= ratio > high
    if config.importance_sampling_mode.endswith("_truncate"):
        weight = torch.clamp(ratio, min=low, max=high)
    else:
        weight = torch.where(outside, 0, ratio)
    prefix = "sampling/importance_sampling_ratio"
    stats = {
        f"{prefix}/mean": _masked_mean(weight, mask),
        f"{prefix}/min": _masked_extreme(weight, mask, largest=False),
        f"{prefix}/max": _masked_extreme(weight, mask, largest=True),
        f"{prefix}/frac_clipped": _masked_mean(outside.to(weight.dtype), mask),
    }
    return weight, stats


def kl_divergence(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str = "k3") -> torch.Tensor:
    """Per-token estimate of KL(policy || reference) from the sampled tokens' log-probs, (B, T) -> (B, T)."""
    d = ref_logprobs - logprobs
    if estimator == "k1":
        return -d
    if estimator == "k2":
        return d.square() / 2
    if estimator == "k3":
        return torch.exp(d) - d - 1
    raise ValueError(f"kl_estimator must be one of {KL_ESTIMATORS}, got {estimator!r}")


def _aggregate(
    per_token: torch.Tensor, mask: torch.Tensor, config: LossConfig, num_items_in_batch: float | None
) -> torch.Tensor:
    """The loss from per-token losses (B, T), already zero at padding, per `config.loss_type`."""
    if config.loss_type == "grpo":
        return (per_token.sum(-1) / mask.sum(-1).clamp(min=1)).mean()
    if config.loss_type == "bnpo":
        return per_token.sum() / mask.sum().clamp(min=1)
    if config.loss_type == "dr_grpo":
        return per_token.sum() / (per_token.shape[0] * config.max_completion_length)
    if num_items_in_batch is None:  # dapo
        return per_token.sum() / mask.sum().clamp(min=1)
    return per_token.sum() / num_items_in_batch


def _check_shapes(logprobs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, **others) -> None:
    if logprobs.dim() != 2:
        raise ValueError(f"logprobs must be (B, T), got {tuple(logprobs.shape)}")
    shape = tuple(logprobs.shape)
    for name, value in {"mask": mask, **others}.items():
        if value is not None and tuple(value.shape) != shape:
            raise ValueError(f"{name} has shape {tuple(value.shape)}, logprobs {shape}")
    if tuple(advantages.shape) not in ((shape[0],), shape):
        raise ValueError(f"advantages must be (B,) or (B, T) = {shape}, got {tuple(advantages.shape)}")


def policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor | None,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    config: LossConfig,
    *,
    sampling_logprobs: torch.Tensor | None = None,
    ref_logprobs: torch.Tensor | None = None,
    num_items_in_batch: float | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The GRPO loss (a scalar carrying the gradient) and detached 0-d statistics; see the module doc.

    logprobs (B, T): the trained tokens' log-probs under the current policy (with grad);
    old_logprobs (B, T): under the policy that started this step (TRL's old_per_token_logps);
        None when the step is on-policy (one PPO epoch): logprobs.detach();
    advantages (B,) one per sequence, or (B, T) one per token (segments of a trajectory differ);
    mask (B, T) bool (or 0/1): True where a token is trained;
    sampling_logprobs (B, T): the log-probs the rollout sampled under (the trajectory's segment
        logprobs); required when config.importance_sampling_correction;
    ref_logprobs (B, T): under the reference policy; required when config.beta != 0, else ignored;
    num_items_in_batch: dapo's denominator (active tokens of the accumulated batch).
    old, sampling and reference log-probs and the advantages are constants (detached).

    Statistics, TRL's names where it has one: clip_ratio/{low,high,region}_mean (the share of
    active tokens — sequences at sequence level — whose objective the clip holds constant),
    ratio/mean, kl (when beta != 0), sampling/importance_sampling_ratio/{mean,min,max,frac_clipped}
    (when correcting; frac_clipped is the share outside [clip_min, clip_max]).
    """
    others = {"old_logprobs": old_logprobs, "sampling_logprobs": sampling_logprobs, "ref_logprobs": ref_logprobs}
    _check_shapes(logprobs, advantages, mask, **others)
    if config.importance_sampling_correction and sampling_logprobs is None:
        raise ValueError("importance_sampling_correction is on but no sampling_logprobs were given")
    if config.beta != 0 and ref_logprobs is None:
        raise ValueError(f"beta={config.beta} needs ref_logprobs (set beta=0 to train without a reference)")
    if num_items_in_batch is not None and not num_items_in_batch > 0:
        raise ValueError(f"num_items_in_batch must be > 0, got {num_items_in_batch}")
    mask = mask.bool()
    logprobs = torch.where(mask, logprobs, 0)
    old = logprobs.detach() if old_logprobs is None else torch.where(mask, old_logprobs.detach(), 0)
    advantages = advantages.detach().to(logprobs.dtype)
    advantages = advantages[:, None] if advantages.dim() == 1 else torch.where(mask, advantages, 0)

    log_ratio = logprobs - old  # (B, T), 0 at padding
    if config.importance_sampling_level == "sequence":
        log_ratio = log_ratio.sum(-1, keepdim=True) / mask.sum(-1, keepdim=True).clamp(min=1)  # (B, 1)
    ratio = torch.exp(log_ratio)
    low, high = 1 - config.epsilon, 1 + config.upper_epsilon
    per_token = -torch.minimum(ratio * advantages, torch.clamp(ratio, low, high) * advantages)  # (B, T)

    with torch.no_grad():
        low_clipped = (ratio < low) & (advantages < 0)
        high_clipped = (ratio > high) & (advantages > 0)
        dtype = logprobs.dtype
        stats = {
            "clip_ratio/low_mean": _masked_mean(low_clipped.to(dtype), mask),
            "clip_ratio/high_mean": _masked_mean(high_clipped.to(dtype), mask),
            "clip_ratio/region_mean": _masked_mean((low_clipped | high_clipped).to(dtype), mask),
            "ratio/mean": _masked_mean(ratio.detach(), mask),
        }
    if config.importance_sampling_correction:
        sampling = torch.where(mask, sampling_logprobs.detach(), 0)
        weight, is_stats = _importance_weights(old, sampling, mask, config)
        per_token = per_token * weight
        stats.update(is_stats)
    if config.beta != 0:
        ref = torch.where(mask, ref_logprobs.detach(), 0)
        kl = kl_divergence(logprobs, ref, config.kl_estimator)
        per_token = per_token + config.beta * kl
        stats["kl"] = _masked_mean(kl.detach(), mask)

    loss = _aggregate(torch.where(mask, per_token, 0), mask, config, num_items_in_batch)
    return loss, {key: value.detach() for key, value in stats.items()}


def entropy_stats(entropies: torch.Tensor, mask: torch.Tensor, is_image: torch.Tensor) -> dict[str, torch.Tensor]:
    """Mean entropy (B, T) over all active tokens, over text tokens and over image tokens (NaN when
    there are none): a policy can collapse on one modality while the other stays diverse."""
    if not tuple(entropies.shape) == tuple(mask.shape) == tuple(is_image.shape):
        raise ValueError(
            f"entropies {tuple(entropies.shape)}, mask {tuple(mask.shape)} and is_image "
            f"{tuple(is_image.shape)} must have one shape"
        )
    entropies, mask, is_image = entropies.detach(), mask.bool(), is_image.bool()
    return {
        "entropy": _masked_mean(entropies, mask),
        "entropy/text": _masked_mean(entropies, mask & ~is_image),
        "entropy/image": _masked_mean(entropies, mask & is_image),
    }
