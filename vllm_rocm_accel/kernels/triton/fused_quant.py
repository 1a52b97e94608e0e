"""Fused FP8 quant kernel bodies: RMSNorm (with or without a residual add) then per-token quant,
and SiLU-and-mul then per-token-group (1 x GROUP) quant.

Only ``@triton.jit`` functions live here (the FP8 and activation pieces are the quant and
activation kernels' own, imported from beside this module); grids, block sizes and launch
parameters are chosen by ``vllm_rocm_accel.backends.triton.fused_quant``.

Semantics: exactly the unfused composition (reference ``backends/torch/fused_quant.py``), so
each value is rounded where the unfused ops round it, except that RCP_DIV 3 (the RMSNorm + quant
kernels on cuda, configs/fused_quant.json) takes ``y / scale`` as a product with the row's
reciprocal: the same scales, codes within one FP8 step (kernels/triton/quant.py)::

    s = x.float() (+ residual.float())          # residual <- s.to(residual dtype), in place
    y = s * rsqrt(mean(s * s) + eps)            # the norm kernel's math, float32
    y = (y.to(w.dtype) * w).to(w.dtype)         # only with a weight (product in float32)
    y = y.to(x.dtype)                           # the norm op's output ...
    scale = max(max|y|, AMAX_FLOOR) / FP8_MAX   # ... quantized by the quant kernels' rule
    q = clamp(y / scale, -FP8_MAX, FP8_MAX)     # (see kernels/triton/quant.py: div_rn,
                                                #  RCP_SCALE, SW_FP8, FNUZ)

    a = silu(gate.float()).to(x.dtype)           # the activation kernel's math
    y = (a.float() * up.float()).to(x.dtype)     # then per group of GROUP columns as above

Each x row is read once and each q row written once (the looped norm kernel re-reads rows
from L2, see there). Rows are addressed as ``base + row * row_stride + col`` (last-dim stride
1), so row-strided views need no copy. IDX64: row offsets in int64; the launcher sets it only
when an offset can reach 2**31.

In-place residual: a program loads every element of its rows (x and residual) before it
stores the sum over residual, and touches no other rows, so ``residual`` is updated safely.
"""

import triton
import triton.language as tl

from .activation import _act
from .quant import (_chunk, _group_tiles, _load_hinted, _load_masked, _quantize, _quantize_groups, _quantize_row,
                    _row_block, _row_scales, _scale, _store_slots)


@triton.jit
def _normed_lp(s, rstd, w, x_ptr, HAS_WEIGHT: tl.constexpr):
    """The norm op's output in x's dtype: s * rstd (* weight, in the weight's dtype), rounded to x's dtype."""
    y = s * rstd
    if HAS_WEIGHT:
        y = (y.to(w.dtype).to(tl.float32) * w.to(tl.float32)).to(w.dtype)
    return y.to(x_ptr.dtype.element_ty)


@triton.jit
def _normed(s, rstd, w, x_ptr, HAS_WEIGHT: tl.constexpr):
    """:func:`_normed_lp` as float32 (exactly: a widening)."""
    return _normed_lp(s, rstd, w, x_ptr, HAS_WEIGHT).to(tl.float32)


