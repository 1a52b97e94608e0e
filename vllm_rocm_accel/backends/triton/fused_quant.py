"""Triton fused FP8 quant launchers: grids and launch parameters for ``kernels/triton/fused_quant.py``.

The launchers write into the outputs they are given; the op layer allocates (q contiguous in
the FP8 format, float32 scales), validates, and asks the ``supports_args_*`` predicates first:

* :func:`rms_norm_dynamic_quant` -- RMSNorm of x (plus ``residual``, which is updated in place)
  then per-token quant, in one kernel: whole rows in registers, a looped three-pass kernel for
  rows too long for that or too far from a power of two, or (where the config's ``chunked``
  brackets ask for it) whole rows as unrolled power-of-two chunks, read three times or (``regs``)
  held in registers (config ``rms_norm_quant``);
* :func:`silu_and_mul_group_quant` -- SiLU-and-mul then 1 x group_size quant, one kernel over
  (token, group) tiles; scales written through a token and a group stride (row- or column-major).

Rows of x, residual and q are addressed as ``base + row * row_stride + col``: any tensor whose
last dim has stride 1 and whose leading dims collapse to one row stride is used in place.

The FP8 encoding choices (native conversion or in-kernel encoding, the scale's reciprocal form)
are the quant launcher's (:func:`~vllm_rocm_accel.backends.triton.quant.format_params`), so the
fused ops quantize exactly as ``per_token_quant`` / ``per_token_group_quant`` do. Launch
parameters are data (``configs/fused_quant.json``), keyed by device family; the choices per
(device type, width, dtype) are cached, so a call does only integer work on the host.
"""

from __future__ import annotations

import functools
from typing import Optional

import torch

from ...fp8 import AMAX_FLOOR
from ...kernels.triton import fused_quant as _k
from . import config_data
from .config_data import bracket, dtype_table
from .config_data import family as _family
from .fast_launch import FastLauncher
from .norm import _row_stride, _weight_reason
from .quant import (_encoded, _format_reason, _token_stride, _x_reason, format_params, group_kernel_params,
                    division_variant, row_kernel_params, row_variant_params)

_config = config_data.loader("fused_quant")  # a module attribute: tests and tuners replace it
_NORM = FastLauncher(_k.rms_norm_quant_rows_kernel)
_NORM_LOOPED = FastLauncher(_k.rms_norm_quant_looped_kernel)
_NORM_CHUNKED = FastLauncher(_k.rms_norm_quant_chunked_kernel)
_NORM_REGS = FastLauncher(_k.rms_norm_quant_regs_kernel)
_SILU = FastLauncher(_k.silu_mul_group_quant_kernel)
_LAUNCHERS = (_NORM, _NORM_LOOPED, _NORM_CHUNKED, _NORM_REGS, _SILU)
_I32 = 2**31


# --- launch parameters ------------------------------------------------------
def _family_config(device_type: str) -> dict:
    return config_data.section(_config(), _family(device_type))


@functools.lru_cache(maxsize=None)
def norm_quant_params(device_type: str, n_cols: int, dtype: torch.dtype) -> tuple[int, int, int, int, int, int]:
    """(looped_from_rows, BLOCK_N, rows_per_program, num_warps, looped BLOCK_N, looped num_warps) for
    rows of ``n_cols`` elements: calls of at least ``looped_from_rows`` rows take the looped kernel."""
    return row_kernel_params(_family_config(device_type)["rms_norm_quant"], n_cols, dtype, "fused_quant.json")


@functools.lru_cache(maxsize=None)
def norm_quant_maxnreg(device_type: str, n_cols: int, dtype: torch.dtype, residual: bool) -> Optional[int]:
    """The per-thread register cap of the whole-row kernel's launch for rows of ``n_cols`` elements:
    the serving table entry's optional ``maxnreg_without_residual`` for calls without a residual,
    None (the compiler's choice) otherwise. A lower cap fits more rows per SM (64 K registers a
    SM: 62 a thread gives 8 programs of 4 warps, 56 nine); with a residual the kernel also holds
    the sum's row (77 registers at H = 4096, sm_90), which a cap would spill."""
    return maxnreg_of(_family_config(device_type)["rms_norm_quant"], n_cols, dtype, residual)


