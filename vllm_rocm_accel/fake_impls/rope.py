"""Fakes for the rotary-embedding family."""

from __future__ import annotations

from typing import Optional

import torch

from ..checks.rope import check_rope_args


def rotary_embedding_(
    positions: torch.Tensor,
    query: torch.Tensor,
    key: Optional[torch.Tensor],
    head_size: int,
    cos_sin_cache: torch.Tensor,
    is_neox: bool,
    rotary_dim: Optional[int] = None,
    backend: str = "auto",
) -> None:
    check_rope_args(positions, query, key, head_size, cos_sin_cache, is_neox, rotary_dim)


def rotary_embedding(
    positions: torch.Tensor,
    query: torch.Tensor,
    key: Optional[torch.Tensor],
    head_size: int,
    cos_sin_cache: torch.Tensor,
    is_neox: bool,
    rotary_dim: Optional[int] = None,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    check_rope_args(positions, query, key, head_size, cos_sin_cache, is_neox, rotary_dim)
    q = torch.empty(query.shape, dtype=query.dtype, device=query.device)
    if key is None:
        return q, torch.empty(0, dtype=query.dtype, device=query.device)
    return q, torch.empty(key.shape, dtype=key.dtype, device=key.device)
