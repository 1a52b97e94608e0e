"""FP8 quantization kernel bodies: per tensor, per token (row) and per token group.

Only ``@triton.jit`` functions live here; grids, block sizes and launch parameters are
chosen by ``vllm_rocm_accel.backends.triton.quant``.

Semantics (``vllm_rocm_accel.fp8``; reference ``backends/torch/quant.py``), float32 throughout::

    scale = max(amax, AMAX_FLOOR) / FP8_MAX          # amax = max |x| over the tensor/row/group
    q     = clamp(x / scale, -FP8_MAX, FP8_MAX)      # rounded to nearest even into the FP8 format

* ``x / scale`` is an IEEE division (``div_rn``): Triton's plain ``/`` on fp32 lowers to an
  approximate division on NVIDIA, which would move values across FP8 rounding boundaries.
* RCP_SCALE: the scale is ``max(amax, FLOOR) * fp32(1 / FP8_MAX)`` instead of a division.
  torch's reference divides a GPU tensor by a Python scalar exactly that way (a CUDA/HIP
  tensor over a CPU scalar is computed as a product with its float32 reciprocal), so the
  launcher sets it on GPUs and clears it on the CPU, where torch divides: either way the
  scales are bit-identical to the reference on the same device (they differ by <= 1 ulp).
* RCP_DIV (the whole-row and chunked per-token kernels, the dynamic per-tensor quantize kernel,
  and the fused norm + quant ones): how ``x / scale`` is taken, the bits of ``div_rn`` for 0-2 (3
  below): 0 per element (a reciprocal, two refinements, a range check and a slow-path branch: ~10
  instructions on sm_90); 1 through the row's reciprocal and two exact corrections
  (:func:`_div_rcp`, ~8 with its special-case select); 2 from a two-term reciprocal of the row and
  one correction (:func:`_div_split`, 4),
  valid where no finite scale meets an infinite or overflowing quotient, i.e. not with a
  ``scale_ub`` (the launchers use 1 there) or a static per-tensor scale (the launcher uses 0, or
  the guarded split of :func:`_div_static` through ANY_SCALE).
  -0.0 keeps its sign (0x80) with 2 as well: its negations are written ``v * -1.0``, a true
  negation (an x of -0.0 came out as +0 on the H200 while they were ``-v``, which Triton 3.6
  lowers to ``0 - v``; tests/gpu/test_quant_gpu.py checks 0x80 for per-token, per-token-group and
  per-tensor quant). The other tests count both zeros as one code.
  3 (``"mul"``, the one choice that is *not* bit for bit): ``x * rh``, the product with the row's
  correctly rounded reciprocal, one FP32 operation an element, as vLLM's and AITER's quant kernels
  take it (they multiply by an inverted scale). The product is within about 1.5 float32 ulp of the
  quotient, so a code differs from ``div_rn``'s by one FP8 step where the quotient lies that close
  to a rounding midpoint of the format, never more; zeros keep their sign. How often: bf16 rows
  put many quotients exactly at midpoints, so it depends on the scale's form: with RCP_SCALE's
  scales (GPUs) 2 codes of 16.8M random normal bf16 values (4096 x 4096, numpy float32), with the
  CPU's divided scales 6648 of them. The same validity as 2 (the launchers use 1 with a
  ``scale_ub``).
* SAT_CVT (the same kernels): no clamp before the native conversion. Without a ``scale_ub``
  |quotient| <= FP8_MAX (1 + 2**-23) (scale = amax / FP8_MAX up to two float32 roundings),
  which a round-to-nearest conversion maps to FP8_MAX whether or not it saturates (on NVIDIA it
  is ``cvt.rn.satfinite``), so the codes are the clamp's, except that a NaN quotient encodes as
  NaN instead of the clamp's +-FP8_MAX (as torch's reference does). The launchers never set it
  with SW_FP8 (the integer encoder needs the clamp) or a scale_ub; with a static per-tensor scale
  only where the conversion saturates (config ``static_sat_cvt``: NVIDIA's ``cvt.rn.satfinite``
  takes any quotient past FP8_MAX, inf included, to +-FP8_MAX, as the clamp does).
* SW_FP8: the FP8 bits are produced by :func:`_fp8_bits` (integer round-to-nearest-even)
  and stored through a uint8 pointer, instead of Triton's conversion to the FP8 type. Used
  where Triton has no native conversion (``e4m3fnuz`` on NVIDIA) or an inexact one (the
  interpreter rounds halves up and truncates subnormals). FNUZ selects the encoding.
* NaN inputs are not propagated (GPU max/min drop NaN); inf gives inf scales, as torch.

Rows are addressed as ``base + row * row_stride + col`` (last-dim stride 1), with separate
row strides for x and q, so row-strided views (``big[:, :H]``) need no copy. IDX64: row
offsets in int64; the launcher sets it only when an offset can reach 2**31.
"""

import triton
import triton.language as tl


# --- shared pieces ------------------------------------------------------------------------------
@triton.jit
def _scale(amax, FP8_MAX: tl.constexpr, AMAX_FLOOR: tl.constexpr, RCP_SCALE: tl.constexpr):
    """float32 scale of a float32 amax (see RCP_SCALE in the module docstring)."""
    a = tl.maximum(amax, AMAX_FLOOR)
    if RCP_SCALE:
        s = a * (1.0 / FP8_MAX)
    else:
        s = tl.math.div_rn(a, FP8_MAX)
    return s