# --- RMSNorm (+ residual) then per-token quant ---------------------------------------------------
@triton.jit
def rms_norm_quant_rows_kernel(
    x_ptr,
    x_row_stride,
    res_ptr,
    res_row_stride,
    q_ptr,
    q_row_stride,
    s_ptr,
    s_stride,
    w_ptr,
    n_rows,
    n_cols,
    eps,
    HAS_RESIDUAL: tl.constexpr,
    HAS_WEIGHT: tl.constexpr,
    ROWS: tl.constexpr,
    BLOCK_N: tl.constexpr,
    FP8_MAX: tl.constexpr,
    AMAX_FLOOR: tl.constexpr,
    RCP_SCALE: tl.constexpr,
    SW_FP8: tl.constexpr,
    FNUZ: tl.constexpr,
    IDX64: tl.constexpr,
    RCP_DIV: tl.constexpr,
    SAT_CVT: tl.constexpr,
    W_EARLY: tl.constexpr,
    LP_AMAX: tl.constexpr,
    EVEN: tl.constexpr,
):
    """Single pass: a [ROWS, BLOCK_N] tile holds ROWS whole rows (BLOCK_N >= n_cols).

    Loads x (and residual) once, stores the sum over residual, normalizes, takes each row's
    amax and scale (``s_ptr[row * s_stride]``) and stores q: one read of the inputs, one write
    of q (and residual), all from registers. RCP_DIV: how q divides by the scale (the same bits
    every way), SAT_CVT: no clamp before a saturating conversion (see the quant kernels'
    docstring). Two options that change no bit either:

    * W_EARLY: the weight is loaded with x, before the sum of squares, as a [1, BLOCK_N] block in
      the tile's own layout (otherwise after rstd, as a [BLOCK_N] vector whose layout Triton
      converts through shared memory: an L2 round trip and barriers after the first reduction;
      sm_90 SASS of Triton 3.9 at H = 4096: 7 barriers, 3 with W_EARLY);
    * LP_AMAX: the normalized rows stay in x's dtype (packed, half the registers of float32) until
      the division, and the amax is taken on them (max and abs are exact in any format).

    EVEN (the launcher's, not a config key): BLOCK_N == n_cols and ROWS divides n_rows, so no load
    or store is masked (sm_90 SASS of Triton 3.6 at H = 4096, 4 warps: 623 -> 598 instructions a
    thread; 926 -> 805 with a residual).
    """
    rows = _row_block(tl.program_id(0), ROWS, IDX64)
    cols = tl.arange(0, BLOCK_N)
    if EVEN:  # BLOCK_N == n_cols and ROWS divides n_rows: nothing to mask
        col_mask = None
        w_mask = None
        row_mask = None
        mask = None
    else:
        col_mask = cols < n_cols
        w_mask = col_mask[None, :]
        row_mask = rows < n_rows
        mask = row_mask[:, None] & w_mask
    cols2 = cols[None, :]

    s = _load_masked(x_ptr + rows[:, None] * x_row_stride + cols2, mask, EVEN).to(tl.float32)
    if HAS_WEIGHT:
        if W_EARLY:
            w = _load_masked(w_ptr + cols2, w_mask, EVEN)
    if HAS_RESIDUAL:
        r_ptrs = res_ptr + rows[:, None] * res_row_stride + cols2
        s = s + _load_masked(r_ptrs, mask, EVEN).to(tl.float32)
        tl.store(r_ptrs, s.to(res_ptr.dtype.element_ty), mask=mask)  # both inputs of the tile are loaded
    rstd = tl.rsqrt(tl.sum(s * s, axis=1) / n_cols + eps)
    if HAS_WEIGHT:
        if not W_EARLY:
            w = _load_masked(w_ptr + cols, col_mask, EVEN)[None, :]
    else:
        w = s  # unused
    # padding columns are 0 and leave the amax alone
    if LP_AMAX:
        y_lp = _normed_lp(s, rstd[:, None], w, x_ptr, HAS_WEIGHT)
        amax = tl.max(tl.abs(y_lp), axis=1).to(tl.float32)
        y = y_lp.to(tl.float32)
    else:
        y = _normed(s, rstd[:, None], w, x_ptr, HAS_WEIGHT)
        amax = tl.max(tl.abs(y), axis=1)
    sdiv, rh, rd, rl = _row_scales(amax, s_ptr, rows, s_stride, row_mask, ROWS, FP8_MAX, AMAX_FLOOR, RCP_SCALE,
                                   RCP_DIV)
    q = _quantize_row(y, sdiv, rh, rd, rl, q_ptr, FP8_MAX, SW_FP8, FNUZ, RCP_DIV, SAT_CVT)
    tl.store(q_ptr + rows[:, None] * q_row_stride + cols2, q, mask=mask)


@triton.jit
def _chunk_sum(x_rows, r_rows, cols, mask, HAS_RESIDUAL: tl.constexpr, POLICY: tl.constexpr):
    """s = x (+ residual) of one [ROWS, CHUNK] tile, float32 (POLICY: see :func:`_load_hinted`)."""
    s = _load_hinted(x_rows + cols[None, :], mask, POLICY).to(tl.float32)
    if HAS_RESIDUAL:
        s = s + _load_hinted(r_rows + cols[None, :], mask, POLICY).to(tl.float32)
    return s


