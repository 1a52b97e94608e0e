"""KV-cache write kernel body (``reshape_and_cache_flash``).

Only ``@triton.jit`` functions live here; the grid and launch parameters are chosen by
``vllm_rocm_accel.backends.triton.kv_cache``.

One program per (token, group of BLOCK_H heads): it reads the token's slot, returns at once for
a negative one (padding), and otherwise copies a [BLOCK_H, BLOCK_D] tile of key and a
[BLOCK_H, BLOCK_DV] tile of value into block ``slot // block_size``, offset ``slot % block_size``
of the caches. Every tensor is addressed through all of its strides (int64 offsets), so strided
views of a joint KV buffer need no copy. FP8: the quant family's encoder
(:func:`vllm_rocm_accel.kernels.triton.quant._quantize`: IEEE ``x / scale`` in float32, clamped to
+-FP8_MAX, rounded to nearest even; SW_FP8 produces the bits in integer arithmetic and stores
them through a uint8 pointer), bit for bit the torch reference's rule.
"""

import triton
import triton.language as tl

from .quant import _quantize


@triton.jit
def _write_tile(src_ptr, src_h, src_d, dst_ptr, dst_h, dst_d, heads, h_mask, n_dim, base_src, base_dst,
                scale_ptr, BLOCK_D: tl.constexpr, FP8: tl.constexpr, FP8_MAX: tl.constexpr, SW_FP8: tl.constexpr,
                FNUZ: tl.constexpr):
    d = tl.arange(0, BLOCK_D).to(tl.int64)
    mask = h_mask[:, None] & (d < n_dim)[None, :]
    x = tl.load(src_ptr + base_src + heads[:, None] * src_h + d[None, :] * src_d, mask=mask, other=0.0)
    if FP8:
        v = _quantize(x.to(tl.float32), tl.load(scale_ptr).to(tl.float32), dst_ptr, FP8_MAX, SW_FP8, FNUZ)
    else:
        v = x.to(dst_ptr.dtype.element_ty)
    tl.store(dst_ptr + base_dst + heads[:, None] * dst_h + d[None, :] * dst_d, v, mask=mask)


@triton.jit
def reshape_and_cache_flash_kernel(
    key_ptr, key_t, key_h, key_d,
    value_ptr, value_t, value_h, value_d,
    kc_ptr, kc_b, kc_s, kc_h, kc_d,
    vc_ptr, vc_b, vc_s, vc_h, vc_d,
    slot_ptr, slot_stride, k_scale_ptr, v_scale_ptr,
    num_heads, head_dim, head_dim_v, block_size,
    BLOCK_H: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_DV: tl.constexpr,
    FP8: tl.constexpr,
    FP8_MAX: tl.constexpr,
    SW_FP8: tl.constexpr,
    FNUZ: tl.constexpr,
):
    """Grid (T, cdiv(num_heads, BLOCK_H)); strides in elements: ``*_t`` token, ``*_b`` block,
    ``*_s`` slot within a block, ``*_h`` head, ``*_d`` head dim."""
    token = tl.program_id(0).to(tl.int64)
    slot = tl.load(slot_ptr + token * slot_stride).to(tl.int64)
    if slot < 0:
        return  # padding: nothing is written
    block = slot // block_size
    offset = slot - block * block_size
    heads = tl.program_id(1).to(tl.int64) * BLOCK_H + tl.arange(0, BLOCK_H).to(tl.int64)
    h_mask = heads < num_heads
    _write_tile(key_ptr, key_h, key_d, kc_ptr, kc_h, kc_d, heads, h_mask, head_dim, token * key_t,
                block * kc_b + offset * kc_s, k_scale_ptr, BLOCK_D, FP8, FP8_MAX, SW_FP8, FNUZ)
    _write_tile(value_ptr, value_h, value_d, vc_ptr, vc_h, vc_d, heads, h_mask, head_dim_v,
                token * value_t, block * vc_b + offset * vc_s, v_scale_ptr, BLOCK_DV, FP8, FP8_MAX, SW_FP8, FNUZ)
