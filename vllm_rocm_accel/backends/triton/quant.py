"""Triton FP8 quant launchers: grids and launch parameters for ``kernels/triton/quant.py``.

The launchers write into the outputs they are given; the op layer allocates (q contiguous in
the FP8 format, float32 scales), validates, and asks the ``supports_args_*`` predicates first:

* :func:`per_tensor_quant` -- dynamic: ``scale_out`` is zeroed, an amax kernel maxes the scale
  of its tiles into it atomically, then the quantize kernel reads it (optionally with the
  per-token kernels' cheaper exact division, and in reverse tile order: config ``per_tensor``);
  static: one kernel quantizes with ``static_scale`` and copies it to ``scale_out`` (optionally
  through a guarded split division and the saturating conversion: config ``static_split`` /
  ``static_sat_cvt``); dense x may take flat tiles, the tensor as one row (config ``flat``);
* :func:`per_token_quant` -- one kernel: whole rows in registers, a looped two-pass kernel
  for rows too long for that or too far from a power of two, or (where the config's
  ``chunked`` brackets ask for it) whole rows as unrolled power-of-two chunks, read twice or
  (``regs``) held in registers (config ``per_token``);
* :func:`per_token_group_quant` -- one kernel over (token, group) tiles; scales are written
  through a token stride and a group stride, so row- and column-major scales both work.

Rows of x and q are addressed as ``base + row * row_stride + col``: any tensor whose last dim
has stride 1 and whose leading dims collapse to one row stride (``big[:, :H]``, N-D views of
such rows) is used in place, without a copy.

Launch parameters are data (``configs/quant.json``), keyed by device family; the choices per
(device type, width, dtype) are cached, so a call does only integer work on the host.
"""

from __future__ import annotations

import functools
from typing import Optional

import torch

from ...fp8 import AMAX_FLOOR, FNUZ, FP8_DTYPES, fp8_max
from ...kernels.triton import quant as _k
from . import config_data
from .config_data import family as _family
from .config_data import bracket, dtype_table, pow2, pow2_ceil
from .fast_launch import FastLauncher
from .norm import _row_stride  # the row geometry the norm launcher uses, shared

_config = config_data.loader("quant")  # a module attribute: tests and tuners replace it
_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_AMAX = FastLauncher(_k.amax_scale_kernel)
_QUANT = FastLauncher(_k.quant_with_scale_kernel)
_TOKEN = FastLauncher(_k.per_token_quant_kernel)
_TOKEN_LOOPED = FastLauncher(_k.per_token_quant_looped_kernel)
_TOKEN_CHUNKED = FastLauncher(_k.per_token_quant_chunked_kernel)
_TOKEN_REGS = FastLauncher(_k.per_token_quant_regs_kernel)
_GROUP = FastLauncher(_k.per_token_group_quant_kernel)
_LAUNCHERS = (_AMAX, _QUANT, _TOKEN, _TOKEN_LOOPED, _TOKEN_CHUNKED, _TOKEN_REGS, _GROUP)
_I32 = 2**31
_NEVER = 2**63
_MAX_CHUNKS = 64  # the chunked kernels unroll their chunk loops: bound the code size
_MAX_REG_CHUNKS = 8  # the regs kernels' named chunk slots
_RCP_DIV = {False: 0, True: 1, "split": 2, "mul": 3}  # config rcp_div -> the kernels' RCP_DIV


def _rcp_div_code(section: dict, source: str) -> int:
    """The kernels' RCP_DIV for a config section's optional ``rcp_div`` key (absent = false)."""
    rcp_div = section.get("rcp_div", False)
    if rcp_div not in _RCP_DIV:
        raise ValueError(f"{source}: rcp_div must be false, true, \"split\" or \"mul\", got {rcp_div!r}")
    return _RCP_DIV[rcp_div]


# --- launch parameters ------------------------------------------------------
def _family_config(device_type: str) -> dict:
    return config_data.section(_config(), _family(device_type))


_pow2_ceil = pow2_ceil  # the name benchmarks/tune_quant_hidden.py reads


