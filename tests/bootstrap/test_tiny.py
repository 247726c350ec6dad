"""The tiny checkpoint: loadable by plain transformers, the parts Janus needs, deterministic."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from transformers import JanusForConditionalGeneration, JanusProcessor

from coevolve.bootstrap.tiny import MANIFEST, TinySpec, build_tiny_checkpoint
from coevolve.bootstrap.vision import VisionTrainingConfig
from coevolve.bootstrap.vq import VQTrainingConfig
from coevolve.data.shapes import IMAGE_SIZE, sample_example, verify
from coevolve.model.images import decode_images, encode_images


def test_expected_files(tiny_checkpoint):
    names = {p.name for p in tiny_checkpoint.iterdir()}
    for required in ("config.json", "model.safetensors", "generation_config.json", "tokenizer.json",
                     "tokenizer_config.json", "processor_config.json", "chat_template.jinja", MANIFEST):
        assert required in names, f"{required} missing from {sorted(names)}"


def test_plain_transformers_generates_images_of_declared_size(tiny_checkpoint):
    model = JanusForConditionalGeneration.from_pretrained(tiny_checkpoint).eval()
    processor = JanusProcessor.from_pretrained(tiny_checkpoint)
    config = model.config
    assert config.vision_config.image_size == IMAGE_SIZE
    num_tokens = config.vision_config.num_image_tokens
    assert num_tokens >= 16
    assert model.generation_config.generation_kwargs["boi_token_id"] == processor.tokenizer.convert_tokens_to_ids("<begin_of_image>")

    prompts = ["a photo of a red circle", "a photo of two squares and more words"]
    inputs = processor(text=prompts, generation_mode="image", padding=True, return_tensors="pt")
    torch.manual_seed(0)
    tokens = model.generate(**inputs, generation_mode="image", do_sample=True, guidance_scale=5.0)
    assert tokens.shape == (2, num_tokens)
    assert 0 <= int(tokens.min()) and int(tokens.max()) < config.vq_config.num_embeddings
    pixels = model.decode_image_tokens(tokens)
    assert pixels.shape == (2, IMAGE_SIZE, IMAGE_SIZE, 3)
    images = processor.postprocess(list(pixels.permute(0, 3, 1, 2).float()), return_tensors="PIL.Image.Image")["pixel_values"]
    assert [im.size for im in images] == [(IMAGE_SIZE, IMAGE_SIZE)] * 2


def test_tokenizer_and_chat_template(tiny_model):
    _, processor = tiny_model
    tok = processor.tokenizer
    ids = tok("a photo of three crosses").input_ids
    assert ids[0] == tok.bos_token_id
    assert tok.decode(ids, skip_special_tokens=True) == "a photo of three crosses"
    assert (tok.image_token, tok.boi_token, tok.eoi_token) == ("<image_placeholder>", "<begin_of_image>", "<end_of_image>")
    # A word from outside the world still round-trips (byte-level fallback).
    assert tok.decode(tok("zebra ünïcode").input_ids, skip_special_tokens=True) == "zebra ünïcode"
    text = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Does this image match?"}]}],
        add_generation_prompt=True,
    )
    assert text == "<|User|>: <image_placeholder>\nDoes this image match?\n\n<|Assistant|>:"


def test_understanding_path_runs_on_processor_inputs(tiny_model):
    model, processor = tiny_model
    image = sample_example(3, "colors").render()
    inputs = processor(text=["<image_placeholder>\nDescribe this image."], images=[image], return_tensors="pt")
    num_tokens = model.config.vision_config.num_image_tokens
    assert int((inputs["input_ids"] == model.config.image_token_id).sum()) == num_tokens
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape[:2] == inputs["input_ids"].shape and torch.isfinite(logits).all()


def test_vq_round_trip_keeps_scenes(tiny_model):
    # 300 renders: the round trip keeps 97.5-97.9% of scenes (`coevolve bench vq`, 1,000), so with
    # 60 a correct VQ fell under 95% by chance (56/60 on one machine's build of the same seed).
    model, processor = tiny_model
    examples = [sample_example(1000 + i, tag) for i, tag in enumerate(["single_object", "two_object", "counting", "colors", "position", "color_attr"] * 50)]
    images = decode_images(model, processor, encode_images(model, processor, [e.render() for e in examples]))
    accepted = sum(verify(im, e.metadata).correct for im, e in zip(images, examples))
    assert accepted / len(examples) >= 0.95, f"only {accepted}/{len(examples)} renders survive VQ encode->decode"


def test_decode_rejects_out_of_range_ids(tiny_model):
    model, processor = tiny_model
    bad = torch.full((1, model.config.vision_config.num_image_tokens), model.config.vq_config.num_embeddings)
    with pytest.raises(ValueError, match="VQ ids must lie in"):
        decode_images(model, processor, bad)


def _digest(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


@pytest.mark.slow
def test_same_seed_gives_identical_files(tmp_path):
    # Short schedules: determinism does not depend on how long they train.
    spec = TinySpec(vq=VQTrainingConfig(steps=12), vision=VisionTrainingConfig(steps=4, pool_size=64, heldout_size=16))
    build_tiny_checkpoint(tmp_path / "a", seed=3, spec=spec)
    build_tiny_checkpoint(tmp_path / "b", seed=3, spec=spec)
    build_tiny_checkpoint(tmp_path / "c", seed=4, spec=spec)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a")["model.safetensors"] != _digest(tmp_path / "c")["model.safetensors"]
    manifest = json.loads((tmp_path / "a" / MANIFEST).read_text())
    assert manifest["seed"] == 3 and manifest["spec"]["vq"]["steps"] == 12


def test_refuses_non_empty_output_dir(tmp_path):
    out = tmp_path / "ckpt"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    with pytest.raises(FileExistsError, match=r"ckpt exists and is not empty; pass --overwrite"):
        build_tiny_checkpoint(out, seed=0, spec=TinySpec(vq=VQTrainingConfig(steps=2), vision=VisionTrainingConfig(steps=2, pool_size=8, heldout_size=8)))
    assert (out / "keep.txt").read_text() == "user data"