@triton.jit
def _fp8_bits(v, FNUZ: tl.constexpr):
    """Round float32 ``v`` (finite, |v| <= the format's max) to e4m3fn / e4m3fnuz bits (uint8), RNE.

    e4m3: 4 exponent bits (bias 7; fnuz: bias 8), 3 mantissa bits, subnormals below 2**(1 - bias).
    Normals round the 23-bit mantissa to 3 bits by integer add-and-shift, the carry running
    into the exponent; subnormals shift the 24-bit significand (implicit 1 included) right by
    21 - bias - e bits, with the same rounding. fnuz has no negative zero (0x80 is its NaN).
    """
    BIAS: tl.constexpr = 8 if FNUZ else 7
    bits = v.to(tl.int32, bitcast=True)
    sign = (bits >> 24) & 0x80
    a = bits & 0x7FFFFFFF
    e = (a >> 23) - 127  # unbiased float32 exponent
    normal = ((a + 0x7FFFF + ((a >> 20) & 1)) >> 20) - ((127 - BIAS) << 3)
    full = (a & 0x7FFFFF) | 0x800000
    r = tl.minimum(tl.maximum(21 - BIAS - e, 1), 25)  # >= 25: rounds to 0 (full < 2**24)
    sub = (full + ((1 << (r - 1)) - 1) + ((full >> r) & 1)) >> r
    code = tl.where(e >= 1 - BIAS, normal, sub)
    if FNUZ:
        sign = tl.where(code == 0, 0, sign)
    return (code | sign).to(tl.uint8)


@triton.jit
def _encode(quotient, q_ptr, FP8_MAX: tl.constexpr, SW_FP8: tl.constexpr, FNUZ: tl.constexpr):
    """The value to store through ``q_ptr`` for the float32 quotient x / scale: clamped, in the FP8
    format (or its bits)."""
    v = tl.clamp(quotient, -FP8_MAX, FP8_MAX)
    if SW_FP8:
        out = _fp8_bits(v, FNUZ)
    else:
        out = v.to(q_ptr.dtype.element_ty)
    return out


@triton.jit
def _quantize(xf, scale, q_ptr, FP8_MAX: tl.constexpr, SW_FP8: tl.constexpr, FNUZ: tl.constexpr):
    """The value to store through ``q_ptr``: clamp(x / scale) in the FP8 format (or its bits)."""
    return _encode(tl.math.div_rn(xf, scale), q_ptr, FP8_MAX, SW_FP8, FNUZ)


@triton.jit
def _div_rcp(xf, scale, rcp):
    """``div_rn(xf, scale)`` bit for bit, from ``rcp = div_rn(1, scale)`` computed once per row: a
    product and two exact-remainder corrections (Markstein: q1 is faithful, and a faithful
    quotient corrected with the correctly rounded reciprocal rounds correctly), 5 FP32 ops per
    element instead of the full division (reciprocal, refinement, range check and slow path).

    Scales are >= AMAX_FLOOR / FP8_MAX, so the remainders of every quotient that can reach a
    nonzero FP8 code are far from float32 underflow. The cases the corrections mishandle are
    the ones where the plain product is already the IEEE quotient: x = +-0 (the corrections
    would lose the sign), scale = inf (rcp = 0), x = +-inf or NaN (remainders NaN); they take
    the product ``q0``.
    """
    q0 = xf * rcp
    q1 = tl.fma(tl.fma(q0 * -1.0, scale, xf), rcp, q0)  # ``* -1.0``: see _div_split
    r1 = tl.fma(q1 * -1.0, scale, xf)
    q2 = tl.fma(r1, rcp, q1)
    return tl.where((xf == 0) | (r1 != r1), q0, q2)


@triton.jit
def _split_rcp(scale, ROWS: tl.constexpr):
    """(s, rh, rd, rl) of a [ROWS] column of scales for :func:`_div_split`: ``rh = div_rn(1, s)``,
    ``rd`` the float32 at or just below 1 / s (``rh``, or its predecessor when ``rh > 1 / s``: the
    sign of the exact remainder ``1 - s * rh`` says which), and ``rl = (1 - s * rd) * rd >= 0``, so
    that ``rd + rl`` is 1 / s to about 2**-46. Infinite scales (amax = inf) become s = 1 with
    rh = rd = rl = 0, for which :func:`_div_split` gives x * 0, as ``x / inf`` (``+-0``, NaN for
    infinite x)."""
    inf = scale == float("inf")
    s = tl.where(inf, 1.0, scale)
    rh = tl.math.div_rn(tl.full([ROWS], 1.0, tl.float32), s)
    below = (rh.to(tl.int32, bitcast=True) - 1).to(tl.float32, bitcast=True)  # rh > 0 and normal
    rd = tl.where(tl.fma(-s, rh, 1.0) < 0.0, below, rh)
    rl = tl.fma(-s, rd, 1.0) * rd
    return s, tl.where(inf, 0.0, rh), tl.where(inf, 0.0, rd), tl.where(inf, 0.0, rl)


