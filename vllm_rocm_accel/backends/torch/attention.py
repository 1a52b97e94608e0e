"""FlashAttention-style attention in plain torch: the reference backend, which serves every valid call.

Three paths, all computing the semantics of :mod:`vllm_rocm_accel.checks.attention`:

* **math** (any device, the CPU included). Varlen packed rows are gathered into a padded
  (B, Smax, H, D) batch with index tensors built from ``cu_seqlens`` on the device (no loop over
  sequences, no host read of ``cu_seqlens``; ``p.seqlen_q`` / ``p.seqlen_k`` give the padded
  sizes). Scores, softmax and ``p @ v`` run in float32 over blocks of query rows, so that one
  score tile (batch * heads * rows * keys) stays under ``_MAX_SCORE_ELEMENTS``. GQA is a grouped
  reshape (query heads ``g * Hk .. (g + 1) * Hk - 1`` share key head ``g``), never a copy of k/v.
  A row that sees no key gives out 0 and lse +inf through ``where``s that keep every
  intermediate finite, so no NaN reaches the output or the gradients.
* **cuDNN** (CUDA devices): torch's cuDNN attention ops called directly, forward (with the lse
  when asked) and backward (from any forward's out and lse), for dense fp16/bf16 calls with
  Hq == Hk, D == Dv <= 128, no mask or square causal, no dropout/softcap/ALiBi, where torch's
  own cuDNN checks pass (:func:`cudnn_serves`); not for a deterministic backward.
* **SDPA** (CUDA/ROCm devices, ``torch.nn.functional.scaled_dot_product_attention``), taken when
  the call needs no lse, no dropout, no softcap and no ALiBi. Dense calls with no window, or
  causal with Sq == Sk, use ``is_causal`` (top-left aligned in SDPA, the same as bottom-right
  only when Sq == Sk) so torch can pick cuDNN/flash/efficient; everything else passes a boolean
  mask (bottom-right causal/window, key padding for varlen). Rows with no visible key are
  unmasked for SDPA (so it never sees an all-masked row) and zeroed afterwards.

Dropout (math path only): the keep mask of each query block is drawn in block order from
``torch.Generator(device=q.device).manual_seed(p.seed)`` (kept with probability 1 - p, kept
probabilities scaled by 1 / (1 - p)); the block partition is a function of ``p`` alone, so the
backward's recompute draws the identical mask. :func:`dropout_keep_mask` returns the whole mask
for tests.

Backward recomputes each query block's probabilities and applies the explicit gradient
formulas (:func:`_block_grads`), block by block so memory stays bounded. It uses no autograd
(an op's body may run under a dispatch mode, where autograd records nothing) and does not
read the forward's ``lse``: the recomputed softmax is the one the gradient is of.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from typing import Iterator, Optional

import torch
import torch.nn.functional as F

from ...checks.attention import AttnProblem

# The most elements (batch * heads_q * query rows * keys) one float32 score tile of the math path holds.
_MAX_SCORE_ELEMENTS = 2**28
# Device types on which the SDPA path may be taken (tests add "cpu" to exercise it).
_SDPA_DEVICES = ("cuda",)

_INF = float("inf")


# -- packed <-> padded ---------------------------------------------------------------------------


def _lengths(cu: torch.Tensor) -> torch.Tensor:
    return (cu[1:] - cu[:-1]).long()


def _pad(x: torch.Tensor, cu: torch.Tensor, smax: int) -> torch.Tensor:
    """Packed (T, *rest) -> padded (B, smax, *rest): sequence b's rows at [b, :len_b], zeros after."""
    batch = cu.shape[0] - 1
    shape = (batch, smax) + tuple(x.shape[1:])
    if x.shape[0] == 0 or smax == 0:
        return x.new_zeros(shape)
    start = cu[:-1].long()
    pos = torch.arange(smax, device=x.device)
    valid = pos[None, :] < _lengths(cu)[:, None]
    idx = torch.where(valid, start[:, None] + pos[None, :], 0)
    rows = x.index_select(0, idx.reshape(-1)).view(shape)
    return torch.where(valid.view(batch, smax, *([1] * (x.dim() - 1))), rows, 0)


