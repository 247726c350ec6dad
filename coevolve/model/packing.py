"""Segment-typed sequences -> padded tensors -> trunk input embeddings.

One packing serves the sampler (left padding, so every row's next token sits in the last column)
and the teacher-forced scorer (right padding). Position ids count real tokens only
(`cumsum(mask) - 1`), so a token's position does not depend on how much padding its row got.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import JanusForConditionalGeneration

from coevolve.model.segments import GenImage, Segment, Sequence, Text
from coevolve.model.spec import JanusSpec


def text_space_ids(segment: Segment, spec: JanusSpec) -> torch.Tensor:
    """The ids a segment writes into the LM-vocabulary row; VQ code positions hold the pad id."""
    if isinstance(segment, Text):
        return segment.ids
    if isinstance(segment, GenImage):
        inner = torch.full((segment.codes.numel(),), spec.pad_id, dtype=torch.int64)
    else:
        inner = torch.full((segment.num_features,), spec.image_token_id, dtype=torch.int64)
    return torch.cat([torch.tensor([spec.boi_id]), inner, torch.tensor([spec.eoi_id])])


@dataclass
class Packed:
    """A batch of sequences as (R, T) tensors.

    `spans[r][j]` is the [start, end) column range of segment j's scoreable ids in row r (the
    text ids of a `Text`, the codes of a `GenImage`), or None for a `SeenImage`.
    """

    input_ids: torch.Tensor  # (R, T) LM-vocabulary ids; pad at padding and code columns
    codes: torch.Tensor  # (R, T) VQ codes at code columns, 0 elsewhere
    is_code: torch.Tensor  # (R, T) bool
    attention_mask: torch.Tensor  # (R, T) 1 = real token
    position_ids: torch.Tensor  # (R, T)
    pixel_values: torch.Tensor | None  # (num_seen_images, 3, H, W), in row-major order
    spans: list[list[tuple[int, int] | None]]

    @property
    def padded(self) -> bool:
        return not bool(self.attention_mask.all())


def pack(
    sequences: list[Sequence],
    spec: JanusSpec,
    padding_side: str,
    open_image: bool = False,
) -> Packed:
    """Pack sequences into one padded batch.

    `open_image`: end every row with `<begin_of_image>` — the context in which a generated
    image's first code is predicted.
    """
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    rows_ids, rows_codes, rows_is_code, rows_spans, pixels = [], [], [], [], []
    for sequence in sequences:
        ids_parts, code_parts, is_code_parts, spans = [], [], [], []
        column = 0
        for segment in sequence:
            ids = text_space_ids(segment, spec)
            codes = torch.zeros_like(ids)
            is_code = torch.zeros_like(ids, dtype=torch.bool)
            if isinstance(segment, Text):
                spans.append((column, column + len(ids)))
            elif isinstance(segment, GenImage):
                codes[1:-1] = segment.codes
                is_code[1:-1] = True
                spans.append((column + 1, column + len(ids) - 1))
            else:
                spans.append(None)
                pixels.append(segment.pixels)
            ids_parts.append(ids)
            code_parts.append(codes)
            is_code_parts.append(is_code)
            column += len(ids)
        if open_image:
            ids_parts.append(torch.tensor([spec.boi_id]))
            code_parts.append(torch.zeros(1, dtype=torch.int64))
            is_code_parts.append(torch.zeros(1, dtype=torch.bool))
        rows_ids.append(torch.cat(ids_parts))
        rows_codes.append(torch.cat(code_parts))
        rows_is_code.append(torch.cat(is_code_parts))
        rows_spans.append(spans)

    width = max(len(row) for row in rows_ids)
    num_rows = len(rows_ids)
    input_ids = torch.full((num_rows, width), spec.pad_id, dtype=torch.int64)
    codes = torch.zeros((num_rows, width), dtype=torch.int64)
    is_code = torch.zeros((num_rows, width), dtype=torch.bool)
    attention_mask = torch.zeros((num_rows, width), dtype=torch.int64)
    for r, row in enumerate(rows_ids):
        shift = width - len(row) if padding_side == "left" else 0
        cols = slice(shift, shift + len(row))
        input_ids[r, cols] = row
        codes[r, cols] = rows_codes[r]
        is_code[r, cols] = rows_is_code[r]
        attention_mask[r, cols] = 1
        if shift:
            rows_spans[r] = [None if span is None else (span[0] + shift, span[1] + shift) for span in rows_spans[r]]
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    return Packed(
        input_ids=input_ids,
        codes=codes,
        is_code=is_code,
        attention_mask=attention_mask,
        position_ids=position_ids,
        pixel_values=torch.stack(pixels) if pixels else None,
        spans=rows_spans,
    )


def embed(model: JanusForConditionalGeneration, packed: Packed) -> torch.Tensor:
    """(R, T, D) trunk inputs: token embeddings, with code columns from the generation embeddings
    + aligner and placeholder columns from the vision encoder + aligner."""
    device = model.device
    input_ids = packed.input_ids.to(device)
    embeds = model.get_input_embeddings()(input_ids)
    if packed.is_code.any():
        is_code = packed.is_code.to(device)
        code_embeds = model.prepare_embeddings_for_image_generation(packed.codes.to(device)[is_code])  # (M, D)
        embeds = embeds.masked_scatter(is_code.unsqueeze(-1), code_embeds.to(embeds.dtype))
    if packed.pixel_values is not None:
        pixel_values = packed.pixel_values.to(device, model.dtype)
        features = model.model.get_image_features(pixel_values).pooler_output  # (n, N, D)
        is_feature = (input_ids == model.config.image_token_id).unsqueeze(-1)
        embeds = embeds.masked_scatter(is_feature, features.reshape(-1, embeds.shape[-1]).to(embeds.dtype))
    return embeds


def trunk(model: JanusForConditionalGeneration, packed: Packed, past_key_values=None):
    """Run the language-model trunk over a packed batch; returns transformers' model output."""
    return model.model.language_model(
        inputs_embeds=embed(model, packed),
        attention_mask=packed.attention_mask.to(model.device) if packed.padded else None,
        position_ids=packed.position_ids.to(model.device),
        past_key_values=past_key_values,
        use_cache=past_key_values is not None,
    )
