"""Argument checks shared by the ops and their fake impls: clear errors naming the argument.

Everything here runs before any backend touches memory, so a rejected in-place
call leaves its inputs as they were.
"""

from __future__ import annotations

import math

import torch

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _names(dtypes) -> str:
    return ", ".join(str(d).removeprefix("torch.") for d in dtypes)


def check_tensor(name: str, t, dtypes=FLOAT_DTYPES) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in dtypes:
        raise TypeError(f"{name} has dtype {t.dtype}; expected one of {_names(dtypes)}")


def check_like(name: str, t: torch.Tensor, ref_name: str, ref: torch.Tensor) -> None:
    """``t`` has ``ref``'s shape, dtype and device."""
    if t.shape != ref.shape:
        raise ValueError(f"{name} has shape {tuple(t.shape)}; expected {ref_name}'s shape {tuple(ref.shape)}")
    if t.dtype != ref.dtype:
        raise ValueError(f"{name} has dtype {t.dtype}; expected {ref_name}'s dtype {ref.dtype}")
    check_same_device(name, t, ref_name, ref)


def check_same_device(name: str, t: torch.Tensor, ref_name: str, ref: torch.Tensor) -> None:
    if t.device != ref.device:
        raise ValueError(f"{name} is on {t.device} but {ref_name} is on {ref.device}")


def check_float(name: str, value, *, minimum: float = 0.0) -> None:
    if isinstance(value, bool) or not isinstance(value, (float, int)):
        raise TypeError(f"{name} must be a float, got {type(value).__name__}")
    if not (value >= minimum and math.isfinite(value)):
        raise ValueError(f"{name} must be finite and >= {minimum}, got {value}")
