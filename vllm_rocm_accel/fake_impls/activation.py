"""Fakes for the activation family."""

from __future__ import annotations

import torch

from ..checks.activation import check_act_and_mul_args


def _out_like(x: torch.Tensor) -> torch.Tensor:
    return torch.empty(tuple(x.shape[:-1]) + (x.shape[-1] // 2,), dtype=x.dtype, device=x.device)


def silu_and_mul(x: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    check_act_and_mul_args(x)
    return _out_like(x)


def silu_and_mul_out(out: torch.Tensor, x: torch.Tensor, backend: str = "auto") -> None:
    check_act_and_mul_args(x, out)


def gelu_and_mul(x: torch.Tensor, approximate: str = "none", backend: str = "auto") -> torch.Tensor:
    check_act_and_mul_args(x, None, approximate)
    return _out_like(x)


def gelu_and_mul_out(out: torch.Tensor, x: torch.Tensor, approximate: str = "none", backend: str = "auto") -> None:
    check_act_and_mul_args(x, out, approximate)
