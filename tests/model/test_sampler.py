"""The sampler against transformers' own image generation, and against its own teacher forcing."""

from __future__ import annotations

import pytest
import torch
from transformers import LogitsProcessor, LogitsProcessorList

from coevolve.model.guidance import CFGMode, Guidance
from coevolve.model.sampling import GREEDY, Sampling

PROMPTS = [
    "a photo of a red circle",
    "a photo of two blue squares above a green cross",
    "purple",
    "a photo of four yellow triangles and a black circle on the left",
]


class _ConditionalHalf(LogitsProcessor):
    """Guidance 1 = the conditional logits. transformers 5.23's image generate crashes at
    guidance_scale=1 (it still doubles the batch but adds no CFG processor), so the reference
    keeps its loop and selects the conditional half itself."""

    def __call__(self, input_ids, scores):
        return scores[: scores.shape[0] // 2]


def _transformers_greedy(adapter, prompts, guidance):
    processor = adapter.processor
    chats = [processor.apply_chat_template([{"role": "user", "content": [{"type": "text", "text": p}]}],
                                           add_generation_prompt=True) for p in prompts]
    inputs = processor(text=chats, generation_mode="image", padding=True, return_tensors="pt")
    assert len(set(inputs["attention_mask"].sum(1).tolist())) == len(set(prompts)), "prompts must differ in length"
    extra = {} if guidance > 1 else {"logits_processor": LogitsProcessorList([_ConditionalHalf()])}
    return adapter.model.generate(**inputs, generation_mode="image", guidance_scale=guidance, do_sample=False, **extra)


@pytest.mark.parametrize("guidance", [1.0, 5.0])
def test_greedy_images_equal_transformers_token_for_token(tiny_adapter, guidance):
    reference = _transformers_greedy(tiny_adapter, PROMPTS, guidance)
    ours = tiny_adapter.sample_images([tiny_adapter.image_prompt(p) for p in PROMPTS], guidance=Guidance(guidance), sampling=GREEDY)
    assert ours.codes.shape == reference.shape == (4, tiny_adapter.spec.num_image_tokens)
    assert torch.equal(ours.codes, reference)


def test_group_prefix_shared_equals_transformers_on_repeated_prompts(tiny_adapter):
    reference = _transformers_greedy(tiny_adapter, [PROMPTS[0]] * 3 + [PROMPTS[1]] * 3, 5.0)
    ours = tiny_adapter.sample_images([tiny_adapter.image_prompt(p) for p in PROMPTS[:2]], n=3, sampling=GREEDY)
    assert torch.equal(ours.codes, reference)


def _image_sequences(adapter, prompts, sample):
    return [adapter.image_prompt(prompts[r // sample.n]) + (segment,) for r, segment in enumerate(sample.segments())]


@pytest.mark.parametrize("unconditional", ["pad", "bos"])
def test_sampled_image_logprobs_equal_teacher_forced_in_the_matching_mode(tiny_adapter, unconditional):
    guidance = Guidance(5.0, unconditional=unconditional)
    sampling = Sampling(temperature=0.9, top_k=200)
    sample = tiny_adapter.sample_images([tiny_adapter.image_prompt(p) for p in PROMPTS[:2]], n=3, guidance=guidance,
                                        sampling=sampling, generator=torch.Generator().manual_seed(1))
    sequences = _image_sequences(tiny_adapter, PROMPTS[:2], sample)
    for mode in (CFGMode.GUIDED, CFGMode.GUIDED_DETACH):
        scores = tiny_adapter.logprobs(sequences, mode=mode, guidance=guidance, sampling=sampling, chunk_size=50)
        forced = torch.stack([scores.logprobs[i][-1] for i in range(len(sequences))])
        assert (forced - sample.logprobs).abs().max() <= 1e-4
        assert all(scores.logprobs[i][0] is None for i in range(len(sequences)))  # prompts are not scored
    conditional = tiny_adapter.logprobs(sequences, mode=CFGMode.CONDITIONAL, guidance=guidance, sampling=sampling)
    forced = torch.stack([conditional.logprobs[i][-1] for i in range(len(sequences))])
    assert (forced - sample.logprobs).abs().max() > 0.1, "conditional log-probs should differ from guided at w=5"


def test_conditional_equals_guided_at_weight_one(tiny_adapter):
    sample = tiny_adapter.sample_images([tiny_adapter.image_prompt(PROMPTS[2])], n=2, guidance=Guidance(1.0),
                                        generator=torch.Generator().manual_seed(2))
    sequences = _image_sequences(tiny_adapter, PROMPTS[2:3], sample)
    for mode in CFGMode:
        scores = tiny_adapter.logprobs(sequences, mode=mode, guidance=Guidance(1.0))
        forced = torch.stack([s[-1] for s in scores.logprobs])
        assert (forced - sample.logprobs).abs().max() <= 1e-4


def test_sampled_text_logprobs_equal_teacher_forced(tiny_adapter):
    prompts = [tiny_adapter.image_prompt(p) for p in PROMPTS[:3]]
    sampling = Sampling(temperature=1.3, top_p=0.95)
    sample = tiny_adapter.sample_text(prompts, max_new_tokens=24, n=2, sampling=sampling,
                                      generator=torch.Generator().manual_seed(3))
    assert len(sample.ids) == 6 and all(1 <= len(ids) <= 24 for ids in sample.ids)
    sequences = [prompts[r // 2] + (segment,) for r, segment in enumerate(sample.segments())]
    scores = tiny_adapter.logprobs(sequences, mode="conditional", sampling=sampling)
    for r in range(6):
        assert (scores.logprobs[r][-1] - sample.logprobs[r]).abs().max() <= 1e-4
        assert scores.entropies[r][-1].shape == sample.logprobs[r].shape
    # Image-span tokens are never text.
    spec = tiny_adapter.spec
    assert not any(torch.isin(ids, torch.tensor(spec.image_span_ids)).any() for ids in sample.ids)


def test_text_stops_at_stop_ids_strings_and_length(tiny_adapter):
    prompt = [tiny_adapter.image_prompt("a red circle")]
    decode = tiny_adapter.tokenizer.decode

    def run(**stops):  # the same seed draws the same tokens up to wherever a stop cuts in
        return tiny_adapter.sample_text(prompt, max_new_tokens=16, generator=torch.Generator().manual_seed(11), **stops)

    free = run()
    assert free.finish_reasons == ["length"] and len(free.ids[0]) == 16
    ids = free.ids[0].tolist()
    # A later token whose text is plain ASCII and new to the completion so far.
    k = next(k for k in range(2, 16) if decode([ids[k]]).strip().isascii() and decode([ids[k]]).strip()
             and decode([ids[k]]).strip() not in decode(ids[:k]))
    stop_text = decode([ids[k]]).strip()
    by_id = run(stop_ids=(ids[k],))
    assert by_id.finish_reasons == ["stop"] and by_id.ids[0].tolist() == ids[: ids.index(ids[k]) + 1]
    by_string = run(stop_strings=(stop_text,))
    assert by_string.finish_reasons == ["stop"] and by_string.ids[0].tolist() == ids[: k + 1]
    assert torch.equal(by_string.logprobs[0], free.logprobs[0][: k + 1])


def test_text_sampling_is_seeded_and_conditioned_on_images(tiny_adapter):
    from PIL import Image

    def ask(color):
        return tiny_adapter.chat([{"role": "user", "content": [{"type": "image", "image": Image.new("RGB", (64, 64), color)},
                                                               {"type": "text", "text": "Describe the image."}]}])

    a = tiny_adapter.sample_text([ask("red")], max_new_tokens=8, generator=torch.Generator().manual_seed(5))
    b = tiny_adapter.sample_text([ask("red")], max_new_tokens=8, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a.ids[0], b.ids[0])
    first = tiny_adapter.logprobs([ask("red") + (_only_completion(a),)], mode="conditional").logprobs[0][-1]
    other = tiny_adapter.logprobs([ask("blue") + (_only_completion(a),)], mode="conditional").logprobs[0][-1]
    assert (first - a.logprobs[0]).abs().max() <= 1e-4
    assert (first - other).abs().max() > 1e-3, "the seen image must change the text distribution"


def _only_completion(sample):
    return sample.segments()[0]


def test_decode_gives_images_of_the_checkpoint_size(tiny_adapter):
    sample = tiny_adapter.sample_images([tiny_adapter.image_prompt("a red circle")], n=2, generator=torch.Generator().manual_seed(0))
    images = tiny_adapter.decode(sample)
    assert [im.size for im in images] == [(64, 64)] * 2
    assert [im.size for im in tiny_adapter.decode(sample.segments())] == [(64, 64)] * 2
    pixels = tiny_adapter.decode(sample, as_tensor=True)
    assert pixels.shape == (2, 3, 64, 64) and bool(torch.isfinite(pixels).all())
    bad = sample.codes.clone()
    bad[0, 3] = tiny_adapter.spec.codebook_size
    with pytest.raises(ValueError, match="VQ ids must lie in"):
        tiny_adapter.decode(bad)
