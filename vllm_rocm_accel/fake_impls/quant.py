"""Fakes for the FP8 quant family: exactly the real outputs' shapes, dtypes and strides.

q is contiguous in the FP8 format; scales are float32: per tensor (1,), per token (..., 1),
per token group (..., H // group_size), column-major (storage (groups, tokens)) when asked.
No output aliases an input.
"""

from __future__ import annotations

from typing import Optional

import torch

from .. import fp8
from ..backends.torch.quant import per_token_group_scales_layout
from ..checks.quant import check_per_tensor_args, check_per_token_args, check_per_token_group_args


def per_tensor_quant(x, scale: Optional[torch.Tensor] = None, dtype: Optional[torch.dtype] = None,
                     backend: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    check_per_tensor_args(x, scale, dtype)
    q = torch.empty(x.shape, dtype=fp8.resolve(dtype, x.device), device=x.device)
    return q, torch.empty(1, dtype=torch.float32, device=x.device)


def per_token_quant(x, dtype: Optional[torch.dtype] = None, scale_ub: Optional[torch.Tensor] = None,
                    backend: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    check_per_token_args(x, dtype, scale_ub)
    q = torch.empty(x.shape, dtype=fp8.resolve(dtype, x.device), device=x.device)
    return q, torch.empty(tuple(x.shape[:-1]) + (1,), dtype=torch.float32, device=x.device)


def per_token_group_quant(x, group_size: int = 128, column_major_scales: bool = False,
                          dtype: Optional[torch.dtype] = None, backend: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    check_per_token_group_args(x, group_size, column_major_scales, dtype)
    q = torch.empty(x.shape, dtype=fp8.resolve(dtype, x.device), device=x.device)
    scales = per_token_group_scales_layout(tuple(x.shape[:-1]), x.shape[-1] // group_size, column_major_scales,
                                           x.device)
    return q, scales
