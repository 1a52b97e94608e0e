"""Shared inputs of the KV-cache tests (tests/ops/test_kv_cache.py, tests/backends/test_aiter_kv_cache.py):
caches poisoned with random bytes in vLLM's layouts, and random slot mappings with -1 padding."""

from __future__ import annotations

import torch


def poison(t: torch.Tensor) -> torch.Tensor:
    """Random bytes everywhere t's storage reaches (NaN patterns included): untouched must stay so."""
    t.view(torch.uint8).copy_(torch.randint(0, 256, t.view(torch.uint8).shape, dtype=torch.uint8))
    return t


def make_caches(layout: str, num_blocks: int, block_size: int, heads: int, d: int, dv: int, dtype: torch.dtype):
    """(key_cache, value_cache) as vLLM lays them out: ``unbind0`` = kv_cache (2, NB, BS, H, D).unbind(0)
    (FlashAttention's layout), ``interleaved`` = (NB, 2, BS, H, D).unbind(1), ``separate`` = two
    tensors (and the only one allowing Dv != D); ``padded``: head dim padded in storage (D of D + 8)."""
    if layout == "unbind0":
        kc, vc = torch.empty(2, num_blocks, block_size, heads, d, dtype=dtype).unbind(0)
    elif layout == "interleaved":
        kc, vc = torch.empty(num_blocks, 2, block_size, heads, d, dtype=dtype).unbind(1)
    elif layout == "padded":
        kc = torch.empty(num_blocks, block_size, heads, d + 8, dtype=dtype)[..., :d]
        vc = torch.empty(num_blocks, block_size, heads, dv + 8, dtype=dtype)[..., :dv]
    else:
        kc = torch.empty(num_blocks, block_size, heads, d, dtype=dtype)
        vc = torch.empty(num_blocks, block_size, heads, dv, dtype=dtype)
    return poison(kc), poison(vc)


def random_slots(tokens: int, num_slots: int, pad: int, dtype=torch.int64) -> torch.Tensor:
    """Distinct slots in random (non-contiguous) order, ``pad`` of them replaced by -1 at random places."""
    slots = torch.randperm(num_slots)[:tokens]
    if pad:
        slots[torch.randperm(tokens)[:pad]] = -1
    return slots.to(dtype)
