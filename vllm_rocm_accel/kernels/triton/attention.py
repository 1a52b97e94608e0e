"""FlashAttention-style kernel bodies: forward, and a deterministic (atomic-free) backward.

Only ``@triton.jit`` functions live here; grids, block sizes and launch parameters are chosen
by ``vllm_rocm_accel.backends.triton.attention``.

Semantics (``vllm_rocm_accel/checks/attention.py``), per sequence of ``sq`` queries and ``sk``
keys, query row ``i``, key column ``j`` and ``rel = i + sk - sq - j`` (bottom-right aligned)::

    visible(i, j) = rel <= win_left and -rel <= win_right
    s = scale * q.k;  s = softcap * tanh(s / softcap) (SOFTCAP);  s -= slope * |rel| (HAS_ALIBI)

``win_left`` / ``win_right`` arrive as non-negative ints: the launcher replaces an unbounded
side (-1) by ``max_seqlen_q + max_seqlen_k``, which no ``rel`` reaches, so there is no branch
on "unbounded" here. Softmax runs in float32 in base 2 (``log2(e)`` folded into the scale and
the ALiBi slope); ``lse`` is stored in natural log. A row that sees no key gets out 0 and
lse +inf; the backward recomputes ``P = exp2(s * log2e - lse * log2e)``, which is 0 there.

Layout: row ``r`` of sequence ``b``, head ``h``, element ``d`` of q/k/v/out (and of the
gradients) is at ``b * s_b + (start_b + r) * s_t + h * s_h + d``: dense tensors pass their
batch stride and ``start_b = 0``; varlen ones (IS_VARLEN) pass ``s_b = 0`` and read ``start_b``
from cu_seqlens. lse/delta use the same rule with a unit row stride. Every offset that can
grow with the sequence or batch is formed once per program as an int64 scalar; tiles add
small int32 offsets (``arange * stride``) to it.

Key-loop (and, in dK/dV, query-loop) ranges are restricted to the blocks that can see each
other, and split in three: masked blocks at the low edge, unmasked interior blocks (no
visibility or bounds masks at all), masked blocks at the high edge.

:func:`attn_fwd_tma_kernel` is a second forward for the common dense case only (no varlen,
softcap, ALiBi or window; causal only with seqlen_q == seqlen_k; equal power-of-two head dims),
fed by host-side TMA tensor descriptors; same out and lse (off by default: a config rule's
``"kernel": "tma"`` selects it).
"""

import triton
import triton.language as tl

LOG2E = tl.constexpr(1.4426950408889634)
LN2 = tl.constexpr(0.6931471805599453)


# --- helpers --------------------------------------------------------------------
@triton.jit
def _load_tile(ptrs, rmask, cmask, MASK_R: tl.constexpr, MASK_C: tl.constexpr):
    """Load a [rows, cols] tile; out-of-range elements read 0."""
    if MASK_R:
        if MASK_C:
            x = tl.load(ptrs, mask=rmask[:, None] & cmask[None, :], other=0.0)
        else:
            x = tl.load(ptrs, mask=rmask[:, None], other=0.0)
    else:
        if MASK_C:
            x = tl.load(ptrs, mask=cmask[None, :], other=0.0)
        else:
            x = tl.load(ptrs)
    return x


@triton.jit
def _tanh(x):
    # 1 - 2 / (e^{2x} + 1) (tl has no tanh on every Triton); |x| <= 20 keeps e^{2x} finite and
    # changes nothing in float32 (tanh(20) rounds to 1).
    x = tl.minimum(tl.maximum(x, -20.0), 20.0)
    return 1.0 - 2.0 / (tl.exp2(x * (2.0 * LOG2E)) + 1.0)


@triton.jit
def _scores(qk, rel, qk_scale, cap2, slope2, SOFTCAP: tl.constexpr, HAS_ALIBI: tl.constexpr):
    """Base-2 scores of raw dot products ``qk`` and the tanh value (for the softcap backward).

    SOFTCAP: qk_scale = scale / softcap, cap2 = softcap * log2e; else qk_scale = scale * log2e.
    """
    if SOFTCAP:
        t = _tanh(qk * qk_scale)
        s = t * cap2
    else:
        t = qk
        s = qk * qk_scale
    if HAS_ALIBI:
        s = s - slope2 * tl.abs(rel).to(tl.float32)
    return s, t


@triton.jit
def _seq(CU, b, seqlen, IS_VARLEN: tl.constexpr):
    """(start row, length) of sequence ``b``: from cu_seqlens, or (0, seqlen) for dense."""
    if IS_VARLEN:
        start = tl.load(CU + b)
        n = tl.load(CU + b + 1) - start
    else:
        start = b * 0
        n = seqlen + b * 0
    return start, n