def maxnreg_of(section: dict, n_cols: int, dtype: torch.dtype, residual: bool) -> Optional[int]:
    """:func:`norm_quant_maxnreg` of a config section."""
    if residual:
        return None
    cap = bracket(dtype_table(section, dtype), n_cols).get("maxnreg_without_residual")  # row_kernel_params' entry
    if cap is not None and (not isinstance(cap, int) or isinstance(cap, bool) or not 16 <= cap <= 255):
        raise ValueError(f"fused_quant.json: rms_norm_quant maxnreg_without_residual must be an integer in "
                         f"[16, 255], got {cap!r}")
    return cap


@functools.lru_cache(maxsize=None)
def norm_quant_variant_params(device_type: str, n_cols: int, dtype: torch.dtype, residual: bool = False) -> tuple:
    """(rcp_div, (chunked_from_rows, CHUNK, N_CHUNKS, EVEN, rows_per_program, num_warps, hints, regs),
    (sat_cvt, weight_early, lp_amax)) for rows of ``n_cols`` elements, with or without a residual
    (``quant.row_variant_params`` on section ``rms_norm_quant``)."""
    return row_variant_params(_family_config(device_type)["rms_norm_quant"], n_cols, dtype, "fused_quant.json",
                              residual=residual)


@functools.lru_cache(maxsize=None)
def silu_group_params(device_type: str, group_size: int, dtype: torch.dtype) -> tuple[int, tuple]:
    """(BLOCK_G, ((max_tiles, tiles_per_program, num_warps), ...)) for groups of ``group_size``."""
    return group_kernel_params(_family_config(device_type)["silu_mul_group_quant"], group_size, dtype,
                               "fused_quant.json")


@functools.lru_cache(maxsize=None)
def silu_group_variant(device_type: str) -> tuple[int, bool, bool]:
    """(RCP_DIV, sat_cvt, ftz_silu) of the silu + group quant kernel: the section's optional
    ``rcp_div`` / ``sat_cvt`` keys, as per_token_group's (:func:`~.quant.division_variant`), and
    ``ftz_silu`` (bool, default false; PTX, so only where the device is NVIDIA's, never under the
    interpreter): the kernel's ``_silu_ftz``."""
    section = _family_config(device_type)["silu_mul_group_quant"]
    ftz = section.get("ftz_silu", False)
    if not isinstance(ftz, bool):
        raise ValueError(f"fused_quant.json: silu_mul_group_quant ftz_silu must be true or false, got {ftz!r}")
    return (*division_variant(section, "fused_quant.json"), ftz and _family(device_type) == "cuda")


def clear_caches() -> None:
    """Forget the loaded config and every cached launch choice (for tests and retuning)."""
    _config.cache_clear()
    silu_group_variant.cache_clear()
    norm_quant_params.cache_clear()
    norm_quant_maxnreg.cache_clear()
    norm_quant_variant_params.cache_clear()
    silu_group_params.cache_clear()
    for launcher in _LAUNCHERS:
        launcher.clear()


# --- what it can serve --------------------------------------------------------
def supports_args_norm(x: torch.Tensor, weight: Optional[torch.Tensor], eps: float, dtype,
                       residual: Optional[torch.Tensor] = None) -> Optional[str]:
    """None when :func:`rms_norm_dynamic_quant` can serve these arguments, else a short reason."""
    reason = _x_reason(x) or _weight_reason(weight) or _format_reason(dtype)
    if reason is None and residual is not None:
        reason = _x_reason(residual)
        if reason is not None:
            reason = reason.replace("x ", "residual ", 1)
    return reason


