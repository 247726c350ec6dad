"""What the adapter needs to know about a Janus checkpoint, read once from its config and tokenizer."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from transformers import JanusForConditionalGeneration, JanusProcessor


@dataclass(frozen=True)
class JanusSpec:
    """Vocabulary sizes, special ids and geometry of one checkpoint.

    Text ids index the LM vocabulary (`text_vocab_size`); VQ codes index the image codebook
    (`codebook_size`). The two spaces overlap numerically (the tiny checkpoint has 469 text ids
    and 1024 codes), which is why segments carry their space in their type.
    """

    text_vocab_size: int
    codebook_size: int
    num_image_tokens: int  # per image, for both the understanding encoder and the VQ grid
    image_size: int  # pixels per side of an understanding image
    max_positions: int  # the trunk's context length
    bos_id: int
    eos_id: int
    pad_id: int
    boi_id: int  # <begin_of_image>, opens every image span
    eoi_id: int  # <end_of_image>, closes it
    image_token_id: int  # <image_placeholder>, one per understanding-image feature

    @property
    def image_span_ids(self) -> tuple[int, int, int]:
        """Ids only image segments write; text sampling and scoring give them probability 0."""
        return (self.boi_id, self.eoi_id, self.image_token_id)

    @classmethod
    def of(cls, model: JanusForConditionalGeneration, processor: JanusProcessor) -> JanusSpec:
        config = model.config
        tokenizer = processor.tokenizer
        vision = config.vision_config
        num_image_tokens = vision.num_image_tokens
        if processor.num_image_tokens != num_image_tokens:
            raise ValueError(
                f"processor.num_image_tokens={processor.num_image_tokens} disagrees with "
                f"vision_config.num_image_tokens={num_image_tokens}"
            )
        vq_grid = model.model.vqmodel.quantize.quant_state_dims
        if vq_grid[0] * vq_grid[1] != num_image_tokens:
            raise ValueError(f"VQ latent grid {vq_grid} does not hold {num_image_tokens} image tokens")
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else config.text_config.pad_token_id
        if pad_id is None:
            raise ValueError(
                "the checkpoint defines no pad token (tokenizer.pad_token_id and text_config.pad_token_id are None)"
            )
        return cls(
            text_vocab_size=config.text_config.vocab_size,
            codebook_size=config.vq_config.num_embeddings,
            num_image_tokens=num_image_tokens,
            image_size=vision.image_size,
            max_positions=config.text_config.max_position_embeddings,
            bos_id=tokenizer.bos_token_id,
            eos_id=tokenizer.eos_token_id,
            pad_id=pad_id,
            boi_id=tokenizer.convert_tokens_to_ids(tokenizer.boi_token),
            eoi_id=tokenizer.convert_tokens_to_ids(tokenizer.eoi_token),
            image_token_id=config.image_token_id,
        )


def check_janus_checkpoint(path: str | Path, key: str) -> None:
    """`path` is a Hugging Face checkpoint of model_type "janus"; the errors name config `key`."""
    path = Path(path)
    config = path / "config.json"
    if not config.is_file():
        raise FileNotFoundError(f"{key}: {path} is not a Hugging Face checkpoint directory (no config.json)")
    try:
        model_type = json.loads(config.read_text()).get("model_type")
    except json.JSONDecodeError as error:
        raise ValueError(f"{key}: {config} is not valid JSON ({error})") from None
    if model_type != "janus":
        raise ValueError(f"{key}: {path} is a {model_type!r} checkpoint, not a Janus one (model_type 'janus')")
