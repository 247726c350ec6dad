"""The learner's training engine: plain torch and DeepSpeed ZeRO 0-3 (on CPU), with and without LoRA.

DeepSpeed runs in this process (one rank of a world of one); conftest.py gives the
environment and the process group back when the file is done, so no other test sees them.
"""

from __future__ import annotations

import copy

import pytest
import torch
from PIL import Image
from safetensors import safe_open
from transformers import JanusForConditionalGeneration

from coevolve.config.lora import LoraConfig
from coevolve.config.schema import EngineConfig
from coevolve.learner.engine import OptimConfig, build_engine
from coevolve.model.guidance import CFGMode, Guidance
from coevolve.model.scoring import score
from coevolve.model.segments import GenImage

# ZeRO-3 keeps parameters under 1e5 elements whole by default: all of the tiny model's. Partition all.
ZERO3 = {"zero_optimization": {"stage3_param_persistence_threshold": 0}}
ENGINES = {
    "plain": (EngineConfig("plain"), None),
    "zero0": (EngineConfig("deepspeed", 0), None),
    "zero1": (EngineConfig("deepspeed", 1), None),
    "zero2": (EngineConfig("deepspeed", 2), None),
    "zero3": (EngineConfig("deepspeed", 3), ZERO3),
}
OPTIM = OptimConfig(learning_rate=1e-3, weight_decay=0.01, max_grad_norm=1.0)


@pytest.fixture(scope="module")
def original(tiny_checkpoint):
    return JanusForConditionalGeneration.from_pretrained(tiny_checkpoint)


def _build(original, kind, lora=None, optim=OPTIM, **kwargs):
    engine, extra = ENGINES[kind]
    return build_engine(copy.deepcopy(original), engine, optim, lora, deepspeed_config=extra, **kwargs)


def _sequences(adapter, seed, looks=True):
    """Two trajectories: plan -> image (-> a verdict about an image it looks at) -> regenerated image."""
    g = torch.Generator().manual_seed(seed)
    spec = adapter.spec
    out = []
    for color in ("red", "blue"):
        sequence = adapter.image_prompt(f"a {color} circle") + (
            adapter.text(f" Plan: a {color} circle.", scored=True),
            GenImage(torch.randint(0, spec.codebook_size, (spec.num_image_tokens,), generator=g)),
        )
        if looks:
            image = {"type": "image", "image": Image.new("RGB", (64, 64), color)}
            question = adapter.chat([{"role": "user", "content": [image, {"type": "text", "text": "Match?"}]}])
            sequence += question[1:] + (adapter.text(" No.", scored=True),)
        out.append(sequence)
    return out


def _loss(engine, adapter, sequences):
    """A loss over `score`'s log-probs of the Janus model, as the learner computes one."""

    def loss(_policy):
        scores = score(engine.janus, adapter.spec, sequences, mode=CFGMode.GUIDED, guidance=Guidance(3.0))
        return -torch.cat([lp for row in scores.logprobs for lp in row if lp is not None]).mean()

    return engine.forward(loss)


def _lm_loss(engine, seed, direct=False):
    ids = torch.randint(5, 400, (2, 10), generator=torch.Generator().manual_seed(seed))
    return (engine.module if direct else engine)(input_ids=ids, labels=ids).loss


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


def _update_distance(a: dict, b: dict, initial: dict) -> float:
    """||a - b|| / ||b - initial|| over all tensors: how far two updates from `initial` differ."""
    squared = lambda x, y: sum(((x[k].double() - y[k].double()) ** 2).sum().item() for k in x)  # noqa: E731
    return (squared(a, b) / squared(b, initial)) ** 0.5


