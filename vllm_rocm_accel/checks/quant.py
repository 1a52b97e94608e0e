"""Argument checks of the FP8 quant family (shared by the ops and their fakes)."""

from __future__ import annotations

import torch

from . import check_same_device, check_tensor
from .. import fp8


def check_x(x) -> None:
    check_tensor("x", x)
    if x.dim() < 1:
        raise ValueError("x is 0-d; expected at least 1 dim (..., hidden)")


def check_dtype(dtype) -> None:
    if dtype is not None and dtype not in fp8.FP8_DTYPES:
        raise ValueError(f"dtype must be torch.float8_e4m3fn or torch.float8_e4m3fnuz (or None), got {dtype}")


def _one_float32(name: str, t, x: torch.Tensor) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype != torch.float32:
        raise TypeError(f"{name} has dtype {t.dtype}; expected float32")
    if t.numel() != 1:
        raise ValueError(f"{name} has shape {tuple(t.shape)}; expected one element (shape () or (1,))")
    check_same_device(name, t, "x", x)


def check_per_tensor_args(x, scale, dtype) -> None:
    check_x(x)
    check_dtype(dtype)
    if scale is not None:
        _one_float32("scale", scale, x)


def check_per_token_args(x, dtype, scale_ub) -> None:
    check_x(x)
    check_dtype(dtype)
    if scale_ub is not None:
        _one_float32("scale_ub", scale_ub, x)


def check_per_token_group_args(x, group_size, column_major_scales, dtype) -> None:
    check_x(x)
    check_dtype(dtype)
    if isinstance(group_size, bool) or not isinstance(group_size, int):
        raise TypeError(f"group_size must be an int, got {type(group_size).__name__}")
    if group_size <= 0:
        raise ValueError(f"group_size must be positive, got {group_size}")
    if x.shape[-1] % group_size:
        raise ValueError(
            f"x has hidden size {x.shape[-1]} (shape {tuple(x.shape)}), not a multiple of group_size={group_size}"
        )
    if not isinstance(column_major_scales, bool):
        raise TypeError(f"column_major_scales must be a bool, got {type(column_major_scales).__name__}")
