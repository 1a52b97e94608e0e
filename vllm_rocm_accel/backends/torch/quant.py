"""FP8 quantization in torch: the reference every other backend is checked against.

The rule is :mod:`vllm_rocm_accel.fp8`'s: ``scale = max(amax, AMAX_FLOOR) / fp8_max`` in
float32, ``q = clamp(x / scale, -fp8_max, fp8_max)`` rounded to the FP8 format. All math in
float32; x of any leading dims, quantized over the last dim (per token) or over groups of
``group_size`` consecutive last-dim elements (per token group).
"""

from __future__ import annotations

from typing import Optional

import torch

from ...fp8 import AMAX_FLOOR, fp8_max


def _quantize(xf: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    m = fp8_max(dtype)
    return (xf / scale).clamp_(-m, m).to(dtype)


def per_tensor_quant(x: torch.Tensor, scale: Optional[torch.Tensor], dtype: torch.dtype):
    """-> (q, scale of shape (1,)): dynamic (from max |x|) when ``scale`` is None, else static."""
    xf = x.to(torch.float32, memory_format=torch.contiguous_format)  # q comes out contiguous
    if scale is None:
        amax = xf.abs().amax() if xf.numel() else torch.zeros((), device=x.device)
        s = (amax.clamp(min=AMAX_FLOOR) / fp8_max(dtype)).reshape(1)
    else:
        s = scale.reshape(1).float().clone()
    return _quantize(xf, s, dtype), s


def per_token_quant(x: torch.Tensor, dtype: torch.dtype, scale_ub: Optional[torch.Tensor]):
    """-> (q, scales of shape (..., 1)); ``scale_ub`` caps each row's amax before the scale is taken."""
    xf = x.to(torch.float32, memory_format=torch.contiguous_format)  # q comes out contiguous
    if x.shape[-1]:
        amax = xf.abs().amax(dim=-1, keepdim=True)
    else:
        amax = torch.zeros(tuple(x.shape[:-1]) + (1,), device=x.device)
    if scale_ub is not None:
        amax = torch.minimum(amax, scale_ub.reshape(()).float())
    s = amax.clamp(min=AMAX_FLOOR) / fp8_max(dtype)
    return _quantize(xf, s, dtype), s


def per_token_group_scales_layout(lead: tuple, groups: int, column_major: bool, device) -> torch.Tensor:
    """An empty float32 scales tensor of shape (*lead, groups); column-major: each group's
    scales contiguous over the tokens (storage (groups, tokens)), as DeepGEMM-style GEMMs read them."""
    if not column_major:
        return torch.empty(lead + (groups,), dtype=torch.float32, device=device)
    tokens = 1
    for n in lead:
        tokens *= n
    return torch.empty((groups, tokens), dtype=torch.float32, device=device).t().reshape(lead + (groups,))


def per_token_group_quant(x: torch.Tensor, group_size: int, column_major: bool, dtype: torch.dtype):
    """-> (q, scales of shape (..., H // group_size)), scales column-major when asked."""
    lead, h = tuple(x.shape[:-1]), x.shape[-1]
    groups = h // group_size
    xg = x.to(torch.float32, memory_format=torch.contiguous_format).reshape(lead + (groups, group_size))
    amax = xg.abs().amax(dim=-1, keepdim=True) if group_size else torch.zeros(lead + (groups, 1), device=x.device)
    s = amax.clamp(min=AMAX_FLOOR) / fp8_max(dtype)
    q = _quantize(xg, s, dtype).reshape(x.shape)
    scales = per_token_group_scales_layout(lead, groups, column_major, x.device)
    scales.copy_(s.squeeze(-1))
    return q, scales


def supports_args(*args, **kwargs) -> Optional[str]:
    return None