@triton.jit
def rms_norm_quant_chunked_kernel(
    x_ptr,
    x_row_stride,
    res_ptr,
    res_row_stride,
    q_ptr,
    q_row_stride,
    s_ptr,
    s_stride,
    w_ptr,
    n_rows,
    n_cols,
    eps,
    HAS_RESIDUAL: tl.constexpr,
    HAS_WEIGHT: tl.constexpr,
    ROWS: tl.constexpr,
    CHUNK: tl.constexpr,
    N_CHUNKS: tl.constexpr,
    EVEN: tl.constexpr,
    HINTS: tl.constexpr,
    FP8_MAX: tl.constexpr,
    AMAX_FLOOR: tl.constexpr,
    RCP_SCALE: tl.constexpr,
    SW_FP8: tl.constexpr,
    FNUZ: tl.constexpr,
    IDX64: tl.constexpr,
    RCP_DIV: tl.constexpr,
    SAT_CVT: tl.constexpr,
):
    """ROWS whole rows per program as N_CHUNKS = cdiv(n_cols, CHUNK) [ROWS, CHUNK] tiles, the chunk
    loops unrolled (``static_range``; only the last chunk masked, none when EVEN), three passes as
    the looped kernel: the sum of squares (all of its loads issued before the first sum), the
    amax of the normalized rows, then the stores; the later passes re-read the program's own
    rows from L1 / L2 (HINTS: evict_last on the first two passes, evict_first on the last).
    Residual is written in the last pass only, each chunk after it is read. The sum of squares
    adds chunk-wise partial sums (as the looped kernel), so rstd may differ from the whole-row
    kernel's in the last bit.
    """
    rows = _row_block(tl.program_id(0), ROWS, IDX64)
    row_mask = rows < n_rows
    x_rows = x_ptr + rows[:, None] * x_row_stride
    r_rows = res_ptr + rows[:, None] * res_row_stride
    q_rows = q_ptr + rows[:, None] * q_row_stride
    j = tl.arange(0, CHUNK)
    KEEP: tl.constexpr = 1 if HINTS else 0  # _load_hinted policies
    DROP: tl.constexpr = 2 if HINTS else 0

    acc = tl.zeros([ROWS, CHUNK], dtype=tl.float32)
    for c in tl.static_range(N_CHUNKS):
        cols, mask = _chunk(c, j, row_mask, n_cols, CHUNK, N_CHUNKS, EVEN)
        s = _chunk_sum(x_rows, r_rows, cols, mask, HAS_RESIDUAL, KEEP)
        acc += s * s
    rstd = tl.rsqrt(tl.sum(acc, axis=1) / n_cols + eps)[:, None]

    amax_acc = tl.zeros([ROWS, CHUNK], dtype=tl.float32)
    for c in tl.static_range(N_CHUNKS):
        cols, mask = _chunk(c, j, row_mask, n_cols, CHUNK, N_CHUNKS, EVEN)
        s = _chunk_sum(x_rows, r_rows, cols, mask, HAS_RESIDUAL, KEEP)
        if HAS_WEIGHT:
            w = _load_hinted(w_ptr + cols, cols < n_cols, KEEP)[None, :]
        else:
            w = s  # unused
        amax_acc = tl.maximum(amax_acc, tl.abs(_normed(s, rstd, w, x_ptr, HAS_WEIGHT)))
    sdiv, rh, rd, rl = _row_scales(tl.max(amax_acc, axis=1), s_ptr, rows, s_stride, row_mask, ROWS, FP8_MAX,
                                   AMAX_FLOOR, RCP_SCALE, RCP_DIV)

    for c in tl.static_range(N_CHUNKS):
        cols, mask = _chunk(c, j, row_mask, n_cols, CHUNK, N_CHUNKS, EVEN)
        s = _chunk_sum(x_rows, r_rows, cols, mask, HAS_RESIDUAL, DROP)
        if HAS_RESIDUAL:
            tl.store(r_rows + cols[None, :], s.to(res_ptr.dtype.element_ty), mask=mask)
        if HAS_WEIGHT:
            w = tl.load(w_ptr + cols, mask=cols < n_cols, other=0.0)[None, :]
        else:
            w = s  # unused
        y = _normed(s, rstd, w, x_ptr, HAS_WEIGHT)
        q = _quantize_row(y, sdiv, rh, rd, rl, q_ptr, FP8_MAX, SW_FP8, FNUZ, RCP_DIV, SAT_CVT)
        tl.store(q_rows + cols[None, :], q, mask=mask)


