"""The GRPO learner in process, on trajectories the rollout programs sampled from the SFT checkpoint:
sampler and trainer agree (IS ratio 1), an update moves log-probs the way the advantages say,
PPO epochs make clipping act, the KL reference, and the engines agree on the first loss."""

from __future__ import annotations

import math

import pytest
import torch

from coevolve.config.lora import LoraConfig
from coevolve.config.schema import EngineConfig
from coevolve.learner.learner import Learner, ProgramScoring, Sample
from coevolve.learner.losses import LossConfig
from coevolve.model.guidance import Guidance
from coevolve.model.sampling import Sampling
from coevolve.rl.config import LearnerConfig, OptimizerConfig
from coevolve.rollout.items import shapes_items
from coevolve.rollout.programs import IntrospectiveT2I, Reconstruction

SMALL = {"max_plan_tokens": 6, "max_verdict_tokens": 4, "max_reflection_tokens": 4}
GUIDANCE = Guidance(3.0)
SAMPLING = Sampling(temperature=1.0)
SCORING = {"t2i": ProgramScoring(GUIDANCE, SAMPLING), "recon": ProgramScoring(GUIDANCE, SAMPLING)}
PLAIN = EngineConfig("plain")


@pytest.fixture(scope="module")
def samples(sft_adapter) -> list[Sample]:
    """Two groups of two introspective trajectories (always regenerated: every segment kind) and
    one group of two reconstructions; advantages +1 / -1 alternate within each group."""
    t2i = IntrospectiveT2I(sft_adapter, seed=5, num_generations=2, guidance=GUIDANCE, sampling=SAMPLING,
                           regenerate="always", max_rounds=2, **SMALL)  # fmt: skip
    recon = Reconstruction(sft_adapter, seed=5, num_generations=2, guidance=GUIDANCE, sampling=SAMPLING,
                           max_caption_tokens=6)  # fmt: skip
    out = []
    for k, trajectory in enumerate(t2i(shapes_items("introspective_t2i", 2, seed=3))):
        sign = 1.0 if k % 2 == 0 else -1.0
        segments = ("plan", "image", "verdict", "reflection", "regen_image")
        out.append(Sample("t2i", trajectory, {name: sign for name in segments}))
    for k, trajectory in enumerate(recon(shapes_items("reconstruction", 1, seed=3))):
        out.append(Sample("recon", trajectory, {"caption": 1.0 if k == 0 else -1.0, "image": 0.5}))
    return out


def learner(checkpoint, engine=PLAIN, lora=None, lr=1e-3, **overrides) -> Learner:
    loss = overrides.pop("loss", LossConfig())
    config = LearnerConfig(loss=loss, optimizer=OptimizerConfig(learning_rate=lr), micro_batch_size=2, lora=lora,
                           **overrides)  # fmt: skip
    return Learner(str(checkpoint), config, engine, SCORING, total_steps=10)


def test_the_trainer_scores_what_the_sampler_drew_so_the_is_ratio_is_one(sft_checkpoint, samples):
    metrics = learner(sft_checkpoint).train(samples)
    # Same weights, same contexts, same CFG and sampling transform: trainer = sampler log-probs.
    assert metrics["learner/sampling/importance_sampling_ratio/mean"] == pytest.approx(1.0, abs=1e-3)
    assert metrics["learner/sampling/importance_sampling_ratio/min"] > 0.99
    assert metrics["learner/sampling/importance_sampling_ratio/max"] < 1.01
    assert metrics["learner/ratio/mean"] == pytest.approx(1.0)  # on-policy: one epoch, no clipping
    assert metrics["learner/clip_ratio/region_mean"] == 0
    assert metrics["learner/entropy/text"] > 0 and metrics["learner/entropy/image"] > 0
    expected = sum(int(s.mask.sum()) for sample in samples for s in sample.trajectory.segments
                   if s.name in sample.advantages)  # fmt: skip
    assert metrics["learner/trained_tokens"] == expected
    assert math.isfinite(metrics["learner/loss"]) and metrics["learner/grad_norm"] > 0


def test_an_update_raises_positive_and_lowers_negative_advantage_tokens(sft_checkpoint, samples):
    model = learner(sft_checkpoint, lr=3e-4)
    with torch.no_grad():
        before = [t.logprobs.sum().item() for t in model._tokens(samples, model.adapter)]
    model.train(samples)
    with torch.no_grad():
        after = [t.logprobs.sum().item() for t in model._tokens(samples, model.adapter)]
    moved = [a - b for a, b in zip(after, before)]
    signs = [1.0 if sample.advantages.get("plan", sample.advantages.get("caption")) > 0 else -1.0 for sample in samples]
    up = [m for m, s in zip(moved, signs) if s > 0]
    down = [m for m, s in zip(moved, signs) if s < 0]
    assert sum(up) > 0 > sum(down), (up, down)


def test_ppo_epochs_score_old_logprobs_and_clipping_acts(sft_checkpoint, samples):
    loss = LossConfig(epsilon=0.01, epsilon_high=0.01)
    metrics = learner(sft_checkpoint, lr=3e-3, loss=loss, num_iterations=3).train(samples)
    assert metrics["learner/optimizer_steps"] == 3
    assert metrics["learner/clip_ratio/region_mean"] > 0  # the 2nd and 3rd epochs moved past 1 +- 0.01


def test_kl_to_a_frozen_copy_or_to_the_base_without_the_adapter(sft_checkpoint, samples):
    for lora in (None, LoraConfig(r=4, alpha=8)):
        model = learner(sft_checkpoint, lora=lora, lr=3e-3, loss=LossConfig(beta=0.1), num_iterations=2)
        metrics = model.train(samples)
        assert metrics["learner/kl"] > 0  # the second epoch's policy differs from the reference
        again = model.train(samples)
        assert again["learner/kl"] > 0


@pytest.mark.parametrize("lora", [None, LoraConfig(r=4, alpha=8)], ids=["full", "lora"])
def test_zero0_and_zero2_agree_with_the_plain_engine_on_the_first_loss(sft_checkpoint, samples, lora):
    losses = {}
    for name, engine in (("plain", PLAIN), ("zero0", EngineConfig("deepspeed", 0)), ("zero2", EngineConfig("deepspeed", 2))):
        model = learner(sft_checkpoint, engine=engine, lora=lora)
        first = model.train(samples)
        second = model.train(samples)  # a few steps run
        assert math.isfinite(second["learner/loss"])
        losses[name] = first["learner/loss"]
    assert losses["zero0"] == pytest.approx(losses["plain"], abs=1e-6)
    assert losses["zero2"] == pytest.approx(losses["plain"], abs=1e-6)


def test_a_sample_without_ids_is_refused_with_its_name(sft_checkpoint, samples):
    from dataclasses import replace

    trajectory = samples[0].trajectory
    bare = replace(trajectory, segments=[replace(s, ids=None, logprobs=None, mask=None) if s.name == "plan" else s
                                         for s in trajectory.segments])  # fmt: skip
    with pytest.raises(ValueError, match=rf"{trajectory.id}.*plan"):
        learner(sft_checkpoint).train([Sample("t2i", bare, {"plan": 1.0})])
