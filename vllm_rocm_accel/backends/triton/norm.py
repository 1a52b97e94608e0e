"""Triton RMSNorm launchers: grids and launch parameters for ``kernels/triton/norm.py``.

The launchers write into the outputs they are given; the op layer allocates,
validates, and asks :func:`supports_args` / :func:`supports_args_add` first.

Rows are addressed as ``base + row * row_stride + col``: any tensor whose last
dim has stride 1 and whose leading dims collapse to a single row stride (e.g.
``big[:, :H]``, or an N-D view of such rows) is used in place, without a copy.

Launch parameters are data (``configs/norm.json``), keyed by device family;
the per-(device type, H, dtype) choice is cached so a call does only integer
work on the host.
"""

from __future__ import annotations

import functools
from typing import Optional

import torch
import triton

from ...kernels.triton import norm as _k
from . import config_data, fast_launch
from .config_data import family as _family
from .config_data import pow2

try:
    from triton.compiler import CompiledKernel as _CompiledKernel
except ImportError:  # pragma: no cover - old Triton
    _CompiledKernel = None

_config = config_data.loader("norm")  # a module attribute: tests and tuners replace it
_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


# --- launch parameters ------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _launch_params(device_type: str, n_cols: int, dtype: torch.dtype) -> tuple[bool, int, int, int]:
    """(looped, BLOCK_N, rows_per_program, num_warps) for rows of ``n_cols`` elements."""
    fam = config_data.section(_config(), _family(device_type))
    if n_cols > fam["single_pass_max_cols"]:
        return True, int(fam["looped_block"]), 1, int(fam["looped_num_warps"])
    entry = config_data.bracket(config_data.dtype_table(fam, dtype), n_cols)
    rows = pow2("rows_per_program", int(entry["rows_per_program"]), "norm.json")
    return False, triton.next_power_of_2(n_cols), rows, int(entry["num_warps"])


def clear_caches() -> None:
    """Forget the loaded config and every cached launch choice (for tests and retuning)."""
    _compiled.clear()
    _config.cache_clear()
    _family.cache_clear()
    _launch_params.cache_clear()


# --- row geometry -----------------------------------------------------------
def _row_stride(t: torch.Tensor) -> Optional[int]:
    """Stride between consecutive rows of ``t`` seen as (numel // H, H), or None if that needs a copy.

    Needs the last dim contiguous (stride 1, irrelevant when H == 1) and the
    leading dims to collapse into one uniformly strided row dim.
    """
    shape = t.shape
    stride = t.stride()
    nd = len(shape)
    if nd == 0 or (stride[-1] != 1 and shape[-1] != 1):
        return None
    if nd == 2:
        return stride[0]
    row_stride = None
    span = 0
    for i in range(nd - 2, -1, -1):  # innermost leading dim first
        size = shape[i]
        if size == 1:
            continue
        if row_stride is None:
            row_stride = stride[i]
        elif stride[i] != span:
            return None
        span = stride[i] * size
    return shape[-1] if row_stride is None else row_stride  # no leading dim > 1: a single row


def _rows_view(t: torch.Tensor) -> Optional[tuple[torch.Tensor, int]]:
    """(``t`` as a 2-D (rows, H) view without a copy, its row stride), or None when impossible."""
    rs = _row_stride(t)
    if rs is None:
        return None
    h = t.shape[-1]
    rows = t.numel() // h if h else 0
    return t.as_strided((rows, h), (rs, 1)), rs


def _reason(name: str, t: torch.Tensor) -> Optional[str]:
    if t.dtype not in _DTYPES:
        return f"{name} dtype {t.dtype} is not float32/float16/bfloat16"
    if t.numel() and _row_stride(t) is None:
        return f"{name} (shape {tuple(t.shape)}, stride {t.stride()}) cannot be viewed as rows with last-dim stride 1 without a copy"
    return None


def _weight_reason(weight: Optional[torch.Tensor]) -> Optional[str]:
    if weight is None:
        return None
    if weight.dtype not in _DTYPES:
        return f"weight dtype {weight.dtype} is not float32/float16/bfloat16"
    if weight.dim() != 1 or (weight.stride(0) != 1 and weight.shape[0] > 1):
        return f"weight must be a contiguous 1-D tensor (shape {tuple(weight.shape)}, stride {weight.stride()})"
    return None


def supports_args(x, weight, eps) -> Optional[str]:
    """None when the Triton launchers can serve this call as given, else a short reason."""
    return _reason("x", x) or _weight_reason(weight)


def supports_args_add(x, residual, weight, eps) -> Optional[str]:
    return _reason("x", x) or _reason("residual", residual) or _weight_reason(weight)


# --- launchers --------------------------------------------------------------
def _needs_int64(rows: int, block: int, *row_strides: int) -> bool:
    """Whether an element offset (row * stride + col, padded rows included) can reach 2**31."""
    return rows * max(row_strides) + block >= 2**31