@triton.jit
def _slot_sum(c: tl.constexpr, x_rows, r_rows, w_ptr, j, row_mask, n_cols, CHUNK: tl.constexpr,
              N_CHUNKS: tl.constexpr, EVEN: tl.constexpr, HAS_RESIDUAL: tl.constexpr, HAS_WEIGHT: tl.constexpr,
              W_EARLY: tl.constexpr):
    """Chunk ``c``'s s = x (+ residual), float32, the sum stored over residual (the program has just
    read both at these addresses), and its weight as a [1, CHUNK] block when W_EARLY (else s, unused)."""
    cols, mask = _chunk(c, j, row_mask, n_cols, CHUNK, N_CHUNKS, EVEN)
    s = _chunk_sum(x_rows, r_rows, cols, mask, HAS_RESIDUAL, 0)
    if HAS_RESIDUAL:
        tl.store(r_rows + cols[None, :], s.to(r_rows.dtype.element_ty), mask=mask)
    w = s  # unused unless HAS_WEIGHT and W_EARLY
    if HAS_WEIGHT:
        if W_EARLY:
            w = tl.load(w_ptr + cols[None, :], mask=(cols < n_cols)[None, :], other=0.0)
    return s, w


@triton.jit
def _slot_normed(c: tl.constexpr, s, w, rstd, w_ptr, x_ptr, j, n_cols, CHUNK: tl.constexpr, HAS_WEIGHT: tl.constexpr,
                 W_EARLY: tl.constexpr):
    """Chunk ``c``'s normalized rows (:func:`_normed`, float32); the weight loaded here unless W_EARLY."""
    if HAS_WEIGHT:
        if not W_EARLY:
            cols = c * CHUNK + j
            w = tl.load(w_ptr + cols[None, :], mask=(cols < n_cols)[None, :], other=0.0)
    return _normed(s, rstd, w, x_ptr, HAS_WEIGHT)


