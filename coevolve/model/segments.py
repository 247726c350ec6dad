"""Segment-typed sequences: the one representation of what the trunk reads and what is scored.

A sequence is a tuple of segments, left to right:

- `Text(ids)`: ids in the LM vocabulary, embedded by the token embeddings, scored by the LM head
  (which gives the image-span tokens probability 0 in text: they belong to image segments).
  A scored text's `choices` say its first token was drawn from the distribution restricted to
  those ids (the self-check's first answer token, " Yes" / " No"), and is scored under it.
- `GenImage(codes)`: VQ codebook ids of a generated image. Occupies `<begin_of_image>`, the
  codes, `<end_of_image>`; codes are embedded through `generation_embeddings` +
  `generation_aligner` and scored by `generation_head` (the boundary tokens are structure, never
  scored).
- `SeenImage(pixels)`: an image the model looks at (understanding). Occupies
  `<begin_of_image>`, one `<image_placeholder>` per feature, `<end_of_image>` — the layout
  `JanusProcessor` writes — and the placeholders are replaced by vision-encoder + aligner
  features. Never scored.

Text ids and VQ codes overlap numerically, so the space of an id is carried by the type of its
segment: a `GenImage` cannot be built from a `Text` (or the reverse), text may not contain the
image boundary/placeholder tokens (those belong to image segments), and every id is range-checked
against the checkpoint by `validate`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from coevolve.model.spec import JanusSpec


def _as_ids(value, owner: str, field: str) -> torch.Tensor:
    if isinstance(value, (Text, GenImage, SeenImage)):
        raise TypeError(
            f"{owner}.{field} got a {type(value).__name__} segment; text ids and VQ codes live in "
            f"different spaces and cannot be moved between segment types"
        )
    ids = torch.as_tensor(value)
    if ids.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise TypeError(f"{owner}.{field} must hold integer ids, got dtype {ids.dtype}")
    if ids.dim() != 1:
        raise ValueError(f"{owner}.{field} must be 1-D, got shape {tuple(ids.shape)}")
    return ids.to(torch.int64)


@dataclass(frozen=True, eq=False)
class Text:
    """Token ids in the LM vocabulary. `scored`: its tokens get log-probs (a response, not a prompt)."""

    ids: torch.Tensor  # (T,) int64
    scored: bool = False
    choices: tuple[int, ...] = ()  # the LM ids the first token was drawn among (scored text only)

    def __post_init__(self) -> None:
        object.__setattr__(self, "ids", _as_ids(self.ids, "Text", "ids"))
        if self.ids.numel() == 0:
            raise ValueError("Text segment is empty")
        if isinstance(self.choices, (str, bytes)) or (torch.is_tensor(self.choices) and self.choices.dim() != 1):
            raise TypeError(f"Text.choices must be a sequence of LM ids, got {self.choices!r}")
        choices = tuple(int(c) for c in self.choices)
        object.__setattr__(self, "choices", choices)
        if not choices:
            return
        if not self.scored:
            raise ValueError(
                f"Text.choices {choices} on an unscored segment: choices say how a drawn (scored) first token "
                f"was sampled"
            )
        if min(choices) < 0:
            raise ValueError(f"Text.choices {choices} holds a negative id")
        if len(set(choices)) != len(choices):
            raise ValueError(f"Text.choices {choices} repeats an id")
        if int(self.ids[0]) not in choices:
            raise ValueError(f"Text.choices {choices} do not include the segment's first id {int(self.ids[0])}")

    def __len__(self) -> int:
        return self.ids.numel()


@dataclass(frozen=True, eq=False)
class GenImage:
    """VQ codes of a generated image, raster order. `scored`: its codes get log-probs."""

    codes: torch.Tensor  # (num_image_tokens,) int64
    scored: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "codes", _as_ids(self.codes, "GenImage", "codes"))

    def __len__(self) -> int:
        return self.codes.numel() + 2  # <begin_of_image> codes <end_of_image>


@dataclass(frozen=True, eq=False)
class SeenImage:
    """An image for the understanding encoder: the processor's normalised pixels."""

    pixels: torch.Tensor  # (3, image_size, image_size) float
    num_features: int  # = spec.num_image_tokens; fixed at construction so len() needs no spec

    def __post_init__(self) -> None:
        if isinstance(self.pixels, (Text, GenImage, SeenImage)) or not torch.is_tensor(self.pixels):
            raise TypeError(f"SeenImage.pixels must be a float tensor, got {type(self.pixels).__name__}")
        if not self.pixels.is_floating_point():
            raise TypeError(f"SeenImage.pixels must be floating point, got dtype {self.pixels.dtype}")

    @property
    def scored(self) -> bool:
        return False

    def __len__(self) -> int:
        return self.num_features + 2


Segment = Text | GenImage | SeenImage
Sequence = tuple[Segment, ...]


def sequence_length(sequence: Sequence) -> int:
    return sum(len(segment) for segment in sequence)


def validate(sequence: Sequence, spec: JanusSpec, where: str = "sequence") -> None:
    """Raise a ValueError naming the segment and the offending id if `sequence` does not fit `spec`."""
    if not sequence:
        raise ValueError(f"{where} is empty")
    structural = {
        spec.boi_id: "<begin_of_image>",
        spec.eoi_id: "<end_of_image>",
        spec.image_token_id: "<image_placeholder>",
    }
    for index, segment in enumerate(sequence):
        name = f"{where} segment {index} ({type(segment).__name__})"
        if isinstance(segment, Text):
            ids = segment.ids
            outside = [c for c in segment.choices if c >= spec.text_vocab_size]
            if outside:
                raise ValueError(
                    f"{name}: choice id {outside[0]} is outside the LM vocabulary [0, {spec.text_vocab_size})"
                )
            bad = (ids < 0) | (ids >= spec.text_vocab_size)
            if bad.any():
                raise ValueError(
                    f"{name}: text id {int(ids[bad][0])} at position {int(bad.nonzero()[0])} is outside the "
                    f"LM vocabulary [0, {spec.text_vocab_size})"
                )
            for token_id, token in structural.items():
                hits = (ids == token_id).nonzero()
                if len(hits):
                    raise ValueError(
                        f"{name}: contains {token} (id {token_id}) at position {int(hits[0])}; image spans are "
                        f"written by GenImage/SeenImage segments, not by text"
                    )
        elif isinstance(segment, GenImage):
            codes = segment.codes
            if codes.numel() != spec.num_image_tokens:
                raise ValueError(
                    f"{name}: has {codes.numel()} codes, the checkpoint's images have {spec.num_image_tokens}"
                )
            bad = (codes < 0) | (codes >= spec.codebook_size)
            if bad.any():
                raise ValueError(
                    f"{name}: VQ id {int(codes[bad][0])} at position {int(bad.nonzero()[0])} is outside the "
                    f"codebook [0, {spec.codebook_size})"
                )
        elif isinstance(segment, SeenImage):
            expected = (3, spec.image_size, spec.image_size)
            if tuple(segment.pixels.shape) != expected:
                raise ValueError(
                    f"{name}: pixels have shape {tuple(segment.pixels.shape)}, the understanding encoder takes {expected}"
                )
            if segment.num_features != spec.num_image_tokens:
                raise ValueError(
                    f"{name}: built for {segment.num_features} features, the checkpoint has {spec.num_image_tokens}"
                )
        else:
            raise TypeError(f"{name}: not a segment (expected Text, GenImage or SeenImage)")
    length = sequence_length(sequence)
    if length > spec.max_positions:
        raise ValueError(f"{where} is {length} positions long; the model's context is {spec.max_positions}")