def _row_strides(*tensors: torch.Tensor) -> tuple[int, ...]:
    """Each tensor's row stride; ValueError if one cannot be seen as rows without a copy."""
    strides = tuple(_row_stride(t) for t in tensors)
    if None in strides:
        raise ValueError(
            "triton rms_norm: tensors must be row-strided with last-dim stride 1 (check supports_args first); "
            "got strides " + ", ".join(str(t.stride()) for t in tensors)
        )
    return strides


# --- launch ----------------------------------------------------------------
# Triton's ``kernel[grid](...)`` binds and specializes all 17 arguments on every call
# (~17-24 us of host time on the H100 host); its C launcher alone costs ~10-13 us. For
# the common case -- every pointer 16-byte aligned, every row stride and H divisible by
# 16, all below 2**31 -- Triton's specialization of this kernel depends only on the
# values in the key built in ``_launch``, so the CompiledKernel it returned for that key is reused and
# launched directly. Every other call takes the ordinary path.
# Off where fast_launch is off (interpreter, old Triton, ROCm: see fast_launch's docstring).
_FAST = fast_launch.enabled()
_compiled: dict[tuple, tuple] = {}  # fast key -> (CompiledKernel, rows per program, constexprs)


def _launch(x, xs, res, rs, out, os_, res_out, ros, w, n_rows, n_cols, eps, has_res, has_w) -> None:
    """One launch over all rows: a cached single-pass kernel when possible, else by the config."""
    key = None
    if _FAST:
        ptrs = x.data_ptr() | res.data_ptr() | out.data_ptr() | res_out.data_ptr() | w.data_ptr()
        strides = xs | rs | os_ | ros | n_cols
        if not (ptrs & 15 or strides & 15) and max(xs, rs, os_, ros) < 2**31 and n_rows < 2**31:
            # last field: an upper bound of _needs_int64 (rows_pp <= 16, BLOCK_N <= 65536 here), so a
            # key saying "int32" is never shared with a call that needs int64 offsets
            key = (x.device.index, x.dtype, w.dtype, has_res, has_w, n_cols, n_rows == 1, n_rows & 15 == 0,
                   (n_rows + 16) * max(xs, rs, os_, ros) + 65536 >= 2**31)
            hit = _compiled.get(key)
            if hit is not None:
                compiled, rows_pp, constexprs = hit
                compiled[((n_rows + rows_pp - 1) // rows_pp, 1, 1)](
                    x, xs, res, rs, out, os_, res_out, ros, w, n_rows, n_cols, eps, *constexprs)
                return
    looped, block, rows_pp, warps = _launch_params(x.device.type, n_cols, x.dtype)
    if looped:  # rows too long for registers: two passes over column chunks, one row per program
        _k.rms_norm_looped_kernel[(n_rows,)](
            x, xs, res, rs, out, os_, res_out, ros, w, n_cols, eps,
            HAS_RESIDUAL=has_res, HAS_WEIGHT=has_w, BLOCK_N=block, num_warps=warps,
        )
        return
    idx64 = _needs_int64(n_rows + rows_pp, block, xs, rs, os_, ros)
    constexprs = (has_res, has_w, rows_pp, block, idx64)
    compiled = _k.rms_norm_rows_kernel[((n_rows + rows_pp - 1) // rows_pp,)](
        x, xs, res, rs, out, os_, res_out, ros, w, n_rows, n_cols, eps, *constexprs, num_warps=warps,
    )
    # Cache only where the key's conservative int64 flag agrees with the exact choice.
    if key is not None and isinstance(compiled, _CompiledKernel) and idx64 == key[-1]:
        _compiled[key] = (compiled, rows_pp, constexprs)


def rms_norm(out: torch.Tensor, x: torch.Tensor, weight: Optional[torch.Tensor], eps: float) -> None:
    """``out <- rms_norm(x) * weight``; ``out`` may alias ``x``."""
    if x.numel() == 0:
        return
    xs, os_ = _row_strides(x, out)
    has_w = weight is not None
    w = weight if has_w else x
    n_cols = x.shape[-1]
    _launch(x, xs, x, 0, out, os_, out, 0, w, x.numel() // n_cols, n_cols, eps, False, has_w)


def fused_add_rms_norm(
    out: torch.Tensor,
    residual_out: torch.Tensor,
    x: torch.Tensor,
    residual: torch.Tensor,
    weight: Optional[torch.Tensor],
    eps: float,
) -> None:
    """``residual_out <- x + residual``; ``out <- rms_norm(x + residual) * weight``.

    In-place use aliases ``out`` with ``x`` and ``residual_out`` with ``residual``.
    """
    if x.numel() == 0:
        return
    xs, rs, os_, ros = _row_strides(x, residual, out, residual_out)
    has_w = weight is not None
    w = weight if has_w else x
    n_cols = x.shape[-1]
    _launch(x, xs, residual, rs, out, os_, residual_out, ros, w, x.numel() // n_cols, n_cols, eps, True, has_w)
