"""Gated activations in torch, step for step as vLLM 0.32's ``SiluAndMul.forward_native`` and
``GeluAndMul.forward_native``: the activation of the gate half in the input dtype, then the
product in the input dtype (two roundings for 16-bit inputs, as vLLM's own CUDA kernel).
Same op order, so routing vLLM's layers through this backend keeps a model's output
bit-identical.

One difference is deliberate: vLLM's ``GeluAndMul.forward_native`` on ROCm replaces
``approximate="tanh"`` by ``"none"`` (PyTorch's tanh GELU was unstable under
torch.compile there); here ``"tanh"`` always means the tanh approximation, as vLLM's
and AITER's kernels compute it.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F


def silu_and_mul(x: torch.Tensor, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    d = x.shape[-1] // 2
    if out is None:
        return F.silu(x[..., :d]) * x[..., d:]
    return torch.mul(F.silu(x[..., :d]), x[..., d:], out=out)


def gelu_and_mul(x: torch.Tensor, approximate: str, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    d = x.shape[-1] // 2
    if out is None:
        return F.gelu(x[..., :d], approximate=approximate) * x[..., d:]
    return torch.mul(F.gelu(x[..., :d], approximate=approximate), x[..., d:], out=out)


def supports_args(x: torch.Tensor, out: Optional[torch.Tensor] = None) -> Optional[str]:
    return None