@triton.jit
def _block_split(lo, hi, full_lo, full_hi, BLOCK: tl.constexpr):
    """Split the (clamped) range [lo, hi) into BLOCK-aligned pieces: masked [a, f0), unmasked
    [f0, f1), masked [f1, hi). ``full_lo``/``full_hi`` bound the blocks that need no mask
    (any ints; rounded inwards here). Requires 0 <= lo <= hi."""
    a = (lo // BLOCK) * BLOCK
    hi_up = ((hi + BLOCK - 1) // BLOCK) * BLOCK
    f0 = ((tl.maximum(full_lo, 0) + BLOCK - 1) // BLOCK) * BLOCK
    f0 = tl.minimum(tl.maximum(f0, a), hi_up)
    f1 = (tl.maximum(full_hi, 0) // BLOCK) * BLOCK
    f1 = tl.maximum(tl.minimum(f1, hi_up), f0)
    return a, f0, f1


@triton.jit
def _alibi_slope2(ALIBI, b64, alibi_sb, h, HAS_ALIBI: tl.constexpr):
    """Head ``h``'s ALiBi slope of sequence ``b64`` in base 2 (times log2e); 0.0 without ALiBi."""
    if HAS_ALIBI:
        slope2 = tl.load(ALIBI + b64 * alibi_sb + h) * LOG2E
    else:
        slope2 = 0.0
    return slope2


@triton.jit
def _query_block_keys(m0, offs_m, sq, sk, diag, win_left, win_right, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """The keys the query block [m0, m0 + BLOCK_M) (rows ``offs_m``) sees: (a, f0, f1, hi), its
    key range [a, hi) split by :func:`_block_split` around the interior blocks that every row
    sees whole, and (col_lo, col_hi), the key columns [col_lo[i], col_hi[i]) each row sees
    (rel <= win_left, -rel <= win_right and j < sk)."""
    m_last = tl.minimum(m0 + BLOCK_M, sq) - 1
    lo = tl.maximum(m0 + diag - win_left, 0)
    hi = tl.maximum(tl.minimum(m_last + diag + win_right + 1, sk), lo)
    full_lo = m0 + BLOCK_M - 1 + diag - win_left
    full_hi = tl.minimum(m0 + diag + win_right + 1, sk)
    a, f0, f1 = _block_split(lo, hi, full_lo, full_hi, BLOCK_N)
    col_lo = offs_m + diag - win_left
    col_hi = tl.minimum(offs_m + diag + win_right + 1, sk)
    return a, f0, f1, hi, col_lo, col_hi


@triton.jit
def _key_tile_scores(
    q, k_base, k_st, n, offs_m, offs_n, offs_d, mask_d, sk, diag, col_lo, col_hi, qk_scale, cap2, slope2,
    MASKED: tl.constexpr, SOFTCAP: tl.constexpr, HAS_ALIBI: tl.constexpr, PAD_D: tl.constexpr, PREC: tl.constexpr,
):
    """The key block at ``n`` against the query block ``q`` (rows ``offs_m``): (k, s, t, kmask, row),
    the key tile, its base-2 scores and tanh values (:func:`_scores`; MASKED: -inf outside
    [col_lo[i], col_hi[i])), the key bounds mask and ``n`` as int64."""
    cols = n + offs_n
    kmask = cols < sk
    row = tl.cast(n, tl.int64)
    k = _load_tile(k_base + row * k_st + offs_n[:, None] * k_st + offs_d[None, :], kmask, mask_d, MASKED, PAD_D)
    qk = tl.dot(q, tl.trans(k), input_precision=PREC)
    if HAS_ALIBI:
        rel = offs_m[:, None] + diag - cols[None, :]
    else:
        rel = 0  # unused by _scores
    s, t = _scores(qk, rel, qk_scale, cap2, slope2, SOFTCAP, HAS_ALIBI)
    if MASKED:
        vis = (cols[None, :] >= col_lo[:, None]) & (cols[None, :] < col_hi[:, None])
        s = tl.where(vis, s, float("-inf"))
    return k, s, t, kmask, row


# --- forward ----------------------------------------------------------------------
@triton.jit
def _fwd_tiles(
    acc, l_i, m_i, q, k_base, v_base, k_st, v_st, offs_m, offs_n, offs_d, offs_dv, mask_d, mask_dv,
    start, end, sk, diag, col_lo, col_hi, qk_scale, cap2, slope2,
    BLOCK_N: tl.constexpr, MASKED: tl.constexpr, SOFTCAP: tl.constexpr, HAS_ALIBI: tl.constexpr,
    PAD_D: tl.constexpr, PAD_DV: tl.constexpr, PREC: tl.constexpr,
):
    """Online-softmax steps over the key blocks [start, end). MASKED: row i sees key columns
    [col_lo[i], col_hi[i]) (window and key bounds folded into two per-row vectors, so the mask
    is two compares per element and no [BLOCK_M, BLOCK_N] int tensor stays live)."""
    for n in range(start, end, BLOCK_N):
        k, s, t, kmask, row = _key_tile_scores(q, k_base, k_st, n, offs_m, offs_n, offs_d, mask_d, sk, diag, col_lo,
                                               col_hi, qk_scale, cap2, slope2, MASKED, SOFTCAP, HAS_ALIBI, PAD_D, PREC)
        if MASKED:
            m_new = tl.maximum(m_i, tl.max(s, 1))
            m_use = tl.where(m_new == float("-inf"), 0.0, m_new)  # a row with nothing visible yet
        else:
            m_new = tl.maximum(m_i, tl.max(s, 1))
            m_use = m_new
        p = tl.exp2(s - m_use[:, None])
        alpha = tl.exp2(m_i - m_use)
        l_i = l_i * alpha + tl.sum(p, 1)
        v = _load_tile(v_base + row * v_st + offs_n[:, None] * v_st + offs_dv[None, :], kmask, mask_dv, MASKED, PAD_DV)
        acc = acc * alpha[:, None]
        acc = tl.dot(p.to(v.dtype), v, acc, input_precision=PREC)
        m_i = m_new
    return acc, l_i, m_i


@triton.jit
def attn_fwd_kernel(
    Q, K, V, O, LSE, CU_Q, CU_K, ALIBI,
    q_sb, q_st, q_sh,
    k_sb, k_st, k_sh,
    v_sb, v_st, v_sh,
    o_sb, o_st, o_sh,
    lse_sb, lse_sh,
    alibi_sb,
    seqlen_q, seqlen_k, group, win_left, win_right, qk_scale, cap2,
    HEAD_D: tl.constexpr, HEAD_DV: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr, IS_VARLEN: tl.constexpr, SOFTCAP: tl.constexpr,
    HAS_ALIBI: tl.constexpr, STORE_LSE: tl.constexpr, PREC: tl.constexpr,
):
    """Grid (cdiv(max_seqlen_q, BLOCK_M), Hq, B): one block of query rows of one head. Programs
    take the query blocks last first: under a causal mask the last blocks see the most keys, so
    the heaviest programs start first and the short ones fill the tail of the wave."""
    pid_m = tl.num_programs(0) - 1 - tl.program_id(0)
    h = tl.program_id(1)
    b = tl.program_id(2)
    q0, sq = _seq(CU_Q, b, seqlen_q, IS_VARLEN)
    k0, sk = _seq(CU_K, b, seqlen_k, IS_VARLEN)
    m0 = pid_m * BLOCK_M
    if m0 >= sq:
        return
    hk = h // group
    diag = sk - sq
    b64 = b.to(tl.int64)
    offs_m = m0 + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    mask_m = offs_m < sq
    mask_d = offs_d < HEAD_D
    mask_dv = offs_dv < HEAD_DV
    PAD_D: tl.constexpr = BLOCK_D != HEAD_D
    PAD_DV: tl.constexpr = BLOCK_DV != HEAD_DV

    q_row0 = (q0 + m0).to(tl.int64)
    q_ptrs = (Q + b64 * q_sb + q_row0 * q_st + h.to(tl.int64) * q_sh
              + tl.arange(0, BLOCK_M)[:, None] * q_st + offs_d[None, :])
    q = _load_tile(q_ptrs, mask_m, mask_d, True, PAD_D)
    k_base = K + b64 * k_sb + k0.to(tl.int64) * k_st + hk.to(tl.int64) * k_sh
    v_base = V + b64 * v_sb + k0.to(tl.int64) * v_st + hk.to(tl.int64) * v_sh

    slope2 = _alibi_slope2(ALIBI, b64, alibi_sb, h, HAS_ALIBI)
    a, f0, f1, hi, col_lo, col_hi = _query_block_keys(m0, offs_m, sq, sk, diag, win_left, win_right, BLOCK_M, BLOCK_N)

    acc = tl.zeros([BLOCK_M, BLOCK_DV], dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    acc, l_i, m_i = _fwd_tiles(acc, l_i, m_i, q, k_base, v_base, k_st, v_st, offs_m, offs_n, offs_d, offs_dv, mask_d, mask_dv,
                               a, f0, sk, diag, col_lo, col_hi, qk_scale, cap2, slope2,
                               BLOCK_N, True, SOFTCAP, HAS_ALIBI, PAD_D, PAD_DV, PREC)
    acc, l_i, m_i = _fwd_tiles(acc, l_i, m_i, q, k_base, v_base, k_st, v_st, offs_m, offs_n, offs_d, offs_dv, mask_d, mask_dv,
                               f0, f1, sk, diag, col_lo, col_hi, qk_scale, cap2, slope2,
                               BLOCK_N, False, SOFTCAP, HAS_ALIBI, PAD_D, PAD_DV, PREC)
    acc, l_i, m_i = _fwd_tiles(acc, l_i, m_i, q, k_base, v_base, k_st, v_st, offs_m, offs_n, offs_d, offs_dv, mask_d, mask_dv,
                               f1, hi, sk, diag, col_lo, col_hi, qk_scale, cap2, slope2,
                               BLOCK_N, True, SOFTCAP, HAS_ALIBI, PAD_D, PAD_DV, PREC)

    empty = l_i == 0.0
    l_safe = tl.where(empty, 1.0, l_i)
    out = acc / l_safe[:, None]
    o_ptrs = (O + b64 * o_sb + q_row0 * o_st + h.to(tl.int64) * o_sh
              + tl.arange(0, BLOCK_M)[:, None] * o_st + offs_dv[None, :])
    if PAD_DV:
        tl.store(o_ptrs, out.to(O.dtype.element_ty), mask=mask_m[:, None] & mask_dv[None, :])
    else:
        tl.store(o_ptrs, out.to(O.dtype.element_ty), mask=mask_m[:, None])
    if STORE_LSE:
        lse = tl.where(empty, float("inf"), (m_i + tl.log2(l_safe)) * LN2)
        lse_ptrs = LSE + b64 * lse_sb + h.to(tl.int64) * lse_sh + q_row0 + tl.arange(0, BLOCK_M)
        tl.store(lse_ptrs, lse, mask=mask_m)


# --- forward, dense case through TMA descriptors ---------------------------------------
@triton.jit
def _fwd_tma_tiles(
    acc, l_i, m_i, q, k_desc, v_desc, b, hk, offs_n, start, end, col_hi, qk_scale,
    BLOCK_N: tl.constexpr, HEAD_D: tl.constexpr, MASKED: tl.constexpr, RESCALE_TH: tl.constexpr,
):
    """Online-softmax steps over the key blocks [start, end) of :func:`attn_fwd_tma_kernel`.
    ``m_i`` is the running base-2 max (``qk_scale`` > 0 holds log2e, so ``max(qk) * qk_scale``
    is exactly ``max(qk * qk_scale)``: rounding is monotone) and ``qk * qk_scale - m`` one FMA.
    MASKED: row i sees key columns < col_hi[i] (the key bounds and, causal, the diagonal).

    RESCALE_TH > 0 (base-2 units): the accumulator, ``l_i`` and ``m_i`` are rescaled only when
    some row's max grew by more than RESCALE_TH in this block (one branch per block); otherwise
    the stale max stays, ``p`` may reach 2**RESCALE_TH and ``out = acc / l``, ``lse = m + log2(l)``
    are unchanged in exact arithmetic (the same relative roundings). 0: rescale every block."""
    for n in tl.range(start, end, BLOCK_N):
        k = k_desc.load([b, n, hk, 0]).reshape([BLOCK_N, HEAD_D])
        qk = tl.dot(q, tl.trans(k))
        if MASKED:
            qk = tl.where((n + offs_n)[None, :] < col_hi[:, None], qk, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(qk, 1) * qk_scale)
        if RESCALE_TH > 0:
            if tl.max(m_new - m_i, 0) > RESCALE_TH:  # the first block always: m_i is -inf there
                alpha = tl.exp2(m_i - m_new)
                acc = acc * alpha[:, None]
                l_i = l_i * alpha
                m_i = m_new
            p = tl.exp2(qk * qk_scale - m_i[:, None])
            l_i = l_i + tl.sum(p, 1)
        else:
            p = tl.exp2(qk * qk_scale - m_new[:, None])
            alpha = tl.exp2(m_i - m_new)
            l_i = l_i * alpha + tl.sum(p, 1)
            acc = acc * alpha[:, None]
            m_i = m_new
        v = v_desc.load([b, n, hk, 0]).reshape([BLOCK_N, HEAD_D])
        acc = tl.dot(p.to(v.dtype), v, acc)
    return acc, l_i, m_i


@triton.jit
def attn_fwd_tma_kernel(
    q_desc, k_desc, v_desc, o_desc, LSE,
    lse_sb, lse_sh,
    seqlen_q, seqlen_k, group, qk_scale,
    HEAD_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr,
    STORE_LSE: tl.constexpr, RESCALE_TH: tl.constexpr,
):
    """:func:`attn_fwd_kernel` for the common dense case only: no varlen, softcap, ALiBi or
    window, head_dim == head_dim_v == HEAD_D (a power of two: no padding), 16-bit inputs, no mask
    (any seqlen_q, seqlen_k) or causal with seqlen_q == seqlen_k (bottom-right = top-left, diag = 0).

    q/k/v/out are read and written through host-side TMA tensor descriptors of their 4-D
    (B, S, H, D) views (strides as given, unit last stride), blocks [1, BLOCK_M or BLOCK_N, 1,
    HEAD_D]: one box is one head's tile, rows past the sequence read 0 and are not written (the
    descriptor's shape clips them), so no load or store needs a mask. ``lse`` (B, H, S) float32
    by pointers, natural log, as the pointer kernel. Every row sees key 0, so no row is empty
    and no -inf guard is needed.

    Grid (cdiv(seqlen_q, BLOCK_M), Hq, B), the last query blocks first. Causal: the key blocks
    before the one holding m0 need no mask, the rest up to m0 + BLOCK_M are masked (the
    diagonal); non-causal: all blocks unmasked but a partial last one."""
    pid_m = tl.num_programs(0) - 1 - tl.program_id(0)
    h = tl.program_id(1)
    b = tl.program_id(2)
    hk = h // group
    m0 = pid_m * BLOCK_M
    offs_m = m0 + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    q = q_desc.load([b, m0, h, 0]).reshape([BLOCK_M, HEAD_D])
    if CAUSAL:  # seqlen_q == seqlen_k
        hi = tl.minimum(m0 + BLOCK_M, seqlen_k)
        f1 = (m0 // BLOCK_N) * BLOCK_N
        col_hi = tl.minimum(offs_m + 1, seqlen_k)
    else:
        hi = seqlen_k
        f1 = (seqlen_k // BLOCK_N) * BLOCK_N
        col_hi = tl.zeros([BLOCK_M], dtype=tl.int32) + seqlen_k

    acc = tl.zeros([BLOCK_M, HEAD_D], dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    acc, l_i, m_i = _fwd_tma_tiles(acc, l_i, m_i, q, k_desc, v_desc, b, hk, offs_n, 0, f1, col_hi, qk_scale,
                                   BLOCK_N, HEAD_D, False, RESCALE_TH)
    acc, l_i, m_i = _fwd_tma_tiles(acc, l_i, m_i, q, k_desc, v_desc, b, hk, offs_n, f1, hi, col_hi, qk_scale,
                                   BLOCK_N, HEAD_D, True, RESCALE_TH)

    out = acc / l_i[:, None]
    o_desc.store([b, m0, h, 0], out.to(o_desc.dtype).reshape([1, BLOCK_M, 1, HEAD_D]))
    if STORE_LSE:
        lse = (m_i + tl.log2(l_i)) * LN2
        lse_ptrs = LSE + b.to(tl.int64) * lse_sb + h.to(tl.int64) * lse_sh + offs_m
        tl.store(lse_ptrs, lse, mask=offs_m < seqlen_q)


# --- varlen tails -------------------------------------------------------------------
@triton.jit
def attn_fill_tail_kernel(
    X, x_st, x_sh, CU, batch, total, n_heads, n_cols, value,
    BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """Rows [cu[batch], total) of every head of X (packed rows past the last sequence) := value.

    Grid (cdiv(total, BLOCK_R),); programs wholly before cu[batch] exit at once.
    """
    r0 = tl.program_id(0) * BLOCK_R
    start = tl.load(CU + batch)
    if r0 + BLOCK_R <= start:
        return
    rows = r0 + tl.arange(0, BLOCK_R)
    cols = tl.arange(0, BLOCK_C)
    mask = ((rows >= start) & (rows < total))[:, None] & (cols < n_cols)[None, :]
    ptrs = X + rows.to(tl.int64)[:, None] * x_st + cols[None, :]
    fill = (tl.zeros([BLOCK_R, BLOCK_C], tl.float32) + value).to(X.dtype.element_ty)
    for _ in range(0, n_heads):
        tl.store(ptrs, fill, mask=mask)
        ptrs += x_sh


# --- backward -------------------------------------------------------------------------
@triton.jit
def attn_bwd_preprocess_kernel(
    O, DO, DELTA, CU_Q,
    o_sb, o_st, o_sh,
    do_sb, do_st, do_sh,
    d_sb, d_sh,
    seqlen_q,
    HEAD_DV: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_DV: tl.constexpr, IS_VARLEN: tl.constexpr,
):
    """delta = rowsum(dout * out) in float32, laid out like lse. Grid (cdiv(max_sq, BLOCK_M), Hq, B)."""
    pid_m = tl.program_id(0)
    h = tl.program_id(1).to(tl.int64)
    b = tl.program_id(2)
    q0, sq = _seq(CU_Q, b, seqlen_q, IS_VARLEN)
    m0 = pid_m * BLOCK_M
    if m0 >= sq:
        return
    b64 = b.to(tl.int64)
    row0 = (q0 + m0).to(tl.int64)
    r = tl.arange(0, BLOCK_M)
    offs_dv = tl.arange(0, BLOCK_DV)
    mask = ((m0 + r) < sq)[:, None] & (offs_dv < HEAD_DV)[None, :]
    o = tl.load(O + b64 * o_sb + row0 * o_st + h * o_sh + r[:, None] * o_st + offs_dv[None, :], mask=mask, other=0.0)
    do = tl.load(DO + b64 * do_sb + row0 * do_st + h * do_sh + r[:, None] * do_st + offs_dv[None, :],
                 mask=mask, other=0.0)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)
    tl.store(DELTA + b64 * d_sb + h * d_sh + row0 + r, delta, mask=(m0 + r) < sq)


@triton.jit
def _bwd_kv_tiles(
    dk, dv, k, v, q_base, do_base, lse_base, delta_base, q_st, do_st, offs_m, cols, offs_d, offs_dv,
    mask_d, mask_dv, start, end, sq, diag, row_lo, row_hi, qk_scale, cap2, slope2,
    BLOCK_M: tl.constexpr, MASKED: tl.constexpr, SOFTCAP: tl.constexpr, HAS_ALIBI: tl.constexpr,
    PAD_D: tl.constexpr, PAD_DV: tl.constexpr, PREC: tl.constexpr,
):
    """dv += P^T dO and dk += dS^T Q (unscaled) over the query blocks [start, end). MASKED: key
    column j is seen by query rows [row_lo[j], row_hi[j]) (window, key and query bounds folded
    into two per-key vectors). Only one [BLOCK_N, BLOCK_M] float tensor besides the dot being
    formed is live at a time: the softcap factor is folded into P^T right after dv uses it."""
    for m in range(start, end, BLOCK_M):
        rows = m + offs_m
        rmask = rows < sq
        row = tl.cast(m, tl.int64)
        q = _load_tile(q_base + row * q_st + offs_m[:, None] * q_st + offs_d[None, :], rmask, mask_d, MASKED, PAD_D)
        if MASKED:
            lse2 = tl.load(lse_base + row + offs_m, mask=rmask, other=0.0) * LOG2E
        else:
            lse2 = tl.load(lse_base + row + offs_m) * LOG2E
        qkT = tl.dot(k, tl.trans(q), input_precision=PREC)  # [BLOCK_N, BLOCK_M]
        if HAS_ALIBI:
            rel = rows[None, :] + diag - cols[:, None]
        else:
            rel = 0  # unused by _scores
        s, t = _scores(qkT, rel, qk_scale, cap2, slope2, SOFTCAP, HAS_ALIBI)
        if MASKED:
            vis = (rows[None, :] >= row_lo[:, None]) & (rows[None, :] < row_hi[:, None])
            s = tl.where(vis, s, float("-inf"))
        pT = tl.exp2(s - lse2[None, :])
        do = _load_tile(do_base + row * do_st + offs_m[:, None] * do_st + offs_dv[None, :], rmask, mask_dv, MASKED,
                        PAD_DV)
        dv = tl.dot(pT.to(do.dtype), do, dv, input_precision=PREC)
        if SOFTCAP:
            pT = pT * (1.0 - t * t)  # dS = P (dP - delta) tanh'(.): t dies here
        if MASKED:
            delta = tl.load(delta_base + row + offs_m, mask=rmask, other=0.0)
        else:
            delta = tl.load(delta_base + row + offs_m)
        dpT = tl.dot(v, tl.trans(do), input_precision=PREC)
        dsT = pT * (dpT - delta[None, :])
        dk = tl.dot(dsT.to(q.dtype), q, dk, input_precision=PREC)
    return dk, dv


@triton.jit
def attn_bwd_dkdv_kernel(
    Q, K, V, DO, LSE, DELTA, DK, DV, CU_Q, CU_K, ALIBI,
    q_sb, q_st, q_sh,
    k_sb, k_st, k_sh,
    v_sb, v_st, v_sh,
    do_sb, do_st, do_sh,
    dk_sb, dk_st, dk_sh,
    dv_sb, dv_st, dv_sh,
    lse_sb, lse_sh,
    alibi_sb,
    seqlen_q, seqlen_k, group, win_left, win_right, qk_scale, cap2, grad_scale,
    HEAD_D: tl.constexpr, HEAD_DV: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr, IS_VARLEN: tl.constexpr, SOFTCAP: tl.constexpr,
    HAS_ALIBI: tl.constexpr, PREC: tl.constexpr,
):
    """Grid (cdiv(max_seqlen_k, BLOCK_N), Hk, B): one block of keys of one kv head, summing over
    the group's query heads and the query blocks that see it (no atomics). Every key row of the
    sequence is written (0 where no query sees it)."""
    pid_n = tl.program_id(0)
    hk = tl.program_id(1)
    b = tl.program_id(2)
    q0, sq = _seq(CU_Q, b, seqlen_q, IS_VARLEN)
    k0, sk = _seq(CU_K, b, seqlen_k, IS_VARLEN)
    n0 = pid_n * BLOCK_N
    if n0 >= sk:
        return
    diag = sk - sq
    b64 = b.to(tl.int64)
    offs_m = tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    cols = n0 + offs_n
    mask_n = cols < sk
    mask_d = offs_d < HEAD_D
    mask_dv = offs_dv < HEAD_DV
    PAD_D: tl.constexpr = BLOCK_D != HEAD_D
    PAD_DV: tl.constexpr = BLOCK_DV != HEAD_DV

    k_row0 = (k0 + n0).to(tl.int64)
    k = _load_tile(K + b64 * k_sb + k_row0 * k_st + hk.to(tl.int64) * k_sh + offs_n[:, None] * k_st + offs_d[None, :],
                   mask_n, mask_d, True, PAD_D)
    v = _load_tile(V + b64 * v_sb + k_row0 * v_st + hk.to(tl.int64) * v_sh + offs_n[:, None] * v_st
                   + offs_dv[None, :], mask_n, mask_dv, True, PAD_DV)

    # query rows that see any key of this block, and the interior query blocks that see it whole
    n_last = tl.minimum(n0 + BLOCK_N, sk) - 1
    lo = tl.maximum(n0 - diag - win_right, 0)
    hi = tl.maximum(tl.minimum(n_last - diag + win_left + 1, sq), lo)
    full_lo = n0 + BLOCK_N - 1 - diag - win_right
    full_hi = tl.where(n0 + BLOCK_N <= sk, tl.minimum(n0 - diag + win_left + 1, sq), 0)
    a, f0, f1 = _block_split(lo, hi, full_lo, full_hi, BLOCK_M)
    # query rows each key column is seen by: rel <= win_left, -rel <= win_right, i < sq (none past sk)
    row_lo = cols - diag - win_right
    row_hi = tl.where(mask_n, tl.minimum(cols - diag + win_left + 1, sq), 0)

    dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_DV], dtype=tl.float32)
    q_row0 = q0.to(tl.int64)
    for g in range(0, group):
        h = (hk * group + g).to(tl.int64)
        q_base = Q + b64 * q_sb + q_row0 * q_st + h * q_sh
        do_base = DO + b64 * do_sb + q_row0 * do_st + h * do_sh
        lse_base = LSE + b64 * lse_sb + h * lse_sh + q_row0
        delta_base = DELTA + b64 * lse_sb + h * lse_sh + q_row0
        slope2 = _alibi_slope2(ALIBI, b64, alibi_sb, h, HAS_ALIBI)
        dk, dv = _bwd_kv_tiles(dk, dv, k, v, q_base, do_base, lse_base, delta_base, q_st, do_st, offs_m, cols,
                               offs_d, offs_dv, mask_d, mask_dv, a, f0, sq, diag, row_lo, row_hi, qk_scale, cap2, slope2,
                               BLOCK_M, True, SOFTCAP, HAS_ALIBI, PAD_D, PAD_DV, PREC)
        dk, dv = _bwd_kv_tiles(dk, dv, k, v, q_base, do_base, lse_base, delta_base, q_st, do_st, offs_m, cols,
                               offs_d, offs_dv, mask_d, mask_dv, f0, f1, sq, diag, row_lo, row_hi, qk_scale, cap2, slope2,
                               BLOCK_M, False, SOFTCAP, HAS_ALIBI, PAD_D, PAD_DV, PREC)
        dk, dv = _bwd_kv_tiles(dk, dv, k, v, q_base, do_base, lse_base, delta_base, q_st, do_st, offs_m, cols,
                               offs_d, offs_dv, mask_d, mask_dv, f1, hi, sq, diag, row_lo, row_hi, qk_scale, cap2, slope2,
                               BLOCK_M, True, SOFTCAP, HAS_ALIBI, PAD_D, PAD_DV, PREC)

    dk = dk * grad_scale
    dk_ptrs = DK + b64 * dk_sb + k_row0 * dk_st + hk.to(tl.int64) * dk_sh + offs_n[:, None] * dk_st + offs_d[None, :]
    dv_ptrs = DV + b64 * dv_sb + k_row0 * dv_st + hk.to(tl.int64) * dv_sh + offs_n[:, None] * dv_st + offs_dv[None, :]
    tl.store(dk_ptrs, dk.to(DK.dtype.element_ty), mask=mask_n[:, None] & mask_d[None, :])
    tl.store(dv_ptrs, dv.to(DV.dtype.element_ty), mask=mask_n[:, None] & mask_dv[None, :])


@triton.jit
def _bwd_q_tiles(
    dq, q, do, lse2, delta, k_base, v_base, k_st, v_st, offs_m, offs_n, offs_d, offs_dv, mask_d, mask_dv,
    start, end, sk, diag, col_lo, col_hi, qk_scale, cap2, slope2,
    BLOCK_N: tl.constexpr, MASKED: tl.constexpr, SOFTCAP: tl.constexpr, HAS_ALIBI: tl.constexpr,
    PAD_D: tl.constexpr, PAD_DV: tl.constexpr, PREC: tl.constexpr,
):
    """dq += dS K over the key blocks [start, end); masks as in :func:`_fwd_tiles`."""
    for n in range(start, end, BLOCK_N):
        k, s, t, kmask, row = _key_tile_scores(q, k_base, k_st, n, offs_m, offs_n, offs_d, mask_d, sk, diag, col_lo,
                                               col_hi, qk_scale, cap2, slope2, MASKED, SOFTCAP, HAS_ALIBI, PAD_D, PREC)
        p = tl.exp2(s - lse2[:, None])
        if SOFTCAP:
            p = p * (1.0 - t * t)  # dS = P (dP - delta) tanh'(.): t dies before dP is formed
        v = _load_tile(v_base + row * v_st + offs_n[:, None] * v_st + offs_dv[None, :], kmask, mask_dv, MASKED, PAD_DV)
        dp = tl.dot(do, tl.trans(v), input_precision=PREC)
        ds = p * (dp - delta[:, None])
        dq = tl.dot(ds.to(k.dtype), k, dq, input_precision=PREC)
    return dq


@triton.jit
def attn_bwd_dq_kernel(
    Q, K, V, DO, LSE, DELTA, DQ, CU_Q, CU_K, ALIBI,
    q_sb, q_st, q_sh,
    k_sb, k_st, k_sh,
    v_sb, v_st, v_sh,
    do_sb, do_st, do_sh,
    dq_sb, dq_st, dq_sh,
    lse_sb, lse_sh,
    alibi_sb,
    seqlen_q, seqlen_k, group, win_left, win_right, qk_scale, cap2, grad_scale,
    HEAD_D: tl.constexpr, HEAD_DV: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr, IS_VARLEN: tl.constexpr, SOFTCAP: tl.constexpr,
    HAS_ALIBI: tl.constexpr, PREC: tl.constexpr,
):
    """Grid (cdiv(max_seqlen_q, BLOCK_M), Hq, B): dq of one block of query rows of one head; the
    last query blocks (the most keys under a causal mask) first, as in the forward."""
    pid_m = tl.num_programs(0) - 1 - tl.program_id(0)
    h = tl.program_id(1)
    b = tl.program_id(2)
    q0, sq = _seq(CU_Q, b, seqlen_q, IS_VARLEN)
    k0, sk = _seq(CU_K, b, seqlen_k, IS_VARLEN)
    m0 = pid_m * BLOCK_M
    if m0 >= sq:
        return
    hk = h // group
    diag = sk - sq
    b64 = b.to(tl.int64)
    h64 = h.to(tl.int64)
    r = tl.arange(0, BLOCK_M)
    offs_m = m0 + r
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    mask_m = offs_m < sq
    mask_d = offs_d < HEAD_D
    mask_dv = offs_dv < HEAD_DV
    PAD_D: tl.constexpr = BLOCK_D != HEAD_D
    PAD_DV: tl.constexpr = BLOCK_DV != HEAD_DV

    q_row0 = (q0 + m0).to(tl.int64)
    q = _load_tile(Q + b64 * q_sb + q_row0 * q_st + h64 * q_sh + r[:, None] * q_st + offs_d[None, :],
                   mask_m, mask_d, True, PAD_D)
    do = _load_tile(DO + b64 * do_sb + q_row0 * do_st + h64 * do_sh + r[:, None] * do_st + offs_dv[None, :],
                    mask_m, mask_dv, True, PAD_DV)
    lse2 = tl.load(LSE + b64 * lse_sb + h64 * lse_sh + q_row0 + r, mask=mask_m, other=0.0) * LOG2E
    delta = tl.load(DELTA + b64 * lse_sb + h64 * lse_sh + q_row0 + r, mask=mask_m, other=0.0)
    k_base = K + b64 * k_sb + k0.to(tl.int64) * k_st + hk.to(tl.int64) * k_sh
    v_base = V + b64 * v_sb + k0.to(tl.int64) * v_st + hk.to(tl.int64) * v_sh
    slope2 = _alibi_slope2(ALIBI, b64, alibi_sb, h, HAS_ALIBI)
    a, f0, f1, hi, col_lo, col_hi = _query_block_keys(m0, offs_m, sq, sk, diag, win_left, win_right, BLOCK_M, BLOCK_N)

    dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    dq = _bwd_q_tiles(dq, q, do, lse2, delta, k_base, v_base, k_st, v_st, offs_m, offs_n, offs_d, offs_dv, mask_d, mask_dv,
                      a, f0, sk, diag, col_lo, col_hi, qk_scale, cap2, slope2,
                      BLOCK_N, True, SOFTCAP, HAS_ALIBI, PAD_D, PAD_DV, PREC)
    dq = _bwd_q_tiles(dq, q, do, lse2, delta, k_base, v_base, k_st, v_st, offs_m, offs_n, offs_d, offs_dv, mask_d, mask_dv,
                      f0, f1, sk, diag, col_lo, col_hi, qk_scale, cap2, slope2,
                      BLOCK_N, False, SOFTCAP, HAS_ALIBI, PAD_D, PAD_DV, PREC)
    dq = _bwd_q_tiles(dq, q, do, lse2, delta, k_base, v_base, k_st, v_st, offs_m, offs_n, offs_d, offs_dv, mask_d, mask_dv,
                      f1, hi, sk, diag, col_lo, col_hi, qk_scale, cap2, slope2,
                      BLOCK_N, True, SOFTCAP, HAS_ALIBI, PAD_D, PAD_DV, PREC)
    dq = dq * grad_scale
    dq_ptrs = DQ + b64 * dq_sb + q_row0 * dq_st + h64 * dq_sh + r[:, None] * dq_st + offs_d[None, :]
    tl.store(dq_ptrs, dq.to(DQ.dtype.element_ty), mask=mask_m[:, None] & mask_d[None, :])