@triton.jit
def _div_split(xf, s, rh, rd, rl):
    """``div_rn(xf, s)`` bit for bit in 4 FP32 operations, from :func:`_split_rcp`'s row constants:
    q0 = xf * (rd + rl) rounded once is within 0.5 ulp + 2**-46 relative of the quotient, so
    faithful, and Markstein's correction with the correctly rounded reciprocal ``rh``
    (``q0 + r * rh``, ``r = xf - q0 * s`` exact) rounds it correctly. Signed zeros come out right
    because ``rd, rl >= 0`` give q0 the sign of xf and the remainder is formed as
    ``q0 * s - xf`` and subtracted (``-0 + -0`` stays ``-0``).

    Valid for finite xf with a finite scale whose quotient does not overflow (the quantizers'
    |quotient| <= FP8_MAX (1 + 2**-23) without a scale_ub) and for NaN xf (NaN); the correction
    goes wrong only where the remainder (~2**-23 |xf|) underflows, i.e. for |xf| < 2**-103 and so
    quotients below ~2**-54 here (scales >= AMAX_FLOOR / FP8_MAX), which encode as a zero of the
    right sign all the same. Checked bit for bit against IEEE float32 division (numpy, with the
    interpreter's fused fma) on 8e8 random (x, scale) pairs, float32 and bf16 x, scales 2**-48 to
    2**120, and on every finite bf16 x against 3000 scales: no difference outside that range.
    """
    q0 = tl.fma(xf, rd, xf * rl)
    # ``v * -1.0``, not ``-v``: Triton 3.6 lowers ``-v`` to ``0 - v`` (+0 for v = +0, so no fneg),
    # one FADD an operand; LLVM turns ``v * -1.0`` into an fneg that ptxas folds into the FFMA
    # (sm_90 SASS: per_token_quant at H = 4096, 482 -> 418 instructions a thread; the same bits)
    r = tl.fma(q0, s, xf * -1.0)
    return tl.fma(r * -1.0, rh, q0)


STATIC_SPLIT_MIN = tl.constexpr(2.0**-60)  # static scales :func:`_div_static` takes (others: div_rn)
STATIC_SPLIT_MAX = tl.constexpr(2.0**60)


@triton.jit
def _div_static(xf, s, rh, rd, rl):
    """``div_rn(xf, s)`` for a static scale ``s`` in [STATIC_SPLIT_MIN, STATIC_SPLIT_MAX] (``s, rh, rd,
    rl``: its :func:`_split_rcp` constants), any float32 ``xf``, up to the value of quotients past
    FP8_MAX, which the clamp or the saturating conversion take to +-FP8_MAX either way:
    :func:`_div_split`, except where that is NaN for a non-NaN xf: an infinite xf (the remainder is
    inf - inf), or a first product ``q0`` that overflows, i.e. |xf| / s >= ~2**128, so
    |xf| >= 2**68 (s >= 2**-60): there xf itself, a stand-in past any FP8 max with the quotient's
    sign (a NaN xf stays NaN). Below overflow the split's conditions hold for every quotient that
    can reach a nonzero FP8 code: the remainder underflows only for |xf| < 2**-102, i.e. quotients
    below 2**-42, and ``rd``, ``rl`` and ``xf * rl`` are normal numbers wherever the quotient is
    above that; a finite q0 makes the remainder finite (it is exact, ~2**-24 |xf|). 2 operations an
    element more than the split (a NaN test and a select), against ~20 more for the per-element IEEE
    division on sm_90."""
    q = _div_split(xf, s, rh, rd, rl)
    return tl.where(q != q, xf, q)


@triton.jit
def _quantize_row(xf, sdiv, rh, rd, rl, q_ptr, FP8_MAX: tl.constexpr, SW_FP8: tl.constexpr, FNUZ: tl.constexpr,
                  RCP_DIV: tl.constexpr, SAT_CVT: tl.constexpr):
    """:func:`_quantize` with the row constants of :func:`_row_scales` at hand, by RCP_DIV (the
    module docstring): 2 :func:`_div_split` (``sdiv`` is the finite stand-in scale), 1
    :func:`_div_rcp` through ``rh``, 0 per element: the same bits every way; 3 the product with
    ``rh`` (within one FP8 step, module docstring). SAT_CVT: no clamp before the native
    conversion (module docstring)."""
    if RCP_DIV == 3:
        v = xf * rh
    elif RCP_DIV == 2:
        v = _div_split(xf, sdiv, rh, rd, rl)
    elif RCP_DIV:
        v = _div_rcp(xf, sdiv, rh)
    else:
        v = tl.math.div_rn(xf, sdiv)
    return _store_value(v, q_ptr, FP8_MAX, SW_FP8, FNUZ, SAT_CVT)


@triton.jit
def _store_value(v, q_ptr, FP8_MAX: tl.constexpr, SW_FP8: tl.constexpr, FNUZ: tl.constexpr, SAT_CVT: tl.constexpr):
    """The value to store through ``q_ptr`` for the float32 quotient ``v``: :func:`_encode`'s, or with
    SAT_CVT the native conversion alone (module docstring)."""
    if SAT_CVT:
        out = v.to(q_ptr.dtype.element_ty)
    else:
        out = _encode(v, q_ptr, FP8_MAX, SW_FP8, FNUZ)
    return out


@triton.jit
def _row_block(pid, ROWS: tl.constexpr, IDX64: tl.constexpr):
    """Rows (or tiles) [pid * ROWS, (pid + 1) * ROWS) of program ``pid``, int64 when IDX64."""
    if IDX64:
        rows = pid.to(tl.int64) * ROWS + tl.arange(0, ROWS).to(tl.int64)
    else:
        rows = pid * ROWS + tl.arange(0, ROWS)
    return rows


@triton.jit
def _chunk(c: tl.constexpr, j, row_mask, n_cols, CHUNK: tl.constexpr, N_CHUNKS: tl.constexpr, EVEN: tl.constexpr):
    """(cols, mask) of chunk ``c`` (``j = arange(0, CHUNK)``) of a [ROWS, N_CHUNKS * CHUNK] block:
    only the last chunk masks columns, none when EVEN (CHUNK divides n_cols)."""
    cols = c * CHUNK + j
    if EVEN or c < N_CHUNKS - 1:
        mask = row_mask[:, None]
    else:
        mask = row_mask[:, None] & (cols < n_cols)[None, :]
    return cols, mask


@triton.jit
def _load_masked(ptrs, mask, EVEN: tl.constexpr):
    """``tl.load(ptrs, mask, other=0)``; unmasked when EVEN (then ``mask`` is None: Triton takes no
    ``other`` without a mask, while ``tl.store`` takes ``mask=None`` as it is)."""
    if EVEN:
        v = tl.load(ptrs)
    else:
        v = tl.load(ptrs, mask=mask, other=0.0)
    return v