def supports_args_silu(x: torch.Tensor, group_size: int, column_major: bool, dtype) -> Optional[str]:
    """None when :func:`silu_and_mul_group_quant` can serve these arguments, else a short reason."""
    reason = _x_reason(x) or _format_reason(dtype)
    if reason:
        return reason
    d = x.shape[-1] // 2
    if x.shape[-1] % 2 or not isinstance(group_size, int) or group_size <= 0 or d % group_size:
        return f"group_size {group_size!r} does not divide the output width d = {d}"
    return None


# --- launchers ----------------------------------------------------------------
def _geometry(op: str, *tensors: torch.Tensor, scales: torch.Tensor) -> tuple[int, ...]:
    strides = tuple(_row_stride(t) for t in tensors) + (_token_stride(scales),)
    if None in strides:
        raise ValueError(
            f"triton {op}: x, residual and q_out must be row-strided with last-dim stride 1 and the scales' "
            "leading dims must flatten without a copy (check supports_args first); got strides "
            + ", ".join(str(t.stride()) for t in tensors + (scales,))
        )
    return strides  # torch strides are never negative


def rms_norm_dynamic_quant(q_out: torch.Tensor, scales_out: torch.Tensor, x: torch.Tensor,
                           residual: Optional[torch.Tensor], weight: Optional[torch.Tensor], eps: float) -> None:
    """``q_out <- quantize(rms_norm(x (+ residual)) * weight)`` row by row, ``scales_out`` (float32
    (..., 1)) <- each row's scale; with ``residual``, ``residual <- x + residual`` in place first."""
    n_cols = x.shape[-1]
    if x.numel() == 0:  # no rows (the ops refuse H == 0)
        return
    has_res, has_w = residual is not None, weight is not None
    res = residual if has_res else x  # never read without HAS_RESIDUAL
    w = weight if has_w else x  # never read without HAS_WEIGHT
    xs, rs, qs, ss = _geometry("rms_norm_dynamic_quant", x, res, q_out, scales=scales_out)
    dev = x.device.type
    fmax, fnuz, sw, rcp = format_params(dev, q_out.dtype)
    n_rows = x.numel() // n_cols
    q = _encoded(q_out, sw)
    eps = float(eps)  # one specialization whatever number type the caller passed
    rcp_div, (chunked_from, chunk, n_chunks, even, crows, cwarps, hints, regs), (sat, w_early, lp_amax) = (
        norm_quant_variant_params(dev, n_cols, x.dtype, has_res))
    sat = sat and not sw
    args = (x, xs, res, rs, q, qs, scales_out, ss, w, n_rows, n_cols, eps)
    if n_rows >= chunked_from:
        idx64 = (n_rows + crows) * max(xs, rs, qs, ss) + n_chunks * chunk >= _I32
        if regs:
            # constexprs: HAS_RESIDUAL, HAS_WEIGHT, ROWS, CHUNK, N_CHUNKS, EVEN, FP8_MAX, AMAX_FLOOR, RCP_SCALE,
            # SW_FP8, FNUZ, IDX64, RCP_DIV, SAT_CVT, W_EARLY
            _NORM_REGS.launch((-(-n_rows // crows),), args, (has_res, has_w, crows, chunk, n_chunks, even, fmax,
                                                             AMAX_FLOOR, rcp, sw, fnuz, idx64, rcp_div, sat, w_early),
                              cwarps)
            return
        # constexprs: HAS_RESIDUAL, HAS_WEIGHT, ROWS, CHUNK, N_CHUNKS, EVEN, HINTS, FP8_MAX, AMAX_FLOOR, RCP_SCALE,
        # SW_FP8, FNUZ, IDX64, RCP_DIV, SAT_CVT
        _NORM_CHUNKED.launch((-(-n_rows // crows),), args, (has_res, has_w, crows, chunk, n_chunks, even, hints, fmax,
                                                            AMAX_FLOOR, rcp, sw, fnuz, idx64, rcp_div, sat), cwarps)
        return
    looped_from, block, rows_pp, warps, lblock, lwarps = norm_quant_params(dev, n_cols, x.dtype)
    if n_rows >= looped_from:  # int64 offsets always; one row per program
        # constexprs: HAS_RESIDUAL, HAS_WEIGHT, BLOCK_N, FP8_MAX, AMAX_FLOOR, RCP_SCALE, SW_FP8, FNUZ
        _NORM_LOOPED.launch((n_rows,), (x, xs, res, rs, q, qs, scales_out, ss, w, n_cols, eps),
                            (has_res, has_w, lblock, fmax, AMAX_FLOOR, rcp, sw, fnuz), lwarps)
        return
    idx64 = (n_rows + rows_pp) * max(xs, rs, qs, ss) + block >= _I32
    even = block == n_cols and n_rows % rows_pp == 0  # no masks (sm_90 SASS at H = 4096: 623 -> 598 instructions)
    # constexprs: HAS_RESIDUAL, HAS_WEIGHT, ROWS, BLOCK_N, FP8_MAX, AMAX_FLOOR, RCP_SCALE, SW_FP8, FNUZ, IDX64,
    # RCP_DIV, SAT_CVT, W_EARLY, LP_AMAX, EVEN
    _NORM.launch((-(-n_rows // rows_pp),), args, (has_res, has_w, rows_pp, block, fmax, AMAX_FLOOR, rcp, sw, fnuz,
                                                  idx64, rcp_div, sat, w_early, lp_amax, even), warps,
                 maxnreg=norm_quant_maxnreg(dev, n_cols, x.dtype, has_res))


def silu_and_mul_group_quant(q_out: torch.Tensor, scales_out: torch.Tensor, x: torch.Tensor, group_size: int) -> None:
    """``q_out <- quantize(silu(x[..., :d]) * x[..., d:])`` by groups of ``group_size`` output columns,
    ``scales_out`` (float32 (..., d // group_size), row- or column-major) <- each group's scale."""
    d = x.shape[-1] // 2
    if d % group_size:
        raise ValueError(f"triton silu_and_mul_group_quant: group_size {group_size} does not divide d = {d}")
    if q_out.numel() == 0:  # no tokens
        return
    xs, qs, s_tok = _geometry("silu_and_mul_group_quant", x, q_out, scales=scales_out)
    s_grp = scales_out.stride(-1)
    dev = x.device.type
    fmax, fnuz, sw, rcp = format_params(dev, q_out.dtype)
    n_rows = q_out.numel() // d
    groups = d // group_size
    n_tiles = n_rows * groups
    block_g, brackets = silu_group_params(dev, group_size, x.dtype)
    for max_tiles, tiles_pp, warps in brackets:
        if n_tiles <= max_tiles:
            break
    last_tok = n_rows + tiles_pp  # masked tail tiles compute offsets past the last token
    idx64 = (n_tiles + tiles_pp >= _I32 or last_tok * max(xs, qs) + 2 * d + block_g >= _I32
             or last_tok * s_tok + groups * s_grp >= _I32)
    rcp_div, sat, ftz = silu_group_variant(dev)
    # constexprs: GROUP, BLOCK_G, TILES, FP8_MAX, AMAX_FLOOR, RCP_SCALE, SW_FP8, FNUZ, IDX64, RCP_DIV, SAT_CVT,
    # FTZ_SILU
    _SILU.launch((-(-n_tiles // tiles_pp),),
                 (x, xs, _encoded(q_out, sw), qs, scales_out, s_tok, s_grp, n_tiles, groups, d),
                 (group_size, block_g, tiles_pp, fmax, AMAX_FLOOR, rcp, sw, fnuz, idx64, rcp_div, sat and not sw, ftz),
                 warps)
