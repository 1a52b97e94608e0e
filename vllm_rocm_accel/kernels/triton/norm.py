"""RMSNorm kernel bodies, with and without a fused residual add.

Only ``@triton.jit`` functions live here; grids, block sizes and launch
parameters are chosen by ``vllm_rocm_accel.backends.triton.norm``.

Semantics (vLLM 0.32 ``vllm.ir.ops.rms_norm`` / ``fused_add_rms_norm``)::

    s = x.float() (+ residual.float())           # residual_out = s.to(x.dtype)
    y = s * rsqrt(mean(s * s) + eps)             # all in fp32
    y = (y.to(w.dtype) * w).to(w.dtype)          # only when there is a weight;
                                                 # the product is taken in fp32
    out = y.to(x.dtype)

Every row is addressed as ``base + row * row_stride + col`` (last-dim stride 1),
with a separate row stride per tensor, so row-strided views need no copy.

Aliasing: ``out`` may alias ``x`` and ``residual_out`` may alias ``residual``
(vLLM's in-place fused add). Each program only touches its own rows and reads
every element of a row before it writes that element, so this is safe.
"""

import triton
import triton.language as tl


@triton.jit
def rms_norm_rows_kernel(
    x_ptr,
    x_row_stride,
    res_ptr,
    res_row_stride,
    out_ptr,
    out_row_stride,
    res_out_ptr,
    res_out_row_stride,
    w_ptr,
    n_rows,
    n_cols,
    eps,
    HAS_RESIDUAL: tl.constexpr,
    HAS_WEIGHT: tl.constexpr,
    ROWS: tl.constexpr,
    BLOCK_N: tl.constexpr,
    IDX64: tl.constexpr,
):
    """Single pass: a [ROWS, BLOCK_N] tile holds ROWS whole rows (BLOCK_N >= n_cols).

    IDX64: row offsets in int64; the launcher sets it only when an offset can reach 2**31.
    """
    pid = tl.program_id(0)
    if IDX64:
        rows = pid.to(tl.int64) * ROWS + tl.arange(0, ROWS).to(tl.int64)
    else:
        rows = pid * ROWS + tl.arange(0, ROWS)
    cols = tl.arange(0, BLOCK_N)
    col_mask = cols < n_cols
    mask = (rows < n_rows)[:, None] & col_mask[None, :]
    cols2 = cols[None, :]

    s = tl.load(x_ptr + rows[:, None] * x_row_stride + cols2, mask=mask, other=0.0).to(tl.float32)
    if HAS_RESIDUAL:
        r = tl.load(res_ptr + rows[:, None] * res_row_stride + cols2, mask=mask, other=0.0).to(tl.float32)
        s = s + r
        # Both inputs of this tile are loaded above, so writing residual_out
        # (which may alias residual) is safe.
        tl.store(
            res_out_ptr + rows[:, None] * res_out_row_stride + cols2,
            s.to(res_out_ptr.dtype.element_ty),
            mask=mask,
        )

    var = tl.sum(s * s, axis=1) / n_cols
    y = s * tl.rsqrt(var + eps)[:, None]
    if HAS_WEIGHT:
        w = tl.load(w_ptr + cols, mask=col_mask, other=0.0)
        y = (y.to(w.dtype).to(tl.float32) * w.to(tl.float32)[None, :]).to(w.dtype)
    tl.store(out_ptr + rows[:, None] * out_row_stride + cols2, y.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def rms_norm_looped_kernel(
    x_ptr,
    x_row_stride,
    res_ptr,
    res_row_stride,
    out_ptr,
    out_row_stride,
    res_out_ptr,
    res_out_row_stride,
    w_ptr,
    n_cols,
    eps,
    HAS_RESIDUAL: tl.constexpr,
    HAS_WEIGHT: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """Two passes over BLOCK_N-column chunks of one row per program (rows too long for registers).

    Pass 1 only accumulates the sum of squares of s = x (+ residual). Pass 2
    recomputes s from x and residual chunk by chunk, then writes residual_out
    and out for that chunk: every element is read before the aliased outputs
    overwrite it, and out is normalized from the exact fp32 sum, as in the
    single-pass kernel. (x and residual are read twice; the second read of a
    row mostly hits L2.)
    """
    row = tl.program_id(0).to(tl.int64)
    x_row = x_ptr + row * x_row_stride
    out_row = out_ptr + row * out_row_stride
    res_row = res_ptr + row * res_row_stride
    res_out_row = res_out_ptr + row * res_out_row_stride

    acc = tl.zeros([BLOCK_N], dtype=tl.float32)
    for start in range(0, n_cols, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)
        mask = cols < n_cols
        s = tl.load(x_row + cols, mask=mask, other=0.0).to(tl.float32)
        if HAS_RESIDUAL:
            s = s + tl.load(res_row + cols, mask=mask, other=0.0).to(tl.float32)
        acc += s * s
    rstd = tl.rsqrt(tl.sum(acc, axis=0) / n_cols + eps)

    for start in range(0, n_cols, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)
        mask = cols < n_cols
        s = tl.load(x_row + cols, mask=mask, other=0.0).to(tl.float32)
        if HAS_RESIDUAL:
            s = s + tl.load(res_row + cols, mask=mask, other=0.0).to(tl.float32)
            tl.store(res_out_row + cols, s.to(res_out_ptr.dtype.element_ty), mask=mask)
        y = s * rstd
        if HAS_WEIGHT:
            w = tl.load(w_ptr + cols, mask=mask, other=0.0)
            y = (y.to(w.dtype).to(tl.float32) * w.to(tl.float32)).to(w.dtype)
        tl.store(out_row + cols, y.to(out_ptr.dtype.element_ty), mask=mask)
