"""Input generators of the activation family, shared by the tests and the benchmarks
(fresh random data, never zeros)."""

from __future__ import annotations

from typing import Optional, Union

import torch

Device = Union[str, torch.device]


def act_and_mul_inputs(
    rows: Union[int, tuple[int, ...]],
    d: int,
    dtype: torch.dtype,
    device: Device = "cpu",
    *,
    scale: float = 2.0,
    row_pad: int = 0,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """``x`` of shape (*rows, 2 * d): gate and up halves ~ N(0, scale).

    ``scale`` 2 spreads the gate over the activations' curved region and both tails.
    ``row_pad > 0`` returns a row-strided view: the rows of a (*rows, 2 * d + row_pad)
    tensor cut to their first 2 * d columns (as a slice of a fused projection would be).
    """
    lead = (rows,) if isinstance(rows, int) else tuple(rows)
    full = torch.randn(lead + (2 * d + row_pad,), generator=generator, device=device).mul_(scale).to(dtype)
    return full[..., : 2 * d] if row_pad else full
