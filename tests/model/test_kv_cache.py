"""The decode caches: shared-prefix attention equals plain attention; routing is always restored."""

from __future__ import annotations

import types

import pytest
import torch
import torch.nn.functional as F

from coevolve.model.kv_cache import GrowingLayer, SharedPrefixCache, shared_prefix_attention, shared_prefix_decoding


@pytest.mark.parametrize("kv_heads", [4, 2])  # multi-head and grouped-query attention
def test_shared_prefix_attention_equals_sdpa_over_repeated_prefix(kv_heads):
    torch.manual_seed(0)
    groups, n, heads, dim, prefix, own = 3, 4, 4, 16, 9, 5
    rows = groups * n
    padding = torch.zeros(groups, prefix, dtype=torch.bool)
    padding[1, :3] = True  # group 1's prompt is left padded
    cache = SharedPrefixCache(1, repeats=n, capacity=8, prefix_padding=padding)
    layer = cache.layers[0]
    prefix_keys, prefix_values = torch.randn(groups, kv_heads, prefix, dim), torch.randn(groups, kv_heads, prefix, dim)
    layer.update(prefix_keys, prefix_values)
    for _ in range(own):
        keys, values = layer.update(torch.randn(rows, kv_heads, 1, dim), torch.randn(rows, kv_heads, 1, dim))
    query = torch.randn(rows, heads, 1, dim)
    ours, _ = shared_prefix_attention(types.SimpleNamespace(layer_idx=0), query, keys, values, None,
                                      scaling=dim**-0.5, shared_prefix_cache=cache)

    full_keys = torch.cat([prefix_keys.repeat_interleave(n, 0), keys], dim=2).repeat_interleave(heads // kv_heads, 1)
    full_values = torch.cat([prefix_values.repeat_interleave(n, 0), values], dim=2).repeat_interleave(heads // kv_heads, 1)
    mask = torch.cat([~padding.repeat_interleave(n, 0), torch.ones(rows, own, dtype=torch.bool)], 1)[:, None, None, :]
    reference = F.scaled_dot_product_attention(query, full_keys, full_values, attn_mask=mask).transpose(1, 2)
    assert ours.shape == (rows, 1, heads, dim)
    assert (ours - reference).abs().max() <= 1e-5
    assert layer.get_seq_length() == prefix + own


def test_capacity_is_enforced():
    layer = GrowingLayer(capacity=2)
    layer.update(torch.zeros(1, 1, 2, 4), torch.zeros(1, 1, 2, 4))
    with pytest.raises(RuntimeError, match="capacity 2 exceeded"):
        layer.update(torch.zeros(1, 1, 1, 4), torch.zeros(1, 1, 1, 4))


def test_attention_routing_is_restored_even_on_error(tiny_adapter):
    config = tiny_adapter.model.model.language_model.config
    before = config._attn_implementation
    with pytest.raises(KeyError), shared_prefix_decoding(tiny_adapter.model):
        assert config._attn_implementation != before
        raise KeyError("boom")
    assert config._attn_implementation == before
    tiny_adapter.sample_images([tiny_adapter.image_prompt("a red circle")], n=2)
    assert config._attn_implementation == before
