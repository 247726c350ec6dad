"""policy_loss and entropy_stats against values computed by hand (the arithmetic is in the comments).

Everything is float64 and compared to 1e-12: the tests check the formulas, not rounding.
"""

from __future__ import annotations

import math

import pytest
import torch

from coevolve.learner.losses import LossConfig, entropy_stats, kl_divergence, policy_loss

F64 = torch.float64
LN2 = math.log(2)


def t(values) -> torch.Tensor:
    return torch.tensor(values, dtype=F64)


def leaf(values) -> torch.Tensor:
    return torch.tensor(values, dtype=F64, requires_grad=True)


def close(actual, expected) -> None:
    expected = expected if isinstance(expected, torch.Tensor) else t(expected)
    torch.testing.assert_close(actual.detach(), expected, rtol=1e-12, atol=1e-12)


def config(**kwargs) -> LossConfig:
    return LossConfig(**{"importance_sampling_correction": False, **kwargs})


def grad(loss: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    (g,) = torch.autograd.grad(loss, x)
    return g


# -- aggregation per loss_type on a ragged mask ----------------------------------------------------

# Row 0 has 3 active tokens, row 1 one; padding holds junk (100, NaN) that must never count.
# Old = current log-probs, so every ratio is 1 and a token's loss is -min(1*A, clip(1)*A) = -A:
# row 0: -1, -2, -3 (sum -6); row 1: -4; total -10 over 4 active tokens.
RAGGED_LOGP = [[-0.5, -1.0, -1.5, math.nan], [-2.0, math.nan, math.nan, math.nan]]
RAGGED_ADV = [[1.0, 2.0, 3.0, 100.0], [4.0, 100.0, 100.0, 100.0]]
RAGGED_MASK = [[True, True, True, False], [True, False, False, False]]


@pytest.mark.parametrize(
    "kwargs, num_items, expected, expected_grad",
    [
        # grpo: mean over rows of (row sum / row tokens) = (-6/3 + -4/1) / 2 = -3;
        # d/dlogp = -A * ratio / (row tokens * B): row 0 -A/6, row 1 -4/2.
        ({"loss_type": "grpo"}, None, -3.0, [[-1 / 6, -2 / 6, -3 / 6, 0], [-2, 0, 0, 0]]),
        # bnpo: -10 / 4 active tokens = -2.5; d/dlogp = -A / 4.
        ({"loss_type": "bnpo"}, None, -2.5, [[-0.25, -0.5, -0.75, 0], [-1, 0, 0, 0]]),
        # dapo, by default this call's active tokens: as bnpo.
        ({"loss_type": "dapo"}, None, -2.5, [[-0.25, -0.5, -0.75, 0], [-1, 0, 0, 0]]),
        # dapo over an accumulated batch of 8 tokens: -10 / 8 = -1.25; d/dlogp = -A / 8.
        ({"loss_type": "dapo"}, 8, -1.25, [[-1 / 8, -2 / 8, -3 / 8, 0], [-4 / 8, 0, 0, 0]]),
        # dr_grpo: -10 / (B * max_completion_length) = -10 / (2 * 5) = -1; d/dlogp = -A / 10.
        ({"loss_type": "dr_grpo", "max_completion_length": 5}, None, -1.0, [[-0.1, -0.2, -0.3, 0], [-0.4, 0, 0, 0]]),
    ],
)
def test_each_loss_type_aggregates_as_trl(kwargs, num_items, expected, expected_grad):
    logp = leaf(RAGGED_LOGP)
    loss, stats = policy_loss(
        logp, None, t(RAGGED_ADV), torch.tensor(RAGGED_MASK), config(**kwargs), num_items_in_batch=num_items
    )
    close(loss, expected)
    close(grad(loss, logp), expected_grad)
    close(stats["ratio/mean"], 1.0)
    close(stats["clip_ratio/region_mean"], 0.0)


def test_grpo_weights_sequences_equally_with_sequence_advantages():
    # Advantages one per sequence: row 0 A=+1 over 3 tokens, row 1 A=-2 over 1 token; ratio 1.
    # grpo: (-1*3/3 + 2*1/1) / 2 = 0.5; bnpo: (-1*3 + 2) / 4 = -0.25.
    logp, mask = t(RAGGED_LOGP), torch.tensor(RAGGED_MASK)
    close(policy_loss(logp, None, t([1.0, -2.0]), mask, config(loss_type="grpo"))[0], 0.5)
    close(policy_loss(logp, None, t([1.0, -2.0]), mask, config(loss_type="bnpo"))[0], -0.25)


def test_dapo_over_micro_batches_equals_one_batch():
    # TRL's point of num_items_in_batch: accumulated micro-batches give the loss (and gradient) of one batch.
    torch.manual_seed(0)
    logp = (-torch.rand(4, 5, dtype=F64)).requires_grad_()
    old = logp.detach() + 0.1 * torch.randn(4, 5, dtype=F64)
    adv = torch.randn(4, dtype=F64)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 0, 0]], dtype=torch.bool)
    cfg = config(loss_type="dapo")
    whole, _ = policy_loss(logp, old, adv, mask, cfg)
    total = int(mask.sum())  # 11
    parts = [
        policy_loss(logp[s], old[s], adv[s], mask[s], cfg, num_items_in_batch=total)[0]
        for s in (slice(0, 2), slice(2, 4))
    ]
    torch.testing.assert_close(parts[0] + parts[1], whole)
    torch.testing.assert_close(grad(parts[0] + parts[1], logp), grad(whole, logp))


