"""The rollout hot path: batched text and image sampling with a KV cache.

How it departs from transformers' `generate(generation_mode="image")` (which it matches token
for token under greedy decoding):

- the prompt prefix of a group (conditional and unconditional row) is prefilled once for the
  group's `n` samples, instead of prefilling every sample's copy, and kept once in the KV cache:
  the decode attention reads it once per group (`kv_cache.SharedPrefixCache`);
- with guidance weight 1 no unconditional rows are run at all;
- the decode step calls the trunk directly with a cache that grows in place (`kv_cache.py`: no
  per-step copy of the cache, no attention over empty slots) and a key mask built once (no
  per-step mask or input preparation; none at all when no row is padded);
- the log-prob of every drawn token under the sampling distribution is returned with it.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Self

import torch
from transformers import JanusForConditionalGeneration, PreTrainedTokenizerBase
from transformers.generation.stopping_criteria import StopStringCriteria

from coevolve.model.guidance import DEFAULT_GUIDANCE, Guidance, guide
from coevolve.model.kv_cache import SharedPrefixCache, growing_cache, shared_prefix_decoding
from coevolve.model.packing import Packed, embed, pack
from coevolve.model.sampling import DEFAULT_SAMPLING, Generators, Sampling, choose, forbid
from coevolve.model.segments import GenImage, Sequence, Text, sequence_length
from coevolve.model.spec import JanusSpec


@dataclass
class ImageSample:
    """`n` images per prompt; row r belongs to prompt r // n."""

    codes: torch.Tensor  # (B * n, num_image_tokens) VQ ids
    logprobs: torch.Tensor  # (B * n, num_image_tokens) float32, under the (guided) sampling distribution
    n: int

    def segments(self, scored: bool = True) -> list[GenImage]:
        return [GenImage(row, scored=scored) for row in self.codes.cpu()]


@dataclass
class TextSample:
    """`n` completions per prompt; entry r belongs to prompt r // n."""

    ids: list[torch.Tensor]  # each (length,), including the stop token that ended it
    logprobs: list[torch.Tensor]  # each (length,) float32, under the sampling distribution
    finish_reasons: list[str]  # "stop" (EOS, a stop id or a stop string) or "length"
    texts: list[str]
    n: int

    def segments(self, scored: bool = True) -> list[Text]:
        return [Text(ids, scored=scored) for ids in self.ids]


class _Decoder:
    """KV-cached one-token-at-a-time decoding over rows that share prefilled group prefixes."""

    def __init__(
        self,
        model: JanusForConditionalGeneration,
        packed: Packed,
        repeats: int,
        new_tokens: int,
    ):
        self.model = model
        self.trunk = model.model.language_model
        device = model.device
        width = packed.attention_mask.shape[1]
        layers = model.config.text_config.num_hidden_layers
        self.shared = repeats > 1
        if self.shared:
            padding = ~packed.attention_mask.bool().to(device) if packed.padded else None
            self.cache = SharedPrefixCache(layers, repeats, capacity=new_tokens, prefix_padding=padding)
        else:
            self.cache = growing_cache(layers, capacity=width + new_tokens)
        out = self.trunk(
            inputs_embeds=embed(model, packed),
            attention_mask=packed.attention_mask.to(device) if packed.padded else None,
            position_ids=packed.position_ids.to(device),
            past_key_values=self.cache,
            use_cache=True,
        )
        self.hidden = out.last_hidden_state[:, -1].repeat_interleave(repeats, 0)  # (R, D)
        self.next_position = (packed.position_ids[:, -1] + 1).repeat_interleave(repeats).to(device)  # (R,)
        # Without groups, decode steps get a ready 4D key mask (transformers passes a 4D mask
        # through untouched), so no step rebuilds one; unpadded batches need none. With groups,
        # the prefix's padding lives in the cache and the rows' own tokens are never padded.
        self.key_mask = None
        if packed.padded and not self.shared:
            grown = torch.ones((packed.attention_mask.shape[0], new_tokens), dtype=torch.bool)
            self.key_mask = torch.cat([packed.attention_mask.bool(), grown], dim=1)[:, None, None, :].to(device)
        self.width = width
        self._routing = shared_prefix_decoding(model) if self.shared else nullcontext()

    def __enter__(self) -> Self:
        self._routing.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._routing.__exit__(*exc)

    def step(self, embeds: torch.Tensor) -> torch.Tensor:
        """Feed (R, 1, D) embeddings; returns the (R, D) last hidden state. Call inside `with decoder:`."""
        self.width += 1
        extra = {"shared_prefix_cache": self.cache} if self.shared else {}
        out = self.trunk(
            inputs_embeds=embeds,
            attention_mask=None if self.key_mask is None else self.key_mask[..., : self.width],
            position_ids=self.next_position.unsqueeze(1),
            past_key_values=self.cache,
            use_cache=True,
            **extra,
        )
        self.next_position += 1
        self.hidden = out.last_hidden_state[:, -1]
        return self.hidden


