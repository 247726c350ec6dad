"""Segment-typed sequences -> padded tensors -> trunk input embeddings.

One packing serves the sampler (left padding, so every row's next token sits in the last column)
and the teacher-forced scorer (right padding). Position ids count real tokens only
(`cumsum(mask) - 1`), so a token's position does not depend on how much padding its row got.

The scorer may also let sequences share rows (`share_rows`): a batch mixing short and long
sequences is half padding when each gets a row of the longest one's width, and the trunk's cost
is per column. Sequences then go first-fit (longest first) into rows no wider than the longest
sequence, each with its positions starting at 0, and no attention mask is passed:
transformers reads the restarts of the position ids as sequence boundaries and attends within
each sequence only (`masking_utils.find_packed_sequence_indices`), so a token's log-prob is the
one it gets in a row of its own.
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

    Sequence i sits in row `rows[i]`; `spans[i][j]` is the [start, end) column range, in that row,
    of its segment j's scoreable ids (the text ids of a `Text`, the codes of a `GenImage`), or None
    for a `SeenImage`. With `shared_rows`, rows hold several sequences (see the module docstring).
    """

    input_ids: torch.Tensor  # (R, T) LM-vocabulary ids; pad at padding and code columns
    codes: torch.Tensor  # (R, T) VQ codes at code columns, 0 elsewhere
    is_code: torch.Tensor  # (R, T) bool
    attention_mask: torch.Tensor  # (R, T) 1 = real token
    position_ids: torch.Tensor  # (R, T)
    pixel_values: torch.Tensor | None  # (num_seen_images, 3, H, W), in row-major order
    spans: list[list[tuple[int, int] | None]]
    rows: list[int]
    shared_rows: bool = False

    @property
    def padded(self) -> bool:
        return not bool(self.attention_mask.all())

    def trunk_attention_mask(self) -> torch.Tensor | None:
        """The mask the trunk needs: none when rows are shared (position ids delimit sequences)
        or nothing is padded."""
        return self.attention_mask if self.padded and not self.shared_rows else None


def pack(
    sequences: list[Sequence],
    spec: JanusSpec,
    padding_side: str,
    open_image: bool = False,
    share_rows: bool = False,
) -> Packed:
    """Pack sequences into one padded batch.

    `open_image`: end every row with `<begin_of_image>` — the context in which a generated
    image's first code is predicted. `share_rows` (right padding only): several sequences per
    row (see the module docstring).
    """
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    if share_rows and padding_side != "right":
        raise ValueError("share_rows needs right padding: left-padded rows end in the token to continue")
    seq_ids, seq_codes, seq_is_code, seq_spans, seq_pixels = [], [], [], [], []
    for sequence in sequences:
        ids_parts, code_parts, is_code_parts, spans, pixels = [], [], [], [], []
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
        seq_ids.append(torch.cat(ids_parts))
        seq_codes.append(torch.cat(code_parts))
        seq_is_code.append(torch.cat(is_code_parts))
        seq_spans.append(spans)
        seq_pixels.append(pixels)

    width = max(len(ids) for ids in seq_ids)
    if share_rows:
        rows, offsets, num_rows = _first_fit([len(ids) for ids in seq_ids], width)
    else:
        rows = list(range(len(seq_ids)))
        offsets = [width - len(ids) if padding_side == "left" else 0 for ids in seq_ids]
        num_rows = len(seq_ids)
    input_ids = torch.full((num_rows, width), spec.pad_id, dtype=torch.int64)
    codes = torch.zeros((num_rows, width), dtype=torch.int64)
    is_code = torch.zeros((num_rows, width), dtype=torch.bool)
    attention_mask = torch.zeros((num_rows, width), dtype=torch.int64)
    for i, ids in enumerate(seq_ids):
        row, shift = rows[i], offsets[i]
        cols = slice(shift, shift + len(ids))
        input_ids[row, cols] = ids
        codes[row, cols] = seq_codes[i]
        is_code[row, cols] = seq_is_code[i]
        attention_mask[row, cols] = 1
        if shift:
            seq_spans[i] = [None if span is None else (span[0] + shift, span[1] + shift) for span in seq_spans[i]]
    if not share_rows:
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    else:
        position_ids = torch.zeros((num_rows, width), dtype=torch.int64)
        for i, ids in enumerate(seq_ids):
            position_ids[rows[i], offsets[i] : offsets[i] + len(ids)] = torch.arange(len(ids))
        # A row's padding tail counts as one more sequence (positions from 0), attended by nothing real.
        for row in range(num_rows):
            used = int(attention_mask[row].sum())
            position_ids[row, used:] = torch.arange(width - used)
    # The vision features are scattered into placeholder columns in row-major order.
    pixels = [p for i in sorted(range(len(seq_ids)), key=lambda i: (rows[i], offsets[i])) for p in seq_pixels[i]]
    return Packed(
        input_ids=input_ids,
        codes=codes,
        is_code=is_code,
        attention_mask=attention_mask,
        position_ids=position_ids,
        pixel_values=torch.stack(pixels) if pixels else None,
        spans=seq_spans,
        rows=rows,
        shared_rows=share_rows,
    )


def _first_fit(lengths: list[int], width: int) -> tuple[list[int], list[int], int]:
    """Rows and column offsets placing sequences of `lengths` into rows of `width`, longest first."""
    rows, offsets = [0] * len(lengths), [0] * len(lengths)
    used: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        row = next((r for r, taken in enumerate(used) if taken + lengths[i] <= width), len(used))
        if row == len(used):
            used.append(0)
        rows[i], offsets[i] = row, used[row]
        used[row] += lengths[i]
    return rows, offsets, len(used)


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
        attention_mask=None if (mask := packed.trunk_attention_mask()) is None else mask.to(model.device),
        position_ids=packed.position_ids.to(model.device),
        past_key_values=past_key_values,
        use_cache=past_key_values is not None,
    )
