"""Fakes for the norm family."""

from __future__ import annotations

from typing import Optional

import torch

from ..checks.norm import check_rms_norm_args


def rms_norm(x: torch.Tensor, weight: Optional[torch.Tensor], epsilon: float, backend: str = "auto") -> torch.Tensor:
    check_rms_norm_args(x, weight, epsilon)
    return torch.empty(x.shape, dtype=x.dtype, device=x.device)


def fused_add_rms_norm(
    x: torch.Tensor, residual: torch.Tensor, weight: Optional[torch.Tensor], epsilon: float, backend: str = "auto"
) -> tuple[torch.Tensor, torch.Tensor]:
    check_rms_norm_args(x, weight, epsilon, residual)
    return (
        torch.empty(x.shape, dtype=x.dtype, device=x.device),
        torch.empty(x.shape, dtype=x.dtype, device=x.device),
    )


def fused_add_rms_norm_(
    x: torch.Tensor, residual: torch.Tensor, weight: Optional[torch.Tensor], epsilon: float, backend: str = "auto"
) -> None:
    check_rms_norm_args(x, weight, epsilon, residual)
