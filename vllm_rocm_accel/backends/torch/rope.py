"""Rotary embedding in torch, step for step as vLLM 0.32's ``RotaryEmbedding.forward_static``.

The same ops in the same dtype flow as vLLM's native path (``index_select`` of the
cache rows, ``chunk`` into cos/sin, ``ApplyRotaryEmb.forward_static``: cos/sin cast to
the input's dtype and ``x1 * cos - x2 * sin``, ``x2 * cos + x1 * sin`` computed in it,
``cat`` with the untouched tail), so routing vLLM's RotaryEmbedding through this
backend leaves a model's output bit-identical.

One addition: a position outside ``[0, max_position)`` never indexes outside the
cache (the index is clamped) and its token's query and key rows come out as NaN
(a ``where`` that keeps every in-range value as it is).
"""

from __future__ import annotations

from typing import Optional

import torch


def _apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, is_neox: bool) -> torch.Tensor:
    """vLLM's ``ApplyRotaryEmb.forward_static`` (enable_fp32_compute=False)."""
    cos = cos.unsqueeze(-2).to(x.dtype)
    sin = sin.unsqueeze(-2).to(x.dtype)
    if is_neox:
        x1, x2 = torch.chunk(x, 2, dim=-1)
    else:
        x1 = x[..., ::2]
        x2 = x[..., 1::2]
    o1 = x1 * cos - x2 * sin
    o2 = x2 * cos + x1 * sin
    if is_neox:
        return torch.cat((o1, o2), dim=-1)
    return torch.stack((o1, o2), dim=-1).flatten(-2)


def _rotate(x: torch.Tensor, cos, sin, valid, head_size: int, rotary_dim: int, is_neox: bool) -> torch.Tensor:
    tokens = cos.shape[0]
    x3 = x.reshape(tokens, -1, head_size)
    rot = _apply_rotary(x3[..., :rotary_dim], cos, sin, is_neox)
    out = torch.cat((rot, x3[..., rotary_dim:]), dim=-1)
    out = torch.where(valid[:, None, None], out, torch.full((), float("nan"), dtype=out.dtype, device=out.device))
    return out.reshape(x.shape)


def rotary_embedding(
    positions: torch.Tensor,
    query: torch.Tensor,
    key: Optional[torch.Tensor],
    head_size: int,
    cos_sin_cache: torch.Tensor,
    is_neox: bool,
    inplace: bool,
) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Rotated (query, key): written into them when ``inplace``, else new tensors."""
    rotary_dim = cos_sin_cache.shape[-1]
    max_position = cos_sin_cache.shape[0]
    positions = positions.flatten()
    valid = (positions >= 0) & (positions < max_position)
    cos_sin = cos_sin_cache.index_select(0, positions.clamp(0, max_position - 1))
    cos, sin = cos_sin.chunk(2, dim=-1)
    q = _rotate(query, cos, sin, valid, head_size, rotary_dim, is_neox)
    k = None if key is None else _rotate(key, cos, sin, valid, head_size, rotary_dim, is_neox)
    if inplace:
        query.copy_(q)
        if key is not None:
            key.copy_(k)
        return query, key
    return q, k


def supports_args(positions, query, key, head_size, cos_sin_cache, is_neox, rotary_dim) -> Optional[str]:
    return None