@triton.jit
def _load_hinted(ptrs, mask, POLICY: tl.constexpr):
    """tl.load with L1 eviction policy POLICY: 0 normal, 1 evict_last, 2 evict_first."""
    if POLICY == 1:
        v = tl.load(ptrs, mask=mask, other=0.0, eviction_policy="evict_last")
    elif POLICY == 2:
        v = tl.load(ptrs, mask=mask, other=0.0, eviction_policy="evict_first")
    else:
        v = tl.load(ptrs, mask=mask, other=0.0)
    return v


@triton.jit
def _row_scales(amax, s_ptr, rows, s_stride, row_mask, ROWS: tl.constexpr, FP8_MAX: tl.constexpr,
                AMAX_FLOOR: tl.constexpr, RCP_SCALE: tl.constexpr, RCP_DIV: tl.constexpr):
    """The scales of ``rows`` from their float32 ``amax``, stored at ``s_ptr[row * s_stride]``, and
    the row constants of :func:`_quantize_row` as [ROWS, 1] columns (sdiv, rh, rd, rl): RCP_DIV 2
    and 3 :func:`_split_rcp`'s; 1 (scale, div_rn(1, scale), unused, unused); 0 (scale, unused x 3)."""
    scale = _scale(amax, FP8_MAX, AMAX_FLOOR, RCP_SCALE)
    tl.store(s_ptr + rows * s_stride, scale, mask=row_mask)
    return _row_consts(scale, ROWS, RCP_DIV)


@triton.jit
def _row_consts(scale, ROWS: tl.constexpr, RCP_DIV: tl.constexpr):
    """:func:`_quantize_row`'s constants (sdiv, rh, rd, rl) of a [ROWS] column of float32 scales, as
    [ROWS, 1] columns (see :func:`_row_scales`)."""
    if RCP_DIV >= 2:  # 3 reads only sdiv and rh
        sdiv, rh, rd, rl = _split_rcp(scale, ROWS)
    elif RCP_DIV:
        sdiv, rh, rd, rl = scale, tl.math.div_rn(tl.full([ROWS], 1.0, tl.float32), scale), scale, scale
    else:
        sdiv, rh, rd, rl = scale, scale, scale, scale  # only sdiv is read
    return sdiv[:, None], rh[:, None], rd[:, None], rl[:, None]


@triton.jit
def _scale_consts(scale_ptr, ROWS: tl.constexpr, RCP_DIV: tl.constexpr):
    """:func:`_row_consts` of the one scale at ``scale_ptr``, loaded as a [ROWS] column."""
    return _row_consts(tl.load(scale_ptr + tl.zeros([ROWS], dtype=tl.int32)).to(tl.float32), ROWS, RCP_DIV)


@triton.jit
def _group_tiles(pid, n_tiles, groups_per_row, GROUP: tl.constexpr, BLOCK_G: tl.constexpr, TILES: tl.constexpr,
                 IDX64: tl.constexpr):
    """Program ``pid``'s TILES consecutive (token, group) tiles as a [TILES, BLOCK_G] block: tile t
    is token t // groups_per_row, group t % groups_per_row. Returns (tok, grp, col, tile_mask,
    mask): the tiles' tokens and groups, the block's x/q columns and masks (columns past GROUP
    masked)."""
    t = _row_block(pid, TILES, IDX64)
    tile_mask = t < n_tiles
    tok = t // groups_per_row
    grp = t - tok * groups_per_row
    j = tl.arange(0, BLOCK_G)
    col = (grp * GROUP)[:, None] + j[None, :]
    if BLOCK_G == GROUP:
        mask = tile_mask[:, None]
    else:
        mask = tile_mask[:, None] & (j < GROUP)[None, :]
    return tok, grp, col, tile_mask, mask


@triton.jit
def _quantize_groups(y, q_ptr, q_row_stride, s_ptr, s_token_stride, s_group_stride, tok, grp, col, tile_mask, mask,
                     FP8_MAX: tl.constexpr, AMAX_FLOOR: tl.constexpr, RCP_SCALE: tl.constexpr, SW_FP8: tl.constexpr,
                     FNUZ: tl.constexpr, TILES: tl.constexpr, RCP_DIV: tl.constexpr, SAT_CVT: tl.constexpr):
    """Each tile's scale (of its row of float32 ``y``) to ``s_ptr[tok * s_token_stride + grp *
    s_group_stride]`` and its q to ``q_ptr + tok * q_row_stride + col`` (tiles of :func:`_group_tiles`).
    RCP_DIV / SAT_CVT as in the per-token kernels (module docstring), with each group's scale in
    the role of a row's: its reciprocal constants once per tile (a group's scale comes from its
    amax, so no quotient overflows, the condition of RCP_DIV 2 and SAT_CVT)."""
    scale = _scale(tl.max(tl.abs(y), axis=1), FP8_MAX, AMAX_FLOOR, RCP_SCALE)
    tl.store(s_ptr + tok * s_token_stride + grp * s_group_stride, scale, mask=tile_mask)
    if RCP_DIV or SAT_CVT:
        sdiv, rh, rd, rl = _row_consts(scale, TILES, RCP_DIV)
        q = _quantize_row(y, sdiv, rh, rd, rl, q_ptr, FP8_MAX, SW_FP8, FNUZ, RCP_DIV, SAT_CVT)
    else:
        q = _quantize(y, scale[:, None], q_ptr, FP8_MAX, SW_FP8, FNUZ)
    tl.store(q_ptr + (tok * q_row_stride)[:, None] + col, q, mask=mask)


