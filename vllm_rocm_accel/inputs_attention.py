"""Input generators of the attention family, shared by the tests and the benchmarks (fresh random
data, never zeros), and the FLOP count the benchmarks report."""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch

Device = Union[str, torch.device]


def _randn(shape, dtype, device, generator) -> torch.Tensor:
    return torch.randn(shape, generator=generator, device=device).to(dtype)


def dense_qkv(
    batch: int, seqlen_q: int, seqlen_k: int, heads_q: int, heads_k: int, head_dim: int,
    head_dim_v: Optional[int] = None, dtype: torch.dtype = torch.bfloat16, device: Device = "cpu",
    generator: Optional[torch.Generator] = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(q, k, v)`` ~ N(0, 1) in FlashAttention's dense layout: q (B, Sq, Hq, D), k (B, Sk, Hk, D),
    v (B, Sk, Hk, Dv) (Dv = D unless given)."""
    dv = head_dim if head_dim_v is None else head_dim_v
    q = _randn((batch, seqlen_q, heads_q, head_dim), dtype, device, generator)
    k = _randn((batch, seqlen_k, heads_k, head_dim), dtype, device, generator)
    v = _randn((batch, seqlen_k, heads_k, dv), dtype, device, generator)
    return q, k, v


def cu_seqlens(seqlens: Sequence[int], device: Device = "cpu") -> torch.Tensor:
    """int32 (B + 1,) prefix sums ``[0, l0, l0 + l1, ...]``."""
    cu = [0]
    for n in seqlens:
        cu.append(cu[-1] + int(n))
    return torch.tensor(cu, dtype=torch.int32, device=device)


def varlen_qkv(
    seqlens_q: Sequence[int], seqlens_k: Sequence[int], heads_q: int, heads_k: int, head_dim: int,
    head_dim_v: Optional[int] = None, dtype: torch.dtype = torch.bfloat16, device: Device = "cpu",
    generator: Optional[torch.Generator] = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int, int]:
    """``(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k)``: packed q (Tq, Hq, D),
    k (Tk, Hk, D), v (Tk, Hk, Dv) ~ N(0, 1), Tq = sum(seqlens_q), Tk = sum(seqlens_k); int32
    cu_seqlens; the max lengths as ints (0 for an empty batch). Empty sequences are allowed."""
    if len(seqlens_q) != len(seqlens_k):
        raise ValueError(f"seqlens_q has {len(seqlens_q)} sequences but seqlens_k has {len(seqlens_k)}")
    dv = head_dim if head_dim_v is None else head_dim_v
    tq, tk = sum(int(n) for n in seqlens_q), sum(int(n) for n in seqlens_k)
    q = _randn((tq, heads_q, head_dim), dtype, device, generator)
    k = _randn((tk, heads_k, head_dim), dtype, device, generator)
    v = _randn((tk, heads_k, dv), dtype, device, generator)
    max_q = max((int(n) for n in seqlens_q), default=0)
    max_k = max((int(n) for n in seqlens_k), default=0)
    return q, k, v, cu_seqlens(seqlens_q, device), cu_seqlens(seqlens_k, device), max_q, max_k


def alibi_slopes(heads: int, batch: Optional[int] = None, device: Device = "cpu") -> torch.Tensor:
    """ALiBi's geometric slopes ``2 ** (-8 * i / heads)`` for i = 1..heads (the paper's sequence;
    for 8 heads: 1/2, 1/4, ..., 1/256), float32 (heads,), or (batch, heads) repeated per sequence."""
    i = torch.arange(1, heads + 1, dtype=torch.float64)
    slopes = torch.pow(2.0, -8.0 * i / heads).to(torch.float32)
    if batch is not None:
        slopes = slopes.expand(batch, heads).contiguous()
    return slopes.to(device)


def attention_flops(
    batch: int, heads: int, seqlen_q: int, seqlen_k: int, head_dim: int, head_dim_v: Optional[int] = None,
    causal: bool = False, mode: str = "fwd",
) -> float:
    """FLOPs of one attention call, FlashAttention's benchmark convention.

    Forward: ``2 * Sq * Sk * D`` for ``q @ k^T`` plus ``2 * Sq * Sk * Dv`` for ``p @ v`` per
    (batch, head); softmax and masking are not counted. Causal with Sq == Sk counts half the
    pairs (the convention's flat 1/2); causal with Sq != Sk counts the pairs the bottom-right
    diagonal leaves visible. Backward (``mode="bwd"``) is 2.5x the forward (five matmuls to the
    forward's two); ``mode="fwd_bwd"`` is 3.5x.
    """
    dv = head_dim if head_dim_v is None else head_dim_v
    pairs = float(seqlen_q) * seqlen_k
    if causal:
        if seqlen_q == seqlen_k:
            pairs /= 2
        else:
            # row i sees keys 0 .. i + Sk - Sq (clamped to [0, Sk]); sum over the Sq rows
            off = seqlen_k - seqlen_q
            pairs = float(sum(min(max(i + off + 1, 0), seqlen_k) for i in range(seqlen_q)))
    fwd = 2.0 * batch * heads * pairs * (head_dim + dv)
    factors = {"fwd": 1.0, "bwd": 2.5, "fwd_bwd": 3.5}
    if mode not in factors:
        raise ValueError(f"mode must be one of {sorted(factors)}, got {mode!r}")
    return fwd * factors[mode]