# -- clipping ------------------------------------------------------------------------------------


def ratios_to_logprobs(ratios: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """(logp leaf, old) with exp(logp - old) = ratios, one token per sequence (B, 1)."""
    old = torch.log(t([[0.4]] * len(ratios)))
    return (old + torch.log(t([[r] for r in ratios]))).requires_grad_(), old


def test_clipping_holds_the_objective_constant_where_it_acts():
    # epsilon 0.2 -> clip to [0.8, 1.2]; bnpo over 4 one-token sequences.
    #   r=1.5, A=+1: -min(1.5, 1.2) = -1.2   clipped high, gradient 0
    #   r=0.5, A=-1: -min(-0.5, -0.8) = 0.8  clipped low, gradient 0
    #   r=1.5, A=-1: -min(-1.5, -1.2) = 1.5  not clipped (the unclipped term is the min): d/dlogp = -A*r = 1.5
    #   r=0.5, A=+1: -min(0.5, 0.8) = -0.5   not clipped: d/dlogp = -A*r = -0.5
    # loss (-1.2 + 0.8 + 1.5 - 0.5) / 4 = 0.15; gradients divided by 4.
    logp, old = ratios_to_logprobs([1.5, 0.5, 1.5, 0.5])
    loss, stats = policy_loss(
        logp, old, t([1.0, -1.0, -1.0, 1.0]), torch.ones(4, 1, dtype=torch.bool), config(loss_type="bnpo")
    )
    close(loss, 0.15)
    close(grad(loss, logp), [[0.0], [0.0], [0.375], [-0.125]])
    close(stats["clip_ratio/low_mean"], 0.25)
    close(stats["clip_ratio/high_mean"], 0.25)
    close(stats["clip_ratio/region_mean"], 0.5)
    close(stats["ratio/mean"], 1.0)  # (1.5 + 0.5 + 1.5 + 0.5) / 4


@pytest.mark.parametrize(
    "epsilon_high, expected, expected_grad, high_mean",
    [
        # clip to [0.8, 1.28]: r=1.25 A=+1 -> -1.25 (inside: d/dlogp = -1.25); r=1.3 A=+1 -> -1.28 (clipped);
        # r=0.75 A=-1 -> -min(-0.75, -0.8) = 0.8 (clipped). (-1.25 - 1.28 + 0.8) / 3 = -1.73 / 3.
        (0.28, -1.73 / 3, [[-1.25 / 3], [0.0], [0.0]], 1 / 3),
        # symmetric [0.8, 1.2]: -1.2, -1.2, 0.8, all clipped: -1.6 / 3, no gradient anywhere.
        (None, -1.6 / 3, [[0.0], [0.0], [0.0]], 2 / 3),
    ],
)
def test_epsilon_high_raises_only_the_upper_clip(epsilon_high, expected, expected_grad, high_mean):
    logp, old = ratios_to_logprobs([1.25, 1.3, 0.75])
    cfg = config(loss_type="bnpo", epsilon=0.2, epsilon_high=epsilon_high)
    loss, stats = policy_loss(logp, old, t([1.0, 1.0, -1.0]), torch.ones(3, 1, dtype=torch.bool), cfg)
    close(loss, expected)
    close(grad(loss, logp), expected_grad)
    close(stats["clip_ratio/high_mean"], high_mean)
    close(stats["clip_ratio/low_mean"], 1 / 3)


def test_sequence_level_ratio_is_the_exp_of_the_mean_log_ratio():
    # Active log-ratios [ln 2, 0] (third column padded): r = exp(ln2 / 2) = sqrt 2, one per sequence.
    # A=+1: -min(sqrt2, 1.2) = -1.2 on both tokens, bnpo -2.4 / 2 = -1.2, no gradient, the sequence clipped.
    # A=-1: -min(-sqrt2, -1.2) = sqrt2 on both tokens, bnpo sqrt2; d loss / d logp_t = d r / d logp_t = r / 2.
    old = torch.log(t([[0.5, 0.5, 0.5]]))
    logp = (old + t([[LN2, 0.0, 5.0]])).requires_grad_()
    mask = torch.tensor([[True, True, False]])
    cfg = config(loss_type="bnpo", importance_sampling_level="sequence")
    loss, stats = policy_loss(logp, old, t([1.0]), mask, cfg)
    close(loss, -1.2)
    close(grad(loss, logp), [[0.0, 0.0, 0.0]])
    close(stats["clip_ratio/high_mean"], 1.0)
    close(stats["ratio/mean"], math.sqrt(2))
    loss, _ = policy_loss(logp, old, t([-1.0]), mask, cfg)
    close(loss, math.sqrt(2))
    close(grad(loss, logp), [[math.sqrt(2) / 2, math.sqrt(2) / 2, 0.0]])


# -- KL to the reference -------------------------------------------------------------------------

# Two tokens: p = 0.5, ref 0.25 and p = 0.25, ref 0.5, so d = ref - logp = [-ln2, +ln2]. A = 0, so the
# policy term is 0 and the loss is beta * mean KL (bnpo, 2 tokens). A padded third column holds NaN.
KL_LOGP = [[math.log(0.5), math.log(0.25), math.nan]]
KL_REF = [[math.log(0.25), math.log(0.5), math.nan]]
KL_MASK = torch.tensor([[True, True, False]])


@pytest.mark.parametrize(
    "estimator, per_token, expected_grad",
    [
        # k1 = -d = [ln2, -ln2], mean 0; d k1 / d logp = 1 -> beta / 2 = 0.05 each.
        ("k1", [LN2, -LN2], [0.05, 0.05]),
        # k2 = d^2 / 2 = (ln2)^2 / 2 each; d k2 / d logp = -d = [ln2, -ln2] -> times 0.05.
        ("k2", [LN2**2 / 2, LN2**2 / 2], [0.05 * LN2, -0.05 * LN2]),
        # k3 = e^d - d - 1 = [0.5 + ln2 - 1, 2 - ln2 - 1], mean (0.5 + 2 - 2) / 2 = 0.25;
        # d k3 / d logp = 1 - e^d = [0.5, -1] -> times 0.05.
        ("k3", [LN2 - 0.5, 1 - LN2], [0.025, -0.05]),
    ],
)
def test_kl_estimators(estimator, per_token, expected_grad):
    close(kl_divergence(t(KL_LOGP)[:, :2], t(KL_REF)[:, :2], estimator), [per_token])
    logp = leaf(KL_LOGP)
    cfg = config(loss_type="bnpo", beta=0.1, kl_estimator=estimator)
    loss, stats = policy_loss(logp, None, t([0.0]), KL_MASK, cfg, ref_logprobs=t(KL_REF))
    mean_kl = sum(per_token) / 2
    close(stats["kl"], mean_kl)
    close(loss, 0.1 * mean_kl)
    close(grad(loss, logp), [[*expected_grad, 0.0]])


def test_beta_zero_skips_the_reference():
    logp = t([[-1.0, -2.0]])
    mask = torch.ones(1, 2, dtype=torch.bool)
    without, stats = policy_loss(logp, None, t([1.0]), mask, config())
    junk, _ = policy_loss(logp, None, t([1.0]), mask, config(), ref_logprobs=t([[math.nan, math.inf]]))
    close(without, -1.0)  # ratio 1, A = 1: -1 per token
    close(junk, -1.0)  # a reference full of NaN is never read
    assert "kl" not in stats
    with pytest.raises(ValueError, match="beta=0.1 needs ref_logprobs"):
        policy_loss(logp, None, t([1.0]), mask, config(beta=0.1))


# -- importance-sampling correction ----------------------------------------------------------------

# Two tokens of one sequence, on-policy (old = current), A = +1, so a token's policy loss is -w.
# exp(old - sampling) = [5, 0.5]: sampling = old - ln 5 and old - ln 0.5.
IS_OLD = [[math.log(0.5), math.log(0.2)]]
IS_SAMPLING = [[math.log(0.5) - math.log(5), math.log(0.2) - math.log(0.5)]]


@pytest.mark.parametrize(
    "mode, clip_min, clip_max, weights, mean, wmin, wmax, frac",
    [
        # min(5, 3) = 3 (truncated), 0.5 kept: loss (-3 - 0.5) / 2 = -1.75.
        ("token_truncate", None, 3.0, [3.0, 0.5], 1.75, 0.5, 3.0, 0.5),
        # [0.8, 3]: 5 -> 3, 0.5 -> 0.8; both outside the bounds.
        ("token_truncate", 0.8, 3.0, [3.0, 0.8], 1.9, 0.8, 3.0, 1.0),
        # 5 > 3 is masked to 0, 0.5 kept.
        ("token_mask", None, 3.0, [0.0, 0.5], 0.25, 0.0, 0.5, 0.5),
        # one ratio for the sequence: exp(ln 5 + ln 0.5) = 2.5, inside [., 3]: both tokens weigh 2.5.
        ("sequence_truncate", None, 3.0, [2.5, 2.5], 2.5, 2.5, 2.5, 0.0),
        # 2.5 truncated to 2.
        ("sequence_truncate", None, 2.0, [2.0, 2.0], 2.0, 2.0, 2.0, 1.0),
        # 2.5 > 2 masks the whole sequence.
        ("sequence_mask", None, 2.0, [0.0, 0.0], 0.0, 0.0, 0.0, 1.0),
    ],
)
def test_importance_sampling_weights(mode, clip_min, clip_max, weights, mean, wmin, wmax, frac):
    logp, sampling = leaf(IS_OLD), leaf(IS_SAMPLING)
    cfg = LossConfig(
        loss_type="bnpo",
        importance_sampling_mode=mode,
        importance_sampling_clip_min=clip_min,
        importance_sampling_clip_max=clip_max,
    )
    loss, stats = policy_loss(logp, None, t([1.0]), torch.ones(1, 2, dtype=torch.bool), cfg, sampling_logprobs=sampling)
    close(loss, -sum(weights) / 2)
    # The weight is a constant: d(-w * r) / d logp = -w * r = -w, over 2 tokens; none reaches the sampler.
    loss.backward()
    close(logp.grad, [[-w / 2 for w in weights]])
    assert sampling.grad is None
    prefix = "sampling/importance_sampling_ratio"
    close(stats[f"{prefix}/mean"], mean)
    close(stats[f"{prefix}/min"], wmin)
    close(stats[f"{prefix}/max"], wmax)
    close(stats[f"{prefix}/frac_clipped"], frac)


def test_importance_weight_multiplies_the_policy_term_only():
    # A = 0 (no policy term) with the KL setup above: loss = beta * mean k3 = 0.1 * 0.25 whatever the weights.
    logp = t(KL_LOGP)
    sampling = logp - torch.log(t([[5.0, 0.5, 1.0]]))
    cfg = LossConfig(loss_type="bnpo", beta=0.1)
    loss, stats = policy_loss(logp, None, t([0.0]), KL_MASK, cfg, sampling_logprobs=sampling, ref_logprobs=t(KL_REF))
    close(loss, 0.025)
    close(stats["sampling/importance_sampling_ratio/max"], 3.0)


def test_enumerated_answers_weighed_by_the_correction_give_the_exact_expected_gradient():
    """Both answers of a self-check taken with probability 1 (recorded log-prob 0, the self_check
    program's `enumerate_answers`): the IS weight exp(old - 0) is each answer's probability, so the
    gradient is that of sum_a pi(a) A(a), the exact expectation a drawn answer estimates."""
    advantages = t([0.7, -0.5])
    logits = torch.tensor([0.3, -0.4], dtype=torch.float64, requires_grad=True)  # Yes, No
    logp = logits.log_softmax(-1)[:, None]
    loss, stats = policy_loss(logp, None, advantages, torch.ones(2, 1, dtype=torch.bool), LossConfig(loss_type="bnpo"),
                              sampling_logprobs=torch.zeros(2, 1, dtype=torch.float64))  # fmt: skip
    (grad,) = torch.autograd.grad(loss, logits, retain_graph=True)
    exact = logits.detach().clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(-(exact.softmax(-1) * advantages).sum() / 2, exact)  # bnpo: over 2 tokens
    torch.testing.assert_close(grad, expected)
    close(stats["sampling/importance_sampling_ratio/mean"], 0.5)  # the two probabilities, averaged
    # The same pair recorded as drawn (its own log-probs): each answer counts once, a different gradient.
    drawn, _ = policy_loss(logp, None, advantages, torch.ones(2, 1, dtype=torch.bool), LossConfig(loss_type="bnpo"),
                           sampling_logprobs=logp.detach())  # fmt: skip
    assert not torch.allclose(torch.autograd.grad(drawn, logits)[0], expected)


def test_correction_without_sampling_logprobs_is_an_error():
    with pytest.raises(ValueError, match="importance_sampling_correction is on but no sampling_logprobs"):
        policy_loss(t([[0.0]]), None, t([1.0]), torch.ones(1, 1), LossConfig())


# -- padding invariance, dtypes ------------------------------------------------------------------


def _random_batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    logp = -torch.rand(3, 5, dtype=F64, generator=g) * 2
    old = logp + 0.3 * torch.randn(3, 5, dtype=F64, generator=g)
    sampling = old + 0.3 * torch.randn(3, 5, dtype=F64, generator=g)
    ref = old + 0.2 * torch.randn(3, 5, dtype=F64, generator=g)
    adv = torch.randn(3, 5, dtype=F64, generator=g)
    # Ragged, with a hole (an untrained segment between trained ones) in row 2.
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 0, 1, 1, 0]], dtype=torch.bool)
    return logp, old, sampling, ref, adv, mask