@functools.lru_cache(maxsize=None)
def format_params(device_type: str, fmt: torch.dtype) -> tuple[float, bool, bool, bool]:
    """(FP8_MAX, FNUZ, SW_FP8, RCP_SCALE) for quantizing into ``fmt`` on ``device_type``.

    SW_FP8 where the family does not convert to ``fmt`` natively (config ``native_fp8``);
    RCP_SCALE off the CPU, where torch's reference takes the scale as a product with the
    float32 reciprocal of fp8_max (see the kernels' docstring).
    """
    native = str(fmt).removeprefix("torch.") in _family_config(device_type)["native_fp8"]
    return fp8_max(fmt), fmt == FNUZ, not native, device_type != "cpu"


@functools.lru_cache(maxsize=None)
def per_tensor_params(device_type: str, n_cols: int, dtype: torch.dtype) -> tuple[int, int, int, int]:
    """(BLOCK_N, rows_per_program, num_warps, amax_programs) for rows of ``n_cols`` elements."""
    section = _family_config(device_type)["per_tensor"]
    entry = bracket(dtype_table(section, dtype), n_cols)
    block = min(pow2("block_n", int(entry["block_n"]), "quant.json"), pow2_ceil(n_cols))
    rows = pow2("rows_per_program", int(entry["rows_per_program"]), "quant.json")
    return block, rows, int(entry["num_warps"]), max(1, int(section["amax_programs"]))


@functools.lru_cache(maxsize=None)
def per_tensor_variant_params(device_type: str) -> tuple[int, bool, bool]:
    """(RCP_DIV, sat_cvt, reverse) of the dynamic per-tensor quantize kernel, from the per_tensor
    section's optional keys (absent = off, today's kernel; none of them changes a bit, rcp_div
    ``"mul"`` aside):

    * ``rcp_div`` (false, true or ``"split"``) and ``sat_cvt`` (bool): as per_token's
      (:func:`row_variant_params`), with the tensor's one scale, whose reciprocal constants each
      program computes once; ``sat_cvt`` only without SW_FP8 (the launcher);
    * ``reverse`` (bool): the quantize kernel's program p takes tile n_tiles - 1 - p, so that it
      starts on the tiles the amax kernel read last (the likeliest still in L2).

    Static scales (any float: overflowing quotients, underflowing remainders) take none of these,
    and tile order: :func:`per_tensor_static_variant` instead."""
    section = _family_config(device_type)["per_tensor"]
    return (*division_variant(section, "quant.json: per_tensor"), bool(section.get("reverse", False)))


@functools.lru_cache(maxsize=None)
def per_tensor_flat_brackets(device_type: str) -> Optional[tuple[tuple[int, int, int], ...]]:
    """The per_tensor section's optional ``flat`` brackets as (max_numel, block, num_warps), or None
    (absent: the row tiles): a list sorted by ``max_numel``, ``block`` elements per program (a power
    of two) and ``num_warps``. The launcher takes them for dense x (each row right after the
    previous, so the tensor is one row of numel elements): no column tile is partly masked,
    whatever H is (7168 on 4096-wide row tiles left a quarter of every second tile idle), and only
    the last tile of all is masked. Both kernels, dynamic and static."""
    flat = _family_config(device_type)["per_tensor"].get("flat")
    if not flat:
        return None
    return tuple((int(e["max_numel"]), pow2("flat block", int(e["block"]), "quant.json"), int(e["num_warps"]))
                 for e in flat)


def per_tensor_flat_params(device_type: str, numel: int) -> Optional[tuple[int, int]]:
    """(BLOCK, num_warps) of the first flat bracket with numel <= max_numel (else the last), the
    block capped at next_power_of_2(numel); None without flat brackets. Not cached: numel takes
    as many values as a server sees token counts, and the search is over a few brackets."""
    brackets = per_tensor_flat_brackets(device_type)
    if brackets is None:
        return None
    _, block, warps = next((b for b in brackets if numel <= b[0]), brackets[-1])
    return min(block, pow2_ceil(numel)), warps


def _bool_key(section: dict, key: str, source: str) -> bool:
    on = section.get(key, False)
    if not isinstance(on, bool):
        raise ValueError(f"{source}: {key} must be true or false, got {on!r}")
    return on