# --- per tensor -------------------------------------------------------------------------------
@triton.jit
def amax_scale_kernel(
    x_ptr,
    x_row_stride,
    scale_ptr,
    n_rows,
    n_cols,
    n_tiles,
    ROWS: tl.constexpr,
    BLOCK_N: tl.constexpr,
    FP8_MAX: tl.constexpr,
    AMAX_FLOOR: tl.constexpr,
    RCP_SCALE: tl.constexpr,
    IDX64: tl.constexpr,
):
    """Dynamic per-tensor scale: ``scale_ptr`` (one float32, zeroed before) <- scale(max |x|).

    Each program takes [ROWS, BLOCK_N] tiles pid, pid + grid, ... (row block major), keeps an
    elementwise running max, and atomically maxes *its own scale* into ``scale_ptr``: the
    scale is a non-decreasing function of amax, so the max of the programs' scales is the
    scale of the global amax, and no second pass over the scalar is needed.
    """
    pid = tl.program_id(0)
    n_progs = tl.num_programs(0)
    n_col_blocks = tl.cdiv(n_cols, BLOCK_N)
    acc = tl.zeros([ROWS, BLOCK_N], dtype=tl.float32)
    for t in range(pid, n_tiles, n_progs):
        rb = t // n_col_blocks
        cb = t - rb * n_col_blocks
        rows = _row_block(rb, ROWS, IDX64)
        if IDX64:  # a flat tile's columns reach numel
            cols = cb.to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N).to(tl.int64)
        else:
            cols = cb * BLOCK_N + tl.arange(0, BLOCK_N)
        mask = (rows < n_rows)[:, None] & (cols < n_cols)[None, :]
        x = tl.load(x_ptr + rows[:, None] * x_row_stride + cols[None, :], mask=mask, other=0.0)
        acc = tl.maximum(acc, tl.abs(x.to(tl.float32)))
    amax = tl.max(tl.max(acc, axis=1), axis=0)
    tl.atomic_max(scale_ptr, _scale(amax, FP8_MAX, AMAX_FLOOR, RCP_SCALE))


@triton.jit
def quant_with_scale_kernel(
    x_ptr,
    x_row_stride,
    q_ptr,
    q_row_stride,
    scale_ptr,
    scale_out_ptr,
    n_rows,
    n_cols,
    WRITE_SCALE: tl.constexpr,
    ROWS: tl.constexpr,
    BLOCK_N: tl.constexpr,
    FP8_MAX: tl.constexpr,
    SW_FP8: tl.constexpr,
    FNUZ: tl.constexpr,
    IDX64: tl.constexpr,
    RCP_DIV: tl.constexpr,
    SAT_CVT: tl.constexpr,
    REVERSE: tl.constexpr,
    ANY_SCALE: tl.constexpr,
    EVEN: tl.constexpr,
):
    """``q <- quantize(x, *scale_ptr)`` over one [ROWS, BLOCK_N] tile per program (1-D grid,
    row block major); EVEN: ROWS divides n_rows and BLOCK_N divides n_cols, so no tile is masked.
    A dense tensor comes as one row of all its elements (the launcher's flat tiles). Static
    scales: WRITE_SCALE makes program 0 copy the scale to ``scale_out_ptr`` (a different buffer
    from the one read, so no program reads a half-written value); dynamic ones were written by
    :func:`amax_scale_kernel` and are only read here.

    ANY_SCALE (static scales only, with RCP_DIV and REVERSE off): the bits of ``div_rn``, through
    :func:`_div_static` where the scale allows it (a uniform branch per program), per element
    otherwise. SAT_CVT with a static scale (the launcher sets it only where the family's native
    conversion saturates, config ``static_sat_cvt``): no clamp, the conversion takes any quotient
    past FP8_MAX, inf included, to +-FP8_MAX as the clamp does; a NaN quotient gives NaN, as torch's
    reference does, where the clamp gives +-FP8_MAX.

    For dynamic scales only (the launcher keeps them off with a static scale, which may be any
    float and so meet overflowing quotients or an underflowing remainder):

    * RCP_DIV / SAT_CVT as in the per-token kernels (module docstring), with the tensor's one scale
      loaded into a [ROWS] column, so its reciprocal constants (:func:`_row_consts`) are computed
      once per program: the bits of ``div_rn`` and the clamp (RCP_DIV 3 aside: within one FP8
      step, module docstring);
    * REVERSE: program p takes tile n_tiles - 1 - p, so the tiles read first are the last ones the
      amax kernel's programs (tiles p, p + G, ...) read, the likeliest to be still in L2.
    """
    n_col_blocks = tl.cdiv(n_cols, BLOCK_N)
    pid = tl.program_id(0)
    if REVERSE:
        tile = tl.num_programs(0) - 1 - pid
    else:
        tile = pid
    pid_r = tile // n_col_blocks
    pid_c = tile - pid_r * n_col_blocks
    scale = tl.load(scale_ptr).to(tl.float32)
    if WRITE_SCALE:
        if pid == 0:
            tl.store(scale_out_ptr, scale)
    rows = _row_block(pid_r, ROWS, IDX64)
    if IDX64:  # a flat tile's columns reach numel
        cols = pid_c.to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N).to(tl.int64)
    else:
        cols = pid_c * BLOCK_N + tl.arange(0, BLOCK_N)
    x_ptrs = x_ptr + rows[:, None] * x_row_stride + cols[None, :]
    q_ptrs = q_ptr + rows[:, None] * q_row_stride + cols[None, :]
    if EVEN:
        mask = None
    else:
        mask = (rows < n_rows)[:, None] & (cols < n_cols)[None, :]
    x = _load_masked(x_ptrs, mask, EVEN)
    if ANY_SCALE:
        if (scale >= STATIC_SPLIT_MIN) & (scale <= STATIC_SPLIT_MAX):  # NaN, <= 0 and inf fail: per element
            sdiv, rh, rd, rl = _scale_consts(scale_ptr, ROWS, 2)
            v = _div_static(x.to(tl.float32), sdiv, rh, rd, rl)
        else:
            v = tl.math.div_rn(x.to(tl.float32), scale)
        q = _store_value(v, q_ptr, FP8_MAX, SW_FP8, FNUZ, SAT_CVT)
    elif RCP_DIV:
        sdiv, rh, rd, rl = _scale_consts(scale_ptr, ROWS, RCP_DIV)
        q = _quantize_row(x.to(tl.float32), sdiv, rh, rd, rl, q_ptr, FP8_MAX, SW_FP8, FNUZ, RCP_DIV, SAT_CVT)
    else:
        q = _store_value(tl.math.div_rn(x.to(tl.float32), scale), q_ptr, FP8_MAX, SW_FP8, FNUZ, SAT_CVT)
    tl.store(q_ptrs, q, mask=mask)


