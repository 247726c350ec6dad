"""Images <-> VQ token ids through a Janus checkpoint's own VQ tokenizer and processor.

Pixels go in through the checkpoint's image processor (the same resize/normalise as the
understanding path) and come out through its `postprocess`, so nothing here assumes the
tiny checkpoint's sizes.
"""

from __future__ import annotations

import torch
from PIL import Image
from transformers import JanusForConditionalGeneration, JanusProcessor


def load_janus(path: str, dtype: torch.dtype = torch.float32) -> tuple[JanusForConditionalGeneration, JanusProcessor]:
    """Load a Janus checkpoint in HF format from a local directory (no remote code)."""
    model = JanusForConditionalGeneration.from_pretrained(path, dtype=dtype)
    model.eval()
    processor = JanusProcessor.from_pretrained(path)
    return model, processor


@torch.no_grad()
def encode_images(
    model: JanusForConditionalGeneration,
    processor: JanusProcessor,
    images: list[Image.Image],
) -> torch.LongTensor:
    """PIL images -> (B, num_image_tokens) VQ ids."""
    pixels = processor.image_processor(images, return_tensors="pt")["pixel_values"]
    pixels = pixels.to(model.device, model.dtype)
    return model.model.vqmodel.encode(pixels).image_tokens.view(len(images), -1)


@torch.no_grad()
def decode_pixels(model: JanusForConditionalGeneration, tokens: torch.LongTensor) -> torch.Tensor:
    """(B, num_image_tokens) VQ ids -> (B, 3, H, W) float pixels, nominally in [-1, 1] (not clamped)."""
    num_codes = model.config.vq_config.num_embeddings
    if tokens.min() < 0 or tokens.max() >= num_codes:
        raise ValueError(
            f"VQ ids must lie in [0, {num_codes}); got values in [{int(tokens.min())}, {int(tokens.max())}]"
        )
    return model.decode_image_tokens(tokens.to(model.device)).permute(0, 3, 1, 2).float()


@torch.no_grad()
def decode_images(
    model: JanusForConditionalGeneration, processor: JanusProcessor, tokens: torch.LongTensor
) -> list[Image.Image]:
    """(B, num_image_tokens) VQ ids -> PIL images of the checkpoint's image size."""
    # The processor's postprocess takes channels first, as the VQ decoder emits them.
    pixels = decode_pixels(model, tokens)
    return processor.postprocess(list(pixels), return_tensors="PIL.Image.Image")["pixel_values"]