def _unpad(xp: torch.Tensor, cu: torch.Tensor, total: int, fill: float = 0.0) -> torch.Tensor:
    """Padded (B, S, *rest) -> packed (total, *rest); rows in no sequence (past cu[-1]) get ``fill``."""
    batch, smax = xp.shape[0], xp.shape[1]
    rest = tuple(xp.shape[2:])
    if smax == 0 or total == 0:
        return xp.new_full((total,) + rest, fill)
    t = torch.arange(total, device=xp.device)
    cu64 = cu.long()
    seq = torch.searchsorted(cu64[1:], t, right=True)  # first sequence ending after row t
    valid = seq < batch
    seq = seq.clamp(max=batch - 1)
    flat = torch.where(valid, seq * smax + (t - cu64[seq]), 0)
    rows = xp.reshape((batch * smax,) + rest).index_select(0, flat)
    return torch.where(valid.view(-1, *([1] * len(rest))), rows, fill)


def _padded(q, k, v, cu_q, cu_k, p: AttnProblem):
    """(q, k, v) as (B, S, H, D) batches plus the per-sequence lengths (None when dense)."""
    if not p.varlen:
        return q, k, v, None, None
    return (_pad(q, cu_q, p.seqlen_q), _pad(k, cu_k, p.seqlen_k), _pad(v, cu_k, p.seqlen_k),
            _lengths(cu_q), _lengths(cu_k))


# -- masks ---------------------------------------------------------------------------------------


def _visible(p: AttnProblem, rows: torch.Tensor, cols: torch.Tensor, lens_q, lens_k):
    """(visible, rel): bool (B|1, 1, rows, cols) and the key offset from each query's diagonal.

    ``rel = j - (i + sk - sq)`` per sequence (bottom-right aligned); ALiBi's distance is ``|rel|``.
    Dense calls use the problem's Sq/Sk; varlen calls the (B,) lengths, which also mask padding.
    """
    i = rows.view(1, 1, -1, 1)
    j = cols.view(1, 1, 1, -1)
    if lens_q is None:
        rel = j - i - (p.seqlen_k - p.seqlen_q)
        vis = torch.ones(rel.shape, dtype=torch.bool, device=rel.device)
    else:
        lq, lk = lens_q.view(-1, 1, 1, 1), lens_k.view(-1, 1, 1, 1)
        rel = j - i - (lk - lq)
        vis = (i < lq) & (j < lk)
    if p.window_left >= 0:
        vis = vis & (rel >= -p.window_left)
    if p.window_right >= 0:
        vis = vis & (rel <= p.window_right)
    return vis, rel


def _slopes(alibi_slopes: Optional[torch.Tensor], p: AttnProblem) -> Optional[torch.Tensor]:
    if alibi_slopes is None:
        return None
    return alibi_slopes.float().view(-1, p.num_heads_q, 1, 1)  # (1|B, Hq, 1, 1)


# -- math path -----------------------------------------------------------------------------------