def _pad(x: torch.Tensor, value) -> torch.Tensor:
    return torch.cat([x, torch.full((x.shape[0], 3), value, dtype=x.dtype)], dim=1)


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dapo", "dr_grpo"])
@pytest.mark.parametrize("level", ["token", "sequence"])
@pytest.mark.parametrize("mode", ["token_truncate", "sequence_mask"])
@pytest.mark.parametrize("per_token_adv", [True, False])
def test_padding_changes_nothing(loss_type, level, mode, per_token_adv):
    logp, old, sampling, ref, adv, mask = _random_batch()
    adv = adv if per_token_adv else adv[:, 0]
    cfg = LossConfig(
        loss_type=loss_type,
        max_completion_length=8,
        importance_sampling_level=level,
        importance_sampling_mode=mode,
        importance_sampling_clip_max=1.5,
        beta=0.05,
        epsilon_high=0.28,
    )

    def run(pad: bool):
        f = (lambda x, v=math.nan: _pad(x, v)) if pad else (lambda x, v=None: x)
        lp = f(logp).requires_grad_()
        a = f(adv) if per_token_adv else adv
        loss, stats = policy_loss(
            lp, f(old), a, f(mask, False), cfg, sampling_logprobs=f(sampling), ref_logprobs=f(ref)
        )
        return loss, stats, grad(loss, lp)

    loss, stats, g = run(pad=False)
    padded_loss, padded_stats, padded_g = run(pad=True)
    torch.testing.assert_close(padded_loss, loss)
    assert padded_stats.keys() == stats.keys()
    for key in stats:
        torch.testing.assert_close(padded_stats[key], stats[key], msg=key)
    torch.testing.assert_close(padded_g[:, :5], g)
    assert (padded_g[:, 5:] == 0).all()
    assert (g[~mask] == 0).all()  # holes inside the row get no gradient either


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_is_kept(dtype):
    logp, old, sampling, ref, adv, mask = (x.to(dtype) if x.is_floating_point() else x for x in _random_batch())
    loss, stats = policy_loss(logp, old, adv, mask, LossConfig(beta=0.1), sampling_logprobs=sampling, ref_logprobs=ref)
    assert loss.dtype == dtype and all(v.dtype == dtype for v in stats.values())