@functools.lru_cache(maxsize=None)
def per_tensor_static_variant(device_type: str) -> tuple[bool, bool]:
    """(ANY_SCALE, SAT_CVT) for static scales, from the per_tensor section's optional bools (absent
    = false):

    * ``static_split``: the quantize kernel's ANY_SCALE path: the split division where the scale
      lies in [2**-60, 2**60] (x itself where that is NaN for a non-NaN x, past any FP8 max), the
      per-element IEEE division for other scales; the same codes as the IEEE division either way
      (kernels/triton/quant.py _div_static);
    * ``static_sat_cvt``: no clamp before the native FP8 conversion. Only for families whose
      conversion saturates (NVIDIA's ``cvt.rn.satfinite``: a quotient past FP8_MAX, inf included,
      gives +-FP8_MAX as the clamp does); a NaN quotient then encodes as NaN, as torch's reference
      gives, not +-FP8_MAX; never with SW_FP8 (the launcher)."""
    section = _family_config(device_type)["per_tensor"]
    return (_bool_key(section, "static_split", "quant.json: per_tensor"),
            _bool_key(section, "static_sat_cvt", "quant.json: per_tensor"))


@functools.lru_cache(maxsize=None)
def per_token_params(device_type: str, n_cols: int, dtype: torch.dtype) -> tuple[int, int, int, int, int, int]:
    """(looped_from_rows, BLOCK_N, rows_per_program, num_warps, looped BLOCK_N, looped num_warps) for
    rows of ``n_cols`` elements: calls of at least ``looped_from_rows`` rows take the looped kernel."""
    return row_kernel_params(_family_config(device_type)["per_token"], n_cols, dtype)


def row_kernel_params(section: dict, n_cols: int, dtype: torch.dtype,
                      source: str = "quant.json") -> tuple[int, int, int, int, int, int]:
    """The per-token launch choice from a config ``section`` of that shape (shared with the fused
    norm + quant kernels): whole rows in one pass, or the looped kernel for long / padded rows."""
    looped = section["looped"]
    lentry = bracket(looped, n_cols)
    lblock, lwarps = pow2("looped block", int(lentry["block"]), source), int(lentry["num_warps"])
    block = pow2_ceil(n_cols)
    if n_cols > section["single_pass_max_cols"]:
        return 0, block, 1, lwarps, lblock, lwarps
    entry = bracket(dtype_table(section, dtype), n_cols)
    idle = 1 - n_cols / block  # share of a single-pass tile that padding leaves idle
    padded = n_cols > lblock and idle > section["single_pass_max_idle"]
    looped_from = int(section["padded_looped_min_rows"]) if padded else _NEVER
    return (looped_from, block, pow2("rows_per_program", int(entry["rows_per_program"]), source),
            int(entry["num_warps"]), lblock, lwarps)


@functools.lru_cache(maxsize=None)
def per_token_variant_params(device_type: str, n_cols: int, dtype: torch.dtype) -> tuple:
    """(rcp_div, (chunked_from_rows, CHUNK, N_CHUNKS, EVEN, rows_per_program, num_warps, hints, regs),
    (sat_cvt, weight_early, lp_amax)) for rows of ``n_cols`` elements: see :func:`row_variant_params`."""
    return row_variant_params(_family_config(device_type)["per_token"], n_cols, dtype)