@triton.jit
def rms_norm_quant_regs_kernel(
    x_ptr,
    x_row_stride,
    res_ptr,
    res_row_stride,
    q_ptr,
    q_row_stride,
    s_ptr,
    s_stride,
    w_ptr,
    n_rows,
    n_cols,
    eps,
    HAS_RESIDUAL: tl.constexpr,
    HAS_WEIGHT: tl.constexpr,
    ROWS: tl.constexpr,
    CHUNK: tl.constexpr,
    N_CHUNKS: tl.constexpr,
    EVEN: tl.constexpr,
    FP8_MAX: tl.constexpr,
    AMAX_FLOOR: tl.constexpr,
    RCP_SCALE: tl.constexpr,
    SW_FP8: tl.constexpr,
    FNUZ: tl.constexpr,
    IDX64: tl.constexpr,
    RCP_DIV: tl.constexpr,
    SAT_CVT: tl.constexpr,
    W_EARLY: tl.constexpr,
):
    """The chunked kernel's layout (ROWS whole rows as N_CHUNKS <= 8 [ROWS, CHUNK] tiles, only the
    last masked) with the chunks kept in registers, as the whole-row kernel keeps its tile: each
    input read once (no second and third pass over L1 / L2), no padding to a power of two
    (7168 = 7 x 1024), one reduction each for the sum of squares and the amax (the chunks are
    added / maxed elementwise first; the sum's order is the chunked kernel's, so rstd may differ
    from the whole-row kernel's in the last bit). The chunks are named slots (s0 .. s7 and their
    normalized y0 .. y7, each behind ``N_CHUNKS > c``: Triton has no list of tensors). Residual is
    written as each chunk is read. W_EARLY: the weight chunks are loaded with x (before the sum
    of squares) instead of after rstd.
    """
    tl.static_assert(N_CHUNKS <= 8)
    rows = _row_block(tl.program_id(0), ROWS, IDX64)
    row_mask = rows < n_rows
    x_rows = x_ptr + rows[:, None] * x_row_stride
    r_rows = res_ptr + rows[:, None] * res_row_stride
    q_rows = q_ptr + rows[:, None] * q_row_stride
    j = tl.arange(0, CHUNK)

    s0, w0 = _slot_sum(0, x_rows, r_rows, w_ptr, j, row_mask, n_cols, CHUNK, N_CHUNKS, EVEN, HAS_RESIDUAL,
                       HAS_WEIGHT, W_EARLY)
    acc = s0 * s0
    if N_CHUNKS > 1:
        s1, w1 = _slot_sum(1, x_rows, r_rows, w_ptr, j, row_mask, n_cols, CHUNK, N_CHUNKS, EVEN, HAS_RESIDUAL,
                           HAS_WEIGHT, W_EARLY)
        acc += s1 * s1
    if N_CHUNKS > 2:
        s2, w2 = _slot_sum(2, x_rows, r_rows, w_ptr, j, row_mask, n_cols, CHUNK, N_CHUNKS, EVEN, HAS_RESIDUAL,
                           HAS_WEIGHT, W_EARLY)
        acc += s2 * s2
    if N_CHUNKS > 3:
        s3, w3 = _slot_sum(3, x_rows, r_rows, w_ptr, j, row_mask, n_cols, CHUNK, N_CHUNKS, EVEN, HAS_RESIDUAL,
                           HAS_WEIGHT, W_EARLY)
        acc += s3 * s3
    if N_CHUNKS > 4:
        s4, w4 = _slot_sum(4, x_rows, r_rows, w_ptr, j, row_mask, n_cols, CHUNK, N_CHUNKS, EVEN, HAS_RESIDUAL,
                           HAS_WEIGHT, W_EARLY)
        acc += s4 * s4
    if N_CHUNKS > 5:
        s5, w5 = _slot_sum(5, x_rows, r_rows, w_ptr, j, row_mask, n_cols, CHUNK, N_CHUNKS, EVEN, HAS_RESIDUAL,
                           HAS_WEIGHT, W_EARLY)
        acc += s5 * s5
    if N_CHUNKS > 6:
        s6, w6 = _slot_sum(6, x_rows, r_rows, w_ptr, j, row_mask, n_cols, CHUNK, N_CHUNKS, EVEN, HAS_RESIDUAL,
                           HAS_WEIGHT, W_EARLY)
        acc += s6 * s6
    if N_CHUNKS > 7:
        s7, w7 = _slot_sum(7, x_rows, r_rows, w_ptr, j, row_mask, n_cols, CHUNK, N_CHUNKS, EVEN, HAS_RESIDUAL,
                           HAS_WEIGHT, W_EARLY)
        acc += s7 * s7
    rstd = tl.rsqrt(tl.sum(acc, axis=1) / n_cols + eps)[:, None]

    y0 = _slot_normed(0, s0, w0, rstd, w_ptr, x_ptr, j, n_cols, CHUNK, HAS_WEIGHT, W_EARLY)
    # placeholders for the slots past N_CHUNKS (never stored)
    y1, y2, y3, y4, y5, y6, y7 = y0, y0, y0, y0, y0, y0, y0
    am = tl.abs(y0)
    if N_CHUNKS > 1:
        y1 = _slot_normed(1, s1, w1, rstd, w_ptr, x_ptr, j, n_cols, CHUNK, HAS_WEIGHT, W_EARLY)
        am = tl.maximum(am, tl.abs(y1))
    if N_CHUNKS > 2:
        y2 = _slot_normed(2, s2, w2, rstd, w_ptr, x_ptr, j, n_cols, CHUNK, HAS_WEIGHT, W_EARLY)
        am = tl.maximum(am, tl.abs(y2))
    if N_CHUNKS > 3:
        y3 = _slot_normed(3, s3, w3, rstd, w_ptr, x_ptr, j, n_cols, CHUNK, HAS_WEIGHT, W_EARLY)
        am = tl.maximum(am, tl.abs(y3))
    if N_CHUNKS > 4:
        y4 = _slot_normed(4, s4, w4, rstd, w_ptr, x_ptr, j, n_cols, CHUNK, HAS_WEIGHT, W_EARLY)
        am = tl.maximum(am, tl.abs(y4))
    if N_CHUNKS > 5:
        y5 = _slot_normed(5, s5, w5, rstd, w_ptr, x_ptr, j, n_cols, CHUNK, HAS_WEIGHT, W_EARLY)
        am = tl.maximum(am, tl.abs(y5))
    if N_CHUNKS > 6:
        y6 = _slot_normed(6, s6, w6, rstd, w_ptr, x_ptr, j, n_cols, CHUNK, HAS_WEIGHT, W_EARLY)
        am = tl.maximum(am, tl.abs(y6))
    if N_CHUNKS > 7:
        y7 = _slot_normed(7, s7, w7, rstd, w_ptr, x_ptr, j, n_cols, CHUNK, HAS_WEIGHT, W_EARLY)
        am = tl.maximum(am, tl.abs(y7))
    sdiv, rh, rd, rl = _row_scales(tl.max(am, axis=1), s_ptr, rows, s_stride, row_mask, ROWS, FP8_MAX, AMAX_FLOOR,
                                   RCP_SCALE, RCP_DIV)

    _store_slots(y0, y1, y2, y3, y4, y5, y6, y7, q_rows, j, row_mask, n_cols, sdiv, rh, rd, rl, q_ptr, CHUNK, N_CHUNKS,
                 EVEN, FP8_MAX, SW_FP8, FNUZ, RCP_DIV, SAT_CVT)


