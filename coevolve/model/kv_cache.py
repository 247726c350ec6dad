"""The decode loop's KV cache: group prefixes stored once, samples' own tokens grown in place.

A rollout draws `n` samples from each prompt. transformers copies the prompt's keys/values into
every sample's row and attends over all of them at every step; its `DynamicLayer` also
concatenates the whole cache per step, and its `StaticLayer` attends over empty slots.

`GroupedPrefixLayer` keeps the prefilled prefix once per group — (G, H, P, d) — and each row's
generated tokens in a buffer allocated once — (G * n, H, capacity, d). During decode the
attention (`grouped_prefix_attention`) scores each group's n queries against the shared prefix
as one matrix product, scores each row's own tokens separately, and joins the two in one
softmax. The prefix's keys/values are read once per group per step instead of n times.

The decode attention is reached through transformers' attention registry: `grouped_decode`
points the trunk's `_attn_implementation` at it for the duration of sampling and restores it
after. Prefill runs with the trunk's own implementation.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from transformers import AttentionInterface
from transformers.cache_utils import Cache, DynamicLayer
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

ATTENTION_NAME = "coevolve_grouped_prefix"


class GroupedPrefixLayer(DynamicLayer):
    def __init__(self, repeats: int, capacity: int):
        super().__init__()
        self.repeats = repeats  # rows per group
        self.capacity = capacity  # generated tokens per row
        self.length = 0
        self.prefix_keys = self.prefix_values = None

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if self.prefix_keys is None:  # the prefill: one row per group
            self.prefix_keys, self.prefix_values = key_states, value_states
            self.dtype, self.device = key_states.dtype, key_states.device
            groups, heads, _, key_dim = key_states.shape
            rows = groups * self.repeats
            self._keys = key_states.new_empty((rows, heads, self.capacity, key_dim))
            self._values = value_states.new_empty((rows, heads, self.capacity, value_states.shape[-1]))
            self.is_initialized = True
            self.keys, self.values = key_states, value_states
            return key_states, value_states
        end = self.length + key_states.shape[-2]
        if end > self.capacity:
            raise RuntimeError(f"KV cache capacity {self.capacity} exceeded (would hold {end} generated positions)")
        self._keys[:, :, self.length : end] = key_states
        self._values[:, :, self.length : end] = value_states
        self.length = end
        self.keys, self.values = self._keys[:, :, :end], self._values[:, :, :end]
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return (0 if self.prefix_keys is None else self.prefix_keys.shape[-2]) + self.length


class GroupedPrefixCache(Cache):
    def __init__(self, num_layers: int, repeats: int, capacity: int, prefix_mask: torch.Tensor | None):
        super().__init__(layers=[GroupedPrefixLayer(repeats, capacity) for _ in range(num_layers)])
        self.prefix_mask = prefix_mask  # (G, P) bool, False at padding; None when no group is padded


def grouped_prefix_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Decode-step attention over (shared group prefix, row's own tokens); anything else goes to sdpa.

    query: (R, H, 1, d); key/value: the row's own tokens (R, Hkv, S, d). Returns (R, 1, H, d).
    """
    cache = kwargs.get("grouped_prefix_cache")
    if cache is None or query.shape[2] != 1:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    layer = cache.layers[module.layer_idx]
    prefix_keys, prefix_values = layer.prefix_keys, layer.prefix_values  # (G, Hkv, P, d)
    rows, heads, _, dim = query.shape
    groups, kv_heads, prefix_len, _ = prefix_keys.shape
    n, rep = rows // groups, heads // kv_heads
    scaling = dim**-0.5 if scaling is None else scaling

    # The n queries of a group (and the rep query heads of a kv head) share one product with the prefix.
    grouped_query = (
        query.view(groups, n, kv_heads, rep, dim).permute(0, 2, 1, 3, 4).reshape(groups, kv_heads, n * rep, dim)
    )
    prefix_scores = torch.matmul(grouped_query, prefix_keys.transpose(-1, -2)) * scaling  # (G, Hkv, n*rep, P)
    if cache.prefix_mask is not None:
        prefix_scores = prefix_scores.masked_fill(~cache.prefix_mask[:, None, None, :], float("-inf"))
    own_scores = torch.matmul(query.view(rows, kv_heads, rep, dim), key.transpose(-1, -2)) * scaling  # (R, Hkv, rep, S)

    prefix_scores = prefix_scores.view(groups, kv_heads, n, rep, prefix_len).permute(
        0, 2, 1, 3, 4
    )  # (G, n, Hkv, rep, P)
    prefix_scores = prefix_scores.reshape(rows, kv_heads, rep, prefix_len)
    peak = torch.maximum(prefix_scores.amax(-1, keepdim=True), own_scores.amax(-1, keepdim=True))
    prefix_weights = torch.exp(prefix_scores - peak)
    own_weights = torch.exp(own_scores - peak)
    total = prefix_weights.sum(-1, keepdim=True) + own_weights.sum(-1, keepdim=True)

    grouped_weights = prefix_weights.view(groups, n, kv_heads, rep, prefix_len).permute(0, 2, 1, 3, 4)
    prefix_out = torch.matmul(grouped_weights.reshape(groups, kv_heads, n * rep, prefix_len), prefix_values)
    prefix_out = prefix_out.view(groups, kv_heads, n, rep, dim).permute(0, 2, 1, 3, 4).reshape(rows, kv_heads, rep, dim)
    out = (prefix_out + torch.matmul(own_weights, value)) / total  # (R, Hkv, rep, d)
    return out.reshape(rows, heads, 1, dim).transpose(1, 2), None


AttentionInterface.register(ATTENTION_NAME, grouped_prefix_attention)
AttentionMaskInterface.register(ATTENTION_NAME, sdpa_mask)


@contextmanager
def grouped_decode(model):
    """Route the trunk's attention through `grouped_prefix_attention` while sampling."""
    config = model.model.language_model.config
    previous = config._attn_implementation
    config._attn_implementation = ATTENTION_NAME
    try:
        yield
    finally:
        config._attn_implementation = previous