# -- entropy -------------------------------------------------------------------------------------


def test_entropy_stats_split_text_and_image_tokens():
    entropies = t([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    mask = torch.tensor([[True, True, False], [True, True, True]])
    is_image = torch.tensor([[False, True, True], [False, False, True]])
    stats = entropy_stats(entropies, mask, is_image)
    close(stats["entropy/text"], (1 + 4 + 5) / 3)  # (0,0), (1,0), (1,1)
    close(stats["entropy/image"], (2 + 6) / 2)  # (0,1), (1,2); (0,2) is masked
    close(stats["entropy"], (1 + 2 + 4 + 5 + 6) / 5)
    no_image = entropy_stats(entropies, mask, torch.zeros_like(is_image))
    assert math.isnan(no_image["entropy/image"].item())


# -- configuration and input errors --------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"loss_type": "ppo"}, "loss_type"),
        ({"epsilon": -0.1}, "epsilon"),
        ({"epsilon_high": -0.1}, "epsilon_high"),
        ({"loss_type": "dr_grpo"}, "max_completion_length"),
        ({"importance_sampling_level": "tok"}, "importance_sampling_level"),
        ({"beta": -1.0}, "beta"),
        ({"kl_estimator": "k4"}, "kl_estimator"),
        ({"importance_sampling_mode": "truncate"}, "importance_sampling_mode"),
        ({"importance_sampling_clip_min": 3.0, "importance_sampling_clip_max": 2.0}, "importance_sampling_clip_min"),
        ({"importance_sampling_clip_max": None}, "importance_sampling_clip_max"),
    ],
)
def test_bad_config_names_the_key(kwargs, key):
    with pytest.raises(ValueError, match=key):
        LossConfig(**kwargs)


def test_mismatched_shapes_are_named():
    with pytest.raises(ValueError, match="old_logprobs has shape"):
        policy_loss(t([[0.0, 0.0]]), t([[0.0]]), t([1.0]), torch.ones(1, 2), config())
    with pytest.raises(ValueError, match="advantages must be"):
        policy_loss(t([[0.0, 0.0]]), None, t([1.0, 2.0]), torch.ones(1, 2), config())
