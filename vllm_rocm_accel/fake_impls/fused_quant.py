"""Fakes for the fused FP8 quant family: exactly the real outputs' shapes, dtypes and strides.

q is contiguous in the FP8 format; scales are float32: per token (..., 1) for the norm ops, per
token group (..., d // group_size) for ``silu_and_mul_group_quant`` (column-major storage
(groups, tokens) when asked). No output aliases an input; the fused-add op's in-place update of
``residual`` is declared in its schema.
"""

from __future__ import annotations

from typing import Optional

import torch

from .. import fp8
from ..backends.torch.quant import per_token_group_scales_layout
from ..checks.fused_quant import check_rms_norm_quant_args, check_silu_and_mul_group_quant_args


def _per_token_outputs(x: torch.Tensor, dtype: Optional[torch.dtype]) -> tuple[torch.Tensor, torch.Tensor]:
    q = torch.empty(x.shape, dtype=fp8.resolve(dtype, x.device), device=x.device)
    return q, torch.empty(tuple(x.shape[:-1]) + (1,), dtype=torch.float32, device=x.device)


def rms_norm_dynamic_quant(x: torch.Tensor, weight: Optional[torch.Tensor], epsilon: float,
                           dtype: Optional[torch.dtype] = None, backend: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    check_rms_norm_quant_args(x, weight, epsilon, dtype)
    return _per_token_outputs(x, dtype)


def fused_add_rms_norm_dynamic_quant(x: torch.Tensor, residual: torch.Tensor, weight: Optional[torch.Tensor],
                                     epsilon: float, dtype: Optional[torch.dtype] = None,
                                     backend: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    check_rms_norm_quant_args(x, weight, epsilon, dtype, residual)
    return _per_token_outputs(x, dtype)


def silu_and_mul_group_quant(x: torch.Tensor, group_size: int = 128, column_major_scales: bool = False,
                             dtype: Optional[torch.dtype] = None, backend: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    check_silu_and_mul_group_quant_args(x, group_size, column_major_scales, dtype)
    lead, d = tuple(x.shape[:-1]), x.shape[-1] // 2
    q = torch.empty(lead + (d,), dtype=fp8.resolve(dtype, x.device), device=x.device)
    return q, per_token_group_scales_layout(lead, d // group_size, column_major_scales, x.device)
