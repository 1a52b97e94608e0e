"""An independent attention reference for the tests: one sequence at a time, written for clarity.

``attention_ref(..., upcast=True)`` computes in float64 from the inputs' values: the reference
every backend is compared with. ``upcast=False`` computes as a careful low-precision kernel
would (``q @ k^T`` and ``p @ v`` in the input dtype, the softmax in float32): the spread between
the two is the rounding an implementation in that dtype can legitimately show, and
:func:`attention_tolerance` turns it into an ``atol`` (STYLE.md: tolerance from the precision).

Semantics (as in ``vllm_rocm_accel.checks.attention``): bottom-right aligned causal/window
masks per sequence, softcap before ALiBi, GQA head h reading kv head h // (Hq // Hk), rows that
see no key give out 0 and lse +inf.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

INF = float("inf")
# attention_tolerance's floor for the facade/op tests (tests/ops/test_attention.py,
# tests/ops/test_paged_attention.py): a few roundings of the output dtype.
FLOOR = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


def _sequence(q, k, v, *, scale, left, right, softcap, slopes, upcast, keep, dropout_p):
    """q (sq, Hq, D), k (sk, Hk, D), v (sk, Hk, Dv) -> out (sq, Hq, Dv), lse (Hq, sq)."""
    sq, hq, _ = q.shape
    sk, hk, dv = v.shape
    work = torch.float64 if upcast else q.dtype  # matmul dtype
    soft = torch.float64 if upcast else torch.float32  # softmax dtype
    k = k.repeat_interleave(hq // hk, dim=1)
    v = v.repeat_interleave(hq // hk, dim=1)
    s = torch.einsum("ihd,jhd->hij", q.to(work), k.to(work)).to(soft) * scale
    if softcap > 0:
        s = softcap * torch.tanh(s / softcap)
    i = torch.arange(sq).view(sq, 1)
    j = torch.arange(sk).view(1, sk)
    diag = i + sk - sq  # the key column on query i's diagonal
    visible = torch.ones(sq, sk, dtype=torch.bool)
    if left >= 0:
        visible &= j >= diag - left
    if right >= 0:
        visible &= j <= diag + right
    if slopes is not None:
        s = s - slopes.to(soft).view(hq, 1, 1) * (diag - j).abs().to(soft)
    seen = visible.any(dim=1).view(1, sq, 1)  # (1, sq, 1)
    s = s.masked_fill(~visible, -INF)
    s = torch.where(seen, s, 0.0)  # rows that see nothing: a harmless softmax, zeroed below
    prob = torch.where(seen, torch.softmax(s, dim=-1), 0.0)
    lse = torch.where(seen.view(1, sq), torch.logsumexp(s, dim=-1), INF)
    if keep is not None:
        prob = prob * keep.to(soft) / (1.0 - dropout_p)
    out = torch.einsum("hij,jhd->ihd", prob.to(work), v.to(work))
    return out, lse.to(torch.float64 if upcast else torch.float32)


def attention_ref(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    cu_seqlens_q: Optional[torch.Tensor] = None,
    cu_seqlens_k: Optional[torch.Tensor] = None,
    softmax_scale: Optional[float] = None,
    causal: bool = False,
    window_size: tuple[int, int] = (-1, -1),
    softcap: float = 0.0,
    alibi_slopes: Optional[torch.Tensor] = None,
    upcast: bool = True,
    dropout_keep: Optional[torch.Tensor] = None,
    dropout_p: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(out, lse) in the contract's layouts: dense out (B, Sq, Hq, Dv), lse (B, Hq, Sq); varlen
    out (Tq, Hq, Dv), lse (Hq, Tq) (rows past cu_seqlens_q[-1]: 0 and +inf).

    float64 with ``upcast`` (differentiable: autograd through it gives reference gradients),
    else out in q.dtype and lse float32. ``dropout_keep`` (B, Hq, Sq_max, Sk_max) bool, the keep
    mask a backend applied (sequence b's query i, key j at [b, :, i, j]), with ``dropout_p``.
    """
    scale = 1.0 / math.sqrt(q.shape[-1]) if softmax_scale is None else softmax_scale
    left, right = window_size
    if causal:
        right = 0
    opts = dict(scale=scale, left=left, right=right, softcap=softcap, upcast=upcast, dropout_p=dropout_p)

    def slopes_of(b):
        if alibi_slopes is None:
            return None
        return alibi_slopes if alibi_slopes.dim() == 1 else alibi_slopes[b]

    def keep_of(b, sq, sk):
        return None if dropout_keep is None else dropout_keep[b, :, :sq, :sk].cpu()

    if cu_seqlens_q is None:
        outs, lses = [], []
        for b in range(q.shape[0]):
            o, lse = _sequence(q[b], k[b], v[b], slopes=slopes_of(b), keep=keep_of(b, q.shape[1], k.shape[1]), **opts)
            outs.append(o)
            lses.append(lse)
        return torch.stack(outs), torch.stack(lses)

    cq, ck = cu_seqlens_q.tolist(), cu_seqlens_k.tolist()
    out_dtype = torch.float64 if upcast else q.dtype
    lse_dtype = torch.float64 if upcast else torch.float32
    outs, lses = [], []
    for b in range(len(cq) - 1):
        qs, ks = slice(cq[b], cq[b + 1]), slice(ck[b], ck[b + 1])
        keep = keep_of(b, cq[b + 1] - cq[b], ck[b + 1] - ck[b])
        o, lse = _sequence(q[qs], k[ks], v[ks], slopes=slopes_of(b), keep=keep, **opts)
        outs.append(o)
        lses.append(lse)
    rest = q.shape[0] - cq[-1]  # rows in no sequence
    outs.append(torch.zeros(rest, q.shape[1], v.shape[2], dtype=out_dtype))
    lses.append(torch.full((q.shape[1], rest), INF, dtype=lse_dtype))
    return torch.cat(outs).to(out_dtype), torch.cat(lses, dim=1)


def ref_grads(q, k, v, dout, **opts) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dq, dk, dv) of ``<attention_ref(q, k, v, **opts).out, dout>`` by autograd, in float64
    (``upcast=False`` in ``opts``: computed through the low-precision reference instead)."""
    upcast = opts.get("upcast", True)
    leaves = [(x.detach().double() if upcast else x.detach().clone()).requires_grad_() for x in (q, k, v)]
    out, _ = attention_ref(*leaves, **opts)
    grads = torch.autograd.grad(out, leaves, dout.to(out.dtype), allow_unused=True)
    return tuple(torch.zeros_like(x) if g is None else g for g, x in zip(grads, leaves))


def attention_tolerance(ref64: torch.Tensor, ref_lowp: torch.Tensor, floor: float) -> float:
    """``atol = max(2 * max|ref64 - ref_lowp|, floor)`` over the positions where both are finite
    (+inf lse rows must match exactly; the comparison helper checks them)."""
    a, b = ref64.detach().double(), ref_lowp.detach().double()
    finite = torch.isfinite(a) & torch.isfinite(b)
    spread = float((a - b).abs()[finite].max()) if bool(finite.any()) else 0.0
    return max(2.0 * spread, floor)
