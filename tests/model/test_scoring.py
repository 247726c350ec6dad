"""Teacher-forced log-probs: multi-segment trajectories, chunking, autograd and the CFG modes."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from coevolve.model.guidance import CFGMode, Guidance
from coevolve.model.sampling import Sampling
from coevolve.model.segments import GenImage, Text


def _trajectory(adapter, seed):
    """plan -> image -> verdict about the image it looks at -> regenerated image."""
    g = torch.Generator().manual_seed(seed)
    spec = adapter.spec
    prompt = adapter.image_prompt("a photo of a red circle")
    plan = adapter.text(" Plan: a red circle in the centre.", scored=True)
    image = GenImage(torch.randint(0, spec.codebook_size, (spec.num_image_tokens,), generator=g))
    question = adapter.chat(
        [
            {
                "role": "user",
                "content": [
                    {"type": "image", "image": Image.new("RGB", (64, 64), "red")},
                    {"type": "text", "text": "Does it match?"},
                ],
            }
        ]
    )
    verdict = adapter.text(" No. The circle is too small.", scored=True)
    regen = GenImage(torch.randint(0, spec.codebook_size, (spec.num_image_tokens,), generator=g))
    return prompt + (plan, image) + question[1:] + (verdict, regen)


def test_every_scored_segment_gets_one_logprob_per_token(tiny_adapter):
    sequences = [_trajectory(tiny_adapter, 0), _trajectory(tiny_adapter, 1)[:-3]]
    scores = tiny_adapter.logprobs(sequences, mode="guided", guidance=Guidance(3.0))
    for sequence, lps, ents in zip(sequences, scores.logprobs, scores.entropies):
        for segment, lp, ent in zip(sequence, lps, ents):
            if not segment.scored:
                assert lp is None and ent is None
                continue
            n = segment.ids.numel() if isinstance(segment, Text) else segment.codes.numel()
            assert lp.shape == ent.shape == (n,)
            assert bool((lp <= 0).all()) and bool(torch.isfinite(lp).all()) and bool((ent >= 0).all())


def test_scores_do_not_depend_on_batch_company_or_chunk_size(tiny_adapter):
    trajectory = _trajectory(tiny_adapter, 0)
    alone = tiny_adapter.logprobs([trajectory], guidance=Guidance(5.0), chunk_size=4096)
    batched = tiny_adapter.logprobs(
        [_trajectory(tiny_adapter, 1)[:4], trajectory], guidance=Guidance(5.0), chunk_size=7
    )
    for a, b in zip(alone.logprobs[0], batched.logprobs[1]):
        assert (a is None) == (b is None)
        if a is not None:
            assert (a - b).abs().max() <= 1e-4


def test_first_segment_scored_is_an_error(tiny_adapter):
    with pytest.raises(ValueError, match="sequence 0: its first segment is scored"):
        tiny_adapter.logprobs([(tiny_adapter.text("hello", scored=True, bos=True),)])


def _grads(adapter, mode, chunk_size, weight=5.0):
    model = adapter.model
    model.zero_grad(set_to_none=True)
    scores = adapter.logprobs([_trajectory(adapter, 0)], mode=mode, guidance=Guidance(weight), chunk_size=chunk_size)
    loss = -torch.cat([lp for lp in scores.logprobs[0] if lp is not None]).mean()
    loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return loss.detach(), grads


def test_backward_through_chunks_equals_backward_in_one_chunk(tiny_adapter):
    loss_a, grads_a = _grads(tiny_adapter, CFGMode.GUIDED, chunk_size=5)
    loss_b, grads_b = _grads(tiny_adapter, CFGMode.GUIDED, chunk_size=100_000)
    assert torch.allclose(loss_a, loss_b, atol=1e-6)
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        assert torch.allclose(grads_a[name], grads_b[name], atol=1e-6, rtol=1e-4), name
    # Every part on the path gets gradient: trunk, embeddings (tied to the LM head), generation head/embeddings, vision encoder.
    for part in (
        "model.language_model.embed_tokens",
        "model.generation_head",
        "model.generation_embeddings",
        "model.generation_aligner",
        "model.language_model.layers.0",
        "model.vision_model",
        "model.aligner",
    ):
        assert any(name.startswith(part) for name in grads_a), part


def test_guided_detach_stops_gradient_through_the_unconditional_branch(tiny_adapter):
    loss_g, grads_g = _grads(tiny_adapter, CFGMode.GUIDED, chunk_size=64)
    loss_d, grads_d = _grads(tiny_adapter, CFGMode.GUIDED_DETACH, chunk_size=64)
    assert torch.allclose(loss_g, loss_d), "same values, different gradients"
    assert not torch.allclose(
        grads_g["model.generation_head.vision_head.weight"], grads_d["model.generation_head.vision_head.weight"]
    )
    # Detached is not the conditional mode either: the loss still sees the guided distribution.
    _, grads_c = _grads(tiny_adapter, CFGMode.CONDITIONAL, chunk_size=64)
    assert not torch.allclose(
        grads_d["model.generation_head.vision_head.bias"], grads_c["model.generation_head.vision_head.bias"]
    )


def test_no_gradient_work_without_grad(tiny_adapter):
    with torch.no_grad():
        scores = tiny_adapter.logprobs([_trajectory(tiny_adapter, 0)])
    assert all(lp is None or not lp.requires_grad for lp in scores.logprobs[0])


def _looks_at(adapter, color, answer):
    """A short self-check turn about a flat image of `color`: its log-probs depend on the pixels."""
    question = adapter.chat(
        [
            {
                "role": "user",
                "content": [
                    {"type": "image", "image": Image.new("RGB", (64, 64), color)},
                    {"type": "text", "text": "Does it match?"},
                ],
            }
        ]
    )
    return question + (adapter.text(answer, scored=True),)


@pytest.mark.parametrize("mode", ["conditional", "guided"])
def test_sequences_sharing_rows_score_as_in_rows_of_their_own(tiny_adapter, mode):
    from coevolve.model.packing import pack

    sequences = [
        _looks_at(tiny_adapter, "blue", " Yes."),
        _trajectory(tiny_adapter, 0),
        _looks_at(tiny_adapter, "red", " No, it is red."),
        _trajectory(tiny_adapter, 1)[:4],
        _looks_at(tiny_adapter, "white", " Yes."),
    ]
    packed = pack(sequences, tiny_adapter.spec, "right", share_rows=True)
    assert max(packed.rows) + 1 < len(sequences)  # the short ones really share rows
    assert packed.input_ids.shape[1] == max(len(r) for r in pack(sequences, tiny_adapter.spec, "right").input_ids)
    shared = tiny_adapter.logprobs(sequences, mode=mode, guidance=Guidance(3.0), share_rows=True)
    alone = tiny_adapter.logprobs(sequences, mode=mode, guidance=Guidance(3.0), share_rows=False)
    for a_row, b_row in zip(shared.logprobs, alone.logprobs):
        for a, b in zip(a_row, b_row):
            assert (a is None) == (b is None)
            if a is not None:
                assert (a - b).abs().max() <= 1e-5


def test_share_rows_needs_right_padding(tiny_adapter):
    from coevolve.model.packing import pack

    with pytest.raises(ValueError, match="share_rows needs right padding"):
        pack([_trajectory(tiny_adapter, 0)], tiny_adapter.spec, "left", share_rows=True)


@pytest.mark.parametrize("sampling", [Sampling(), Sampling(temperature=0.7, top_k=5)], ids=["t1", "t0.7-k5"])
def test_a_first_token_drawn_among_choices_is_scored_under_their_distribution(tiny_adapter, sampling):
    """As `judge` draws it: `sampling` over the LM-head logits of the choices alone; the rest as any text."""
    from coevolve.model.packing import pack, trunk
    from coevolve.model.sampling import sampling_logprobs

    context = _looks_at(tiny_adapter, "red", " Yes.")[:-1]
    yes, no = tiny_adapter.judge_choices(context)
    answer = tiny_adapter.text(" No, it is red.").ids
    assert int(answer[0]) == no
    plain = context + (Text(answer, scored=True),)
    chosen = context + (Text(answer, scored=True, choices=(yes, no)),)
    scores = tiny_adapter.logprobs([plain, chosen, plain[:-1] + (Text(answer[:1], scored=True, choices=(no, yes)),)],
                                   sampling=sampling)  # fmt: skip
    with torch.no_grad():
        hidden = trunk(tiny_adapter.model, pack([context], tiny_adapter.spec, "left")).last_hidden_state[:, -1]
        pair = tiny_adapter.model.lm_head(hidden)[0, [yes, no]].float()
    expected = torch.log_softmax(pair / sampling.temperature, -1)  # top-k of 5 keeps both
    assert torch.allclose(sampling_logprobs(pair[None], sampling)[0], expected, atol=1e-6)
    lp, ent = scores.logprobs[1][-1], scores.entropies[1][-1]
    assert lp.requires_grad and lp.shape == (len(answer),)
    assert torch.allclose(lp[0].detach(), expected[1], atol=1e-5)
    assert torch.allclose(scores.logprobs[2][-1].detach(), expected[1:], atol=1e-5)  # a one-token segment
    probs = expected.exp()
    assert torch.allclose(ent[0].detach(), -(probs * expected).sum(), atol=1e-5)
    # The rest of the segment is scored as without choices; the first token is not.
    assert torch.allclose(lp[1:].detach(), scores.logprobs[0][-1][1:].detach(), atol=1e-6)
    assert not torch.allclose(lp[0].detach(), scores.logprobs[0][-1][0].detach(), atol=1e-3)
    lp.sum().backward()
    assert tiny_adapter.model.model.language_model.embed_tokens.weight.grad is not None
    tiny_adapter.model.zero_grad(set_to_none=True)
