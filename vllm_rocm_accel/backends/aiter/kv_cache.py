"""The KV-cache write through AITER's HIP kernel (``aiter.reshape_and_cache_flash``).

Contract of amd-aiter 0.1.7.post2.dev18. Python stub in ``aiter/ops/cache.py:37``
(``@compile_ops("module_cache")``, star-imported into ``aiter``)::

    reshape_and_cache_flash(key, value, key_cache, value_cache, slot_mapping,
                            kv_cache_dtype: str, k_scale: Tensor, v_scale: Tensor) -> None

the host function and kernel in the wheel's ``aiter_meta/csrc/kernels/cache_kernels.cu``
(``reshape_and_cache_flash`` and ``reshape_and_cache_flash_kernel``), the dtype dispatch in
``aiter_meta/csrc/include/quant_utils.cuh`` (``DISPATCH_BY_KV_CACHE_DTYPE``):

* one block per row of **key** (``num_tokens = key.size(0)``), each reading
  ``slot_mapping[token]`` through ``data_ptr<int64_t>()``: vLLM's op takes the token count from
  ``slot_mapping`` (key may be padded past it), so the adapter passes ``key[:T]``/``value[:T]``,
  and int32 slot mappings are widened to int64 (a T-element copy; contiguous);
* key and value rows read at ``token * stride(0) + i``, ``i < num_heads * head_size`` of **key**:
  both need dense (heads, head_dim) rows and value's head size must be key's (no Dv != D);
* cache element ``block * key_cache.stride(0) + offset * num_heads * head_size + head *
  head_size + d`` in **both** caches, with ``TORCH_CHECK(key_cache.stride(0) ==
  value_cache.stride(0))``: dense (block_size, heads, head_dim) blocks, any block stride shared
  by the two caches (vLLM's ``unbind(0)`` views and block-interleaved layouts both qualify);
* strides, sizes and ``num_heads * head_size`` are C++ ``int``: each below 2**31;
* ``kv_cache_dtype`` ``"auto"`` (cache elements of key's type: float32/float16/bfloat16) or
  ``"fp8"``/``"fp8_e4m3"`` (cache elements ``ck_tile::fp8_t``: e4m3fnuz on gfx94x, OCP e4m3fn on
  gfx950), anything else a ``TORCH_CHECK``; ``k_scale``/``v_scale`` read through
  ``data_ptr<float>()`` even for ``"auto"``.

Numerics (FP8): ``type_convert<fp8_t>(float(x) * (1 / *k_scale))``, ck_tile's conversion
saturating to +-240 / +-448 (``fmed3``) and rounding to nearest even
(``ck_tile/core/numeric/float8.hpp``, ``CK_TILE_FLOAT_TO_FP8_STANDARD``). So the codes follow
:mod:`vllm_rocm_accel.fp8`'s clamp; multiplying by the reciprocal instead of dividing may move a
value at a rounding boundary by one FP8 ulp (as the quant adapter documents). Unquantized caches
get the values bit for bit.

Guards (:func:`supports_args`, :func:`arch_unsupported_reason`): gfx90a/gfx942/gfx950 (FP8 on
gfx942/gfx950 only, in the format AITER writes there); key float32/float16/bfloat16; the
layouts and int limits above. Tokens whose slot is -1 are skipped by the kernel itself.
"""

from __future__ import annotations

from typing import Optional

import torch

from ...checks.kv_cache import CacheWrite
from . import arch_reason, device_arch as _device_arch
from .attention import MAX_INDEX as MAX_INT  # C++ int
from .quant import kernel_fp8_dtype  # ck_tile::fp8_t: OCP on gfx950, fnuz on gfx94x, as AITER's quant kernels

ARCHS = ("gfx90a", "gfx942", "gfx950")
FP8_ARCHS = ("gfx942", "gfx950")  # ck_tile's hardware FP8 conversions (CK_TILE_FP8_CVT_DEVICE)
DTYPES = (torch.float32, torch.float16, torch.bfloat16)  # DISPATCH_BY_KV_CACHE_DTYPE


def _aiter():
    import aiter  # lazy: importing aiter starts JIT builds

    return aiter


def arch_unsupported_reason(device: torch.device) -> Optional[str]:
    return arch_reason(_device_arch(device), ARCHS, "aiter's cache kernels are built for {archs}")


def _dense_rows(name: str, t: torch.Tensor, heads: int, dim: int) -> Optional[str]:
    if (heads > 1 and t.stride(1) != dim) or (dim > 1 and t.stride(2) != 1):
        return (f"{name} (shape {tuple(t.shape)}, stride {t.stride()}) needs dense (heads, head_dim) rows: aiter "
                "reads row i at token * stride(0) + i")
    return None


def _dense_blocks(name: str, t: torch.Tensor, p: CacheWrite) -> Optional[str]:
    want = (p.num_heads * p.head_dim, p.head_dim, 1)
    got = t.stride()[1:]
    if any(n > 1 and g != w for n, g, w in zip(t.shape[1:], got, want)):
        return (f"{name} (shape {tuple(t.shape)}, stride {t.stride()}) needs dense (block_size, heads, head_dim) "
                f"blocks (strides {want}): aiter writes offset * num_heads * head_size + head * head_size + d")
    return None


def supports_args(key, value, key_cache, value_cache, slot_mapping, k_scale, v_scale, p: CacheWrite) -> Optional[str]:
    if key.dtype not in DTYPES:
        return f"aiter's reshape_and_cache_flash takes float32/float16/bfloat16 key, got {key.dtype}"
    if p.head_dim_v != p.head_dim:
        return f"aiter's reshape_and_cache_flash uses key's head size for value: Dv {p.head_dim_v} != D {p.head_dim}"
    reason = (_dense_rows("key", key, p.num_heads, p.head_dim) or _dense_rows("value", value, p.num_heads, p.head_dim)
              or _dense_blocks("key_cache", key_cache, p) or _dense_blocks("value_cache", value_cache, p))
    if reason:
        return reason
    if key_cache.stride(0) != value_cache.stride(0) and p.num_blocks > 1:
        return (f"key_cache and value_cache block strides differ ({key_cache.stride(0)} vs {value_cache.stride(0)}); "
                "aiter checks they are equal")
    ints = (key.stride(0), value.stride(0), key_cache.stride(0), p.num_heads * p.head_dim, key.shape[0])
    if max(ints) > MAX_INT:
        return f"a stride or size of {max(ints)} does not fit aiter's int arguments"
    if p.fp8:
        arch = _device_arch(key.device)
        reason = arch_reason(arch, FP8_ARCHS, "aiter's FP8 cache writes need {archs}")
        if reason:
            return reason
        if arch is not None and p.cache_dtype != kernel_fp8_dtype(arch):
            return f"aiter writes {kernel_fp8_dtype(arch)} FP8 caches on {arch}, not {p.cache_dtype}"
    return None


def write(key, value, key_cache, value_cache, slot_mapping, k_scale, v_scale, p: CacheWrite) -> None:
    t = p.num_tokens
    if t == 0:
        return
    slots = slot_mapping.to(torch.int64).contiguous()  # a no-op for vLLM's own int64 mapping
    _aiter().reshape_and_cache_flash(key[:t], value[:t], key_cache, value_cache, slots, p.kv_cache_dtype,
                                     k_scale, v_scale)
