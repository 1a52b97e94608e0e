"""The fused FP8 quant ops in torch: the unfused composition, step for step.

Each op is exactly its two family references one after the other, so the fused ops' contract
*is* "the same as the unfused calls":

* ``rms_norm_dynamic_quant`` = ``norm.rms_norm`` (float32 math, rounded to x's dtype as vLLM's
  RMSNorm rounds) then ``quant.per_token_quant`` (:mod:`vllm_rocm_accel.fp8`'s scale rule);
* ``fused_add_rms_norm_dynamic_quant`` = ``norm.fused_add_rms_norm`` (``residual <- x + residual``
  rounded to residual's dtype, normalized from the float32 sum) then ``per_token_quant``;
* ``silu_and_mul_group_quant`` = ``activation.silu_and_mul`` (vLLM's ``SiluAndMul``: silu and the
  product each rounded to x's dtype) then ``quant.per_token_group_quant``.

The other backends are checked against these: the Triton kernels reproduce every rounding
step (so they differ only where float32 reductions or ``exp`` differ in the last bit); AITER's
kernels quantize the unrounded float32 norm (see ``backends/aiter/fused_quant.py``).
"""

from __future__ import annotations

from typing import Optional

import torch

from . import activation as torch_act
from . import norm as torch_norm
from . import quant as torch_quant


def rms_norm_dynamic_quant(x: torch.Tensor, weight: Optional[torch.Tensor], eps: float, dtype: torch.dtype):
    """-> (q, scales of shape (..., 1))."""
    return torch_quant.per_token_quant(torch_norm.rms_norm(x, weight, eps), dtype, None)


def fused_add_rms_norm_dynamic_quant(x: torch.Tensor, residual: torch.Tensor, weight: Optional[torch.Tensor],
                                     eps: float, dtype: torch.dtype):
    """-> (q, scales of shape (..., 1)); ``residual <- x + residual`` in place."""
    normed, summed = torch_norm.fused_add_rms_norm(x, residual, weight, eps, False)
    residual.copy_(summed)
    return torch_quant.per_token_quant(normed, dtype, None)


def silu_and_mul_group_quant(x: torch.Tensor, group_size: int, column_major: bool, dtype: torch.dtype):
    """-> (q of shape (..., d), scales of shape (..., d // group_size)), column-major when asked."""
    return torch_quant.per_token_group_quant(torch_act.silu_and_mul(x), group_size, column_major, dtype)


def supports_args(*args, **kwargs) -> Optional[str]:
    return None
