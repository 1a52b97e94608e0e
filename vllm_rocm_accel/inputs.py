"""Input generators shared by the tests and the benchmarks (fresh random data, never zeros)."""

from __future__ import annotations

from typing import Optional, Union

import torch

Device = Union[str, torch.device]


def norm_inputs(
    shape: tuple[int, ...],
    dtype: torch.dtype,
    device: Device = "cpu",
    *,
    weight_dtype: Optional[Union[torch.dtype, str]] = "same",
    scale: float = 1.0,
    generator: Optional[torch.Generator] = None,
) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """``(x, residual, weight)`` for the norm family: x ~ N(0, scale), weight in [0.5, 1.5)."""
    x = torch.randn(shape, generator=generator, device=device).mul_(scale).to(dtype)
    residual = torch.randn(shape, generator=generator, device=device).to(dtype)
    wd = dtype if weight_dtype == "same" else weight_dtype
    weight = None
    if wd is not None:
        weight = (torch.rand(shape[-1], generator=generator, device=device) + 0.5).to(wd)
    return x, residual, weight
