"""Rotary-embedding kernel bodies (vLLM's cos||sin cache contract).

Only ``@triton.jit`` functions live here; grids, block sizes and launch parameters
are chosen by ``vllm_rocm_accel.backends.triton.rope``.

One program rotates BLOCK_T tokens x (a slice of the query heads and a slice of the
key heads). Each token's cos/sin row is loaded once (fp32 math whatever the cache
dtype) and reused for every head of the program, query and key alike::

    neox  (rotate halves):  x1 = x[:R],     x2 = x[R:2R]
    gpt-j (pairs):          x1 = x[0::2],   x2 = x[1::2]      (over the first 2R elements)
    o1 = x1 * cos - x2 * sin,   o2 = x2 * cos + x1 * sin       (fp32, one rounding on store)

with R = rotary_dim // 2. Elements ``[2R, head_size)`` (partial rotary) pass through:
untouched in place, copied when the output is a fresh tensor.

A position outside ``[0, max_position)`` is never used as an index: its cos/sin loads
are masked off (they read NaN) and its query/key rows, tail included, are written as NaN.

Addressing: token ``t``, head ``h``, element ``d`` of a tensor lives at
``base + t * stride_t + h * stride_h + d`` (unit element stride), so row-strided views
(e.g. query/key slices of a fused qkv) are used in place.
"""

import triton
import triton.language as tl


@triton.jit
def _rope_heads(
    x_ptr,
    x_stride_t,
    x_stride_h,
    o_ptr,
    o_stride_t,
    o_stride_h,
    toks,
    tok_mask,
    valid,
    cos,
    sin,
    head_start,
    head_end,
    BLOCK_H: tl.constexpr,
    ROT_HALF: tl.constexpr,
    BLOCK_R: tl.constexpr,
    TAIL: tl.constexpr,
    BLOCK_TAIL: tl.constexpr,
    IS_NEOX: tl.constexpr,
    INPLACE: tl.constexpr,
):
    """Rotate heads [head_start, head_end) of the tokens ``toks`` (a [BLOCK_T, BLOCK_H, BLOCK_R] tile)."""
    heads = head_start + tl.arange(0, BLOCK_H)
    r = tl.arange(0, BLOCK_R)
    head_mask = heads < head_end
    row_mask = tok_mask[:, None, None] & head_mask[None, :, None]
    mask = row_mask & (r < ROT_HALF)[None, None, :]
    x_rows = x_ptr + toks[:, None, None] * x_stride_t + heads[None, :, None] * x_stride_h
    o_rows = o_ptr + toks[:, None, None] * o_stride_t + heads[None, :, None] * o_stride_h
    if IS_NEOX:
        i1 = r
        i2 = r + ROT_HALF
    else:
        i1 = 2 * r
        i2 = 2 * r + 1
    i1 = i1[None, None, :]
    i2 = i2[None, None, :]
    x1 = tl.load(x_rows + i1, mask=mask, other=0.0).to(tl.float32)
    x2 = tl.load(x_rows + i2, mask=mask, other=0.0).to(tl.float32)
    c = cos[:, None, :]
    s = sin[:, None, :]
    o1 = x1 * c - x2 * s
    o2 = x2 * c + x1 * s
    tl.store(o_rows + i1, o1.to(o_ptr.dtype.element_ty), mask=mask)
    tl.store(o_rows + i2, o2.to(o_ptr.dtype.element_ty), mask=mask)
    if TAIL > 0:
        cols = 2 * ROT_HALF + tl.arange(0, BLOCK_TAIL)
        tail_mask = row_mask & (cols < 2 * ROT_HALF + TAIL)[None, None, :]
        bad = ~valid[:, None, None]
        nan = float("nan")
        if INPLACE:  # the tail is already in place; only rows of bad positions change (to NaN)
            tl.store(o_rows + cols[None, None, :], tl.full([1, 1, 1], nan, tl.float32).to(o_ptr.dtype.element_ty),
                     mask=tail_mask & bad)
        else:
            v = tl.load(x_rows + cols[None, None, :], mask=tail_mask, other=0.0)
            v = tl.where(bad, nan, v.to(tl.float32))
            tl.store(o_rows + cols[None, None, :], v.to(o_ptr.dtype.element_ty), mask=tail_mask)


@triton.jit
def rope_kernel(
    pos_ptr,
    pos_stride,
    q_ptr,
    q_stride_t,
    q_stride_h,
    qo_ptr,
    qo_stride_t,
    qo_stride_h,
    k_ptr,
    k_stride_t,
    k_stride_h,
    ko_ptr,
    ko_stride_t,
    ko_stride_h,
    cache_ptr,
    cache_stride,
    n_tokens,
    max_position,
    n_q_heads,
    n_k_heads,
    q_heads_per_program,
    k_heads_per_program,
    ROT_HALF: tl.constexpr,
    BLOCK_R: tl.constexpr,
    TAIL: tl.constexpr,
    BLOCK_TAIL: tl.constexpr,
    BLOCK_T: tl.constexpr,
    BLOCK_HQ: tl.constexpr,
    BLOCK_HK: tl.constexpr,
    IS_NEOX: tl.constexpr,
    HAS_KEY: tl.constexpr,
    INPLACE: tl.constexpr,
    IDX64: tl.constexpr,
):
    """Grid (cdiv(n_tokens, BLOCK_T), head groups). Group g takes query heads
    [g * q_heads_per_program, ...) and key heads [g * k_heads_per_program, ...).

    IDX64: token offsets in int64; the launcher sets it only when an offset can reach 2**31.
    """
    pid_t = tl.program_id(0)
    group = tl.program_id(1)
    toks = pid_t * BLOCK_T + tl.arange(0, BLOCK_T)
    tok_mask = toks < n_tokens
    if IDX64:
        toks = toks.to(tl.int64)
    pos = tl.load(pos_ptr + toks * pos_stride, mask=tok_mask, other=0)
    valid = tok_mask & (pos >= 0) & (pos < max_position)
    # Index only with in-range positions (bad ones become row 0, and their loads are masked off).
    row = tl.where(valid, pos, 0)
    if IDX64:
        row = row.to(tl.int64)
    else:
        row = row.to(tl.int32)
    r = tl.arange(0, BLOCK_R)
    cmask = valid[:, None] & (r < ROT_HALF)[None, :]
    crow = cache_ptr + row[:, None] * cache_stride + r[None, :]
    cos = tl.load(crow, mask=cmask, other=float("nan")).to(tl.float32)
    sin = tl.load(crow + ROT_HALF, mask=cmask, other=float("nan")).to(tl.float32)

    q_start = group * q_heads_per_program
    _rope_heads(
        q_ptr, q_stride_t, q_stride_h, qo_ptr, qo_stride_t, qo_stride_h, toks, tok_mask, valid, cos, sin,
        q_start, tl.minimum(q_start + q_heads_per_program, n_q_heads),
        BLOCK_HQ, ROT_HALF, BLOCK_R, TAIL, BLOCK_TAIL, IS_NEOX, INPLACE,
    )
    if HAS_KEY:
        k_start = group * k_heads_per_program
        _rope_heads(
            k_ptr, k_stride_t, k_stride_h, ko_ptr, ko_stride_t, ko_stride_h, toks, tok_mask, valid, cos, sin,
            k_start, tl.minimum(k_start + k_heads_per_program, n_k_heads),
            BLOCK_HK, ROT_HALF, BLOCK_R, TAIL, BLOCK_TAIL, IS_NEOX, INPLACE,
        )