def _blocks(p: AttnProblem) -> list[tuple[int, int]]:
    """Query-row blocks [i0, i1) of the padded batch; a function of ``p`` alone (dropout relies on it)."""
    per_row = p.batch * p.num_heads_q * max(p.seqlen_k, 1)
    rows = max(1, min(p.seqlen_q, _MAX_SCORE_ELEMENTS // per_row))
    return [(i0, min(i0 + rows, p.seqlen_q)) for i0 in range(0, p.seqlen_q, rows)]


def _keep_masks(p: AttnProblem, device: torch.device) -> Iterator[Optional[torch.Tensor]]:
    """One bool keep mask (B, Hq, rows, Sk) per block of :func:`_blocks`, or None per block without dropout."""
    blocks = _blocks(p)
    if p.dropout_p <= 0:
        yield from (None for _ in blocks)
        return
    gen = torch.Generator(device=device).manual_seed(p.seed)
    for i0, i1 in blocks:
        u = torch.rand((p.batch, p.num_heads_q, i1 - i0, p.seqlen_k), generator=gen, device=device)
        yield u >= p.dropout_p


def dropout_keep_mask(p: AttnProblem, device) -> Optional[torch.Tensor]:
    """The whole bool keep mask (B, Hq, Sq, Sk) (padded query/key positions; sequence b's query i,
    key j at [b, :, i, j]) that forward and backward apply; None without dropout. For tests."""
    masks = list(_keep_masks(p, torch.device(device)))
    if masks[0] is None:
        return None
    return torch.cat(masks, dim=2)


def _attend(qc, kp, vp, i0: int, lens_q, lens_k, slopes, p: AttnProblem, keep):
    """One query block in float32: qc (B, c, Hq, D), kp (B, Sk, Hk, D), vp (B, Sk, Hk, Dv)
    -> out (B, c, Hq, Dv), lse (B, Hq, c). Differentiable, and finite everywhere."""
    batch, c, hq, d = qc.shape
    sk, hk, dv = kp.shape[1], kp.shape[2], vp.shape[3]
    g = hq // hk
    qh = qc.permute(0, 2, 1, 3).reshape(batch, hk, g * c, d)  # rows (group member, query)
    s = torch.matmul(qh, kp.permute(0, 2, 3, 1)).view(batch, hq, c, sk) * p.softmax_scale
    if p.softcap > 0:
        s = torch.tanh(s / p.softcap) * p.softcap
    rows = torch.arange(i0, i0 + c, device=qc.device)
    vis, rel = _visible(p, rows, torch.arange(sk, device=qc.device), lens_q, lens_k)
    if slopes is not None:
        s = s - slopes * rel.abs()
    s = s.masked_fill(~vis, -_INF)
    m = s.detach().amax(dim=-1, keepdim=True)
    m = torch.where(m == -_INF, 0.0, m)  # a row with no visible key: exp(-inf - 0) = 0, not NaN
    e = torch.exp(s - m)
    total = e.sum(dim=-1, keepdim=True)
    seen = total > 0
    total = torch.where(seen, total, 1.0)
    lse = torch.where(seen, m + torch.log(total), _INF).squeeze(-1)
    prob = e / total
    if keep is not None:
        prob = prob.masked_fill(~keep, 0.0) * (1.0 / (1.0 - p.dropout_p))
    out = torch.matmul(prob.view(batch, hk, g * c, sk), vp.permute(0, 2, 1, 3))
    return out.view(batch, hq, c, dv).permute(0, 2, 1, 3), lse


def _math_forward(qp, kp, vp, lens_q, lens_k, slopes, p: AttnProblem):
    """Padded float32 inputs -> out (B, Sq, Hq, Dv) float32, lse (B, Hq, Sq)."""
    outs, lses = [], []
    for (i0, i1), keep in zip(_blocks(p), _keep_masks(p, qp.device)):
        o, lse = _attend(qp[:, i0:i1], kp, vp, i0, lens_q, lens_k, slopes, p, keep)
        outs.append(o)
        lses.append(lse)
    return torch.cat(outs, dim=1), torch.cat(lses, dim=2)


def _block_grads(qc, kp, vp, doc, i0: int, lens_q, lens_k, slopes, p: AttnProblem, keep):
    """One query block's gradients in float32, by the explicit formulas (no autograd, so it also
    runs under dispatch modes, where the op's body sees no autograd): with P the softmax,
    P' = dropout(P), dV = P'^T dO, dP = dropout(dO V^T), dS = P * (dP - rowsum(P * dP)),
    times (1 - tanh^2) through softcap, times the scale; dQ = dS K, dK = dS^T Q (summed over
    each kv head's query group). Returns dq (B, c, Hq, D), dk (B, Sk, Hk, D), dv (B, Sk, Hk, Dv)."""
    batch, c, hq, d = qc.shape
    sk, hk, dv = kp.shape[1], kp.shape[2], vp.shape[3]
    g = hq // hk
    qh = qc.permute(0, 2, 1, 3).reshape(batch, hk, g * c, d)
    s = torch.matmul(qh, kp.permute(0, 2, 3, 1)).view(batch, hq, c, sk) * p.softmax_scale
    tanh = None
    if p.softcap > 0:
        tanh = torch.tanh(s / p.softcap)
        s = tanh * p.softcap
    vis, rel = _visible(p, torch.arange(i0, i0 + c, device=qc.device), torch.arange(sk, device=qc.device),
                        lens_q, lens_k)
    if slopes is not None:
        s = s - slopes * rel.abs()
    s = s.masked_fill(~vis, -_INF)
    m = s.amax(dim=-1, keepdim=True)
    e = torch.exp(s - torch.where(m == -_INF, 0.0, m))
    total = e.sum(dim=-1, keepdim=True)
    prob = e / torch.where(total > 0, total, 1.0)
    inv_keep = 1.0 / (1.0 - p.dropout_p)
    dropped = prob if keep is None else prob.masked_fill(~keep, 0.0) * inv_keep
    do_h = doc.permute(0, 2, 1, 3).reshape(batch, hk, g * c, dv)
    dv_blk = torch.matmul(dropped.view(batch, hk, g * c, sk).transpose(-1, -2), do_h)
    dprob = torch.matmul(do_h, vp.permute(0, 2, 3, 1)).view(batch, hq, c, sk)
    if keep is not None:
        dprob = dprob.masked_fill(~keep, 0.0) * inv_keep
    ds = prob * (dprob - (prob * dprob).sum(dim=-1, keepdim=True))
    if tanh is not None:
        ds = ds * (1.0 - tanh * tanh)
    ds = (ds * p.softmax_scale).view(batch, hk, g * c, sk)
    dq_blk = torch.matmul(ds, kp.permute(0, 2, 1, 3)).view(batch, hq, c, d).permute(0, 2, 1, 3)
    dk_blk = torch.matmul(ds.transpose(-1, -2), qh)
    return dq_blk, dk_blk.permute(0, 2, 1, 3), dv_blk.permute(0, 2, 1, 3)


def _math_backward(dop, qp, kp, vp, lens_q, lens_k, slopes, p: AttnProblem):
    """Padded float32 (dout, q, k, v) -> padded float32 (dq, dk, dv), one query block at a time."""
    dqs = []
    dk = torch.zeros_like(kp)
    dv = torch.zeros_like(vp)
    for (i0, i1), keep in zip(_blocks(p), _keep_masks(p, qp.device)):
        gq, gk, gv = _block_grads(qp[:, i0:i1], kp, vp, dop[:, i0:i1], i0, lens_q, lens_k, slopes, p, keep)
        dqs.append(gq)
        dk += gk
        dv += gv
    return torch.cat(dqs, dim=1), dk, dv


# -- SDPA path -----------------------------------------------------------------------------------

_sdpa_features: dict[str, bool] = {}


def _sdpa_feature(name: str) -> bool:
    """Whether this torch's SDPA has ``enable_gqa`` / ``sdpa_kernel(..., set_priority=)`` (checked once)."""
    if name not in _sdpa_features:
        if name == "enable_gqa":
            found = "enable_gqa" in (F.scaled_dot_product_attention.__doc__ or "")
        else:
            try:
                from torch.nn.attention import SDPBackend, sdpa_kernel

                found = "set_priority" in inspect.signature(sdpa_kernel).parameters and all(
                    hasattr(SDPBackend, b) for b in ("CUDNN_ATTENTION", "FLASH_ATTENTION", "EFFICIENT_ATTENTION")
                )
            except (ImportError, ValueError, TypeError):
                found = False
        _sdpa_features[name] = found
    return _sdpa_features[name]


def _sdpa_priority():
    """cuDNN, then flash, then memory-efficient, then math, where this torch lets us set the order."""
    if not _sdpa_feature("set_priority"):
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    order = [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION,
             SDPBackend.MATH]
    return sdpa_kernel(order, set_priority=True)


def _sdpa_eligible(q: torch.Tensor, p: AttnProblem) -> bool:
    return (q.device.type in _SDPA_DEVICES and p.dropout_p == 0 and p.softcap == 0 and not p.has_alibi)


def _sdpa_causal(p: AttnProblem) -> Optional[bool]:
    """SDPA's ``is_causal`` for a dense call that needs no mask (no window, or square causal:
    SDPA's top-left causal is then our bottom-right one); None when a mask is needed."""
    if p.varlen or p.window_left >= 0:
        return None
    if p.window_right < 0:
        return False
    return True if p.window_right == 0 and p.seqlen_q == p.seqlen_k else None


def _sdpa_padded(qp, kp, vp, lens_q, lens_k, p: AttnProblem) -> torch.Tensor:
    """(B, S, H, D) batches in the input dtype -> out (B, Sq, Hq, Dv); differentiable."""
    qb, kb, vb = qp.transpose(1, 2), kp.transpose(1, 2), vp.transpose(1, 2)
    sq, sk = qp.shape[1], kp.shape[1]
    mask = seen = None
    is_causal = _sdpa_causal(p)
    if is_causal is None:
        is_causal = False
        vis, _ = _visible(p, torch.arange(sq, device=qp.device), torch.arange(sk, device=qp.device),
                          lens_q, lens_k)
        seen = vis.any(dim=-1, keepdim=True)
        mask = vis | ~seen  # SDPA never sees an all-masked row; those rows are zeroed below
    kwargs = {}
    if p.group > 1:
        # enable_gqa lets the flash kernel read shared k/v heads; with a mask (which flash does
        # not take) the memory-efficient/cuDNN kernels get repeated heads instead.
        if mask is None and _sdpa_feature("enable_gqa"):
            kwargs["enable_gqa"] = True
        else:
            kb = kb.repeat_interleave(p.group, dim=1)
            vb = vb.repeat_interleave(p.group, dim=1)
    with _sdpa_priority():
        out = F.scaled_dot_product_attention(qb, kb, vb, attn_mask=mask, dropout_p=0.0, is_causal=is_causal,
                                             scale=p.softmax_scale, **kwargs)
    if seen is not None:
        out = torch.where(seen, out, 0)
    return out.transpose(1, 2)


# -- cuDNN path ----------------------------------------------------------------------------------
#
# torch's cuDNN attention ops called directly (aten::_scaled_dot_product_cudnn_attention and its
# backward), on (B, H, S, D) views of our (B, S, H, D) tensors (cuDNN takes the strides; its out
# and grads come back in q's layout). The forward returns cuDNN's softmax stats, the natural-log
# lse of the scaled scores (B, H, Sq, 1), which is our lse; the backward takes any forward's
# out and lse (ours from Triton, or cuDNN's own), so a training step may mix the two. Without
# dropout the philox seed/offset are not read.

_CUDNN_DTYPES = (torch.float16, torch.bfloat16)
_CUDNN_MAX_HEAD_DIM = 128
_FAST_HEAD_DIMS = (64, 128)  # the head dims the cuda policy's crossovers were measured at
_cudnn_checked: dict[tuple, bool] = {}


@functools.lru_cache(maxsize=1)
def _cudnn_ops_present() -> bool:
    aten = torch.ops.aten
    return hasattr(aten, "_scaled_dot_product_cudnn_attention") and hasattr(
        aten, "_scaled_dot_product_cudnn_attention_backward")


def _cudnn_accepts(q, k, v, is_causal: bool) -> bool:
    """torch's own cuDNN-attention eligibility for the (B, H, S, D) views of these (B, S, H, D)
    tensors (arch, cuDNN version, shapes, strides, the ``torch.backends.cuda.enable_cudnn_sdp``
    switch, deterministic mode), asked once per (device, dtype, shapes, strides, causal, switches):
    a call that hits the cache builds no view (this runs on every call, twice through auto)."""
    key = (q.device, q.dtype, q.shape, k.shape, q.stride(), k.stride(), v.stride(), is_causal,
           torch.backends.cuda.cudnn_sdp_enabled(), torch.are_deterministic_algorithms_enabled())
    hit = _cudnn_checked.get(key)
    if hit is None:
        try:
            from torch.backends.cuda import SDPAParams, can_use_cudnn_attention

            qb, kb, vb = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
            try:
                params = SDPAParams(qb, kb, vb, None, 0.0, is_causal, False)
            except TypeError:  # torch without enable_gqa in SDPAParams
                params = SDPAParams(qb, kb, vb, None, 0.0, is_causal)
            hit = bool(can_use_cudnn_attention(params, False))
        except (ImportError, RuntimeError, TypeError):
            hit = False
        if len(_cudnn_checked) > 4096:
            _cudnn_checked.clear()
        _cudnn_checked[key] = hit
    return hit


def cudnn_serves(q, k, v, p: AttnProblem) -> bool:
    """Whether this call runs on torch's cuDNN attention: a CUDA (not ROCm) device, a dense
    batch, fp16/bf16, one query head per kv head, D == Dv, a multiple of 8 and <= 128, no
    dropout / softcap / ALiBi, no mask or square causal, and torch's own cuDNN checks pass."""
    if q.device.type != "cuda" or torch.version.hip is not None or not _cudnn_ops_present():
        return False
    if p.varlen or p.sees_nothing or q.dtype not in _CUDNN_DTYPES or p.group != 1:
        return False
    if p.head_dim != p.head_dim_v or p.head_dim % 8 or p.head_dim > _CUDNN_MAX_HEAD_DIM:
        return False
    if p.dropout_p > 0 or p.softcap > 0 or p.has_alibi:
        return False
    is_causal = _sdpa_causal(p)
    if is_causal is None:
        return False
    return _cudnn_accepts(q, k, v, is_causal)


def _cudnn_forward(q, k, v, p: AttnProblem, need_lse: bool):
    """out (B, Sq, H, Dv) contiguous, lse (B, H, Sq) float32 or None."""
    res = torch.ops.aten._scaled_dot_product_cudnn_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), None, bool(need_lse), 0.0,
        bool(_sdpa_causal(p)), False, scale=p.softmax_scale)
    out = res[0].transpose(1, 2).contiguous()  # cuDNN writes q's layout: no copy
    if not need_lse:
        return out, None
    return out, res[1].reshape(p.lse_shape()).contiguous()


