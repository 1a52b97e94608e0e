"""Paged-KV attention kernel bodies: a split-K forward over a block-table cache, and the LSE combine.

Only ``@triton.jit`` functions live here; grids, block sizes and launch parameters are chosen
by ``vllm_rocm_accel.backends.triton.paged_attention``. The masking / score helpers are part 1's
(``kernels/triton/attention.py``: :func:`_scores`, :func:`_block_split`, :func:`_load_tile`),
so the two families cannot drift apart.

Semantics (the paged contract, ``vllm_rocm_accel/checks/paged_attention.py``), per sequence
``b`` of ``sq = cu_q[b+1] - cu_q[b]`` queries and ``sk = seqused_k[b]`` keys, query row ``i``
(within the sequence), key ``j`` and ``rel = i + sk - sq - j``: as part 1 (bottom-right causal,
window, softcap, ALiBi, GQA ``h -> h // GROUP``). Key ``j`` lives in slot ``j % block_size`` of
cache block ``block_table[b, j // block_size]``.

Program layout. Grid ``(cdiv(max_seqlen_q, BLOCK_Q) * G, Hk, B)``: one program takes BLOCK_Q
query rows of one sequence for *all* GROUP query heads of one kv head, packed into the M
dimension (``BLOCK_M = BLOCK_Q * GROUP`` rows, M row ``r`` = query row ``r // GROUP``, head
``hk * GROUP + r % GROUP``), so K/V tiles are read once per kv-head group. A decode (sq == 1)
is then one program per (kv head, sequence, split) whose M rows are the group's heads. Rows
``r >= BLOCK_Q * GROUP`` (GROUP not dividing BLOCK_M) and query rows past ``sq`` are padding:
computed on zero queries, never stored.

Keys are fetched BLOCK_N at a time through the block table. ONE_BLOCK (``block_size %
BLOCK_N == 0``): a tile lies in one cache block, so one table entry gives its base; otherwise
each key row looks its block up (any block size, BLOCK_N larger than the block: the tile
spans several blocks). Only table entries of keys ``< sk`` are read.

Split-K. The keys a program's rows can see, ``[lo, hi)``, are cut at the BLOCK_N-aligned
``a <= lo`` into G pieces of ``chunk = BLOCK_N * cdiv(cdiv(hi - a, BLOCK_N), G)`` keys; split
``s`` takes ``[a + s * chunk, a + (s + 1) * chunk)`` clipped to ``[lo, hi)`` (so a sliding
window splits its own range, not the whole sequence), with part 1's three-phase loop (masked
edges, unmasked interior) inside the piece. G == 1 (SPLIT off) writes the normalized output
and lse straight to out/lse. G > 1 writes each split's *normalized* partial output (float32)
and its natural-log lse (``-inf`` for a split that saw no key; its partial output is then 0)
into a workspace, and :func:`paged_attn_combine_kernel` merges them.

FP8 caches: the raw FP8 values go into the dot products (converted to q's dtype: exact for
e4m3fn/e4m3fnuz in fp16/bf16/fp32) and the scales are folded in where they cost nothing and
round least: ``k_scale`` into the score scale, ``v_scale`` into the final normalization
(``out = v_scale * sum p v8 / l``), which is ``key = fp8 * k_scale`` / ``value = fp8 * v_scale``
exactly. SW_FP8 decodes the bits from a uint8 view with integer arithmetic
(:func:`_fp8_to_f32`; the interpreter, and formats the GPU's Triton cannot convert natively);
otherwise Triton's own conversion. FP8 NaN codes are not special-cased (caches hold clamped
values).
"""

import triton
import triton.language as tl

from .attention import LN2, LOG2E, _block_split, _load_tile, _scores


# --- helpers ------------------------------------------------------------------------------
@triton.jit
def _fp8_to_f32(bits, FNUZ: tl.constexpr):
    """Exact float32 value of e4m3fn (bias 7) / e4m3fnuz (bias 8) codes given as uint8.

    Normals: the float32 with exponent ``e - bias`` and the 3 mantissa bits on top; subnormals
    (e == 0): ``m * 2**(1 - bias - 3)``, an exact product."""
    BIAS: tl.constexpr = 8 if FNUZ else 7
    SUB: tl.constexpr = 0.0009765625 if FNUZ else 0.001953125  # 2**(-2 - BIAS)
    b = bits.to(tl.int32)
    e = (b >> 3) & 15
    m = b & 7
    normal = (((e + (127 - BIAS)) << 23) | (m << 20)).to(tl.float32, bitcast=True)
    mag = tl.where(e == 0, m.to(tl.float32) * SUB, normal)
    return tl.where((b & 0x80) != 0, -mag, mag)


