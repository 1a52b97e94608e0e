"""RMSNorm through AITER's CK kernels (``aiter.rms_norm``, ``aiter.rmsnorm2d_fwd_with_add``).

Contract of amd-aiter 0.1.7 (aiter/ops/rmsnorm.py):
  rms_norm(input, weight, epsilon, use_model_sensitive_rmsnorm=0) -> Tensor
  rmsnorm2d_fwd_with_add(out, input, residual_in, residual_out, weight, epsilon,
                         use_model_sensitive_rmsnorm=0) -> None
Both take 2-D 16-bit rows and a weight of the input's dtype. Whether the fused
kernel may write over its inputs is not documented, so the in-place form writes
fresh outputs and copies them back (one extra pass, paid only on this backend).
"""

from __future__ import annotations

import functools
from typing import Optional

import torch

_DTYPES = (torch.float16, torch.bfloat16)


def _aiter():
    import aiter  # lazy: importing aiter starts JIT builds

    return aiter


@functools.lru_cache(maxsize=64)
def _ones(hidden: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return torch.ones(hidden, dtype=dtype, device=device)


def _weight(weight: Optional[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    return weight if weight is not None else _ones(x.shape[-1], x.dtype, x.device)


def flatten_is_free(t: torch.Tensor) -> bool:
    """``t.reshape(-1, H)`` is a view with unit-stride rows (no hidden copy). Size-1 dims'
    strides do not matter (as for ``is_contiguous``): each other leading dim's stride must be
    the next inner non-size-1 dim's stride times its size."""
    if t.stride(-1) != 1 and t.shape[-1] != 1:
        return False
    expected = None  # set by the innermost leading dim of size > 1
    for i in range(t.dim() - 2, -1, -1):
        if t.shape[i] == 1:
            continue
        if expected is not None and t.stride(i) != expected:
            return False
        expected = t.stride(i) * t.shape[i]
    return True


def rms_norm(x: torch.Tensor, weight: Optional[torch.Tensor], eps: float) -> torch.Tensor:
    x2 = x.reshape(-1, x.shape[-1])
    return _aiter().rms_norm(x2, _weight(weight, x), eps).reshape(x.shape)


def fused_add_rms_norm(
    x: torch.Tensor, residual: torch.Tensor, weight: Optional[torch.Tensor], eps: float, inplace: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    hidden = x.shape[-1]
    x2 = x.reshape(-1, hidden)
    r2 = residual.reshape(-1, hidden)
    out = torch.empty(x2.shape, dtype=x.dtype, device=x.device)
    residual_out = torch.empty(r2.shape, dtype=residual.dtype, device=residual.device)
    _aiter().rmsnorm2d_fwd_with_add(out, x2, r2, residual_out, _weight(weight, x), eps)
    if inplace:
        x.copy_(out.view(x.shape))
        residual.copy_(residual_out.view(residual.shape))
        return x, residual
    return out.view(x.shape), residual_out.view(residual.shape)


def supports_args(x, weight, eps) -> Optional[str]:
    if x.dtype not in _DTYPES:
        return f"aiter rmsnorm takes float16/bfloat16, got {x.dtype}"
    if weight is not None and weight.dtype != x.dtype:
        return f"aiter rmsnorm needs weight dtype == x dtype ({weight.dtype} != {x.dtype})"
    if weight is not None and weight.stride(0) != 1 and weight.shape[0] > 1:
        return "aiter rmsnorm reads weight as contiguous; got a strided weight"
    if not flatten_is_free(x):
        return "x cannot be viewed as unit-stride 2-D rows without a copy"
    return None


def supports_args_add(x, residual, weight, eps) -> Optional[str]:
    reason = supports_args(x, weight, eps)
    if reason is None and not flatten_is_free(residual):
        reason = "residual cannot be viewed as unit-stride 2-D rows without a copy"
    return reason
