"""RMSNorm in torch, step for step as vLLM 0.32's ``vllm.ir.ops.rms_norm``.

Same operation order as vLLM's native implementation, so routing vLLM's RMSNorm
through this backend leaves a model's output unchanged.
"""

from __future__ import annotations

from typing import Optional

import torch


def _normalize(s: torch.Tensor, weight: Optional[torch.Tensor], eps: float, dtype: torch.dtype) -> torch.Tensor:
    """``s`` is float32; returns the normalized, weighted rows in ``dtype``."""
    variance = s.pow(2).mean(dim=-1, keepdim=True)
    y = s * torch.rsqrt(variance + eps)
    if weight is not None:
        y = y.to(weight.dtype) * weight
    return y.to(dtype)


def rms_norm(x: torch.Tensor, weight: Optional[torch.Tensor], eps: float) -> torch.Tensor:
    return _normalize(x.to(torch.float32), weight, eps, x.dtype)


def fused_add_rms_norm(
    x: torch.Tensor, residual: torch.Tensor, weight: Optional[torch.Tensor], eps: float, inplace: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    s = x.to(torch.float32) + residual.to(torch.float32)
    normed = _normalize(s, weight, eps, x.dtype)
    if inplace:
        residual.copy_(s)
        x.copy_(normed)
        return x, residual
    return normed, s.to(residual.dtype)


def supports_args(x, weight, eps) -> Optional[str]:
    return None


def supports_args_add(x, residual, weight, eps) -> Optional[str]:
    return None
