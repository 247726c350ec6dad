"""The adapter against plain transformers: understanding logits, judging, save/load round trip."""

from __future__ import annotations

import pytest
import torch
from transformers import JanusForConditionalGeneration, JanusProcessor

from coevolve.data.shapes import render, sample_example
from coevolve.model.adapter import JanusAdapter
from coevolve.model.guidance import Guidance
from coevolve.model.packing import pack, trunk
from coevolve.model.sampling import GREEDY


def _messages(image, question):
    return [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": question}]}]


def test_understanding_logits_equal_transformers_forward(tiny_adapter):
    adapter = tiny_adapter
    images = [render(sample_example(seed, "two_object").scene) for seed in (0, 1)]
    questions = ["Does this image match the prompt?", "What is in the picture on the left side of it?"]
    processor = adapter.processor
    texts = [processor.apply_chat_template(_messages(im, q), add_generation_prompt=True) for im, q in zip(images, questions)]
    inputs = processor(text=texts, images=images, padding=True, return_tensors="pt")
    with torch.no_grad():
        reference = adapter.model(**inputs).logits[:, -1]  # (2, V), left padded: last column is each row's last token
    sequences = [adapter.chat(_messages(im, q)) for im, q in zip(images, questions)]
    packed = pack(sequences, adapter.spec, "left")
    assert torch.equal(packed.input_ids[packed.attention_mask.bool()], inputs["input_ids"][inputs["attention_mask"].bool()])
    with torch.no_grad():
        ours = adapter.model.lm_head(trunk(adapter.model, packed).last_hidden_state[:, -1])
    assert (ours - reference).abs().max() <= 1e-4


@pytest.fixture
def direct_adapter(tiny_adapter, monkeypatch):
    """The tiny model read as a checkpoint without `self_check` (Janus-Pro-R1's direct self-check)."""
    monkeypatch.delattr(tiny_adapter.model.config, "self_check")
    adapter = JanusAdapter(tiny_adapter.model, tiny_adapter.processor)
    assert adapter.self_check == "direct"
    return adapter


def test_judge_p_yes_is_the_renormalised_yes_no_pair(direct_adapter):
    adapter = direct_adapter
    example = sample_example(3, "single_object")
    image = render(example.scene)
    judgement = adapter.judge([image, image], [example.prompt, "a photo of four green crosses"])
    assert judgement.p_yes.shape == (2,) and bool(((judgement.p_yes > 0) & (judgement.p_yes < 1)).all())
    # Recompute by hand with transformers' forward on the processor's inputs.
    question = f'Does this image match the prompt "{example.prompt}"? Answer Yes or No.'
    text = adapter.processor.apply_chat_template(_messages(image, question), add_generation_prompt=True)
    inputs = adapter.processor(text=[text], images=[image], return_tensors="pt")
    with torch.no_grad():
        logits = adapter.model(**inputs).logits[0, -1]
    yes = adapter.tokenizer(" Yes", add_special_tokens=False)["input_ids"][0]
    no = adapter.tokenizer(" No", add_special_tokens=False)["input_ids"][0]
    expected = logits[[yes, no]].softmax(-1)[0]
    assert abs(float(judgement.p_yes[0]) - float(expected)) <= 1e-5


def test_describing_judge_answers_after_its_own_description(tiny_adapter):
    adapter = tiny_adapter
    assert adapter.self_check == "describe"  # what the bootstrap writes into config.json
    example = sample_example(3, "colors")
    image = render(example.scene)
    judgement = adapter.judge([image, image], [example.prompt, "a photo of four green crosses"], sampling=GREEDY,
                              max_description_tokens=12)  # fmt: skip
    described = judgement.descriptions
    assert len(described.ids) == 2 and torch.equal(described.ids[0], described.ids[1])  # greedy, same image
    assert 1 <= len(described.ids[0]) <= 12
    # By hand with transformers' forward: the captioning turn (the processor's own ids), the
    # description's ids, then the question in a second user turn.
    caption_turn = adapter.processor.apply_chat_template(_messages(image, "Describe this image."), add_generation_prompt=True)
    inputs = adapter.processor(text=[caption_turn], images=[image], return_tensors="pt")
    question = f'Does this image match the prompt "{example.prompt}"? Answer Yes or No.'
    follow = adapter.tokenizer("<|User|>: " + question + "\n\n<|Assistant|>:", add_special_tokens=False)["input_ids"]
    input_ids = torch.cat([inputs["input_ids"][0], described.ids[0], torch.tensor(follow)])[None]
    with torch.no_grad():
        logits = adapter.model(input_ids=input_ids, pixel_values=inputs["pixel_values"]).logits[0, -1]
    yes, no = adapter.judge_choices(adapter.judge_context(image, example.prompt, description=described.ids[0]))
    assert abs(float(judgement.p_yes[0]) - float(logits[[yes, no]].softmax(-1)[0])) <= 1e-5
    with pytest.raises(ValueError, match="describes the image first"):
        adapter.judge_context(image, example.prompt)


def test_direct_judge_takes_no_description_and_unknown_self_checks_are_named(direct_adapter, tiny_adapter, monkeypatch):
    image = render(sample_example(4, "colors").scene)
    with pytest.raises(ValueError, match="self-check is direct"):
        direct_adapter.judge_context(image, "a photo of a red circle", description=torch.tensor([1, 2]))
    assert direct_adapter.judge([image], ["a photo of a red circle"]).descriptions is None
    monkeypatch.setattr(tiny_adapter.model.config, "self_check", "ponder", raising=False)
    with pytest.raises(ValueError, match=r"config.json: self_check must be one of \('direct', 'describe'\), got 'ponder'"):
        JanusAdapter(tiny_adapter.model, tiny_adapter.processor)


def test_judge_with_reason_draws_an_answer_and_a_reason(tiny_adapter):
    image = render(sample_example(4, "colors").scene)
    judgement = tiny_adapter.judge([image] * 3, ["a photo of a red circle"] * 3, reason=True, max_reason_tokens=6,
                                   generator=torch.Generator().manual_seed(0))
    assert set(judgement.answers) <= {"Yes", "No"} and len(judgement.answers) == 3
    assert len(judgement.reasons.ids) == 3 and all(1 <= len(ids) <= 6 for ids in judgement.reasons.ids)
    with pytest.raises(ValueError, match="share their first token"):
        tiny_adapter.judge([image], ["x"], answers=("Yes", "Yes"))
    with pytest.raises(ValueError, match="2 images for 1 prompts"):
        tiny_adapter.judge([image, image], ["x"])


def test_save_after_training_round_trips_and_loads_in_plain_transformers(tiny_checkpoint, tmp_path):
    adapter = JanusAdapter.from_pretrained(tiny_checkpoint)
    prompt = adapter.image_prompt("a photo of a red circle")
    sample = adapter.sample_images([prompt], n=2, generator=torch.Generator().manual_seed(0))
    plan = adapter.text(" Plan: a red circle.", scored=True)
    sequences = [prompt + (plan, image) for image in sample.segments()]
    optimizer = torch.optim.AdamW(adapter.model.parameters(), lr=1e-3)
    before = {k: v.clone() for k, v in adapter.model.state_dict().items()}
    for _ in range(2):
        scores = adapter.logprobs(sequences, guidance=Guidance(5.0))
        loss = -torch.cat([lp for row in scores.logprobs for lp in row if lp is not None]).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    adapter.model.eval()
    trained = adapter.model.state_dict()
    assert any(not torch.equal(before[k], trained[k]) for k in trained), "training changed nothing"

    out = adapter.save_pretrained(tmp_path / "trained")
    reloaded = JanusAdapter.from_pretrained(out)
    plain = JanusForConditionalGeneration.from_pretrained(out).eval()
    JanusProcessor.from_pretrained(out)
    for other in (reloaded.model.state_dict(), plain.state_dict()):
        assert other.keys() == trained.keys()
        for key in trained:
            assert torch.equal(other[key], trained[key]), key
    with torch.no_grad():
        a = adapter.logprobs(sequences).logprobs
        b = reloaded.logprobs(sequences).logprobs
    assert all(x is None and y is None or torch.equal(x, y) for ra, rb in zip(a, b) for x, y in zip(ra, rb))
    # Plain transformers generates from it, and our greedy sampler still agrees with it.
    inputs = adapter.processor(text=[adapter.processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "text", "text": "a photo of a red circle"}]}], add_generation_prompt=True)],
        generation_mode="image", return_tensors="pt")
    reference = plain.generate(**inputs, generation_mode="image", guidance_scale=5.0, do_sample=False)
    assert torch.equal(reloaded.sample_images([prompt], sampling=GREEDY).codes, reference)
    with pytest.raises(FileExistsError):
        adapter.save_pretrained(out)


def test_loading_a_directory_that_is_not_a_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        JanusAdapter.from_pretrained(tmp_path)
