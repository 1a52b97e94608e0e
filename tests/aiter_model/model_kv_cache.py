"""A torch model of amd-aiter 0.1.7's ``reshape_and_cache_flash``, installed as ``aiter`` in tests only.

Mirrors the wheel's signature (``aiter/ops/cache.py:37``; a test compares them) and the HIP host
function and kernel behind it (``aiter_meta/csrc/kernels/cache_kernels.cu``), raising
:class:`~aiter_model.model.AiterContractError` where the real code fails a ``TORCH_CHECK`` or would
silently read or write the wrong memory:

* one block per row of ``key`` (``num_tokens = key.size(0)``) reading ``slot_mapping[token]``:
  ``slot_mapping`` int64 (``data_ptr<int64_t>``), contiguous, with at least ``key.size(0)``
  entries (vLLM pads key past the slot mapping; passing that key reads past the mapping);
* key and value rows at ``token * stride(0) + i`` for ``i < num_heads * head_size`` of key:
  dense (heads, head_dim) rows; value of key's shape (its head size is taken from key) and dtype;
* cache element ``block * key_cache.stride(0) + offset * H * D + head * D + d`` in both caches:
  dense (block_size, heads, head_dim) blocks of key's (H, D), ``key_cache.stride(0) ==
  value_cache.stride(0)`` (``TORCH_CHECK``); every slot used in ``[0, num_blocks * block_size)``
  (the kernel writes wherever a slot points); negative slots skipped;
* ``kv_cache_dtype`` ``"auto"`` (caches of key's dtype: float32/float16/bfloat16) or ``"fp8"`` /
  ``"fp8_e4m3"`` (one-byte cache elements, ``ck_tile::fp8_t``: :data:`CK_FP8`), else
  ``TORCH_CHECK``; ``k_scale``/``v_scale`` float32 (``data_ptr<float>``, read even for "auto");
* C++ ``int`` strides and sizes below 2**31; the caches share no memory with the inputs (with each
  other they may: block-interleaved layouts interleave their byte ranges, so that is not checked).

Numerics: "auto" copies the elements; FP8 writes ``cvt_rne(clamp(float(x) * (1 / scale), +-max))``
(ck_tile's saturating conversion: 240 for e4m3fnuz, 448 for e4m3fn), the reciprocal in float32.
Every call is recorded in ``model.CALLS`` before it is checked.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .model import AiterContractError, _check_no_overlap, _record, _require  # noqa: F401

__all__ = ["reshape_and_cache_flash", "MODELLED_KV_CACHE"]
MODELLED_KV_CACHE = ("reshape_and_cache_flash",)

KV_DTYPES = (torch.float32, torch.float16, torch.bfloat16)  # DISPATCH_BY_KV_CACHE_DTYPE
FP8_MAX = {torch.float8_e4m3fnuz: 240.0, torch.float8_e4m3fn: 448.0}
MAX_INT = 2**31 - 1

# The FP8 format ck_tile::fp8_t is in the build (fnuz on gfx94x, OCP on gfx950). None: a float8
# cache tensor's own dtype is taken, and a uint8 cache is refused (the model cannot know the arch).
CK_FP8: Optional[torch.dtype] = None


def reshape_and_cache_flash(
    key: Tensor,
    value: Tensor,
    key_cache: Tensor,
    value_cache: Tensor,
    slot_mapping: Tensor,
    kv_cache_dtype: str,
    k_scale: Tensor,
    v_scale: Tensor,
) -> None:
    fn = "reshape_and_cache_flash"
    _record(fn, key=key, value=value, key_cache=key_cache, value_cache=value_cache, slot_mapping=slot_mapping,
            kv_cache_dtype=kv_cache_dtype, k_scale=k_scale, v_scale=v_scale)
    for name, t in (("key", key), ("value", value), ("key_cache", key_cache), ("value_cache", value_cache),
                    ("slot_mapping", slot_mapping), ("k_scale", k_scale), ("v_scale", v_scale)):
        _require(isinstance(t, Tensor), fn, f"{name} must be a Tensor, got {type(t).__name__}")
        _require(t.device == key.device, fn, f"{name} is on {t.device}, key on {key.device}")
    _require(key.dim() == 3 and value.dim() == 3, fn, "key and value must be (num_tokens, num_heads, head_size)")
    _require(key.dtype in KV_DTYPES, fn, f"Unsupported input type of kv cache: {key.dtype}")
    _require(value.dtype == key.dtype, fn, f"value has dtype {value.dtype}; read as key's {key.dtype}")
    n, heads, d = key.shape
    _require(tuple(value.shape) == (n, heads, d), fn,
             f"value has shape {tuple(value.shape)}; the kernel reads it with key's {tuple(key.shape)}")
    for name, t in (("key", key), ("value", value)):
        _require((heads <= 1 or t.stride(1) == d) and (d <= 1 or t.stride(2) == 1), fn,
                 f"{name} (stride {t.stride()}) rows are read densely at token * stride(0) + i")
    _require(slot_mapping.dtype == torch.int64, fn, f"slot_mapping has dtype {slot_mapping.dtype}; data_ptr<int64_t>")
    _require(slot_mapping.dim() == 1 and (slot_mapping.numel() <= 1 or slot_mapping.stride(0) == 1), fn,
             "slot_mapping is read as a dense int64 array")
    _require(slot_mapping.numel() >= n, fn,
             f"slot_mapping has {slot_mapping.numel()} entries; the kernel reads one per key row ({n})")
    for name, t in (("key_cache", key_cache), ("value_cache", value_cache)):
        _require(t.dim() == 4 and tuple(t.shape[2:]) == (heads, d), fn,
                 f"{name} has shape {tuple(t.shape)}; its blocks are addressed with key's (heads, head_size)")
        want = (heads * d, d, 1)
        _require(all(sz <= 1 or st == w for sz, st, w in zip(t.shape[1:], t.stride()[1:], want)), fn,
                 f"{name} (stride {t.stride()}) blocks are written densely (strides {want})")
    _require(key_cache.stride(0) == value_cache.stride(0), fn, "TORCH_CHECK(key_cache.stride(0) == value_cache.stride(0))")
    _require(tuple(value_cache.shape) == tuple(key_cache.shape), fn, "value_cache has another shape than key_cache")
    _require(max(key.stride(0), value.stride(0), key_cache.stride(0), heads * d, n) <= MAX_INT, fn,
             "a stride or size does not fit the kernel's int arguments")
    for name, t in (("k_scale", k_scale), ("v_scale", v_scale)):
        _require(t.dtype == torch.float32 and t.numel() >= 1, fn, f"{name} must be float32 (data_ptr<float>)")
    if kv_cache_dtype == "auto":
        fmt = None
        _require(key_cache.dtype == key.dtype and value_cache.dtype == key.dtype, fn,
                 f"'auto' caches are written as key's {key.dtype}, got {key_cache.dtype}")
    elif kv_cache_dtype in ("fp8", "fp8_e4m3"):
        _require(key_cache.element_size() == 1 and value_cache.element_size() == 1, fn, "FP8 caches hold one byte")
        fmt = CK_FP8 if CK_FP8 is not None else key_cache.dtype
        _require(fmt in FP8_MAX, fn, "a uint8 cache needs the build's ck_tile fp8_t (set CK_FP8)")
        if CK_FP8 is not None and key_cache.dtype != torch.uint8:
            _require(key_cache.dtype == CK_FP8, fn, f"this build writes {CK_FP8}, cache is {key_cache.dtype}")
    else:
        raise AiterContractError(f"aiter.{fn}: Unsupported data type of kv cache: {kv_cache_dtype}")
    inputs = {"key": key, "value": value, "slot_mapping": slot_mapping}
    for name, cache in (("key_cache", key_cache), ("value_cache", value_cache)):  # the caches may interleave
        _check_no_overlap(fn, {name: cache}, inputs)
    slots = slot_mapping[:n]
    num_slots = key_cache.shape[0] * key_cache.shape[1]
    _require(bool((slots < num_slots).all()), fn, f"a slot >= {num_slots} writes past the caches")
    keep = (slots >= 0).nonzero().squeeze(1)
    s = slots[keep]
    blocks, offsets = s // key_cache.shape[1], s % key_cache.shape[1]
    for cache, rows, scale in ((key_cache, key, k_scale), (value_cache, value, v_scale)):
        x = rows[keep]
        if fmt is None:
            cache[blocks, offsets] = x
            continue
        m = FP8_MAX[fmt]
        inv = torch.reciprocal(scale.reshape(-1)[:1].float())
        code = (x.float() * inv).clamp(-m, m).to(fmt)
        cache.view(torch.uint8)[blocks, offsets] = code.view(torch.uint8)
