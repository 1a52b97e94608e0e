"""Fused FP8 quant kernel bodies: RMSNorm (with or without a residual add) then per-token quant,
and SiLU-and-mul then per-token-group (1 x GROUP) quant.

Only ``@triton.jit`` functions live here (the FP8 and activation pieces are the quant and
activation kernels' own, imported from beside this module); grids, block sizes and launch
parameters are chosen by ``vllm_rocm_accel.backends.triton.fused_quant``.

Semantics: exactly the unfused composition (reference ``backends/torch/fused_quant.py``), so
each value is rounded where the unfused ops round it::

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
from .quant import (_chunk, _group_tiles, _load_hinted, _quantize, _quantize_groups, _quantize_row, _row_block,
                    _row_scales, _scale)


@triton.jit
def _normed(s, rstd, w, x_ptr, HAS_WEIGHT: tl.constexpr):
    """The norm op's output, as float32: s * rstd (* weight, in the weight's dtype), rounded to x's dtype."""
    y = s * rstd
    if HAS_WEIGHT:
        y = (y.to(w.dtype).to(tl.float32) * w.to(tl.float32)).to(w.dtype)
    return y.to(x_ptr.dtype.element_ty).to(tl.float32)


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
):
    """Single pass: a [ROWS, BLOCK_N] tile holds ROWS whole rows (BLOCK_N >= n_cols).

    Loads x (and residual) once, stores the sum over residual, normalizes, takes each row's
    amax and scale (``s_ptr[row * s_stride]``) and stores q: one read of the inputs, one write
    of q (and residual), all from registers. RCP_DIV: q divides through the row's reciprocal
    (``quant._div_rcp``, the same bits as the per-element division).
    """
    rows = _row_block(tl.program_id(0), ROWS, IDX64)
    cols = tl.arange(0, BLOCK_N)
    col_mask = cols < n_cols
    row_mask = rows < n_rows
    mask = row_mask[:, None] & col_mask[None, :]
    cols2 = cols[None, :]

    s = tl.load(x_ptr + rows[:, None] * x_row_stride + cols2, mask=mask, other=0.0).to(tl.float32)
    if HAS_RESIDUAL:
        r_ptrs = res_ptr + rows[:, None] * res_row_stride + cols2
        s = s + tl.load(r_ptrs, mask=mask, other=0.0).to(tl.float32)
        tl.store(r_ptrs, s.to(res_ptr.dtype.element_ty), mask=mask)  # both inputs of the tile are loaded
    rstd = tl.rsqrt(tl.sum(s * s, axis=1) / n_cols + eps)
    if HAS_WEIGHT:
        w = tl.load(w_ptr + cols, mask=col_mask, other=0.0)[None, :]
    else:
        w = s  # unused
    y = _normed(s, rstd[:, None], w, x_ptr, HAS_WEIGHT)  # padding columns are 0 and leave the amax alone
    scale, rcp = _row_scales(tl.max(tl.abs(y), axis=1), s_ptr, rows, s_stride, row_mask, ROWS, FP8_MAX, AMAX_FLOOR,
                             RCP_SCALE, RCP_DIV)
    q = _quantize_row(y, scale, rcp, q_ptr, FP8_MAX, SW_FP8, FNUZ, RCP_DIV)
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
    scale, rcp = _row_scales(tl.max(amax_acc, axis=1), s_ptr, rows, s_stride, row_mask, ROWS, FP8_MAX, AMAX_FLOOR,
                             RCP_SCALE, RCP_DIV)

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
        q = _quantize_row(y, scale, rcp, q_ptr, FP8_MAX, SW_FP8, FNUZ, RCP_DIV)
        tl.store(q_rows + cols[None, :], q, mask=mask)


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
):
    """A program takes TILES consecutive (token, group) tiles of GROUP output columns, as a
    [TILES, BLOCK_G] block (BLOCK_G = next_power_of_2(GROUP); columns past GROUP masked), as the
    per-token-group quant kernel does: tile t is token t // groups_per_row, group
    t % groups_per_row; it reads the gate columns [g * GROUP, (g + 1) * GROUP) of the token's x
    row and the up columns d further on, and writes q there in the (tokens, d) output and the
    group's scale at ``s_ptr[token * s_token_stride + group * s_group_stride]`` (row- or
    column-major scales alike).
    """
    tok, grp, col, tile_mask, mask = _group_tiles(tl.program_id(0), n_tiles, groups_per_row, GROUP, BLOCK_G, TILES,
                                                  IDX64)
    gate_ptrs = x_ptr + (tok * x_row_stride)[:, None] + col
    gate = tl.load(gate_ptrs, mask=mask, other=0.0)
    up = tl.load(gate_ptrs + d, mask=mask, other=0.0)
    a = _act(gate.to(tl.float32), 0).to(gate.dtype)  # ACT 0: silu, as the activation kernel
    y = (a.to(tl.float32) * up.to(tl.float32)).to(gate.dtype).to(tl.float32)
    _quantize_groups(y, q_ptr, q_row_stride, s_ptr, s_token_stride, s_group_stride, tok, grp, col, tile_mask, mask,
                     FP8_MAX, AMAX_FLOOR, RCP_SCALE, SW_FP8, FNUZ)
