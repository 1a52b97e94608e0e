"""Argument checks of the fused FP8 quant family (shared by the ops and their fakes).

The norm ops take the norm family's arguments (:func:`~vllm_rocm_accel.checks.norm.check_rms_norm_args`)
plus an FP8 ``dtype``; ``silu_and_mul_group_quant`` takes the activation family's ``x`` plus the
quant family's group arguments. :func:`check_residual_writable` runs in the ops only (fake tensors
have no addresses).
"""

from __future__ import annotations

from .activation import _byte_span, check_act_and_mul_args
from .norm import check_rms_norm_args
from .quant import check_dtype


def check_rms_norm_quant_args(x, weight, epsilon, dtype, residual=None) -> None:
    check_rms_norm_args(x, weight, epsilon, residual)
    check_dtype(dtype)


def check_residual_writable(x, residual) -> None:
    """``residual`` (written in place) is not a broadcast view and shares no memory with ``x``.

    Conservative, as the activation family's ``out`` check: byte ranges that interleave
    without sharing an element are refused too.
    """
    if residual.numel() == 0:
        return
    if any(s == 0 and n > 1 for n, s in zip(residual.shape, residual.stride())):
        raise ValueError(
            f"residual (shape {tuple(residual.shape)}, stride {residual.stride()}) has several elements at one "
            "address; it is updated in place"
        )
    a, b = _byte_span(residual), _byte_span(x)
    if a[0] < b[1] and b[0] < a[1]:
        raise ValueError("residual shares memory with x; the op updates residual in place and only reads x")


def check_silu_and_mul_group_quant_args(x, group_size, column_major_scales, dtype) -> None:
    check_act_and_mul_args(x)
    check_dtype(dtype)
    if isinstance(group_size, bool) or not isinstance(group_size, int):
        raise TypeError(f"group_size must be an int, got {type(group_size).__name__}")
    if group_size <= 0:
        raise ValueError(f"group_size must be positive, got {group_size}")
    d = x.shape[-1] // 2
    if d % group_size:
        raise ValueError(
            f"x has output width d = {d} (shape {tuple(x.shape)}, d = x.shape[-1] // 2), not a multiple of "
            f"group_size={group_size}"
        )
    if not isinstance(column_major_scales, bool):
        raise TypeError(f"column_major_scales must be a bool, got {type(column_major_scales).__name__}")