@functools.lru_cache(maxsize=None)
def _no_rng(device: torch.device) -> torch.Tensor:
    """The philox seed/offset argument of cuDNN's backward, which reads it only with dropout (ours
    never has any): one never-written int64 scalar per device instead of an allocation per call."""
    return torch.empty((), dtype=torch.int64, device=device)


def _cudnn_backward(dout, q, k, v, out, lse, p: AttnProblem):
    """(dq, dk, dv) contiguous, from any forward's out and natural-log lse (B, H, Sq)."""
    if lse.numel() == 0:  # the forward ran without it: cuDNN's forward gives both, consistently
        out, lse = _cudnn_forward(q, k, v, p, True)
    if dout.stride() != out.stride():
        dout = dout.contiguous()  # cuDNN wants dO laid out as O
        out = out.contiguous()
    no_rng = _no_rng(q.device)
    grads = torch.ops.aten._scaled_dot_product_cudnn_attention_backward(
        dout.transpose(1, 2), q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), out.transpose(1, 2),
        lse.contiguous().unsqueeze(-1), no_rng, no_rng, None, None, None, p.seqlen_q, p.seqlen_k, 0.0,
        bool(_sdpa_causal(p)), scale=p.softmax_scale)
    return tuple(g.transpose(1, 2).contiguous() for g in grads)


