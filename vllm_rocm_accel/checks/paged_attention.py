"""The paged-attention family's contract: argument checks and the problem every backend gets.

Layouts (vLLM's paged KV cache, FlashAttention's ``block_table`` / ``seqused_k`` form):

* ``q`` (Tq, Hq, D), packed by ``cu_seqlens_q`` (B + 1,) int32: sequence ``b`` holds rows
  ``cu_seqlens_q[b]:cu_seqlens_q[b+1]`` (a prefill chunk or a 1-token decode);
* ``key_cache`` (num_blocks, block_size, Hk, D), ``value_cache`` (num_blocks, block_size, Hk, Dv),
  any strides with a unit last-dim stride (vLLM's ``kv_cache.unbind(0)`` views), dtype q's or an
  FP8 format (``float8_e4m3fn`` / ``float8_e4m3fnuz``, or ``uint8`` holding the device's format,
  :func:`vllm_rocm_accel.fp8.fp8_dtype`); then ``k_scale`` / ``v_scale`` float32 1-element
  tensors are required and ``key = fp8 * k_scale`` (and never given otherwise);
* ``seqused_k`` (B,) int32: sequence ``b``'s keys are its first ``seqused_k[b]`` slots, slot ``j``
  at ``block_table[b, j // block_size]``, offset ``j % block_size``; ``block_table``
  (B, max_blocks) int32.

-> ``out`` (Tq, Hq, Dv) in q's dtype, ``lse`` (Hq, Tq) float32. Masking is attention part 1's
(:mod:`vllm_rocm_accel.checks.attention`) per sequence, with ``sq`` its query rows and
``sk = seqused_k[b]``: bottom-right causal, window, softcap, ALiBi, GQA. Rows that see no key,
and rows of ``q`` past ``cu_seqlens_q[-1]``, give out 0 and lse +inf.

:func:`check_paged_args` checks shapes, dtypes and devices (no host reads: the fake impls run it
too); :func:`check_paged_values` checks the index tensors' values (host reads; the op gates it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from .. import fp8
from . import check_float, check_same_device
from .attention import ATTN_DTYPES, MAX_HEAD_DIM, _check_alibi, _int, check_cu_values, normalize_window

CACHE_FP8_DTYPES = (fp8.FN, fp8.FNUZ, torch.uint8)


@dataclass(frozen=True)
class PagedProblem:
    """One paged-attention call, normalized: what every backend's ``forward`` reads.

    ``cache_dtype`` is the FP8 torch dtype the cache holds (``uint8`` resolved to the device's
    format) or q's dtype; ``window_right`` is 0 whenever ``causal`` (-1: unbounded).
    """

    batch: int
    total_q: int
    max_seqlen_q: int
    max_seqlen_k: int
    num_heads_q: int
    num_heads_k: int
    head_dim: int
    head_dim_v: int
    block_size: int
    num_blocks: int
    max_blocks_per_seq: int
    dtype: torch.dtype
    cache_dtype: torch.dtype
    fp8: bool
    softmax_scale: float
    causal: bool
    window_left: int
    window_right: int
    softcap: float
    has_alibi: bool
    return_lse: bool = False  # the call wants an LSE (a backend whose kernel has none declines)

    @property
    def group(self) -> int:
        return self.num_heads_q // self.num_heads_k

    def out_shape(self) -> tuple[int, int, int]:
        return (self.total_q, self.num_heads_q, self.head_dim_v)

    def lse_shape(self) -> tuple[int, int]:
        return (self.num_heads_q, self.total_q)


def _tensor(name: str, t) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    return t


def _check_q(q) -> None:
    _tensor("q", q)
    if q.dim() != 3:
        raise ValueError(f"q must be 3-D (total_tokens, heads, head_dim), got shape {tuple(q.shape)}")
    if q.dtype not in ATTN_DTYPES:
        raise ValueError(f"q has dtype {q.dtype}; expected float16, bfloat16 or float32")


def _cache_dtype(key_cache: torch.Tensor, value_cache: torch.Tensor, q: torch.Tensor) -> torch.dtype:
    """The dtype the caches hold (uint8 resolved to the device's FP8 format)."""
    for name, cache in (("key_cache", key_cache), ("value_cache", value_cache)):
        if cache.dtype != q.dtype and cache.dtype not in CACHE_FP8_DTYPES:
            raise ValueError(
                f"{name} has dtype {cache.dtype}; expected q's dtype {q.dtype} or an FP8 cache "
                "(float8_e4m3fn, float8_e4m3fnuz, or uint8 holding the device's FP8 format)"
            )
    if value_cache.dtype != key_cache.dtype:
        raise ValueError(f"value_cache has dtype {value_cache.dtype} but key_cache has {key_cache.dtype}: "
                         "they must match")
    if key_cache.dtype == torch.uint8:
        return fp8.fp8_dtype(q.device)
    return key_cache.dtype


def _check_caches(q, key_cache, value_cache) -> None:
    for name, cache in (("key_cache", key_cache), ("value_cache", value_cache)):
        _tensor(name, cache)
        if cache.dim() != 4:
            raise ValueError(
                f"{name} must be 4-D (num_blocks, block_size, kv_heads, head_dim), got shape {tuple(cache.shape)}"
            )
        if cache.numel() > 0 and cache.stride(-1) != 1:
            raise ValueError(f"{name} must have a unit stride in its last dim, got strides {cache.stride()}")
        check_same_device(name, cache, "q", q)
    if tuple(value_cache.shape[:3]) != tuple(key_cache.shape[:3]):
        raise ValueError(
            f"value_cache has shape {tuple(value_cache.shape)} but key_cache has {tuple(key_cache.shape)}: "
            "(num_blocks, block_size, kv_heads) must match"
        )
    if key_cache.shape[1] < 1:
        raise ValueError(f"key_cache's block_size (dim 1) must be >= 1, got {key_cache.shape[1]}")
    hq, hk = q.shape[1], key_cache.shape[2]
    if hk == 0 or hq % hk != 0:
        raise ValueError(f"q's {hq} heads must be a multiple of key_cache's {hk} heads (GQA/MQA)")
    d, dv = q.shape[2], value_cache.shape[3]
    if key_cache.shape[3] != d:
        raise ValueError(f"key_cache has head_dim {key_cache.shape[3]} but q has {d}: they must match")
    for name, val in (("q", d), ("value_cache", dv)):
        if not 1 <= val <= MAX_HEAD_DIM:
            raise ValueError(f"{name}'s head_dim is {val}; supported: 1..{MAX_HEAD_DIM}")


def _check_index(name: str, t, dims: int, q: torch.Tensor, layout: str) -> None:
    _tensor(name, t)
    if t.dtype != torch.int32:
        raise ValueError(f"{name} has dtype {t.dtype}; expected int32")
    if t.dim() != dims:
        raise ValueError(f"{name} must be {dims}-D {layout}, got shape {tuple(t.shape)}")
    check_same_device(name, t, "q", q)


def _check_scales(k_scale, v_scale, is_fp8: bool, q: torch.Tensor) -> None:
    for name, s in (("k_scale", k_scale), ("v_scale", v_scale)):
        if not is_fp8:
            if s is not None:
                raise ValueError(f"{name} is given but the cache is not FP8: scales are only for FP8 caches")
            continue
        if s is None:
            raise ValueError(f"{name} is required with an FP8 cache (a float32 1-element tensor)")
        _tensor(name, s)
        if s.dtype != torch.float32 or s.numel() != 1:
            raise ValueError(f"{name} must be a float32 1-element tensor, got {s.dtype} of shape {tuple(s.shape)}")
        check_same_device(name, s, "q", q)


def check_paged_args(
    q, key_cache, value_cache, cu_seqlens_q, seqused_k, block_table, max_seqlen_q, max_seqlen_k,
    softmax_scale, causal, window_left, window_right, softcap, alibi_slopes, k_scale, v_scale, num_splits,
    return_lse: bool = False,
) -> PagedProblem:
    """Checks a paged call's shapes, dtypes and devices (not the index values: see
    :func:`check_paged_values`) and returns its :class:`PagedProblem`."""
    _check_q(q)
    _check_caches(q, key_cache, value_cache)
    cache_dtype = _cache_dtype(key_cache, value_cache, q)
    is_fp8 = cache_dtype != q.dtype
    _check_index("cu_seqlens_q", cu_seqlens_q, 1, q, "(batch + 1,)")
    if cu_seqlens_q.shape[0] < 2:
        raise ValueError(f"cu_seqlens_q must have batch + 1 >= 2 entries, got shape {tuple(cu_seqlens_q.shape)}")
    batch = cu_seqlens_q.shape[0] - 1
    _check_index("seqused_k", seqused_k, 1, q, "(batch,)")
    _check_index("block_table", block_table, 2, q, "(batch, max_blocks_per_seq)")
    if seqused_k.shape[0] != batch:
        raise ValueError(f"seqused_k has {seqused_k.shape[0]} entries but cu_seqlens_q describes {batch} sequences")
    if block_table.shape[0] != batch:
        raise ValueError(f"block_table has {block_table.shape[0]} rows but cu_seqlens_q describes {batch} sequences")
    for name, val in (("max_seqlen_q", max_seqlen_q), ("max_seqlen_k", max_seqlen_k)):
        if _int(name, val) < 0:
            raise ValueError(f"{name} must be >= 0, got {val}")
    if _int("num_splits", num_splits) < 0:
        raise ValueError(f"num_splits must be 0 (heuristic), 1 (off) or >= 2 (forced), got {num_splits}")
    check_float("softmax_scale", softmax_scale)
    if softmax_scale <= 0:
        raise ValueError(f"softmax_scale must be > 0, got {softmax_scale}")
    check_float("softcap", softcap)
    left, right = normalize_window((window_left, window_right), bool(causal))
    _check_alibi(alibi_slopes, batch, q.shape[1], q)
    _check_scales(k_scale, v_scale, is_fp8, q)
    return PagedProblem(
        batch=batch, total_q=q.shape[0], max_seqlen_q=max_seqlen_q, max_seqlen_k=max_seqlen_k,
        num_heads_q=q.shape[1], num_heads_k=key_cache.shape[2], head_dim=q.shape[2],
        head_dim_v=value_cache.shape[3], block_size=key_cache.shape[1], num_blocks=key_cache.shape[0],
        max_blocks_per_seq=block_table.shape[1], dtype=q.dtype, cache_dtype=cache_dtype, fp8=is_fp8,
        softmax_scale=float(softmax_scale), causal=bool(causal), window_left=left, window_right=right,
        softcap=float(softcap), has_alibi=alibi_slopes is not None, return_lse=bool(return_lse),
    )


def check_out(out, p: PagedProblem, q: torch.Tensor) -> None:
    """``out`` of the ``_out`` form: (Tq, Hq, Dv) in q's dtype on q's device."""
    _tensor("out", out)
    if tuple(out.shape) != p.out_shape():
        raise ValueError(f"out has shape {tuple(out.shape)}; expected {p.out_shape()}")
    if out.dtype != q.dtype:
        raise ValueError(f"out has dtype {out.dtype}; expected q's dtype {q.dtype}")
    check_same_device("out", out, "q", q)


def check_paged_values(cu_seqlens_q, seqused_k, block_table, p: PagedProblem) -> None:
    """The index tensors' values: cu_seqlens_q as in part 1; ``0 <= seqused_k[b] <=
    max_seqlen_k``; ``seqused_k[b] <= max_blocks_per_seq * block_size``; every block_table entry
    a sequence uses in ``[0, num_blocks)``. Three small device-to-host reads."""
    check_cu_values("cu_seqlens_q", cu_seqlens_q, p.max_seqlen_q, p.total_q, "q")
    capacity = p.max_blocks_per_seq * p.block_size
    for b, n in enumerate(seqused_k.tolist()):
        if n < 0:
            raise ValueError(f"seqused_k[{b}] = {n} must be >= 0")
        if n > p.max_seqlen_k:
            raise ValueError(f"seqused_k[{b}] = {n} is longer than max_seqlen_k = {p.max_seqlen_k}")
        if n > capacity:
            raise ValueError(
                f"seqused_k[{b}] = {n}: seq_lens longer than the table allows (block_table has "
                f"{p.max_blocks_per_seq} blocks of {p.block_size} slots = {capacity} per sequence)"
            )
    if p.max_blocks_per_seq == 0 or p.batch == 0:
        return
    used = (seqused_k.long() + p.block_size - 1) // p.block_size  # blocks each sequence reads
    cols = torch.arange(p.max_blocks_per_seq, device=block_table.device)
    bad = (cols[None, :] < used[:, None]) & ((block_table < 0) | (block_table >= p.num_blocks))
    hits = bad.nonzero()[:1].tolist()
    if hits:
        b, j = hits[0]
        raise ValueError(
            f"block_table[{b}, {j}] = {int(block_table[b, j])}: block_table pointing past the cache "
            f"(entries a sequence uses must be in [0, {p.num_blocks}))"
        )