@triton.jit
def rms_norm_quant_looped_kernel(
    x_ptr,
    x_row_stride,
    res_ptr,
    res_row_stride,
    q_ptr,
    q_row_stride,
    s_ptr,
    s_stride,
    w_ptr,
    n_cols,
    eps,
    HAS_RESIDUAL: tl.constexpr,
    HAS_WEIGHT: tl.constexpr,
    BLOCK_N: tl.constexpr,
    FP8_MAX: tl.constexpr,
    AMAX_FLOOR: tl.constexpr,
    RCP_SCALE: tl.constexpr,
    SW_FP8: tl.constexpr,
    FNUZ: tl.constexpr,
):
    """Rows too long for registers (or padded far from a power of two): one row per program,
    three passes over BLOCK_N-column chunks: the sum of squares, the amax of the normalized row,
    then the stores. Each pass recomputes s = x (+ residual) from the inputs (the later reads of a
    row mostly hit L2), and residual is written only in the last pass, chunk by chunk after that
    chunk is read, so q is quantized from the exact float32 sum as in the single-pass kernel.
    Offsets in int64.
    """
    row = tl.program_id(0).to(tl.int64)
    x_row = x_ptr + row * x_row_stride
    r_row = res_ptr + row * res_row_stride
    q_row = q_ptr + row * q_row_stride

    acc = tl.zeros([BLOCK_N], dtype=tl.float32)
    for start in range(0, n_cols, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)
        mask = cols < n_cols
        s = tl.load(x_row + cols, mask=mask, other=0.0).to(tl.float32)
        if HAS_RESIDUAL:
            s = s + tl.load(r_row + cols, mask=mask, other=0.0).to(tl.float32)
        acc += s * s
    rstd = tl.rsqrt(tl.sum(acc, axis=0) / n_cols + eps)

    amax = tl.zeros([BLOCK_N], dtype=tl.float32)
    for start in range(0, n_cols, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)
        mask = cols < n_cols
        s = tl.load(x_row + cols, mask=mask, other=0.0).to(tl.float32)
        if HAS_RESIDUAL:
            s = s + tl.load(r_row + cols, mask=mask, other=0.0).to(tl.float32)
        if HAS_WEIGHT:
            w = tl.load(w_ptr + cols, mask=mask, other=0.0)
        else:
            w = s  # unused
        amax = tl.maximum(amax, tl.abs(_normed(s, rstd, w, x_ptr, HAS_WEIGHT)))
    scale = _scale(tl.max(amax, axis=0), FP8_MAX, AMAX_FLOOR, RCP_SCALE)
    tl.store(s_ptr + row * s_stride, scale)

    for start in range(0, n_cols, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)
        mask = cols < n_cols
        s = tl.load(x_row + cols, mask=mask, other=0.0).to(tl.float32)
        if HAS_RESIDUAL:
            s = s + tl.load(r_row + cols, mask=mask, other=0.0).to(tl.float32)
            tl.store(r_row + cols, s.to(res_ptr.dtype.element_ty), mask=mask)
        if HAS_WEIGHT:
            w = tl.load(w_ptr + cols, mask=mask, other=0.0)
        else:
            w = s  # unused
        y = _normed(s, rstd, w, x_ptr, HAS_WEIGHT)
        tl.store(q_row + cols, _quantize(y, scale, q_ptr, FP8_MAX, SW_FP8, FNUZ), mask=mask)