@pytest.mark.parametrize("lora", [None, LoraConfig(r=4, alpha=8)], ids=["full", "lora"])
def test_engines_agree_on_losses_and_steps(original, tiny_adapter, lora):
    # Step 1 looks at an image (the vision encoder gets gradients), step 2 does not (it gets none,
    # and its Adam moments still move it: in every engine alike).
    batches = [_sequences(tiny_adapter, 0), _sequences(tiny_adapter, 1, looks=False)]
    initial = {k: v.clone() for k, v in original.state_dict().items()}
    results = {}
    for kind in ENGINES:
        engine = _build(original, kind, lora)
        if kind == "zero3":
            assert any(p.numel() == 0 for p in engine.janus.parameters())  # partitioned indeed
        losses, infos = [], []
        for batch in batches:
            loss = _loss(engine, tiny_adapter, batch)
            engine.backward(loss)
            losses.append(loss.item())
            infos.append(engine.step())
        results[kind] = (losses, infos, engine.policy_state_dict())
    plain_losses, plain_infos, plain_policy = results["plain"]
    assert _max_diff(plain_policy, initial) > 1e-4
    for kind, (losses, infos, policy) in results.items():
        assert losses[0] == pytest.approx(plain_losses[0], abs=1e-5), kind
        assert losses[1] == pytest.approx(plain_losses[1], abs=1e-4), kind
        for info, plain_info in zip(infos, plain_infos):
            assert info["grad_norm"] == pytest.approx(plain_info["grad_norm"], rel=1e-5), kind
            assert info["learning_rate"] == plain_info["learning_rate"] == 1e-3
        diff = _max_diff(policy, plain_policy)
        relative = _update_distance(policy, plain_policy, initial)
        print(f"{kind} {'lora' if lora else 'full'}: after 2 steps, max |diff| to plain {diff:.2e}, "
              f"relative distance of the updates {relative:.2e}")  # fmt: skip
        # The updates agree as a whole to float noise: a wrong learning rate, weight decay or
        # clipping would differ by 1e-2 or more. Single elements can differ more — Adam divides by
        # sqrt(v), so where two steps' gradients nearly cancel it magnifies summation-order noise
        # (ZeRO-3 vs plain: 3.7e-5 on one CPU, 6% of that element's update, 2.6e-5 in norm) —
        # but stay under a tenth of one step's size (the learning rate).
        assert relative < 1e-4, kind
        assert diff < 0.1 * OPTIM.learning_rate, kind
        if kind == "zero0":
            assert diff == 0  # the same torch AdamW and clipping on the same gradients
        if lora is not None:  # only the adapted projections moved
            moved = {k for k in policy if not torch.equal(policy[k], initial[k])}
            assert moved and all(k.endswith("_proj.weight") and "language_model" in k for k in moved)


@pytest.mark.parametrize("kind", [*ENGINES, "zero3-direct"])
def test_backward_per_micro_batch_accumulates_as_one_backward(original, kind):
    """The caller scales each micro-batch loss; several backward calls then one step equal one
    backward of the sum: no 1/GAS scaling, no reduction at a boundary DeepSpeed guesses.
    zero3-direct: forward passes on the module itself, not through the engine."""
    kind, _, direct = kind.partition("-")
    policies, norms = [], []
    for split in (True, False):
        engine = _build(original, kind)
        for step in range(2):  # 3 micro-batches, then 2: the count varies from step to step
            seeds = range(10 * step, 10 * step + 3 - step)
            if split:
                for seed in seeds:
                    engine.backward(_lm_loss(engine, seed, bool(direct)) / 4)
            else:
                engine.backward(sum(_lm_loss(engine, seed, bool(direct)) for seed in seeds) / 4)
            norms.append(engine.step()["grad_norm"])
        policies.append(engine.policy_state_dict())
    diff = _max_diff(*policies)
    print(f"{kind}{'-direct' if direct else ''}: accumulated vs one backward, max |diff| {diff:.2e}")
    assert diff < 1e-5  # a 1/GAS scaling or a lost micro-batch moves weights by ~lr = 1e-3
    assert norms[:2] == pytest.approx(norms[2:], rel=1e-5)


def test_lora_policy_is_merged_without_touching_the_module(original, tiny_adapter):
    engine = _build(original, "plain", LoraConfig(r=4, alpha=8))
    engine.backward(_loss(engine, tiny_adapter, _sequences(tiny_adapter, 0)))
    engine.step()
    before = {k: v.clone() for k, v in engine.module.state_dict().items()}
    policy = engine.policy_state_dict()
    assert all(torch.equal(v, before[k]) for k, v in engine.module.state_dict().items())
    merged = copy.deepcopy(engine.module).merge_and_unload().state_dict()
    assert list(policy) == list(original.state_dict())
    diff = _max_diff(policy, merged)
    print(f"policy vs merge_and_unload: max |diff| {diff:.2e}")
    assert diff <= 1e-6
    assert policy["lm_head.weight"] is policy["model.language_model.embed_tokens.weight"]  # still tied
    fresh = JanusForConditionalGeneration(original.config)
    fresh.load_state_dict(policy, strict=True)


@pytest.mark.parametrize(("kind", "lora"), [("plain", None), ("zero3", None), ("plain", LoraConfig(r=4, alpha=8))])
def test_policy_views_are_the_modules_own_tensors_only_when_it_holds_them_whole(original, kind, lora):
    engine = _build(original, kind, lora)
    views, copies = engine.policy_state_dict(views=True), engine.policy_state_dict()
    assert list(views) == list(copies) and _max_diff(views, copies) == 0
    own = {p.data_ptr() for p in engine.janus.parameters()}
    shared = [views[key].data_ptr() in own for key in ("lm_head.weight", "model.language_model.norm.weight")]
    assert shared == [kind == "plain" and lora is None] * 2  # no LoRA to merge, no ZeRO-3 partitions