def fast_path(q, k, v, cu_seqlens_q, cu_seqlens_k, alibi_slopes, p: AttnProblem) -> bool:
    """Forward: whether the cuDNN path serves the call (:func:`cudnn_serves`) at a head dim the
    cuda policy's crossover was measured at (64, 128). The cuda policy puts torch first for such
    calls from its rule's key length (docs/performance.md)."""
    return p.head_dim in _FAST_HEAD_DIMS and cudnn_serves(q, k, v, p)


def fast_backward(q, k, v, cu_seqlens_q, cu_seqlens_k, alibi_slopes, p: AttnProblem) -> bool:
    """Backward: as :func:`fast_path`, unless the caller asked for a deterministic backward
    (cuDNN's accumulates with atomics)."""
    return not p.deterministic and fast_path(q, k, v, cu_seqlens_q, cu_seqlens_k, alibi_slopes, p)


# -- the contract --------------------------------------------------------------------------------


def supports_args(q, k, v, cu_seqlens_q, cu_seqlens_k, alibi_slopes, p: AttnProblem) -> Optional[str]:
    """Always None: this backend serves every call the checks accept (it is the fallback)."""
    return None


def forward(q, k, v, cu_seqlens_q, cu_seqlens_k, alibi_slopes, p: AttnProblem, need_lse: bool):
    """out (p.out_shape(), q.dtype) and lse (p.lse_shape(), float32; None only on the SDPA path)."""
    if p.sees_nothing:
        out = q.new_zeros(p.out_shape())
        return out, torch.full(p.lse_shape(), _INF, dtype=torch.float32, device=q.device)
    if cudnn_serves(q, k, v, p):
        return _cudnn_forward(q, k, v, p, need_lse)
    qp, kp, vp, lens_q, lens_k = _padded(q, k, v, cu_seqlens_q, cu_seqlens_k, p)
    if not need_lse and _sdpa_eligible(q, p):
        out = _sdpa_padded(qp, kp, vp, lens_q, lens_k, p)
        if p.varlen:
            out = _unpad(out, cu_seqlens_q, p.total_q)
        return out.contiguous(), None
    out, lse = _math_forward(qp.float(), kp.float(), vp.float(), lens_q, lens_k, _slopes(alibi_slopes, p), p)
    if p.varlen:
        out = _unpad(out, cu_seqlens_q, p.total_q)
        lse = _unpad(lse.transpose(1, 2), cu_seqlens_q, p.total_q, fill=_INF).t()
    return out.to(q.dtype).contiguous(), lse.contiguous()


