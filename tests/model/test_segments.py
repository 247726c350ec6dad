"""Segment types keep text ids and VQ codes apart; bad input fails with the culprit named."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from coevolve.model.guidance import Guidance
from coevolve.model.segments import GenImage, SeenImage, Text, sequence_length, validate


def _codes(spec, value=0):
    return torch.full((spec.num_image_tokens,), value)


def test_segment_types_refuse_each_others_ids(tiny_adapter):
    text = tiny_adapter.text("a red circle")
    with pytest.raises(TypeError, match="GenImage.codes got a Text segment"):
        GenImage(text)
    image = GenImage(_codes(tiny_adapter.spec))
    with pytest.raises(TypeError, match="Text.ids got a GenImage segment"):
        Text(image)
    with pytest.raises(TypeError, match="integer ids"):
        GenImage(torch.zeros(64))


def test_lengths_include_the_image_span_tokens(tiny_adapter):
    spec = tiny_adapter.spec
    seen = tiny_adapter.seen_images([Image.new("RGB", (64, 64))])[0]
    sequence = (Text(torch.tensor([spec.bos_id, 7, 8])), GenImage(_codes(spec)), seen)
    assert sequence_length(sequence) == 3 + (spec.num_image_tokens + 2) * 2


def test_vq_id_out_of_range_is_named(tiny_adapter):
    spec = tiny_adapter.spec
    codes = _codes(spec)
    codes[5] = spec.codebook_size
    with pytest.raises(ValueError, match=rf"segment 1 \(GenImage\): VQ id {spec.codebook_size} at position 5 is outside the codebook"):
        validate((tiny_adapter.text("a", bos=True), GenImage(codes)), spec)


def test_text_ids_in_an_image_segment_are_refused(tiny_adapter):
    spec = tiny_adapter.spec
    prompt = tiny_adapter.image_prompt("a red circle")
    # A Text segment cannot be turned into image codes ...
    with pytest.raises(TypeError):
        tiny_adapter.sample_images([prompt + (GenImage(prompt[0]),)])
    # ... and image-span tokens cannot be smuggled into text.
    boi_in_text = Text(torch.tensor([spec.bos_id, spec.boi_id]))
    with pytest.raises(ValueError, match=r"contains <begin_of_image> \(id \d+\) at position 1"):
        validate((boi_in_text,), spec)
    with pytest.raises(ValueError, match="<image_placeholder>"):
        validate((Text(torch.tensor([spec.bos_id, spec.image_token_id])),), spec)


def test_text_id_outside_vocabulary(tiny_adapter):
    spec = tiny_adapter.spec
    with pytest.raises(ValueError, match=rf"text id {spec.text_vocab_size + 3} at position 1 is outside the LM vocabulary"):
        validate((Text(torch.tensor([spec.bos_id, spec.text_vocab_size + 3])),), spec)


def test_image_of_wrong_size(tiny_adapter):
    spec = tiny_adapter.spec
    bad = SeenImage(torch.zeros(3, 32, 32), num_features=spec.num_image_tokens)
    with pytest.raises(ValueError, match=r"pixels have shape \(3, 32, 32\), the understanding encoder takes \(3, 64, 64\)"):
        tiny_adapter.sample_text([(tiny_adapter.text("x", bos=True), bad)], max_new_tokens=2)
    with pytest.raises(ValueError, match="has 10 codes, the checkpoint's images have 64"):
        validate((tiny_adapter.text("x", bos=True), GenImage(torch.zeros(10, dtype=torch.long))), spec)


def test_prompt_longer_than_the_context(tiny_adapter):
    spec = tiny_adapter.spec
    too_long = Text(torch.full((spec.max_positions + 1,), 7))
    with pytest.raises(ValueError, match=rf"prompt 0 is {spec.max_positions + 1} positions long; the model's context is {spec.max_positions}"):
        tiny_adapter.sample_images([(too_long,)])
    # Fits alone, but not with the image it is asked for.
    almost = Text(torch.full((spec.max_positions - 10,), 7))
    with pytest.raises(ValueError, match="new positions for an image it exceeds the model's context"):
        tiny_adapter.sample_images([(almost,)])


def test_guidance_below_one_and_unknown_unconditional_prompt():
    with pytest.raises(ValueError, match="guidance weight must be >= 1"):
        Guidance(0.5)
    with pytest.raises(ValueError, match="unknown unconditional prompt 'empty'"):
        Guidance(5.0, unconditional="empty")


def test_text_choices_are_checked(tiny_adapter):
    spec = tiny_adapter.spec
    ids = torch.tensor([7, 8, 9])
    assert Text(ids, scored=True, choices=[torch.tensor(7), 12]).choices == (7, 12)  # normalised to ints
    assert Text(ids).choices == ()
    with pytest.raises(ValueError, match=r"Text.choices \(7, 12\) on an unscored segment"):
        Text(ids, choices=(7, 12))
    with pytest.raises(ValueError, match="holds a negative id"):
        Text(ids, scored=True, choices=(7, -1))
    with pytest.raises(ValueError, match=r"Text.choices \(7, 12, 7\) repeats an id"):
        Text(ids, scored=True, choices=(7, 12, 7))
    with pytest.raises(ValueError, match="do not include the segment's first id 7"):
        Text(ids, scored=True, choices=(8, 12))
    with pytest.raises(TypeError, match="must be a sequence of LM ids"):
        Text(ids, scored=True, choices="7")
    outside = Text(ids, scored=True, choices=(7, spec.text_vocab_size))
    with pytest.raises(ValueError, match=rf"segment 1 \(Text\): choice id {spec.text_vocab_size} is outside the LM"):
        validate((tiny_adapter.text("a", bos=True), outside), spec)