# --- SiLU-and-mul then per-token-group quant -----------------------------------------------------
@triton.jit
def _silu_ftz(g):
    """``g / (1 + exp(-g))`` as Triton lowers ``_act``'s silu on NVIDIA -- ``ex2.approx`` of
    ``g * -log2(e)``, then the reciprocal of ``1 + e`` times ``g`` (``div.full.f32``) -- but with the
    flush-to-zero forms of the two approximations: one MUFU each, without the subnormal range
    scaling ptxas wraps around them (11 -> 5 SASS instructions per element, sm_90 code of Triton
    3.9 read offline; the H200 run used Triton 3.6 and timed the gain). The same
    bits wherever the scaling does nothing: ``ex2`` of an input below -126 gives a subnormal ``e``,
    and ``1 + e`` is 1 either way; only ``1 + e > 2**126`` (g in (-88.8, -87.3), silu ~ -1e-37)
    gives -0 here instead of a float32 tiny, and a group's FP8 code of either is zero (a scale is
    at least AMAX_FLOOR / FP8_MAX). NVIDIA only (PTX): the launcher sets FTZ_SILU from the config."""
    e = tl.inline_asm_elementwise("ex2.approx.ftz.f32 $0, $1;", "=r,r", [g * -1.4426950408889634],
                                  dtype=tl.float32, is_pure=True, pack=1)
    r = tl.inline_asm_elementwise("rcp.approx.ftz.f32 $0, $1;", "=r,r", [1.0 + e],
                                  dtype=tl.float32, is_pure=True, pack=1)
    return g * r


@triton.jit
def silu_mul_group_quant_kernel(
    x_ptr,
    x_row_stride,
    q_ptr,
    q_row_stride,
    s_ptr,
    s_token_stride,
    s_group_stride,
    n_tiles,
    groups_per_row,
    d,
    GROUP: tl.constexpr,
    BLOCK_G: tl.constexpr,
    TILES: tl.constexpr,
    FP8_MAX: tl.constexpr,
    AMAX_FLOOR: tl.constexpr,
    RCP_SCALE: tl.constexpr,
    SW_FP8: tl.constexpr,
    FNUZ: tl.constexpr,
    IDX64: tl.constexpr,
    RCP_DIV: tl.constexpr,
    SAT_CVT: tl.constexpr,
    FTZ_SILU: tl.constexpr,
):
    """A program takes TILES consecutive (token, group) tiles of GROUP output columns, as a
    [TILES, BLOCK_G] block (BLOCK_G = next_power_of_2(GROUP); columns past GROUP masked), as the
    per-token-group quant kernel does: tile t is token t // groups_per_row, group
    t % groups_per_row; it reads the gate columns [g * GROUP, (g + 1) * GROUP) of the token's x
    row and the up columns d further on, and writes q there in the (tokens, d) output and the
    group's scale at ``s_ptr[token * s_token_stride + group * s_group_stride]`` (row- or
    column-major scales alike). FTZ_SILU: the silu through :func:`_silu_ftz` (the same codes).
    """
    tok, grp, col, tile_mask, mask = _group_tiles(tl.program_id(0), n_tiles, groups_per_row, GROUP, BLOCK_G, TILES,
                                                  IDX64)
    gate_ptrs = x_ptr + (tok * x_row_stride)[:, None] + col
    gate = tl.load(gate_ptrs, mask=mask, other=0.0)
    up = tl.load(gate_ptrs + d, mask=mask, other=0.0)
    if FTZ_SILU:
        a = _silu_ftz(gate.to(tl.float32)).to(gate.dtype)
    else:
        a = _act(gate.to(tl.float32), 0).to(gate.dtype)  # ACT 0: silu, as the activation kernel
    y = (a.to(tl.float32) * up.to(tl.float32)).to(gate.dtype).to(tl.float32)
    _quantize_groups(y, q_ptr, q_row_stride, s_ptr, s_token_stride, s_group_stride, tok, grp, col, tile_mask, mask,
                     FP8_MAX, AMAX_FLOOR, RCP_SCALE, SW_FP8, FNUZ, TILES, RCP_DIV, SAT_CVT)
