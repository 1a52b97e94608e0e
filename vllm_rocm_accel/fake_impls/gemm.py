"""Fakes for the FP8 GEMM family: a new contiguous (M, N) tensor in ``out_dtype``."""

from __future__ import annotations

from typing import Optional

import torch

from ..checks.gemm import check_gemm_a8w8_args, check_gemm_a8w8_blockscale_args


def gemm_a8w8(a, w, a_scale, w_scale, bias: Optional[torch.Tensor] = None, out_dtype: torch.dtype = torch.bfloat16,
              backend: str = "auto") -> torch.Tensor:
    check_gemm_a8w8_args(a, w, a_scale, w_scale, bias, out_dtype)
    return torch.empty((a.shape[0], w.shape[0]), dtype=out_dtype, device=a.device)


def gemm_a8w8_blockscale(a, w, a_scale, w_scale, out_dtype: torch.dtype = torch.bfloat16,
                         backend: str = "auto") -> torch.Tensor:
    check_gemm_a8w8_blockscale_args(a, w, a_scale, w_scale, out_dtype)
    return torch.empty((a.shape[0], w.shape[0]), dtype=out_dtype, device=a.device)