def row_variant_params(section: dict, n_cols: int, dtype: torch.dtype, source: str = "quant.json",
                       residual: Optional[bool] = None) -> tuple:
    """The optional parts of a per-token launch choice (shared with the fused norm + quant kernels),
    as (rcp_div, chunked, (sat_cvt, weight_early, lp_amax)):

    * ``rcp_div`` (section key, default false): how the whole-row, chunked and regs kernels divide
      by the row's scale, the same bits every way: false per element; true through the row's
      reciprocal plus two exact corrections; ``"split"`` from a two-term reciprocal and one
      correction (4 FP32 operations; kernels/triton/quant.py); ``"mul"`` the one that is not bit
      for bit: the product with the row's reciprocal (1 operation; a code may be one FP8 step from
      the division's where the quotient lies within ~1.5 float32 ulp of a rounding midpoint, as in
      vLLM's and AITER's kernels, which multiply by an inverted scale). Returned as the kernels'
      RCP_DIV (0 / 1 / 2 / 3); calls with a scale_ub take 1 for 2 and 3 (the launcher).
    * ``chunked`` (section key, optional list of brackets sorted by max_cols; the first with
      H <= max_cols applies): calls of at least ``min_rows`` rows take the chunked kernel, rows of
      ``chunk`` (a power of two, capped at next_power_of_2(H)) columns at a time,
      ``rows_per_program`` rows per program with ``num_warps``, L1 eviction hints when ``hints``;
      ``regs`` (default false): the regs kernel instead, the same chunks held in registers rather
      than read again (at most 8 chunks; past that the bracket takes the chunked kernel; no hints).
      Past _MAX_CHUNKS chunks (code size) it never applies. ``residual`` (optional bool, the fused
      norm + quant section only): the bracket applies only to calls with (true) or without (false) a
      residual; the others look on to the next bracket (``residual`` argument; None: no filter).
    * ``sat_cvt`` (section key, default false): no clamp before the native FP8 conversion (the
      launchers use it only without SW_FP8 and without a scale_ub, where |x / scale| rounds to at
      most FP8_MAX anyway; NaN quotients encode as NaN, not +-FP8_MAX);
    * ``weight_early`` and ``lp_amax`` (section keys, default false; the fused norm + quant kernels
      only): the weight loaded with x in the tile's layout, and the amax taken in x's dtype (see
      kernels/triton/fused_quant.py).

    None of them changes a bit otherwise (``"mul"`` aside).
    """
    rcp_div = _rcp_div_code(section, source)
    opts = (bool(section.get("sat_cvt", False)), bool(section.get("weight_early", False)),
            bool(section.get("lp_amax", False)))
    never = (_NEVER, 1, 1, True, 1, 4, False, False)
    entry = next((e for e in section.get("chunked") or () if n_cols <= e["max_cols"]
                  and (residual is None or "residual" not in e or bool(e["residual"]) == residual)), None)
    if entry is None or n_cols < 1:
        return rcp_div, never, opts
    chunk = min(pow2("chunk", int(entry["chunk"]), source), pow2_ceil(n_cols))
    n_chunks = -(-n_cols // chunk)
    if n_chunks > _MAX_CHUNKS:
        return rcp_div, never, opts
    rows = pow2("rows_per_program", int(entry.get("rows_per_program", 1)), source)
    regs = bool(entry.get("regs", False)) and n_chunks <= _MAX_REG_CHUNKS
    return rcp_div, (int(entry["min_rows"]), chunk, n_chunks, n_cols % chunk == 0, rows,
                     int(entry["num_warps"]), bool(entry.get("hints", False)), regs), opts


@functools.lru_cache(maxsize=None)
def per_token_group_params(device_type: str, group_size: int, dtype: torch.dtype) -> tuple[int, tuple]:
    """(BLOCK_G, ((max_tiles, tiles_per_program, num_warps), ...)) for groups of ``group_size``."""
    return group_kernel_params(_family_config(device_type)["per_token_group"], group_size, dtype)


def group_kernel_params(section: dict, group_size: int, dtype: torch.dtype,
                        source: str = "quant.json") -> tuple[int, tuple]:
    """The per-token-group launch choice from a config ``section`` of that shape (shared with
    the fused silu + group quant kernel)."""
    block_g = pow2_ceil(group_size)
    brackets = tuple(
        (int(e["max_tiles"]),
         max(1, pow2("elements_per_program", int(e["elements_per_program"]), source) // block_g),
         int(e["num_warps"]))
        for e in dtype_table(section, dtype)
    )
    return block_g, brackets


def division_variant(section: dict, source: str = "quant.json") -> tuple[int, bool]:
    """(RCP_DIV, sat_cvt) from a config ``section``'s optional ``rcp_div`` / ``sat_cvt`` keys (absent
    = off), for the kernels with one scale per tile: the dynamic per-tensor quantize kernel and the
    group kernels (per-token-group quant, the fused silu + group quant; each group's scale in the
    role of a row's). As per_token's (:func:`row_variant_params`): the same bits as the IEEE division
    and the clamp (``"mul"`` aside: within one FP8 step); ``sat_cvt`` only without SW_FP8
    (the launchers)."""
    return _rcp_div_code(section, source), bool(section.get("sat_cvt", False))


@functools.lru_cache(maxsize=None)
def per_token_group_variant(device_type: str) -> tuple[int, bool]:
    return division_variant(_family_config(device_type)["per_token_group"])


def clear_caches() -> None:
    """Forget the loaded config and every cached launch choice (for tests and retuning)."""
    _config.cache_clear()
    _family.cache_clear()
    format_params.cache_clear()
    per_tensor_params.cache_clear()
    per_tensor_variant_params.cache_clear()
    per_tensor_static_variant.cache_clear()
    per_tensor_flat_brackets.cache_clear()
    per_token_group_variant.cache_clear()
    per_token_params.cache_clear()
    per_token_variant_params.cache_clear()
    per_token_group_params.cache_clear()
    for launcher in _LAUNCHERS:
        launcher.clear()


# --- geometry -----------------------------------------------------------------
def _token_stride(t: torch.Tensor) -> Optional[int]:
    """Stride between consecutive tokens when ``t``'s leading dims are flattened into one (any
    last-dim stride: column-major scales have a large one), or None if that needs a copy."""
    shape, stride = t.shape, t.stride()
    token_stride = None
    span = 0
    for i in range(len(shape) - 2, -1, -1):  # innermost leading dim first
        if shape[i] == 1:
            continue
        if token_stride is None:
            token_stride = stride[i]
        elif stride[i] != span:
            return None
        span = stride[i] * shape[i]
    return 0 if token_stride is None else token_stride  # one token: any stride


def _strides(op: str, x: torch.Tensor, q: torch.Tensor, scales: torch.Tensor) -> tuple[int, int, int]:
    xs, qs, ss = _row_stride(x), _row_stride(q), _token_stride(scales)
    if xs is None or qs is None or ss is None:
        raise ValueError(
            f"triton {op}: x and q_out must be row-strided with last-dim stride 1 and the scales' leading dims "
            f"must flatten without a copy (check supports_args first); got strides {x.stride()}, {q.stride()}, "
            f"{scales.stride()}"
        )
    return xs, qs, ss  # torch strides are never negative


def _encoded(q_out: torch.Tensor, sw_fp8: bool) -> torch.Tensor:
    """What the kernel stores into: the FP8 tensor, or its bytes when the kernel encodes them itself."""
    return q_out.view(torch.uint8) if sw_fp8 else q_out


def _floor_scales(scales: torch.Tensor, fmt: torch.dtype) -> None:
    """Scales of all-zero (or empty) data, computed as the torch reference does on that device."""
    scales.fill_(AMAX_FLOOR).div_(fp8_max(fmt))


# --- what it can serve --------------------------------------------------------
def _x_reason(x: torch.Tensor) -> Optional[str]:
    if x.dtype not in _DTYPES:
        return f"x dtype {x.dtype} is not float32/float16/bfloat16"
    if x.dim() < 1:
        return "x is 0-d"
    if x.numel() and _row_stride(x) is None:
        return (f"x (shape {tuple(x.shape)}, stride {x.stride()}) cannot be viewed as rows with last-dim stride 1 "
                "without a copy")
    return None


def _format_reason(dtype) -> Optional[str]:
    if dtype is not None and dtype not in FP8_DTYPES:
        return f"dtype {dtype} is not float8_e4m3fn/float8_e4m3fnuz"
    return None


def _one_float_reason(name: str, t: Optional[torch.Tensor]) -> Optional[str]:
    if t is not None and (t.dtype != torch.float32 or t.numel() != 1):
        return f"{name} must be one float32 element (got {t.dtype}, shape {tuple(t.shape)})"
    return None


def supports_args_per_tensor(x: torch.Tensor, scale: Optional[torch.Tensor], dtype) -> Optional[str]:
    """None when :func:`per_tensor_quant` can serve these arguments, else a short reason."""
    return _x_reason(x) or _format_reason(dtype) or _one_float_reason("scale", scale)


def supports_args_per_token(x: torch.Tensor, dtype, scale_ub: Optional[torch.Tensor]) -> Optional[str]:
    """None when :func:`per_token_quant` can serve these arguments, else a short reason."""
    return _x_reason(x) or _format_reason(dtype) or _one_float_reason("scale_ub", scale_ub)


def supports_args_per_token_group(x: torch.Tensor, group_size: int, column_major: bool, dtype) -> Optional[str]:
    """None when :func:`per_token_group_quant` can serve these arguments, else a short reason."""
    reason = _x_reason(x) or _format_reason(dtype)
    if reason:
        return reason
    if not isinstance(group_size, int) or group_size <= 0 or x.shape[-1] % group_size:
        return f"group_size {group_size!r} does not divide the hidden size {x.shape[-1]}"
    return None


# --- launchers ----------------------------------------------------------------
def per_tensor_quant(q_out: torch.Tensor, scale_out: torch.Tensor, x: torch.Tensor,
                     static_scale: Optional[torch.Tensor]) -> None:
    """``q_out <- quantize(x, scale)``, ``scale_out`` (float32 (1,)) <- scale: dynamic (from max |x|)
    when ``static_scale`` is None, else ``static_scale`` (one float32 element)."""
    fmt = q_out.dtype
    if x.numel() == 0:
        if static_scale is None:
            _floor_scales(scale_out, fmt)
        else:
            scale_out.copy_(static_scale.reshape(1))
        return
    xs, qs, _ = _strides("per_tensor_quant", x, q_out, scale_out)
    dev = x.device.type
    fmax, fnuz, sw, rcp = format_params(dev, fmt)
    n_cols = x.shape[-1]
    numel = x.numel()
    n_rows = numel // n_cols
    block, rows_pp, warps, amax_progs = per_tensor_params(dev, n_cols, x.dtype)
    flat = per_tensor_flat_params(dev, numel)
    if flat is not None and (n_rows == 1 or (xs == n_cols and qs == n_cols)):  # dense: one row of numel
        (block, warps), rows_pp, n_rows, n_cols, xs, qs = flat, 1, 1, numel, 0, 0
    idx64 = (n_rows + rows_pp) * max(xs, qs) + n_cols + block >= _I32
    # plain ints: triton.cdiv is a slow @jit call on the host
    n_tiles = -(-n_rows // rows_pp) * -(-n_cols // block)
    even = n_rows % rows_pp == 0 and n_cols % block == 0
    q = _encoded(q_out, sw)
    if static_scale is None:
        scale_out.zero_()  # the amax kernel maxes positive scales into it
        # constexprs: ROWS, BLOCK_N, FP8_MAX, AMAX_FLOOR, RCP_SCALE, IDX64
        _AMAX.launch((min(n_tiles, amax_progs),), (x, xs, scale_out, n_rows, n_cols, n_tiles),
                     (rows_pp, block, fmax, AMAX_FLOOR, rcp, idx64), warps)
        scale_in, write_scale = scale_out, False
        rcp_div, sat, reverse = per_tensor_variant_params(dev)
        sat = sat and not sw
        any_scale = False
    else:
        scale_in, write_scale = static_scale, True
        rcp_div, reverse = 0, False
        any_scale, sat = per_tensor_static_variant(dev)
        sat = sat and not sw
    # constexprs: WRITE_SCALE, ROWS, BLOCK_N, FP8_MAX, SW_FP8, FNUZ, IDX64, RCP_DIV, SAT_CVT, REVERSE, ANY_SCALE, EVEN
    _QUANT.launch((n_tiles,), (x, xs, q, qs, scale_in, scale_out, n_rows, n_cols),
                  (write_scale, rows_pp, block, fmax, sw, fnuz, idx64, rcp_div, sat, reverse, any_scale, even), warps)


def per_token_quant(q_out: torch.Tensor, scales_out: torch.Tensor, x: torch.Tensor,
                    scale_ub: Optional[torch.Tensor]) -> None:
    """``q_out <- quantize(x)`` row by row, ``scales_out`` (float32 (..., 1)) <- each row's scale;
    ``scale_ub`` (one float32 element, or None) caps each row's amax before its scale is taken."""
    if x.numel() == 0:
        if scales_out.numel():  # rows of width 0: amax 0
            _floor_scales(scales_out, q_out.dtype)
        return
    xs, qs, ss = _strides("per_token_quant", x, q_out, scales_out)
    dev = x.device.type
    fmax, fnuz, sw, rcp = format_params(dev, q_out.dtype)
    n_cols = x.shape[-1]
    n_rows = x.numel() // n_cols
    has_ub = scale_ub is not None
    ub = scale_ub if has_ub else scales_out  # never read without HAS_UB
    q = _encoded(q_out, sw)
    rcp_div, (chunked_from, chunk, n_chunks, even, crows, cwarps, hints, regs), (sat, _, _) = (
        per_token_variant_params(dev, n_cols, x.dtype))
    if has_ub:  # a capped scale can meet infinite / overflowing quotients: no split division, clamp
        rcp_div, sat = min(rcp_div, 1), False
    sat = sat and not sw
    if n_rows >= chunked_from:
        idx64 = (n_rows + crows) * max(xs, qs, ss) + n_chunks * chunk >= _I32
        args = (x, xs, q, qs, scales_out, ss, ub, n_rows, n_cols)
        if regs:
            # constexprs: HAS_UB, ROWS, CHUNK, N_CHUNKS, EVEN, FP8_MAX, AMAX_FLOOR, RCP_SCALE, SW_FP8, FNUZ, IDX64,
            # RCP_DIV, SAT_CVT
            _TOKEN_REGS.launch((-(-n_rows // crows),), args, (has_ub, crows, chunk, n_chunks, even, fmax, AMAX_FLOOR,
                                                              rcp, sw, fnuz, idx64, rcp_div, sat), cwarps)
            return
        # constexprs: HAS_UB, ROWS, CHUNK, N_CHUNKS, EVEN, HINTS, FP8_MAX, AMAX_FLOOR, RCP_SCALE, SW_FP8, FNUZ,
        # IDX64, RCP_DIV, SAT_CVT
        _TOKEN_CHUNKED.launch((-(-n_rows // crows),), args, (has_ub, crows, chunk, n_chunks, even, hints, fmax,
                                                             AMAX_FLOOR, rcp, sw, fnuz, idx64, rcp_div, sat), cwarps)
        return
    looped_from, block, rows_pp, warps, lblock, lwarps = per_token_params(dev, n_cols, x.dtype)
    if n_rows >= looped_from:  # int64 offsets always; one row per program
        # constexprs: HAS_UB, BLOCK_N, FP8_MAX, AMAX_FLOOR, RCP_SCALE, SW_FP8, FNUZ
        _TOKEN_LOOPED.launch((n_rows,), (x, xs, q, qs, scales_out, ss, ub, n_cols),
                             (has_ub, lblock, fmax, AMAX_FLOOR, rcp, sw, fnuz), lwarps)
        return
    idx64 = (n_rows + rows_pp) * max(xs, qs, ss) + block >= _I32
    # constexprs: HAS_UB, ROWS, BLOCK_N, FP8_MAX, AMAX_FLOOR, RCP_SCALE, SW_FP8, FNUZ, IDX64, RCP_DIV, SAT_CVT
    _TOKEN.launch((-(-n_rows // rows_pp),), (x, xs, q, qs, scales_out, ss, ub, n_rows, n_cols),
                  (has_ub, rows_pp, block, fmax, AMAX_FLOOR, rcp, sw, fnuz, idx64, rcp_div, sat), warps)


def per_token_group_quant(q_out: torch.Tensor, scales_out: torch.Tensor, x: torch.Tensor, group_size: int) -> None:
    """``q_out <- quantize(x)`` by groups of ``group_size`` consecutive last-dim elements,
    ``scales_out`` (float32 (..., H // group_size), row- or column-major) <- each group's scale."""
    n_cols = x.shape[-1]
    if n_cols % group_size:
        raise ValueError(f"triton per_token_group_quant: group_size {group_size} does not divide H = {n_cols}")
    if x.numel() == 0:  # no tokens, or H == 0 and so no groups
        return
    xs, qs, s_tok = _strides("per_token_group_quant", x, q_out, scales_out)
    s_grp = scales_out.stride(-1)
    dev = x.device.type
    fmax, fnuz, sw, rcp = format_params(dev, q_out.dtype)
    n_rows = x.numel() // n_cols
    groups = n_cols // group_size
    n_tiles = n_rows * groups
    block_g, brackets = per_token_group_params(dev, group_size, x.dtype)
    for max_tiles, tiles_pp, warps in brackets:
        if n_tiles <= max_tiles:
            break
    last_tok = n_rows + tiles_pp  # masked tail tiles compute offsets past the last token
    idx64 = (n_tiles + tiles_pp >= _I32 or last_tok * max(xs, qs) + n_cols + block_g >= _I32
             or last_tok * s_tok + groups * s_grp >= _I32)
    rcp_div, sat = per_token_group_variant(dev)
    # constexprs: GROUP, BLOCK_G, TILES, FP8_MAX, AMAX_FLOOR, RCP_SCALE, SW_FP8, FNUZ, IDX64, RCP_DIV, SAT_CVT
    _GROUP.launch((-(-n_tiles // tiles_pp),), (x, xs, _encoded(q_out, sw), qs, scales_out, s_tok, s_grp, n_tiles,
                                               groups),
                  (group_size, block_g, tiles_pp, fmax, AMAX_FLOOR, rcp, sw, fnuz, idx64, rcp_div, sat and not sw),
                  warps)
