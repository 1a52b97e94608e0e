"""Input generators for the rotary-embedding family, shared by the tests and the benchmarks."""

from __future__ import annotations

from typing import Optional, Union

import torch

Device = Union[str, torch.device]


def cos_sin_cache(
    max_position: int, rotary_dim: int, base: float = 10000.0, *, dtype: torch.dtype = torch.float32,
    device: Device = "cpu",
) -> torch.Tensor:
    """vLLM's (max_position, rotary_dim) cos || sin cache (``RotaryEmbedding._compute_cos_sin_cache``)."""
    inv_freq = 1.0 / (base ** (torch.arange(0, rotary_dim, 2, dtype=torch.float) / rotary_dim))
    t = torch.arange(max_position, dtype=torch.float)
    freqs = torch.einsum("i,j -> ij", t, inv_freq)
    return torch.cat((freqs.cos(), freqs.sin()), dim=-1).to(device=device, dtype=dtype)


def rope_inputs(
    tokens: int,
    q_heads: int,
    k_heads: Optional[int],
    head_size: int,
    dtype: torch.dtype,
    device: Device = "cpu",
    *,
    rotary_dim: Optional[int] = None,
    max_position: int = 8192,
    three_d: bool = False,
    cache_dtype: torch.dtype = torch.float32,
    positions_dtype: torch.dtype = torch.int64,
    random_cache: bool = False,
    generator: Optional[torch.Generator] = None,
) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor], torch.Tensor]:
    """``(positions, query, key, cos_sin_cache)``: random positions in [0, max_position),
    query/key ~ N(0, 1) as (T, H * D) (or (T, H, D) with ``three_d``), vLLM's cache (or, with
    ``random_cache``, random angles' cos/sin, so every table row is distinct and nonzero)."""
    rotary_dim = head_size if rotary_dim is None else rotary_dim
    positions = torch.randint(0, max_position, (tokens,), generator=generator, device=device).to(positions_dtype)
    shape_q = (tokens, q_heads, head_size) if three_d else (tokens, q_heads * head_size)
    query = torch.randn(shape_q, generator=generator, device=device).to(dtype)
    key = None
    if k_heads is not None:
        shape_k = (tokens, k_heads, head_size) if three_d else (tokens, k_heads * head_size)
        key = torch.randn(shape_k, generator=generator, device=device).to(dtype)
    if random_cache:
        angles = torch.rand(max_position, rotary_dim // 2, generator=generator, device=device) * 6.2831853
        cache = torch.cat((angles.cos(), angles.sin()), dim=-1).to(cache_dtype)
    else:
        cache = cos_sin_cache(max_position, rotary_dim, dtype=cache_dtype, device=device)
    return positions, query, key, cache
