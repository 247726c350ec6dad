"""Teacher-forced log-probs and entropies of the scored segments of a batch of sequences.

One trunk pass over the batch: the conditional rows, plus — when image codes are scored in a
guided mode — one unconditional row per scored image (its unconditional prefix + its codes).
The heads are then applied in chunks of `chunk_size` positions; under autograd each chunk is
checkpointed, so at most one chunk of (chunk_size, vocabulary) logits is alive at a time, in the
forward and in the backward pass.

The first token of a scored `Text` with `choices` (the self-check's drawn " Yes"/" No") is scored
under the distribution it was drawn from, as `JanusAdapter.judge` draws it: `sampling` applied to
the LM-head logits of the choices alone; its other tokens as any text.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.checkpoint import checkpoint
from transformers import JanusForConditionalGeneration

from coevolve.model.guidance import DEFAULT_GUIDANCE, CFGMode, Guidance, guide
from coevolve.model.packing import pack, trunk
from coevolve.model.sampling import (
    DEFAULT_SAMPLING,
    Sampling,
    entropy,
    forbid,
    sampling_logprobs,
)
from coevolve.model.segments import GenImage, Sequence, Text
from coevolve.model.spec import JanusSpec


@dataclass
class Scores:
    """`logprobs[i][j]` / `entropies[i][j]`: (len,) float32 for scored segment j of sequence i, else None."""

    logprobs: list[list[torch.Tensor | None]]
    entropies: list[list[torch.Tensor | None]]


def _positions(spans, row_of: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """[(sequence, segment index, (start, end)), ...] -> (rows, cols) of every scored column."""
    rows, cols = [], []
    for i, _, (start, end) in spans:
        rows.append(torch.full((end - start,), row_of[i], dtype=torch.int64))
        cols.append(torch.arange(start, end))
    if not rows:
        return torch.empty(0, dtype=torch.int64), torch.empty(0, dtype=torch.int64)
    return torch.cat(rows), torch.cat(cols)


def _chunked(fn, tensors: tuple[torch.Tensor, ...], chunk_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    if tensors[0].shape[0] == 0:
        empty = tensors[0].new_empty(0, dtype=torch.float32)
        return empty, empty
    logprobs, entropies = [], []
    for start in range(0, tensors[0].shape[0], chunk_size):
        chunk = tuple(t[start : start + chunk_size] for t in tensors)
        if torch.is_grad_enabled():
            lp, ent = checkpoint(fn, *chunk, use_reentrant=False)
        else:
            lp, ent = fn(*chunk)
        logprobs.append(lp)
        entropies.append(ent)
    return torch.cat(logprobs), torch.cat(entropies)


def score(
    model: JanusForConditionalGeneration,
    spec: JanusSpec,
    sequences: list[Sequence],
    mode: CFGMode = CFGMode.GUIDED,
    guidance: Guidance = DEFAULT_GUIDANCE,
    sampling: Sampling = DEFAULT_SAMPLING,
    chunk_size: int = 1024,
    share_rows: bool = True,
) -> Scores:
    """Log-probs (and entropies) of every token of every scored segment, under `sampling` applied
    to the text logits and to the image logits of `mode`. Differentiable when grad is enabled.

    `share_rows`: sequences share trunk rows (`packing.pack`), so short ones cost no padding;
    the log-probs are those of one row per sequence."""
    mode = CFGMode(mode)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    for i, sequence in enumerate(sequences):
        first = sequence[0]
        if isinstance(first, Text) and first.scored:
            raise ValueError(
                f"sequence {i}: its first segment is scored, but the first token has no context to score it from"
            )
    guided = mode is not CFGMode.CONDITIONAL and guidance.active
    uncond_rows, uncond_of = [], {}
    if guided:
        for i, sequence in enumerate(sequences):
            for j, segment in enumerate(sequence):
                if isinstance(segment, GenImage) and segment.scored:
                    uncond_of[(i, j)] = len(sequences) + len(uncond_rows)
                    uncond_rows.append(guidance.unconditional_prefix(sequence[:j], spec) + (segment,))
    packed = pack(list(sequences) + uncond_rows, spec, "right", share_rows=share_rows)
    hidden = trunk(model, packed).last_hidden_state  # (R, T, D)
    device = hidden.device

    text_spans, image_spans, uncond_spans, choice_spans = [], [], [], []
    for i, sequence in enumerate(sequences):
        for j, segment in enumerate(sequence):
            if not segment.scored:
                continue
            span = packed.spans[i][j]
            if isinstance(segment, Text):
                if segment.choices:
                    choice_spans.append((i, j, span[0], segment.choices))
                    span = (span[0] + 1, span[1])  # the rest of the segment, scored as any text
                text_spans.append((i, j, span))
            else:
                image_spans.append((i, j, span))
                if guided:
                    u = uncond_of[(i, j)]
                    uncond_spans.append((u, j, packed.spans[u][-1]))

    def text_chunk(h, targets):
        logprobs = sampling_logprobs(forbid(model.lm_head(h), spec.image_span_ids), sampling)
        return logprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1), entropy(logprobs)

    def image_chunk(h_cond, targets, h_uncond=None):
        logits = model.model.generation_head(h_cond)
        if h_uncond is not None:
            uncond = model.model.generation_head(h_uncond)
            if mode is CFGMode.GUIDED_DETACH:
                uncond = uncond.detach()
            logits = guide(logits, uncond, guidance.weight)
        logprobs = sampling_logprobs(logits, sampling)
        return logprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1), entropy(logprobs)

    # A token at column c is predicted from the hidden state at column c - 1.
    rows, cols = _positions(text_spans, packed.rows)
    text_lp, text_ent = _chunked(
        text_chunk,
        (hidden[rows, cols - 1], packed.input_ids[rows, cols].to(device)),
        chunk_size,
    )
    rows, cols = _positions(image_spans, packed.rows)
    image_inputs = (hidden[rows, cols - 1], packed.codes[rows, cols].to(device))
    if guided:
        u_rows, u_cols = _positions(uncond_spans, packed.rows)
        image_inputs += (hidden[u_rows, u_cols - 1],)
    image_lp, image_ent = _chunked(image_chunk, image_inputs, chunk_size)

    logprobs = [[None] * len(sequence) for sequence in sequences]
    entropies = [[None] * len(sequence) for sequence in sequences]
    for spans, lp, ent in (
        (text_spans, text_lp, text_ent),
        (image_spans, image_lp, image_ent),
    ):
        offset = 0
        for i, j, (start, end) in spans:
            logprobs[i][j] = lp[offset : offset + end - start]
            entropies[i][j] = ent[offset : offset + end - start]
            offset += end - start

    # First tokens drawn among `choices`: one position per such segment, no chunking needed.
    if choice_spans:
        rows = torch.tensor([packed.rows[i] for i, _, _, _ in choice_spans])
        cols = torch.tensor([start for _, _, start, _ in choice_spans])
        targets = packed.input_ids[rows, cols]
        logits = model.lm_head(hidden[rows, cols - 1])  # (S, V)
        for k, (i, j, _, choices) in enumerate(choice_spans):
            restricted = sampling_logprobs(logits[k : k + 1, list(choices)], sampling)  # (1, len(choices))
            drawn = choices.index(int(targets[k]))
            logprobs[i][j] = torch.cat([restricted[:, drawn], logprobs[i][j]])
            entropies[i][j] = torch.cat([entropy(restricted), entropies[i][j]])
    return Scores(logprobs=logprobs, entropies=entropies)