def backward(dout, q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k, alibi_slopes, p: AttnProblem):
    """(dq, dk, dv) in q/k/v's shapes and dtypes, contiguous. The cuDNN path (not with
    ``p.deterministic``) reads ``out`` and ``lse``; the math path recomputes the probabilities
    (with the same dropout mask) and reads neither."""
    if p.sees_nothing:
        return (torch.zeros(q.shape, dtype=q.dtype, device=q.device),
                torch.zeros(k.shape, dtype=k.dtype, device=k.device),
                torch.zeros(v.shape, dtype=v.dtype, device=v.device))
    if not p.deterministic and cudnn_serves(q, k, v, p):
        return _cudnn_backward(dout, q, k, v, out, lse, p)
    qp, kp, vp, lens_q, lens_k = _padded(q, k, v, cu_seqlens_q, cu_seqlens_k, p)
    dop = _pad(dout, cu_seqlens_q, p.seqlen_q) if p.varlen else dout
    dqp, dkp, dvp = _math_backward(dop.float(), qp.float(), kp.float(), vp.float(), lens_q, lens_k,
                                   _slopes(alibi_slopes, p), p)
    if p.varlen:
        dqp = _unpad(dqp, cu_seqlens_q, p.total_q)
        dkp = _unpad(dkp, cu_seqlens_k, p.total_k)
        dvp = _unpad(dvp, cu_seqlens_k, p.total_k)
    return dqp.to(q.dtype).contiguous(), dkp.to(k.dtype).contiguous(), dvp.to(v.dtype).contiguous()