def test_reference_is_the_base_model_with_the_adapter_disabled(original):
    engine = _build(original, "zero3", LoraConfig(r=4, alpha=8))
    assert engine.has_adapter
    engine.backward(_lm_loss(engine, 0))
    engine.step()
    ids = torch.randint(5, 400, (1, 8), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        base = original(input_ids=ids).logits
        policy = engine.module(input_ids=ids).logits
        with engine.reference():
            disabled = engine(input_ids=ids).logits
        again = engine.module(input_ids=ids).logits
    assert torch.allclose(disabled, base, atol=1e-5)
    assert not torch.allclose(policy, base, atol=1e-4)
    assert torch.equal(again, policy)
    with pytest.raises(RuntimeError, match="frozen copy"), _build(original, "plain").reference():
        pass


def test_frozen_copy_is_a_detached_copy_of_the_policy(original):
    engine = _build(original, "zero3")
    frozen = engine.frozen_copy()
    assert not frozen.training and not any(p.requires_grad for p in frozen.parameters())
    assert _max_diff(frozen.state_dict(), original.state_dict()) == 0
    engine.backward(_lm_loss(engine, 0))
    engine.step()
    assert _max_diff(frozen.state_dict(), original.state_dict()) == 0


@pytest.mark.parametrize(
    ("kind", "lora"),
    [("plain", LoraConfig(r=4, alpha=8, dropout=0.1)), ("zero2", None), ("zero3", LoraConfig(r=4, alpha=8))],
    ids=["plain-lora-dropout", "zero2", "zero3-lora"],
)
def test_save_state_resumes_exactly(original, tmp_path, kind, lora):
    optim = OptimConfig(learning_rate=1e-3, weight_decay=0.01, lr_scheduler="linear", warmup_steps=1, total_steps=5)
    torch.manual_seed(0)
    engine = _build(original, kind, lora, optim)
    for step in range(2):
        engine.backward(_lm_loss(engine, step))
        engine.step()
    engine.save_state(tmp_path / "state")
    engine.backward(_lm_loss(engine, 2))
    expected_info = engine.step()
    expected = engine.policy_state_dict()

    torch.manual_seed(123)  # the RNG (LoRA dropout) comes back with the state
    resumed = _build(original, kind, lora, optim)
    resumed.load_state(tmp_path / "state")
    assert resumed.global_step == 2
    resumed.backward(_lm_loss(resumed, 2))
    info = resumed.step()
    assert info == expected_info
    assert _max_diff(resumed.policy_state_dict(), expected) == 0
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_save_pretrained_loads_with_plain_transformers(original, tiny_adapter, tmp_path):
    engine = _build(original, "zero3", LoraConfig(r=4, alpha=8))
    engine.backward(_lm_loss(engine, 0))
    engine.step()
    engine.save_pretrained(tmp_path / "policy", tiny_adapter.processor)
    loaded = JanusForConditionalGeneration.from_pretrained(tmp_path / "policy")
    assert _max_diff(loaded.state_dict(), engine.policy_state_dict()) == 0
    assert _max_diff(loaded.state_dict(), original.state_dict()) > 0
    assert (tmp_path / "policy" / "processor_config.json").is_file()
    with safe_open(tmp_path / "policy" / "model.safetensors", "pt") as saved:
        assert set(saved.keys()) == set(original.state_dict()) - {"lm_head.weight"}  # tied, saved once
    assert [p.name for p in tmp_path.iterdir()] == ["policy"]


@pytest.mark.parametrize("kind", ["plain", "zero3"])
def test_gradient_checkpointing_changes_nothing_but_memory(original, tiny_adapter, kind):
    sequences = _sequences(tiny_adapter, 0)
    results = []
    for checkpointing in (False, True):
        engine = _build(original, kind, LoraConfig(r=4, alpha=8), gradient_checkpointing=checkpointing)
        loss = _loss(engine, tiny_adapter, sequences)
        engine.backward(loss)
        info = engine.step()
        results.append((loss.item(), info["grad_norm"], engine.policy_state_dict()))
    (loss_a, norm_a, policy_a), (loss_b, norm_b, policy_b) = results
    assert loss_a == loss_b and norm_b == pytest.approx(norm_a, rel=1e-6) and norm_a > 0
    assert _max_diff(policy_a, policy_b) < 1e-7


def test_bf16_model_trains_in_bf16(original):
    engine = build_engine(copy.deepcopy(original).to(torch.bfloat16), EngineConfig("deepspeed", 2), OPTIM, None)
    engine.backward(_lm_loss(engine, 0))
    info = engine.step()
    policy = engine.policy_state_dict()
    assert info["grad_norm"] > 0 and {v.dtype for v in policy.values()} == {torch.bfloat16}
    assert _max_diff(policy, {k: v.to(torch.bfloat16) for k, v in original.state_dict().items()}) > 0


def test_optim_config_is_checked():
    with pytest.raises(ValueError, match="lr_scheduler"):
        OptimConfig(lr_scheduler="sometimes")
    with pytest.raises(ValueError, match="total_steps"):
        OptimConfig(total_steps=0)
