"""The reference of the Triton attention tests (interpreter: tests/ops/test_attention_triton_kernels.py;
GPU: tests/gpu/test_attention_gpu.py): a plain per-sequence loop on the inputs' device.

scores = scale * q @ k^T, softcap, ALiBi, bottom-right causal/window mask, softmax, lse; a row
that sees no key gives out 0 and lse +inf; gradients by torch.autograd. ``lowp=False`` computes in
float64; ``lowp=True`` repeats the kernel's roundings (fp32 scores and softmax on the input-dtype
values, P rounded to the dtype before P @ V, out rounded to the dtype), and :func:`rounding_atol` turns the
spread between the two into a tolerance: ``max(2 * max|ref64 - ref_lowp|, FLOOR[dtype] * max|ref64|)``.
(:mod:`attention_ref` is the backends' reference; its low-precision model is another one.)
"""

import torch

FLOOR = {torch.float32: 2e-5, torch.float16: 2 * 2.0**-10, torch.bfloat16: 2 * 2.0**-7}


def ref_seq(q, k, v, scale, left, right, softcap, slopes, lowp):
    """One sequence: q (sq, Hq, D), k (sk, Hk, D), v (sk, Hk, Dv) -> out (sq, Hq, Dv), lse (Hq, sq)."""
    sq, hq, sk, hk = q.shape[0], q.shape[1], k.shape[0], k.shape[1]
    dev = q.device
    work = torch.float32 if lowp else torch.float64
    kk = k.to(work).repeat_interleave(hq // hk, dim=1)
    vv = v.repeat_interleave(hq // hk, dim=1)
    s = torch.einsum("ihd,jhd->hij", q.to(work), kk) * scale
    if softcap > 0:
        s = softcap * torch.tanh(s / softcap)
    rel = (torch.arange(sq, device=dev)[:, None] + sk - sq - torch.arange(sk, device=dev)[None, :]).to(work)
    if slopes is not None:
        s = s - slopes.to(work)[:, None, None] * rel.abs()
    vis = torch.ones(sq, sk, dtype=torch.bool, device=dev)
    if left >= 0:
        vis &= rel <= left
    if right >= 0:
        vis &= -rel <= right
    seen = vis.any(-1)  # (sq,)
    s = s.masked_fill(~vis, float("-inf"))
    s = torch.where(seen[None, :, None], s, torch.zeros_like(s))  # no -inf rows: finite softmax/grad
    lse = torch.logsumexp(s, -1)
    prob = torch.softmax(s, -1) * seen[None, :, None]
    if lowp:
        out = torch.einsum("hij,jhd->ihd", prob.to(v.dtype).to(work), vv.to(work)).to(v.dtype)
    else:
        out = torch.einsum("hij,jhd->ihd", prob, vv.to(work))
    lse = torch.where(seen[None, :], lse, torch.full_like(lse, float("inf")))
    return out, lse.to(torch.float32) if lowp else lse


def ref_attention(q, k, v, p, cu_q=None, cu_k=None, alibi=None, lowp=False):
    """(out, lse) in the contract's layouts for the checked problem ``p`` (float64 unless lowp);
    varlen rows past cu_q[-1]: 0 / +inf."""
    args = (p.softmax_scale, p.window_left, p.window_right, p.softcap)

    def slopes(b):
        return None if alibi is None else (alibi[b] if alibi.dim() == 2 else alibi)

    if not p.varlen:
        res = [ref_seq(q[b], k[b], v[b], *args, slopes(b), lowp) for b in range(p.batch)]
        return torch.stack([r[0] for r in res]), torch.stack([r[1] for r in res])
    cq, ck = cu_q.tolist(), cu_k.tolist()
    res = [ref_seq(q[cq[b]:cq[b + 1]], k[ck[b]:ck[b + 1]], v[ck[b]:ck[b + 1]], *args, slopes(b), lowp)
           for b in range(p.batch)]
    tail = q.shape[0] - cq[-1]
    outs = [r[0] for r in res] + [torch.zeros(tail, p.num_heads_q, p.head_dim_v, dtype=res[0][0].dtype,
                                              device=q.device)]
    lses = [r[1] for r in res] + [torch.full((p.num_heads_q, tail), float("inf"), dtype=res[0][1].dtype,
                                             device=q.device)]
    return torch.cat(outs), torch.cat(lses, dim=1)


def ref_with_grads(q, k, v, dout, p, cu_q, cu_k, alibi, lowp):
    """(out, lse, [dq, dk, dv]) of :func:`ref_attention` for the output gradient ``dout``."""
    leaves = [(t.detach().clone() if lowp else t.detach().to(torch.float64)).requires_grad_() for t in (q, k, v)]
    out, lse = ref_attention(*leaves, p, cu_q, cu_k, alibi, lowp=lowp)
    out.backward(dout.to(out.dtype))
    return out.detach(), lse.detach(), [t.grad for t in leaves]


def rounding_atol(ref64, reflow, dtype):
    """``max(2 * max|ref64 - reflow|, FLOOR[dtype] * max|ref64|)`` over the finite elements of ref64."""
    finite = torch.isfinite(ref64)
    amax = float(ref64[finite].abs().max()) if bool(finite.any()) else 0.0
    err = float((ref64 - reflow.to(torch.float64))[finite].abs().max()) if bool(finite.any()) else 0.0
    return max(2 * err, FLOOR[dtype] * max(amax, 1e-3))
