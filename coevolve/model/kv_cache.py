"""The decode loop's KV caches: grown in place, and (for groups of samples) prefix kept once.

transformers' `DynamicLayer` concatenates every new token onto the whole cache (a full copy of
every layer's keys and values per step); `StaticLayer` avoids the copy but attends over all of
its slots, empty ones masked. `GrowingLayer` allocates its capacity once, writes each step's
keys/values in place and hands attention a view of the filled part only.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from transformers import AttentionInterface
from transformers.cache_utils import Cache, DynamicLayer
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask


class GrowingLayer(DynamicLayer):
    def __init__(self, capacity: int):
        super().__init__()
        self.capacity = capacity
        self.length = 0

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.dtype, self.device = key_states.dtype, key_states.device
        batch, heads, _, key_dim = key_states.shape
        self._keys = key_states.new_empty((batch, heads, self.capacity, key_dim))
        self._values = value_states.new_empty((batch, heads, self.capacity, value_states.shape[-1]))
        self.is_initialized = True

    def _views(self) -> None:
        self.keys = self._keys[:, :, : self.length]
        self.values = self._values[:, :, : self.length]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self.length + key_states.shape[-2]
        if end > self.capacity:
            raise RuntimeError(f"KV cache capacity {self.capacity} exceeded (would hold {end} positions)")
        self._keys[:, :, self.length : end] = key_states
        self._values[:, :, self.length : end] = value_states
        self.length = end
        self._views()
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length


def growing_cache(num_layers: int, capacity: int) -> Cache:
    return Cache(layers=[GrowingLayer(capacity) for _ in range(num_layers)])


# -- groups of samples that share a prompt ------------------------------------------------------
#
# With n samples per prompt, every sample's row would hold (and every decode step would read) a
# copy of the prompt's keys/values. `SharedPrefixLayer` keeps the prefilled prefix once per group,
# (G, H, P, d), and only each row's own tokens per row, (G * n, H, capacity, d). The decode-step
# attention then scores a group's n queries against its prefix in one matrix product and joins
# that with each row's own tokens in one softmax. Reached through transformers' attention
# registry while `shared_prefix_decoding` is active; any other call falls through to sdpa.

ATTENTION_NAME = "coevolve_shared_prefix"


class SharedPrefixLayer(GrowingLayer):
    def __init__(self, repeats: int, capacity: int):
        super().__init__(capacity)
        self.repeats = repeats
        self.prefix_keys = self.prefix_values = None

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if self.prefix_keys is not None:
            return super().update(key_states, value_states)
        # The prefill: one row per group. Its own attention sees just these keys/values.
        self.prefix_keys, self.prefix_values = key_states, value_states
        groups, heads, _, key_dim = key_states.shape
        rows = groups * self.repeats
        self.dtype, self.device = key_states.dtype, key_states.device
        self._keys = key_states.new_empty((rows, heads, self.capacity, key_dim))
        self._values = value_states.new_empty((rows, heads, self.capacity, value_states.shape[-1]))
        self.is_initialized = True
        return key_states, value_states

    def get_seq_length(self) -> int:
        return (0 if self.prefix_keys is None else self.prefix_keys.shape[-2]) + self.length

    def batch_repeat_interleave(self, repeats: int) -> None:
        raise NotImplementedError("a SharedPrefixLayer is built for its group size; it is never repeated")


class SharedPrefixCache(Cache):
    def __init__(self, num_layers: int, repeats: int, capacity: int, prefix_padding: torch.Tensor | None):
        super().__init__(layers=[SharedPrefixLayer(repeats, capacity) for _ in range(num_layers)])
        self.prefix_bias = None  # (G, 1, 1, P): -inf at the prefix's left padding
        if prefix_padding is not None:
            bias = torch.zeros(prefix_padding.shape, dtype=torch.float32, device=prefix_padding.device)
            self.prefix_bias = bias.masked_fill(prefix_padding, float("-inf"))[:, None, None, :]


def shared_prefix_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """query (R, H, 1, d); key/value: each row's own tokens (R, Hkv, S, d). Returns (R, 1, H, d)."""
    cache = kwargs.get("shared_prefix_cache")
    if cache is None or query.shape[2] != 1:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    layer = cache.layers[module.layer_idx]
    prefix_keys, prefix_values = layer.prefix_keys, layer.prefix_values  # (G, Hkv, P, d)
    rows, heads, _, dim = query.shape
    groups, kv_heads, prefix_len, _ = prefix_keys.shape
    n, rep, own_len = rows // groups, heads // kv_heads, key.shape[-2]
    scaling = dim**-0.5 if scaling is None else scaling

    def to_groups(x, last):  # (R, Hkv, rep, last) -> (G, Hkv, n * rep, last)
        return x.view(groups, n, kv_heads, rep, last).permute(0, 2, 1, 3, 4).reshape(groups, kv_heads, n * rep, last)

    def to_rows(x, last):  # the inverse
        return x.view(groups, kv_heads, n, rep, last).permute(0, 2, 1, 3, 4).reshape(rows, kv_heads, rep, last)

    query = query.view(rows, kv_heads, rep, dim)
    prefix_scores = torch.matmul(to_groups(query, dim), prefix_keys.transpose(-1, -2))  # (G, Hkv, n*rep, P)
    if cache.prefix_bias is not None:
        prefix_scores = prefix_scores + cache.prefix_bias.to(prefix_scores.dtype)
    own_scores = to_groups(torch.matmul(query, key.transpose(-1, -2)), own_len)  # (G, Hkv, n*rep, S)
    scores = torch.cat([prefix_scores, own_scores], dim=-1).float() * scaling
    weights = torch.softmax(scores, dim=-1).to(value.dtype)
    out = to_rows(torch.matmul(weights[..., :prefix_len], prefix_values), dim)
    out = out + torch.matmul(to_rows(weights[..., prefix_len:], own_len), value)  # (R, Hkv, rep, d)
    return out.reshape(rows, heads, 1, dim).transpose(1, 2), None


AttentionInterface.register(ATTENTION_NAME, shared_prefix_attention)
AttentionMaskInterface.register(ATTENTION_NAME, sdpa_mask)


@contextmanager
def shared_prefix_decoding(model):
    """Route the trunk's attention through `shared_prefix_attention` for the duration."""
    config = model.model.language_model.config
    previous = config._attn_implementation
    config._attn_implementation = ATTENTION_NAME
    try:
        yield
    finally:
        config._attn_implementation = previous
