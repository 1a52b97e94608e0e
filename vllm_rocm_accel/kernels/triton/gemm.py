"""Triton kernels of the FP8 GEMM family (bodies only; launchers in backends/triton/gemm.py).

The kernels compute ``out[m, n] = sum_k a[m, k] * w[n, k]`` with ``a`` (M, K) and ``w``
(N, K) FP8, K contiguous in both (the layout FP8 tensor cores want for both operands), into
a float32 accumulator, one [BLOCK_M, BLOCK_N] output tile per program (per step of a
program, in the persistent kernel). Programs walk the tiles in groups of GROUP_M tile rows
so that neighbours share a and w panels in L2.

FP8 tensor cores on Hopper sum products with a narrow accumulator (about 14 bits kept, the
DeepSeek-V3 report). PROMOTE (``max_num_imprecise_acc``; None = Triton's default, never on
NVIDIA) makes Triton add each PROMOTE-long stretch of K into the float32 accumulator with a
full-precision add, as cuBLAS does without ``use_fast_accum``. The block-scaled kernel
promotes at every 128-long scale block by construction.

In the pointer-based kernels, out-of-range rows of ``a`` and ``w`` are read from a clamped
row (``offs % M``) instead of masked, and only K is masked when K is not a multiple of the
K step (EVEN_K off); stores are masked.

* :func:`gemm_a8w8_kernel`: the scales are applied once, after the K loop: ``a_scale[row *
  a_scale_stride]`` and ``w_scale[col * w_scale_stride]``, stride 0 for a per-tensor scale,
  then the bias, then one rounding to ``out``'s dtype. With SPLIT_K > 1 the
  K blocks are dealt round robin to SPLIT_K programs per tile, each storing its raw float32
  sum into ``ws`` (SPLIT_K, M, N); :func:`splitk_epilogue_kernel` adds them up in a fixed
  order (deterministic) and applies the same epilogue.
* :func:`gemm_a8w8_persistent_kernel`: the same product and epilogue, with ``a`` and ``w``
  read through TMA tensor descriptors and one program per multiprocessor walking the output
  tiles (off by default: a config rule's ``"kernel": "persistent"`` selects it).
* :func:`gemm_a8w8_blockscale_kernel`: BLOCK_K is the 128 of the 1 x 128 / 128 x 128 scale
  blocks, so each K step's partial product is scaled by ``a_scale[m, kb]`` and
  ``w_scale[n // 128, kb]`` before it is added: the scales vary along K and cannot wait for
  the end.
* :func:`gemm_a8w8_blockscale_persistent_kernel`: the same, on TMA descriptors and persistent
  programs as :func:`gemm_a8w8_persistent_kernel` (tiles of at most 128 columns).
"""

import triton
import triton.language as tl