def _check_room(prompts: list[Sequence], spec: JanusSpec, new_positions: int, what: str) -> None:
    for index, prompt in enumerate(prompts):
        length = sequence_length(prompt)
        if length + new_positions > spec.max_positions:
            raise ValueError(
                f"prompt {index} is {length} positions long; with {new_positions} new positions for {what} it "
                f"exceeds the model's context of {spec.max_positions}"
            )


@torch.no_grad()
def sample_images(
    model: JanusForConditionalGeneration,
    spec: JanusSpec,
    prompts: list[Sequence],
    n: int = 1,
    guidance: Guidance = DEFAULT_GUIDANCE,
    sampling: Sampling = DEFAULT_SAMPLING,
    generator: torch.Generator | Generators | None = None,
) -> ImageSample:
    """Draw `n` images for each prompt (a validated sequence; the image opens after its last segment)."""
    if n < 1:
        raise ValueError(f"n (images per prompt) must be >= 1, got {n}")
    num_tokens = spec.num_image_tokens
    _check_room(prompts, spec, num_tokens + 2, "an image")
    rows = list(prompts)
    if guidance.active:
        rows += [guidance.unconditional_prefix(prompt, spec) for prompt in prompts]
    decoder = _Decoder(
        model,
        pack(rows, spec, "left", open_image=True),
        repeats=n,
        new_tokens=num_tokens,
    )
    head = model.model.generation_head
    codes = torch.empty((len(prompts) * n, num_tokens), dtype=torch.int64, device=model.device)
    logprobs = torch.empty((len(prompts) * n, num_tokens), dtype=torch.float32, device=model.device)
    hidden = decoder.hidden
    with decoder:
        for i in range(num_tokens):
            logits = head(hidden)  # (R, V)
            if guidance.active:
                cond, uncond = logits.chunk(2)
                logits = guide(cond, uncond, guidance.weight)
            ids, token_logprobs = choose(logits, sampling, generator)
            codes[:, i] = ids
            logprobs[:, i] = token_logprobs
            if i + 1 < num_tokens:
                fed = ids.repeat(2) if guidance.active else ids
                hidden = decoder.step(model.prepare_embeddings_for_image_generation(fed).unsqueeze(1))
    return ImageSample(codes=codes, logprobs=logprobs, n=n)


@torch.no_grad()
def sample_text(
    model: JanusForConditionalGeneration,
    spec: JanusSpec,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[Sequence],
    max_new_tokens: int,
    n: int = 1,
    sampling: Sampling = DEFAULT_SAMPLING,
    stop_ids: tuple[int, ...] = (),
    stop_strings: tuple[str, ...] = (),
    generator: torch.Generator | Generators | None = None,
) -> TextSample:
    """Draw `n` completions per prompt, each ending at EOS, a `stop_ids` token, a `stop_strings`
    match (the completing token included) or after `max_new_tokens`."""
    if n < 1:
        raise ValueError(f"n (completions per prompt) must be >= 1, got {n}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    _check_room(prompts, spec, max_new_tokens, f"max_new_tokens={max_new_tokens}")
    device = model.device
    decoder = _Decoder(model, pack(list(prompts), spec, "left"), repeats=n, new_tokens=max_new_tokens)
    num_rows = len(prompts) * n
    stops = torch.tensor(sorted({spec.eos_id, *stop_ids}), device=device)
    stop_string_hit = StopStringCriteria(tokenizer, list(stop_strings)) if stop_strings else None
    ids = torch.full((num_rows, max_new_tokens), spec.pad_id, dtype=torch.int64, device=device)
    logprobs = torch.zeros((num_rows, max_new_tokens), dtype=torch.float32, device=device)
    lengths = torch.zeros(num_rows, dtype=torch.int64, device=device)
    finished = torch.zeros(num_rows, dtype=torch.bool, device=device)
    hidden = decoder.hidden
    steps = 0
    with decoder:
        for i in range(max_new_tokens):
            token_ids, token_logprobs = choose(forbid(model.lm_head(hidden), spec.image_span_ids), sampling, generator)
            token_ids = token_ids.masked_fill(finished, spec.pad_id)
            ids[:, i] = token_ids
            logprobs[:, i] = token_logprobs.masked_fill(finished, 0.0)
            lengths += (~finished).long()
            stopped = torch.isin(token_ids, stops)
            if stop_string_hit is not None:
                stopped |= stop_string_hit(ids[:, : i + 1], None).to(device)
            finished |= stopped
            steps = i + 1
            if bool(finished.all()) or steps == max_new_tokens:
                break
            hidden = decoder.step(model.get_input_embeddings()(token_ids).unsqueeze(1))
    ids, logprobs, lengths = (
        ids[:, :steps].cpu(),
        logprobs[:, :steps].cpu(),
        lengths.cpu(),
    )
    kept = [ids[r, : lengths[r]] for r in range(num_rows)]
    return TextSample(
        ids=kept,
        logprobs=[logprobs[r, : lengths[r]] for r in range(num_rows)],
        finish_reasons=["stop" if bool(finished[r]) else "length" for r in range(num_rows)],
        texts=tokenizer.batch_decode(kept, skip_special_tokens=True),
        n=n,
    )
