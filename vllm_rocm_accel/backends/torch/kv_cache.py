"""The KV-cache write in torch: the reference the other backends are checked against.

Tokens whose slot is >= 0 are selected (a boolean mask: one host read of their count, so this
backend is not CUDA-graph capturable; the Triton one is), then written with one advanced-index
assignment per cache, ``cache[slot // block_size, slot % block_size] = rows``, which works on
any cache strides (the ``kv_cache.unbind(0)`` views vLLM passes, or block-interleaved ones).
FP8 caches get :mod:`vllm_rocm_accel.fp8`'s rule, ``fp8(clamp(x / scale, -fp8_max, fp8_max))``
in float32 (the quant family's torch code), stored through a uint8 view of the cache.
"""

from __future__ import annotations

from typing import Optional

import torch

from ...checks.kv_cache import CacheWrite
from .quant import _quantize


def _encode(rows: torch.Tensor, scale: torch.Tensor, p: CacheWrite) -> torch.Tensor:
    if not p.fp8:
        return rows
    return _quantize(rows.float(), scale.reshape(()).float(), p.cache_dtype).view(torch.uint8)


def _store(cache: torch.Tensor, blocks: torch.Tensor, offsets: torch.Tensor, rows: torch.Tensor, p: CacheWrite):
    target = cache.view(torch.uint8) if p.fp8 else cache  # index_put has no float8 kernels everywhere
    target[blocks, offsets] = rows


def write(key, value, key_cache, value_cache, slot_mapping, k_scale, v_scale, p: CacheWrite) -> None:
    slots = slot_mapping.long()
    keep = (slots >= 0).nonzero().squeeze(1)
    if keep.numel() == 0:
        return
    s = slots[keep]
    blocks, offsets = s // p.block_size, s % p.block_size
    _store(key_cache, blocks, offsets, _encode(key[keep], k_scale, p), p)
    _store(value_cache, blocks, offsets, _encode(value[keep], v_scale, p), p)


def supports_args(*args, **kwargs) -> Optional[str]:
    return None