@triton.jit
def _tile(pid, M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
    """(pid_m, pid_n) of program ``pid`` in the grouped order."""
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    in_group = GROUP_M * num_pid_n
    first_m = (pid // in_group) * GROUP_M
    group_rows = tl.minimum(num_pid_m - first_m, GROUP_M)
    pid_m = first_m + (pid % in_group) % group_rows
    pid_n = (pid % in_group) // group_rows
    return pid_m, pid_n


@triton.jit
def _tile_origin(tile, M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
    """(first row, first column) of output tile ``tile`` in :func:`_tile`'s order (persistent kernels)."""
    pid_m, pid_n = _tile(tile, M, N, BLOCK_M, BLOCK_N, GROUP_M)
    return pid_m * BLOCK_M, pid_n * BLOCK_N


@triton.jit
def _scale_bias(acc, rows, cols, mask_m, mask_n, a_scale_ptr, a_scale_stride, w_scale_ptr, w_scale_stride, bias_ptr,
                HAS_BIAS: tl.constexpr):
    """acc * a_scale[row] * w_scale[col] (+ bias[col]); a per-tensor scale comes with stride 0, so
    every scaling takes the same vector path (a scalar load here measured 20-25% slower at large M)."""
    sa = tl.load(a_scale_ptr + rows * a_scale_stride, mask=mask_m, other=0.0)
    sw = tl.load(w_scale_ptr + cols * w_scale_stride, mask=mask_n, other=0.0)
    acc = acc * sa[:, None] * sw[None, :]
    if HAS_BIAS:
        acc = acc + tl.load(bias_ptr + cols, mask=mask_n, other=0.0).to(tl.float32)[None, :]
    return acc


@triton.jit
def gemm_a8w8_kernel(
    a_ptr, w_ptr, out_ptr, ws_ptr,
    a_scale_ptr, a_scale_stride, w_scale_ptr, w_scale_stride, bias_ptr,
    M, N, K, stride_am, stride_wn, stride_om,
    HAS_BIAS: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
    SPLIT_K: tl.constexpr,
    EVEN_K: tl.constexpr,
    IDX64: tl.constexpr,
    PROMOTE: tl.constexpr,
):
    pid_m, pid_n = _tile(tl.program_id(0), M, N, BLOCK_M, BLOCK_N, GROUP_M)
    pid_k = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rm = offs_m % M
    rn = offs_n % N
    if IDX64:
        rm = rm.to(tl.int64)
        rn = rn.to(tl.int64)
    offs_k = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    a_ptrs = a_ptr + rm[:, None] * stride_am + offs_k[None, :]
    w_ptrs = w_ptr + rn[None, :] * stride_wn + offs_k[:, None]  # the (BLOCK_K, BLOCK_N) tile of w.T
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    step = BLOCK_K * SPLIT_K
    for k0 in range(pid_k * BLOCK_K, K, step):
        if EVEN_K:
            a = tl.load(a_ptrs)
            b = tl.load(w_ptrs)
        else:
            k_ok = tl.arange(0, BLOCK_K) < K - k0
            a = tl.load(a_ptrs, mask=k_ok[None, :], other=0.0)
            b = tl.load(w_ptrs, mask=k_ok[:, None], other=0.0)
        acc = tl.dot(a, b, acc, max_num_imprecise_acc=PROMOTE)
        a_ptrs += step
        w_ptrs += step
    mask_m = offs_m < M
    mask_n = offs_n < N
    mask = mask_m[:, None] & mask_n[None, :]
    om = offs_m.to(tl.int64) if IDX64 else offs_m
    if SPLIT_K == 1:
        acc = _scale_bias(acc, rm, rn, mask_m, mask_n, a_scale_ptr, a_scale_stride, w_scale_ptr, w_scale_stride,
                          bias_ptr, HAS_BIAS)
        tl.store(out_ptr + om[:, None] * stride_om + offs_n[None, :], acc.to(out_ptr.dtype.element_ty), mask=mask)
    else:
        part = ws_ptr + pid_k.to(tl.int64) * M * N
        tl.store(part + om[:, None] * N + offs_n[None, :], acc, mask=mask)


@triton.jit
def splitk_epilogue_kernel(
    ws_ptr, out_ptr, a_scale_ptr, a_scale_stride, w_scale_ptr, w_scale_stride, bias_ptr,
    M, N, stride_om,
    HAS_BIAS: tl.constexpr,
    SPLIT_K: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """Sum the SPLIT_K float32 partials of one [BLOCK_M, BLOCK_N] tile in order, then scale,
    add the bias and round once."""
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_m = offs_m < M
    mask_n = offs_n < N
    mask = mask_m[:, None] & mask_n[None, :]
    idx = offs_m.to(tl.int64)[:, None] * N + offs_n[None, :]
    acc = tl.load(ws_ptr + idx, mask=mask, other=0.0)
    for s in range(1, SPLIT_K):
        acc += tl.load(ws_ptr + s * M * N + idx, mask=mask, other=0.0)
    acc = _scale_bias(acc, offs_m, offs_n, mask_m, mask_n, a_scale_ptr, a_scale_stride, w_scale_ptr, w_scale_stride,
                      bias_ptr, HAS_BIAS)
    tl.store(out_ptr + offs_m.to(tl.int64)[:, None] * stride_om + offs_n[None, :], acc.to(out_ptr.dtype.element_ty),
             mask=mask)


@triton.jit
def gemm_a8w8_persistent_kernel(
    a_desc, w_desc, out_ptr,
    a_scale_ptr, a_scale_stride, w_scale_ptr, w_scale_stride, bias_ptr,
    M, N, K, stride_om,
    HAS_BIAS: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
    IDX64: tl.constexpr,
    PROMOTE: tl.constexpr,
):
    """:func:`gemm_a8w8_kernel` (SPLIT_K = 1) as a persistent kernel fed by TMA.

    ``a_desc`` / ``w_desc`` are host-side tensor descriptors
    (``triton.tools.tensor_descriptor.TensorDescriptor``) of a (M, K) and w (N, K) with
    blocks [BLOCK_M, BLOCK_K] and [BLOCK_N, BLOCK_K]; on Hopper each load is one TMA copy
    into shared memory. Host-side rather than ``tl.make_tensor_descriptor`` in the kernel:
    Triton 3.6 encodes a host descriptor once per launch on the CPU (its CUDA launcher fills
    the CUtensorMap and passes it as a kernel parameter, which a CUDA graph captures by value),
    while an in-kernel descriptor needs global scratch from ``triton.set_allocator``, a
    ContextVar that every thread launching the kernel would have to set (process state this
    library should not own). Triton's interpreter runs host descriptors as well.

    Programs (grid = min(multiprocessors, tiles)) take the tiles ``pid, pid + grid, ...`` in
    :func:`_tile`'s grouped order. ``flatten=True`` fuses the tile loop with the K loop so
    the pipeliner keeps loads of the next tile in flight across a tile's epilogue (Triton
    3.6's NVIDIA backend runs its fuse-nested-loops pass for capability 9.x too). No
    ``warp_specialize``: Triton 3.6's ``tl.range`` documents it for Blackwell only.

    K tails and edge tiles need no masks on the loads: TMA fills what lies past the
    descriptor's shape with zeros, which add nothing to the dot. The epilogue is
    :func:`_scale_bias` and one rounding to ``out``'s dtype, stores masked.
    """
    num_tiles = tl.cdiv(M, BLOCK_M) * tl.cdiv(N, BLOCK_N)
    k_tiles = tl.cdiv(K, BLOCK_K)
    for tile in tl.range(tl.program_id(0), num_tiles, tl.num_programs(0), flatten=True):
        off_m, off_n = _tile_origin(tile, M, N, BLOCK_M, BLOCK_N, GROUP_M)
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for kb in range(k_tiles):
            a = a_desc.load([off_m, kb * BLOCK_K])
            b = w_desc.load([off_n, kb * BLOCK_K])  # (BLOCK_N, BLOCK_K): K-major, as the FP8 wgmma wants w.T
            acc = tl.dot(a, b.T, acc, max_num_imprecise_acc=PROMOTE)
        offs_m = off_m + tl.arange(0, BLOCK_M)
        offs_n = off_n + tl.arange(0, BLOCK_N)
        mask_m = offs_m < M
        mask_n = offs_n < N
        if IDX64:
            offs_m = offs_m.to(tl.int64)
            offs_n = offs_n.to(tl.int64)
        acc = _scale_bias(acc, offs_m, offs_n, mask_m, mask_n, a_scale_ptr, a_scale_stride, w_scale_ptr,
                          w_scale_stride, bias_ptr, HAS_BIAS)
        tl.store(out_ptr + offs_m[:, None] * stride_om + offs_n[None, :], acc.to(out_ptr.dtype.element_ty),
                 mask=mask_m[:, None] & mask_n[None, :])


@triton.jit
def gemm_a8w8_blockscale_kernel(
    a_ptr, w_ptr, out_ptr, a_scale_ptr, w_scale_ptr,
    M, N, K, stride_am, stride_wn, stride_om,
    stride_sa_m, stride_sa_k, stride_sw_n, stride_sw_k,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
    EVEN_K: tl.constexpr,
    IDX64: tl.constexpr,
):
    """BLOCK_K must be the scale block (128); BLOCK_N divides or is a multiple of 128.

    Each 128-wide K block's dot is scaled before it is added (the A group's and the W block's
    scales differ per K block). Where BLOCK_N <= 128 the tile lies in one W block, so its W scale
    is one number a K block: the row factors ``sa * sw`` are formed once per row and the dot enters
    the accumulator through one FFMA an element (sm_90 SASS at 64 x 128 x 128: 64 FFMA a thread a K
    block instead of 64 FMUL + 64 FFMA); wider tiles scale by row and column vectors."""
    pid_m, pid_n = _tile(tl.program_id(0), M, N, BLOCK_M, BLOCK_N, GROUP_M)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rm = offs_m % M
    rn = offs_n % N
    if IDX64:
        rm = rm.to(tl.int64)
        rn = rn.to(tl.int64)
    offs_k = tl.arange(0, BLOCK_K)
    a_ptrs = a_ptr + rm[:, None] * stride_am + offs_k[None, :]
    w_ptrs = w_ptr + rn[None, :] * stride_wn + offs_k[:, None]
    sa_ptrs = a_scale_ptr + rm * stride_sa_m
    if BLOCK_N <= BLOCK_K:  # one W block: its scale is a scalar per K block
        sw_ptrs = w_scale_ptr + ((pid_n * BLOCK_N) // BLOCK_K) * stride_sw_n
    else:
        sw_ptrs = w_scale_ptr + (rn // BLOCK_K) * stride_sw_n
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for kb in range(0, tl.cdiv(K, BLOCK_K)):
        if EVEN_K:
            a = tl.load(a_ptrs)
            b = tl.load(w_ptrs)
        else:
            k_ok = offs_k < K - kb * BLOCK_K
            a = tl.load(a_ptrs, mask=k_ok[None, :], other=0.0)
            b = tl.load(w_ptrs, mask=k_ok[:, None], other=0.0)
        sa = tl.load(sa_ptrs + kb * stride_sa_k)
        sw = tl.load(sw_ptrs + kb * stride_sw_k)
        if BLOCK_N <= BLOCK_K:
            acc = tl.fma(tl.dot(a, b), (sa * sw)[:, None], acc)
        else:
            acc += tl.dot(a, b) * sa[:, None] * sw[None, :]
        a_ptrs += BLOCK_K
        w_ptrs += BLOCK_K
    mask = (offs_m < M)[:, None] & (offs_n < N)[None, :]
    om = offs_m.to(tl.int64) if IDX64 else offs_m
    tl.store(out_ptr + om[:, None] * stride_om + offs_n[None, :], acc.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def gemm_a8w8_blockscale_persistent_kernel(
    a_desc, w_desc, out_ptr, a_scale_ptr, w_scale_ptr,
    M, N, K, stride_om,
    stride_sa_m, stride_sa_k, stride_sw_n, stride_sw_k,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
    IDX64: tl.constexpr,
):
    """:func:`gemm_a8w8_blockscale_kernel` as a persistent kernel fed by TMA (the descriptors and
    the tile walk of :func:`gemm_a8w8_persistent_kernel`). BLOCK_K is the scale block (128) and
    BLOCK_N divides it, so a tile lies in one W block and each K block's dot enters the
    accumulator through one FFMA with the row factors ``a_scale[m, kb] * w_scale[n // 128, kb]``.
    TMA zero-fills a K tail, so no load is masked; the scale loads are masked by row only."""
    num_tiles = tl.cdiv(M, BLOCK_M) * tl.cdiv(N, BLOCK_N)
    k_tiles = tl.cdiv(K, BLOCK_K)
    for tile in tl.range(tl.program_id(0), num_tiles, tl.num_programs(0), flatten=True):
        off_m, off_n = _tile_origin(tile, M, N, BLOCK_M, BLOCK_N, GROUP_M)
        offs_m = off_m + tl.arange(0, BLOCK_M)
        mask_m = offs_m < M
        rm = offs_m.to(tl.int64) if IDX64 else offs_m
        sa_ptrs = a_scale_ptr + rm * stride_sa_m
        sw_ptr = w_scale_ptr + (off_n // BLOCK_K) * stride_sw_n
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for kb in range(k_tiles):
            a = a_desc.load([off_m, kb * BLOCK_K])
            b = w_desc.load([off_n, kb * BLOCK_K])
            sa = tl.load(sa_ptrs + kb * stride_sa_k, mask=mask_m, other=0.0)
            sw = tl.load(sw_ptr + kb * stride_sw_k)
            acc = tl.fma(tl.dot(a, b.T), (sa * sw)[:, None], acc)
        offs_n = off_n + tl.arange(0, BLOCK_N)
        mask = mask_m[:, None] & (offs_n < N)[None, :]
        tl.store(out_ptr + rm[:, None] * stride_om + offs_n[None, :], acc.to(out_ptr.dtype.element_ty), mask=mask)
