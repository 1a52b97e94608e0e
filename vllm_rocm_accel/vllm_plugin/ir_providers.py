"""Register our ops as the ``rocm_accel`` provider of vLLM IR ops (vLLM >= 0.32)."""

from __future__ import annotations

from typing import Optional

import torch

PROVIDER = "rocm_accel"


def _rms_norm(x: torch.Tensor, weight: Optional[torch.Tensor], epsilon: float, variance_size: Optional[int] = None) -> torch.Tensor:
    from ..facade import rocm_accel_ops

    return rocm_accel_ops.rms_norm(x, weight, epsilon)


def _rms_norm_supports(x, weight, epsilon, variance_size=None) -> bool:
    return variance_size is None


def _fused_add_rms_norm(
    x: torch.Tensor,
    x_residual: torch.Tensor,
    weight: Optional[torch.Tensor],
    epsilon: float,
    variance_size: Optional[int] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    from ..facade import rocm_accel_ops

    return rocm_accel_ops.fused_add_rms_norm(x, x_residual, weight, epsilon, inplace=True)


def _fused_add_rms_norm_supports(x, x_residual, weight, epsilon, variance_size=None) -> bool:
    return variance_size is None


def register() -> list[str]:
    """Add the provider to each IR op that has none of ours yet. Returns the ops touched."""
    from vllm import ir

    done = []
    table = (
        (ir.ops.rms_norm, _rms_norm, _rms_norm_supports, False),
        (ir.ops.fused_add_rms_norm, _fused_add_rms_norm, _fused_add_rms_norm_supports, True),
    )
    for op, fn, supports, inplace in table:
        if PROVIDER not in op.impls:
            op.register_impl(PROVIDER, supports_args=supports, inplace=inplace)(fn)
            done.append(op.name)
    return done