@triton.jit
def _dequant(x, like, FP8: tl.constexpr, SW_FP8: tl.constexpr, FNUZ: tl.constexpr):
    """A loaded K/V tile in ``like``'s dtype (q's; FP8: the raw values, scales applied elsewhere)."""
    if FP8:
        if SW_FP8:
            x = _fp8_to_f32(x, FNUZ)
    return x.to(like.dtype)


@triton.jit
def _paged_rows(BT_ROW, bt_st, n, cols, kmask, block_size, k_sb, k_st, v_sb, v_st,
                ONE_BLOCK: tl.constexpr, MASKED: tl.constexpr):
    """int64 element offsets (K, V) of the key rows ``cols = n + arange(BLOCK_N)`` of one sequence."""
    if ONE_BLOCK:
        blk = tl.load(BT_ROW + (n // block_size) * bt_st).to(tl.int64)
        slot = cols - (n // block_size) * block_size
        k_off = blk * k_sb + slot * k_st
        v_off = blk * v_sb + slot * v_st
    else:
        if MASKED:
            blk = tl.load(BT_ROW + (cols // block_size) * bt_st, mask=kmask, other=0).to(tl.int64)
        else:
            blk = tl.load(BT_ROW + (cols // block_size) * bt_st).to(tl.int64)
        slot = cols % block_size
        k_off = blk * k_sb + slot * k_st
        v_off = blk * v_sb + slot * v_st
    return k_off, v_off


@triton.jit
def _paged_tiles(
    acc, l_i, m_i, q, k_head, v_head, BT_ROW, bt_st, block_size, k_sb, k_st, v_sb, v_st,
    qrow, offs_n, offs_d, offs_dv, mask_d, mask_dv, start, end, sk, diag, win_left, win_right,
    qk_scale, cap2, slope2,
    BLOCK_N: tl.constexpr, MASKED: tl.constexpr, SOFTCAP: tl.constexpr, HAS_ALIBI: tl.constexpr,
    PAD_D: tl.constexpr, PAD_DV: tl.constexpr, PREC: tl.constexpr, ONE_BLOCK: tl.constexpr,
    FP8: tl.constexpr, SW_FP8: tl.constexpr, FNUZ: tl.constexpr,
):
    """Online-softmax accumulation over the key tiles [start, end) (BLOCK_N-aligned) of one sequence.

    ``qrow`` [BLOCK_M]: each M row's query row; ``slope2`` [BLOCK_M, 1] (ALiBi, base 2)."""
    for n in range(start, end, BLOCK_N):
        cols = n + offs_n
        kmask = cols < sk
        k_off, v_off = _paged_rows(BT_ROW, bt_st, n, cols, kmask, block_size, k_sb, k_st, v_sb, v_st,
                                   ONE_BLOCK, MASKED)
        k = _load_tile(k_head + k_off[:, None] + offs_d[None, :], kmask, mask_d, MASKED, PAD_D)
        qk = tl.dot(q, tl.trans(_dequant(k, q, FP8, SW_FP8, FNUZ)), input_precision=PREC)
        rel = qrow[:, None] + diag - cols[None, :]
        s, _t = _scores(qk, rel, qk_scale, cap2, slope2, SOFTCAP, HAS_ALIBI)
        if MASKED:
            s = tl.where(kmask[None, :] & (rel <= win_left) & (-rel <= win_right), s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        if MASKED:
            m_new_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # nothing visible yet in this row
        else:
            m_new_safe = m_new
        alpha = tl.exp2(m_i - m_new_safe)
        p = tl.exp2(s - m_new_safe[:, None])
        v = _load_tile(v_head + v_off[:, None] + offs_dv[None, :], kmask, mask_dv, MASKED, PAD_DV)
        acc = tl.dot(p.to(q.dtype), _dequant(v, q, FP8, SW_FP8, FNUZ), acc * alpha[:, None],
                     input_precision=PREC)
        l_i = l_i * alpha + tl.sum(p, 1)
        m_i = m_new
    return acc, l_i, m_i


# --- forward ----------------------------------------------------------------------------------
@triton.jit
def paged_attn_fwd_kernel(
    Q, K, V, O, LSE, CU_Q, SEQ_K, BT, ALIBI, K_SCALE, V_SCALE,
    q_st, q_sh,
    k_sb, k_st, k_sh,
    v_sb, v_st, v_sh,
    o_ss, o_st, o_sh,
    lse_ss, lse_sh,
    bt_sb, bt_st,
    alibi_sb,
    block_size, num_splits, win_left, win_right, qk_scale, cap2,
    GROUP: tl.constexpr, HEAD_D: tl.constexpr, HEAD_DV: tl.constexpr, BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr, SOFTCAP: tl.constexpr,
    HAS_ALIBI: tl.constexpr, FP8: tl.constexpr, SW_FP8: tl.constexpr, FNUZ: tl.constexpr,
    ONE_BLOCK: tl.constexpr, SPLIT: tl.constexpr, STORE_LSE: tl.constexpr, PREC: tl.constexpr,
):
    """Grid (cdiv(max_seqlen_q, BLOCK_M // GROUP) * num_splits, Hk, B).

    SPLIT: O/LSE are the float32 workspace (split s at ``s * o_ss`` / ``s * lse_ss``; lse -inf
    for no key); else out (q's dtype) and lse (+inf for no key; STORE_LSE)."""
    BLOCK_Q: tl.constexpr = BLOCK_M // GROUP
    pid = tl.program_id(0)
    hk = tl.program_id(1)
    b = tl.program_id(2)
    split = pid % num_splits
    m0 = (pid // num_splits) * BLOCK_Q
    q0 = tl.load(CU_Q + b)
    sq = tl.load(CU_Q + b + 1) - q0
    if m0 >= sq:
        return
    sk = tl.load(SEQ_K + b)
    diag = sk - sq
    b64 = b.to(tl.int64)

    r = tl.arange(0, BLOCK_M)
    qrow = m0 + r // GROUP
    h = hk * GROUP + r % GROUP
    mask_m = (r < BLOCK_Q * GROUP) & (qrow < sq)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    mask_d = offs_d < HEAD_D
    mask_dv = offs_dv < HEAD_DV
    PAD_D: tl.constexpr = BLOCK_D != HEAD_D
    PAD_DV: tl.constexpr = BLOCK_DV != HEAD_DV

    row0 = (q0 + m0).to(tl.int64)  # the block's first packed row
    rows_q = (r // GROUP) * q_st + h * q_sh
    q = _load_tile(Q + row0 * q_st + rows_q[:, None] + offs_d[None, :], mask_m, mask_d, True, PAD_D)
    k_head = K + hk.to(tl.int64) * k_sh
    v_head = V + hk.to(tl.int64) * v_sh
    BT_ROW = BT + b64 * bt_sb
    if FP8:
        qk_scale = qk_scale * tl.load(K_SCALE)
    if HAS_ALIBI:
        slope2 = (tl.load(ALIBI + b64 * alibi_sb + h) * LOG2E)[:, None]
    else:
        slope2 = 0.0

    # keys any row of the block sees; this split's piece of them; the interior every row sees whole
    m_last = tl.minimum(m0 + BLOCK_Q, sq) - 1
    lo = tl.maximum(m0 + diag - win_left, 0)
    hi = tl.maximum(tl.minimum(m_last + diag + win_right + 1, sk), lo)
    if SPLIT:
        base = (lo // BLOCK_N) * BLOCK_N
        chunk = tl.cdiv(tl.cdiv(hi - base, BLOCK_N), num_splits) * BLOCK_N
        piece = base + split * chunk
        lo = tl.maximum(lo, piece)
        hi = tl.maximum(tl.minimum(hi, piece + chunk), lo)
    full_lo = m0 + BLOCK_Q - 1 + diag - win_left
    full_hi = tl.minimum(m0 + diag + win_right + 1, sk)
    a, f0, f1 = _block_split(lo, hi, full_lo, full_hi, BLOCK_N)

    acc = tl.zeros([BLOCK_M, BLOCK_DV], dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    acc, l_i, m_i = _paged_tiles(acc, l_i, m_i, q, k_head, v_head, BT_ROW, bt_st, block_size, k_sb, k_st, v_sb, v_st,
                                 qrow, offs_n, offs_d, offs_dv, mask_d, mask_dv, a, f0, sk, diag, win_left, win_right,
                                 qk_scale, cap2, slope2, BLOCK_N, True, SOFTCAP, HAS_ALIBI, PAD_D, PAD_DV, PREC,
                                 ONE_BLOCK, FP8, SW_FP8, FNUZ)
    acc, l_i, m_i = _paged_tiles(acc, l_i, m_i, q, k_head, v_head, BT_ROW, bt_st, block_size, k_sb, k_st, v_sb, v_st,
                                 qrow, offs_n, offs_d, offs_dv, mask_d, mask_dv, f0, f1, sk, diag, win_left, win_right,
                                 qk_scale, cap2, slope2, BLOCK_N, False, SOFTCAP, HAS_ALIBI, PAD_D, PAD_DV, PREC,
                                 ONE_BLOCK, FP8, SW_FP8, FNUZ)
    acc, l_i, m_i = _paged_tiles(acc, l_i, m_i, q, k_head, v_head, BT_ROW, bt_st, block_size, k_sb, k_st, v_sb, v_st,
                                 qrow, offs_n, offs_d, offs_dv, mask_d, mask_dv, f1, hi, sk, diag, win_left, win_right,
                                 qk_scale, cap2, slope2, BLOCK_N, True, SOFTCAP, HAS_ALIBI, PAD_D, PAD_DV, PREC,
                                 ONE_BLOCK, FP8, SW_FP8, FNUZ)

    empty = l_i == 0.0
    l_safe = tl.where(empty, 1.0, l_i)
    if FP8:
        out = acc * (tl.load(V_SCALE) / l_safe)[:, None]
    else:
        out = acc / l_safe[:, None]
    split64 = split.to(tl.int64)
    rows_o = (r // GROUP) * o_st + h * o_sh
    o_ptrs = O + split64 * o_ss + row0 * o_st + rows_o[:, None] + offs_dv[None, :]
    if PAD_DV:
        tl.store(o_ptrs, out.to(O.dtype.element_ty), mask=mask_m[:, None] & mask_dv[None, :])
    else:
        tl.store(o_ptrs, out.to(O.dtype.element_ty), mask=mask_m[:, None])
    lse_ptrs = LSE + split64 * lse_ss + h.to(tl.int64) * lse_sh + row0 + r // GROUP
    lse = (m_i + tl.log2(l_safe)) * LN2
    if SPLIT:
        tl.store(lse_ptrs, tl.where(empty, float("-inf"), lse), mask=mask_m)
    elif STORE_LSE:
        tl.store(lse_ptrs, tl.where(empty, float("inf"), lse), mask=mask_m)


# --- split combine ---------------------------------------------------------------------------
@triton.jit
def paged_attn_combine_kernel(
    OP, LSEP, O, LSE, CU_Q, batch,
    op_ss, op_st, op_sh,
    lsep_ss, lsep_sh,
    o_st, o_sh, lse_sh,
    num_splits,
    HEAD_DV: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_DV: tl.constexpr, STORE_LSE: tl.constexpr,
):
    """out = sum_s exp(lse_s - lse) * out_s, lse = logsumexp_s lse_s, for packed rows < cu_q[batch].

    Grid (cdiv(total_q, BLOCK_R), Hq). Splits with lse_s = -inf weigh 0; a row with no key in
    any split gets out 0 and lse +inf. Pass 1 finds max_s lse_s and the sum of exp(lse_s - max);
    pass 2 sums the weighted partial outputs (float32 throughout)."""
    r0 = tl.program_id(0) * BLOCK_R
    h = tl.program_id(1).to(tl.int64)
    end = tl.load(CU_Q + batch)
    if r0 >= end:
        return
    rows = r0 + tl.arange(0, BLOCK_R)
    rmask = rows < end
    cols = tl.arange(0, BLOCK_DV)
    omask = rmask[:, None] & (cols < HEAD_DV)[None, :]
    lse_row = LSEP + h * lsep_sh + rows
    mx = tl.full([BLOCK_R], float("-inf"), tl.float32)
    tot = tl.zeros([BLOCK_R], tl.float32)
    for s in range(0, num_splits):
        ls = tl.load(lse_row + tl.cast(s, tl.int64) * lsep_ss, mask=rmask, other=float("-inf"))
        mx_new = tl.maximum(mx, ls)
        safe = tl.where(mx_new == float("-inf"), 0.0, mx_new)
        tot = tot * tl.exp(mx - safe) + tl.exp(ls - safe)
        mx = mx_new
    seen = tot > 0.0
    lse = tl.where(seen, tl.where(seen, mx, 0.0) + tl.log(tl.where(seen, tot, 1.0)), float("inf"))
    acc = tl.zeros([BLOCK_R, BLOCK_DV], tl.float32)
    o_rows = OP + rows.to(tl.int64)[:, None] * op_st + h * op_sh + cols[None, :]
    for s in range(0, num_splits):
        s64 = tl.cast(s, tl.int64)
        w = tl.exp(tl.load(lse_row + s64 * lsep_ss, mask=rmask, other=float("-inf")) - lse)
        part = tl.load(o_rows + s64 * op_ss, mask=omask, other=0.0)
        acc += w[:, None] * part
    out_ptrs = O + rows.to(tl.int64)[:, None] * o_st + h * o_sh + cols[None, :]
    tl.store(out_ptrs, acc.to(O.dtype.element_ty), mask=omask)
    if STORE_LSE:
        tl.store(LSE + h * lse_sh + rows, lse, mask=rmask)
