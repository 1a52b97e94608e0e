"""Triton rotary-embedding launcher: grid and launch parameters for ``kernels/triton/rope.py``.

The launcher writes into the outputs it is given (the inputs themselves for the
in-place form); the op layer allocates, validates and asks :func:`supports_args` first.

Query and key are addressed as ``base + token * stride_t + head * stride_h + d``:
(T, H * D) and (T, H, D) tensors whose last dim has stride 1 are used as they are,
row-strided views (slices of a fused qkv) included. Positions may have any stride.

Launch parameters are data (``configs/rope.json``), keyed by device family; the
choice per (family, tokens, heads, rotary dim) is cached.
"""

from __future__ import annotations

import functools
from typing import Optional

import torch
import triton

from ...kernels.triton import rope as _k
from . import config_data
from .config_data import family as _family
from .config_data import pow2_ceil
from .fast_launch import FastLauncher

_config = config_data.loader("rope")  # a module attribute: tests and tuners replace it
_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_ROPE = FastLauncher(_k.rope_kernel)


# --- launch parameters ------------------------------------------------------
def _prev_pow2(n: int) -> int:
    return 1 << (max(1, n).bit_length() - 1)


@functools.lru_cache(maxsize=4096)
def launch_params(family: str, tokens: int, q_heads: int, k_heads: int, rot_half: int) -> tuple:
    """(BLOCK_T, groups, q_heads_per_program, k_heads_per_program, BLOCK_HQ, BLOCK_HK, BLOCK_R, num_warps)."""
    fam = config_data.section(_config(), family)
    tile, max_block_t, min_programs = int(fam["tile_elems"]), int(fam["max_block_t"]), int(fam["min_programs"])
    block_r = triton.next_power_of_2(rot_half)
    per_head = 2 * block_r
    max_heads = _prev_pow2(max(1, tile // per_head))
    groups = triton.cdiv(q_heads, min(triton.next_power_of_2(q_heads), max_heads))
    q_per = triton.cdiv(q_heads, groups)
    block_t = min(max_block_t, _prev_pow2(max(1, tile // (triton.next_power_of_2(q_per) * per_head))))
    while triton.cdiv(tokens, block_t) * groups < min_programs:
        if block_t > 1:
            block_t //= 2
        elif q_per > 1:
            q_per = triton.cdiv(q_per, 2)
            groups = triton.cdiv(q_heads, q_per)
        else:
            break
    k_per = triton.cdiv(k_heads, groups) if k_heads else 1
    block_hq, block_hk = triton.next_power_of_2(q_per), triton.next_power_of_2(k_per)
    elems = block_t * block_hq * per_head
    warps = next(w for limit, w in fam["num_warps"] if elems <= limit)
    return block_t, groups, q_per, k_per, block_hq, block_hk, block_r, int(warps)


def clear_caches() -> None:
    """Forget the loaded config and every cached launch choice (for tests and retuning)."""
    _config.cache_clear()
    _family.cache_clear()
    launch_params.cache_clear()
    _ROPE.clear()


# --- geometry -----------------------------------------------------------------
def head_strides(t: torch.Tensor, head_size: int) -> Optional[tuple[int, int]]:
    """(token stride, head stride) of a (T, H * D) or (T, H, D) tensor with unit element stride, else None."""
    if t.dim() == 3:
        if t.stride(2) != 1 and head_size != 1:
            return None
        return t.stride(0), t.stride(1)
    if t.dim() == 2:
        if t.stride(1) != 1 and t.shape[1] != 1:
            return None
        return t.stride(0), head_size
    return None


def supports_args(positions, query, key, head_size, cos_sin_cache, is_neox, rotary_dim) -> Optional[str]:
    """None when the Triton launcher can serve this call as given, else a short reason."""
    for name, t in (("query", query), ("key", key)):
        if t is None:
            continue
        if t.dtype not in _DTYPES:
            return f"{name} dtype {t.dtype} is not float32/float16/bfloat16"
        if head_strides(t, head_size) is None:
            return f"{name} (shape {tuple(t.shape)}, stride {t.stride()}) has a last-dim stride other than 1"
    if cos_sin_cache.stride(1) != 1 and cos_sin_cache.shape[1] > 1:
        return f"cos_sin_cache has column stride {cos_sin_cache.stride(1)}; the kernel reads unit-stride rows"
    return None


# --- launch -----------------------------------------------------------------------
def rotary_embedding(
    positions: torch.Tensor,
    query: torch.Tensor,
    key: Optional[torch.Tensor],
    query_out: torch.Tensor,
    key_out: Optional[torch.Tensor],
    head_size: int,
    cos_sin_cache: torch.Tensor,
    is_neox: bool,
) -> None:
    """Rotate ``query``/``key`` into ``query_out``/``key_out`` (which are the inputs for in-place use).

    ``*_out`` are either the inputs themselves or fresh tensors of the inputs' shapes.
    """
    tokens = positions.shape[0]
    if tokens == 0:
        return
    rotary_dim = cos_sin_cache.shape[1]
    rot_half = rotary_dim // 2
    tail = head_size - rotary_dim
    inplace = query_out is query
    has_key = key is not None
    q_heads = query.numel() // (tokens * head_size)
    k_heads = key.numel() // (tokens * head_size) if has_key else 0
    q_st = head_strides(query, head_size)
    strides = [q_st, q_st if inplace else head_strides(query_out, head_size)]
    if has_key:
        k_st = head_strides(key, head_size)
        strides += [k_st, k_st if key_out is key else head_strides(key_out, head_size)]
    if None in strides:
        raise ValueError(
            "triton rotary_embedding: query/key need a last-dim stride of 1 (check supports_args first)"
        )
    (qs_t, qs_h), (qos_t, qos_h) = strides[0], strides[1]
    if has_key:
        (ks_t, ks_h), (kos_t, kos_h) = strides[2], strides[3]
    else:
        key, key_out = query, query_out  # never read (HAS_KEY=False)
        ks_t = ks_h = kos_t = kos_h = 0

    family = _family(query.device.type)
    block_t, groups, q_per, k_per, block_hq, block_hk, block_r, warps = launch_params(
        family, tokens, q_heads, k_heads, rot_half
    )
    # an upper bound of every element offset the kernel forms (padded tokens and heads included)
    cache_stride = cos_sin_cache.stride(0)
    reach = max(
        (tokens + block_t) * max(abs(qs_t), abs(qos_t), abs(ks_t), abs(kos_t), abs(positions.stride(0)))
        + (q_heads + k_heads + block_hq) * max(abs(qs_h), abs(qos_h), abs(ks_h), abs(kos_h)) + head_size,
        cos_sin_cache.shape[0] * cache_stride + rotary_dim,
    )
    _ROPE.launch(
        (-(-tokens // block_t), groups),  # plain ints: triton.cdiv is a slow @jit call on the host
        (positions, positions.stride(0),
         query, qs_t, qs_h, query_out, qos_t, qos_h,
         key, ks_t, ks_h, key_out, kos_t, kos_h,
         cos_sin_cache, cache_stride,
         tokens, cos_sin_cache.shape[0], q_heads, k_heads, q_per, k_per),
        # ROT_HALF, BLOCK_R, TAIL, BLOCK_TAIL, BLOCK_T, BLOCK_HQ, BLOCK_HK, IS_NEOX, HAS_KEY, INPLACE, IDX64
        (rot_half, block_r, tail, pow2_ceil(tail), block_t, block_hq, block_hk,
         is_neox, has_key, inplace, reach >= 2**31),
        warps,
    )