# --- per token ----------------------------------------------------------------------------------
@triton.jit
def per_token_quant_kernel(
    x_ptr,
    x_row_stride,
    q_ptr,
    q_row_stride,
    s_ptr,
    s_stride,
    ub_ptr,
    n_rows,
    n_cols,
    HAS_UB: tl.constexpr,
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
):
    """Single pass: a [ROWS, BLOCK_N] tile holds ROWS whole rows (BLOCK_N >= n_cols).

    Row amax (capped by ``*ub_ptr`` when HAS_UB) -> scale ``s_ptr[row * s_stride]`` -> q
    (RCP_DIV: how x / scale is taken; SAT_CVT: no clamp; see the module docstring).
    """
    rows = _row_block(tl.program_id(0), ROWS, IDX64)
    cols = tl.arange(0, BLOCK_N)
    row_mask = rows < n_rows
    mask = row_mask[:, None] & (cols < n_cols)[None, :]
    x = tl.load(x_ptr + rows[:, None] * x_row_stride + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    amax = tl.max(tl.abs(x), axis=1)
    if HAS_UB:
        amax = tl.minimum(amax, tl.load(ub_ptr).to(tl.float32))
    sdiv, rh, rd, rl = _row_scales(amax, s_ptr, rows, s_stride, row_mask, ROWS, FP8_MAX, AMAX_FLOOR, RCP_SCALE,
                                   RCP_DIV)
    q = _quantize_row(x, sdiv, rh, rd, rl, q_ptr, FP8_MAX, SW_FP8, FNUZ, RCP_DIV, SAT_CVT)
    tl.store(q_ptr + rows[:, None] * q_row_stride + cols[None, :], q, mask=mask)


@triton.jit
def per_token_quant_chunked_kernel(
    x_ptr,
    x_row_stride,
    q_ptr,
    q_row_stride,
    s_ptr,
    s_stride,
    ub_ptr,
    n_rows,
    n_cols,
    HAS_UB: tl.constexpr,
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
    loops unrolled (``static_range``): every load of the amax pass is issued before the first
    max, so a program waits for one memory latency (the looped kernel's runtime loop waits once
    per chunk), and only the last chunk is masked (EVEN: CHUNK divides n_cols, none is), so a row
    like 7168 = 7 x 1024 leaves no lanes idle (next_power_of_2 padding would leave 12.5%). The
    quantize pass loads the chunks again: the program's own rows, just read, from L1 / L2
    (HINTS: the first loads ask L1 to keep the lines, the second to drop them).
    """
    rows = _row_block(tl.program_id(0), ROWS, IDX64)
    row_mask = rows < n_rows
    x_rows = x_ptr + rows[:, None] * x_row_stride
    q_rows = q_ptr + rows[:, None] * q_row_stride
    j = tl.arange(0, CHUNK)
    KEEP: tl.constexpr = 1 if HINTS else 0  # _load_hinted policies
    DROP: tl.constexpr = 2 if HINTS else 0
    acc = tl.zeros([ROWS, CHUNK], dtype=tl.float32)
    for c in tl.static_range(N_CHUNKS):
        cols, mask = _chunk(c, j, row_mask, n_cols, CHUNK, N_CHUNKS, EVEN)
        x = _load_hinted(x_rows + cols[None, :], mask, KEEP)
        acc = tl.maximum(acc, tl.abs(x.to(tl.float32)))
    amax = tl.max(acc, axis=1)
    if HAS_UB:
        amax = tl.minimum(amax, tl.load(ub_ptr).to(tl.float32))
    sdiv, rh, rd, rl = _row_scales(amax, s_ptr, rows, s_stride, row_mask, ROWS, FP8_MAX, AMAX_FLOOR, RCP_SCALE,
                                   RCP_DIV)
    for c in tl.static_range(N_CHUNKS):
        cols, mask = _chunk(c, j, row_mask, n_cols, CHUNK, N_CHUNKS, EVEN)
        x = _load_hinted(x_rows + cols[None, :], mask, DROP)
        q = _quantize_row(x.to(tl.float32), sdiv, rh, rd, rl, q_ptr, FP8_MAX, SW_FP8, FNUZ, RCP_DIV, SAT_CVT)
        tl.store(q_rows + cols[None, :], q, mask=mask)


@triton.jit
def _slot_load(x_rows, c: tl.constexpr, j, row_mask, n_cols, CHUNK: tl.constexpr, N_CHUNKS: tl.constexpr,
               EVEN: tl.constexpr):
    """Chunk ``c`` of the rows at ``x_rows`` as float32 (see :func:`_chunk`)."""
    cols, mask = _chunk(c, j, row_mask, n_cols, CHUNK, N_CHUNKS, EVEN)
    return tl.load(x_rows + cols[None, :], mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _slot_store(xf, c: tl.constexpr, q_rows, j, row_mask, n_cols, sdiv, rh, rd, rl, q_ptr, CHUNK: tl.constexpr,
                N_CHUNKS: tl.constexpr, EVEN: tl.constexpr, FP8_MAX: tl.constexpr, SW_FP8: tl.constexpr,
                FNUZ: tl.constexpr, RCP_DIV: tl.constexpr, SAT_CVT: tl.constexpr):
    """Quantize chunk ``c`` (float32 ``xf``) of the rows into ``q_rows`` (see :func:`_quantize_row`)."""
    cols, mask = _chunk(c, j, row_mask, n_cols, CHUNK, N_CHUNKS, EVEN)
    tl.store(q_rows + cols[None, :], _quantize_row(xf, sdiv, rh, rd, rl, q_ptr, FP8_MAX, SW_FP8, FNUZ, RCP_DIV,
                                                   SAT_CVT), mask=mask)


@triton.jit
def _store_slots(x0, x1, x2, x3, x4, x5, x6, x7, q_rows, j, row_mask, n_cols, sdiv, rh, rd, rl, q_ptr,
                 CHUNK: tl.constexpr, N_CHUNKS: tl.constexpr, EVEN: tl.constexpr, FP8_MAX: tl.constexpr,
                 SW_FP8: tl.constexpr, FNUZ: tl.constexpr, RCP_DIV: tl.constexpr, SAT_CVT: tl.constexpr):
    """The regs kernels' last pass: :func:`_slot_store` of slots 0 .. N_CHUNKS - 1 (float32 chunks
    of the rows; the slots past N_CHUNKS are placeholders, never read)."""
    _slot_store(x0, 0, q_rows, j, row_mask, n_cols, sdiv, rh, rd, rl, q_ptr, CHUNK, N_CHUNKS, EVEN, FP8_MAX, SW_FP8,
                FNUZ, RCP_DIV, SAT_CVT)
    if N_CHUNKS > 1:
        _slot_store(x1, 1, q_rows, j, row_mask, n_cols, sdiv, rh, rd, rl, q_ptr, CHUNK, N_CHUNKS, EVEN, FP8_MAX,
                    SW_FP8, FNUZ, RCP_DIV, SAT_CVT)
    if N_CHUNKS > 2:
        _slot_store(x2, 2, q_rows, j, row_mask, n_cols, sdiv, rh, rd, rl, q_ptr, CHUNK, N_CHUNKS, EVEN, FP8_MAX,
                    SW_FP8, FNUZ, RCP_DIV, SAT_CVT)
    if N_CHUNKS > 3:
        _slot_store(x3, 3, q_rows, j, row_mask, n_cols, sdiv, rh, rd, rl, q_ptr, CHUNK, N_CHUNKS, EVEN, FP8_MAX,
                    SW_FP8, FNUZ, RCP_DIV, SAT_CVT)
    if N_CHUNKS > 4:
        _slot_store(x4, 4, q_rows, j, row_mask, n_cols, sdiv, rh, rd, rl, q_ptr, CHUNK, N_CHUNKS, EVEN, FP8_MAX,
                    SW_FP8, FNUZ, RCP_DIV, SAT_CVT)
    if N_CHUNKS > 5:
        _slot_store(x5, 5, q_rows, j, row_mask, n_cols, sdiv, rh, rd, rl, q_ptr, CHUNK, N_CHUNKS, EVEN, FP8_MAX,
                    SW_FP8, FNUZ, RCP_DIV, SAT_CVT)
    if N_CHUNKS > 6:
        _slot_store(x6, 6, q_rows, j, row_mask, n_cols, sdiv, rh, rd, rl, q_ptr, CHUNK, N_CHUNKS, EVEN, FP8_MAX,
                    SW_FP8, FNUZ, RCP_DIV, SAT_CVT)
    if N_CHUNKS > 7:
        _slot_store(x7, 7, q_rows, j, row_mask, n_cols, sdiv, rh, rd, rl, q_ptr, CHUNK, N_CHUNKS, EVEN, FP8_MAX,
                    SW_FP8, FNUZ, RCP_DIV, SAT_CVT)


@triton.jit
def per_token_quant_regs_kernel(
    x_ptr,
    x_row_stride,
    q_ptr,
    q_row_stride,
    s_ptr,
    s_stride,
    ub_ptr,
    n_rows,
    n_cols,
    HAS_UB: tl.constexpr,
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
):
    """The chunked kernel's layout (ROWS whole rows as N_CHUNKS <= 8 [ROWS, CHUNK] tiles, only the
    last masked) with the chunks kept in registers between the amax and the quantize pass instead
    of loaded again: a row of 7 x 1024 is held without the whole-row kernel's padding to 8192 and
    read once. The chunks are named slots (x0 .. x7, each behind ``N_CHUNKS > c``: Triton has no
    list of tensors), so a program holds N_CHUNKS * CHUNK * ROWS / (32 * num_warps) floats a thread.
    """
    tl.static_assert(N_CHUNKS <= 8)
    rows = _row_block(tl.program_id(0), ROWS, IDX64)
    row_mask = rows < n_rows
    x_rows = x_ptr + rows[:, None] * x_row_stride
    q_rows = q_ptr + rows[:, None] * q_row_stride
    j = tl.arange(0, CHUNK)
    x0 = _slot_load(x_rows, 0, j, row_mask, n_cols, CHUNK, N_CHUNKS, EVEN)
    # placeholders for the slots past N_CHUNKS (never stored)
    x1, x2, x3, x4, x5, x6, x7 = x0, x0, x0, x0, x0, x0, x0
    acc = tl.abs(x0)
    if N_CHUNKS > 1:
        x1 = _slot_load(x_rows, 1, j, row_mask, n_cols, CHUNK, N_CHUNKS, EVEN)
        acc = tl.maximum(acc, tl.abs(x1))
    if N_CHUNKS > 2:
        x2 = _slot_load(x_rows, 2, j, row_mask, n_cols, CHUNK, N_CHUNKS, EVEN)
        acc = tl.maximum(acc, tl.abs(x2))
    if N_CHUNKS > 3:
        x3 = _slot_load(x_rows, 3, j, row_mask, n_cols, CHUNK, N_CHUNKS, EVEN)
        acc = tl.maximum(acc, tl.abs(x3))
    if N_CHUNKS > 4:
        x4 = _slot_load(x_rows, 4, j, row_mask, n_cols, CHUNK, N_CHUNKS, EVEN)
        acc = tl.maximum(acc, tl.abs(x4))
    if N_CHUNKS > 5:
        x5 = _slot_load(x_rows, 5, j, row_mask, n_cols, CHUNK, N_CHUNKS, EVEN)
        acc = tl.maximum(acc, tl.abs(x5))
    if N_CHUNKS > 6:
        x6 = _slot_load(x_rows, 6, j, row_mask, n_cols, CHUNK, N_CHUNKS, EVEN)
        acc = tl.maximum(acc, tl.abs(x6))
    if N_CHUNKS > 7:
        x7 = _slot_load(x_rows, 7, j, row_mask, n_cols, CHUNK, N_CHUNKS, EVEN)
        acc = tl.maximum(acc, tl.abs(x7))
    amax = tl.max(acc, axis=1)
    if HAS_UB:
        amax = tl.minimum(amax, tl.load(ub_ptr).to(tl.float32))
    sdiv, rh, rd, rl = _row_scales(amax, s_ptr, rows, s_stride, row_mask, ROWS, FP8_MAX, AMAX_FLOOR, RCP_SCALE,
                                   RCP_DIV)
    _store_slots(x0, x1, x2, x3, x4, x5, x6, x7, q_rows, j, row_mask, n_cols, sdiv, rh, rd, rl, q_ptr, CHUNK, N_CHUNKS,
                 EVEN, FP8_MAX, SW_FP8, FNUZ, RCP_DIV, SAT_CVT)


@triton.jit
def per_token_quant_looped_kernel(
    x_ptr,
    x_row_stride,
    q_ptr,
    q_row_stride,
    s_ptr,
    s_stride,
    ub_ptr,
    n_cols,
    HAS_UB: tl.constexpr,
    BLOCK_N: tl.constexpr,
    FP8_MAX: tl.constexpr,
    AMAX_FLOOR: tl.constexpr,
    RCP_SCALE: tl.constexpr,
    SW_FP8: tl.constexpr,
    FNUZ: tl.constexpr,
):
    """Rows too long for registers (or padded far from a power of two): one row per program, two
    passes over BLOCK_N-column chunks (amax, then quantize; the second read of the row mostly hits
    L2). Offsets in int64."""
    row = tl.program_id(0).to(tl.int64)
    x_row = x_ptr + row * x_row_stride
    q_row = q_ptr + row * q_row_stride
    acc = tl.zeros([BLOCK_N], dtype=tl.float32)
    for start in range(0, n_cols, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)
        x = tl.load(x_row + cols, mask=cols < n_cols, other=0.0)
        acc = tl.maximum(acc, tl.abs(x.to(tl.float32)))
    amax = tl.max(acc, axis=0)
    if HAS_UB:
        amax = tl.minimum(amax, tl.load(ub_ptr).to(tl.float32))
    scale = _scale(amax, FP8_MAX, AMAX_FLOOR, RCP_SCALE)
    tl.store(s_ptr + row * s_stride, scale)
    for start in range(0, n_cols, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)
        mask = cols < n_cols
        x = tl.load(x_row + cols, mask=mask, other=0.0).to(tl.float32)
        tl.store(q_row + cols, _quantize(x, scale, q_ptr, FP8_MAX, SW_FP8, FNUZ), mask=mask)


# --- per token group ----------------------------------------------------------------------------
@triton.jit
def per_token_group_quant_kernel(
    x_ptr,
    x_row_stride,
    q_ptr,
    q_row_stride,
    s_ptr,
    s_token_stride,
    s_group_stride,
    n_tiles,
    groups_per_row,
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
):
    """A program quantizes TILES consecutive (token, group) tiles of GROUP elements, as a
    [TILES, BLOCK_G] block (BLOCK_G = next_power_of_2(GROUP); columns past GROUP masked).

    Tile t is token t // groups_per_row, group t % groups_per_row, so a program's tiles run
    along a row (and on into the next): contiguous x and q for contiguous rows. Its scale goes
    to ``s_ptr[token * s_token_stride + group * s_group_stride]``: row-major scales
    (groups_per_row, 1) and column-major ones (1, n_tokens) alike.
    """
    tok, grp, col, tile_mask, mask = _group_tiles(tl.program_id(0), n_tiles, groups_per_row, GROUP, BLOCK_G, TILES,
                                                  IDX64)
    x = tl.load(x_ptr + (tok * x_row_stride)[:, None] + col, mask=mask, other=0.0).to(tl.float32)
    _quantize_groups(x, q_ptr, q_row_stride, s_ptr, s_token_stride, s_group_stride, tok, grp, col, tile_mask, mask,
                     FP8_MAX, AMAX_FLOOR, RCP_SCALE, SW_FP8, FNUZ, TILES, RCP_DIV, SAT_CVT)
