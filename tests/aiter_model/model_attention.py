"""A torch model of amd-aiter 0.1.7.post2.dev18's MHA entry points (tests only).

The eight functions have the wheel's signatures (``aiter/ops/mha.py``; a test compares them) and
enforce the contract of the C++ behind them (``aiter_meta/csrc/py_itfs_ck/mha_*_kernels.cu``,
``py_itfs_cu/asm_mha_*.cu``, the v3 dispatch in ``hsa/gfx9*/fmha_v3_*/codegen.py``), raising
:class:`~aiter_model.model.AiterContractError` where the real call would fail (``TORCH_CHECK``) or
read/write the wrong memory:

* fp16/bf16, one dtype for q/k/v/out/dout; unit last-dim stride; head dims multiples of 8, <= 256;
  Hq % Hk == 0; shapes as ``CHECK_SHAPE``; ALiBi (Hq,) or (B, Hq), unit last stride, float32
  (read as float: conservative);
* varlen: int32 contiguous cu_seqlens of B + 1, ``cu_seqlens_k`` present, values within the packed
  tensors and the max lengths (the kernels do not check; an overrun reads outside);
* lse for the backward: (B, Hq, Sq) / (Hq, Tq) float32 **contiguous** (CK keeps softmax_d with lse's
  strides); dense ``mha_bwd`` needs an ``rng_state`` tensor (it reads ``rng_state.data_ptr()`` even
  without dropout);
* v3 (assembly): only where the v3 dispatch has a kernel (else ``t = -1`` and
  ``TORCH_CHECK(t >= 0)``): arch gfx942/gfx950 (:data:`GFX`), bf16, (hdim_q, hdim_v) = (128, 128) or
  (192, 128) on gfx950, no ALiBi/dropout, no mask or bottom-right causal with left = -1 (forward),
  AITER's own Python gates (backward); dense gfx950 backward with ``how_v3_bf16_cvt == 0``;
* the dense decode swap (sq == 1, GQA, no window/ALiBi/dropout) reshapes ``out`` with head_dim:
  an error when head_dim != head_dim_v.

Semantics as the C++: ``window >= seqlen_k`` (max_seqlen_k varlen) -> -1; causal -> right 0;
``seqlen_q == 1`` without ALiBi drops causal; bottom-right alignment per sequence; ALiBi
``-slope * |i + sk - sq - j|``. Numerics: float32, one rounding of out/dq/dk/dv. Rows that see no
key: CK writes out 0, lse -inf; the v3 kernels' behaviour is unknown and modelled as NaN. Tensors
AITER allocates with ``torch::empty`` hold NaN where the kernels do not write (varlen rows outside
every sequence); caller-given ones are left as they were. The backward maps lse -inf to 0 (CK's
``get_validated_lse``). The dense v3 backward adds into ``dq`` (AITER zeroes it first). Dropout,
bias, paged KV, padded cu_seqlens, soft-capping and ``min_seqlen_q`` are not modelled
(NotImplementedError).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Generator, Tensor

from .model import DTYPES, AiterContractError, _record, _require  # noqa: F401

__all__ = [
    "mha_fwd", "fmha_v3_fwd", "mha_varlen_fwd", "fmha_v3_varlen_fwd",
    "mha_bwd", "fmha_v3_bwd", "mha_varlen_bwd", "fmha_v3_varlen_bwd", "MODELLED_ATTENTION",
]
MODELLED_ATTENTION = tuple(__all__[:8])
GFX = {"name": "gfx942"}  # what aiter's get_gfx() would say; tests set it
V3_ARCHS = ("gfx942", "gfx950")


# --- checks -----------------------------------------------------------------------
def _check_tensor(fn, name, t, dims, like=None):
    _require(isinstance(t, torch.Tensor), fn, f"{name} must be a Tensor, got {type(t).__name__}")
    _require(t.dim() == dims, fn, f"{name} must be {dims}-D, got shape {tuple(t.shape)}")
    _require(t.dtype in DTYPES, fn, f"{name} has dtype {t.dtype}; FlashAttention only supports fp16 and bf16")
    _require(t.stride(-1) == 1 or t.shape[-1] == 1, fn, f"{name} must have contiguous last dimension")
    if like is not None:
        _require(t.dtype == like.dtype, fn, f"{name} has dtype {t.dtype}, q has {like.dtype}")
        _require(t.device == like.device, fn, f"{name} is on {t.device}, q on {like.device}")


def _check_heads(fn, q, k, v):
    d, dv = q.shape[-1], v.shape[-1]
    for name, x in (("head_size_q", d), ("head_size_v", dv)):
        _require(x % 8 == 0, fn, f"{name} {x} must be a multiple of 8")
        _require(x <= 256, fn, f"{name} {x}: CK only supports head dimension at most 256")
    _require(k.shape[-1] == d, fn, f"k has head_dim {k.shape[-1]}, q has {d}")
    _require(q.shape[-2] % k.shape[-2] == 0, fn, "Number of heads in key/value must divide number of heads in query")
    _require(v.shape[-2] == k.shape[-2], fn, "k and v must have the same number of heads")


def _check_alibi(fn, alibi, b, h, q):
    if alibi is None:
        return
    _require(isinstance(alibi, torch.Tensor), fn, "alibi_slopes must be a Tensor")
    _require(alibi.stride(-1) == 1, fn, "ALiBi slopes tensor must have contiguous last dimension")
    _require(tuple(alibi.shape) in ((h,), (b, h)), fn, f"alibi_slopes shape {tuple(alibi.shape)}; expected ({h},) or ({b}, {h})")
    _require(alibi.dtype == torch.float32, fn, f"alibi_slopes has dtype {alibi.dtype}; the kernels read float")
    _require(alibi.device == q.device, fn, "alibi_slopes is on another device")


def _unmodelled(dropout_p, return_dropout_randval=False, bias=None, block_table=None, padded=(), soft_cap=0.0,
                min_seqlen_q=0):
    if dropout_p or return_dropout_randval:
        raise NotImplementedError("the model covers dropout_p == 0 only")
    if bias is not None or block_table is not None or any(x is not None for x in padded):
        raise NotImplementedError("bias, paged KV and padded cu_seqlens are not modelled")
    if soft_cap or min_seqlen_q:
        raise NotImplementedError("logits_soft_cap and min_seqlen_q are not modelled")


def _check_cu(fn, name, cu, q, batch, total, max_len):
    _require(isinstance(cu, torch.Tensor), fn, f"{name} must be a Tensor")
    _require(cu.dtype == torch.int32, fn, f"{name} must have dtype int32")
    _require(cu.is_contiguous(), fn, f"{name} must be contiguous")
    _require(tuple(cu.shape) == (batch + 1,), fn, f"{name} must have shape (batch_size + 1)")
    _require(cu.device == q.device, fn, f"{name} is on another device")
    vals = cu.tolist()
    lens = [b - a for a, b in zip(vals, vals[1:])]
    _require(vals[0] == 0 and min(lens) >= 0 and vals[-1] <= total, fn, f"{name} = {vals} indexes outside the {total} rows")
    _require(max(lens) <= max_len, fn, f"{name} has a sequence longer than its max_seqlen {max_len}")


def _window(fn, is_causal, left, right, sq, sk, has_alibi):
    """(causal, left, right) after the C++: window >= seqlen_k -> -1, seqlen_q == 1 drops causal."""
    for name, x in (("window_size_left", left), ("window_size_right", right)):
        _require(isinstance(x, int) and not isinstance(x, bool) and x >= -1, fn, f"{name} must be an int >= -1, got {x!r}")
    left = -1 if left >= sk else left
    right = -1 if right >= sk else right
    if sq == 1 and not has_alibi:
        is_causal = False
    if is_causal:
        right = 0
    return is_causal, left, right


def _check_v3_fwd(fn, q, v, causal, left, right, alibi, how):
    arch = GFX["name"]
    _require(arch in V3_ARCHS, fn, f"no v3 kernels for {arch} (invalid argument for fmha_fwd)")
    _require(q.dtype == torch.bfloat16, fn, "the v3 forward kernels are bf16 only (invalid argument for fmha_fwd)")
    d, dv = q.shape[-1], v.shape[-1]
    _require((d, dv) == (128, 128) or (arch == "gfx950" and (d, dv) == (192, 128)), fn,
             f"no v3 forward kernel for head dims ({d}, {dv}) on {arch} (invalid argument for fmha_fwd)")
    _require(alibi is None, fn, "the v3 forward kernels take no ALiBi (invalid argument for fmha_fwd)")
    _require((left, right) in ((-1, -1), (-1, 0)), fn,
             f"the v3 forward kernels take no mask or causal with left -1, got window ({left}, {right}) "
             "(invalid argument for fmha_fwd)")
    _require(how in (0, 1, 2), fn, f"how_v3_bf16_cvt must be 0, 1 or 2, got {how!r}")


def _record_call(fn, params):
    """Log the call (``params``: the entry point's ``locals()``) with every argument but the generator and
    the padded cu_seqlens."""
    _record(fn, **{k: v for k, v in params.items() if k not in _NOT_RECORDED})


_NOT_RECORDED = ("fn", "gen", "cu_seqlens_q_padded", "cu_seqlens_k_padded")


# --- numerics ---------------------------------------------------------------------
def _visible(sq, sk, left, right, device):
    i = torch.arange(sq, device=device)[:, None]
    j = torch.arange(sk, device=device)[None, :]
    vis = torch.ones(sq, sk, dtype=torch.bool, device=device)
    if left >= 0:
        vis &= j >= i + sk - sq - left
    if right >= 0:
        vis &= j <= i + sk - sq + right
    return vis


def _scores(q, k, scale, left, right, slopes):
    """q (sq, H, D), k (sk, H, D) -> float32 (H, sq, sk) masked scores (-inf hidden)."""
    sq, sk = q.shape[0], k.shape[0]
    s = torch.einsum("qhd,khd->hqk", q.float(), k.float()) * scale
    if slopes is not None:
        i = torch.arange(sq, device=q.device)[:, None]
        j = torch.arange(sk, device=q.device)[None, :]
        s = s - slopes.float()[:, None, None] * (i + sk - sq - j).abs()
    return s.masked_fill(~_visible(sq, sk, left, right, q.device), -math.inf)


def _expand(t, hq):
    return t.repeat_interleave(hq // t.shape[1], dim=1)


def _fwd_seq(q, k, v, scale, left, right, slopes, v3):
    """One sequence: (out (sq, H, Dv) float32, lse (H, sq))."""
    hq = q.shape[1]
    s = _scores(q, _expand(k, hq), scale, left, right, slopes)
    lse = torch.logsumexp(s, dim=-1)  # -inf where the row sees no key
    p = torch.exp(s - lse[..., None]).nan_to_num(0.0)
    out = torch.einsum("hqk,khd->qhd", p, _expand(v, hq).float())
    empty = torch.isneginf(lse)
    if v3:  # what the assembly kernels write there is unknown
        out = out.masked_fill(empty.T[..., None], math.nan)
        lse = lse.masked_fill(empty, math.nan)
    return out, lse


def _bwd_seq(dout, q, k, v, out, lse, scale, left, right, slopes):
    hq, hk = q.shape[1], k.shape[1]
    ke, ve = _expand(k, hq).float(), _expand(v, hq).float()
    s = _scores(q, ke, scale, left, right, slopes)
    lse = torch.where(torch.isneginf(lse), torch.zeros_like(lse), lse)  # CK's get_validated_lse
    p = torch.exp(s - lse[..., None])
    do = dout.float()
    dp = torch.einsum("qhd,khd->hqk", do, ve)
    delta = (do * out.float()).sum(-1).T  # (H, sq)
    ds = p * (dp - delta[..., None])
    dq = torch.einsum("hqk,khd->qhd", ds, ke) * scale
    dk = torch.einsum("hqk,qhd->khd", ds, q.float()) * scale
    dv = torch.einsum("hqk,qhd->khd", p, do)
    g = hq // hk
    return dq, dk.view(k.shape[0], hk, g, k.shape[2]).sum(2), dv.view(v.shape[0], hk, g, v.shape[2]).sum(2)


def _slopes(alibi, b, hq):
    if alibi is None:
        return None
    return alibi if alibi.dim() == 1 else alibi[b]


def _out_buffer(fn, out, shape, q):
    if out is None:
        return torch.full(shape, math.nan, dtype=q.dtype, device=q.device)  # torch::empty
    _check_tensor(fn, "out", out, len(shape), like=q)
    _require(tuple(out.shape) == shape, fn, f"out must have shape {shape}")
    return out


# --- forward ----------------------------------------------------------------------
def _dense_fwd(fn, q, k, v, softmax_scale, is_causal, window_size_left, window_size_right, return_softmax_lse,
               out, alibi_slopes, v3, how=None):
    _check_tensor(fn, "q", q, 4)
    _check_tensor(fn, "k", k, 4, like=q)
    _check_tensor(fn, "v", v, 4, like=q)
    _check_heads(fn, q, k, v)
    b, sq, hq, d = q.shape
    sk, hk, dv = k.shape[1], k.shape[2], v.shape[3]
    _require(b > 0, fn, "batch size must be positive")
    _require(k.shape[0] == b and v.shape[:3] == (b, sk, hk), fn, "k/v shapes do not match q")
    _check_alibi(fn, alibi_slopes, b, hq, q)
    causal, left, right = _window(fn, is_causal, window_size_left, window_size_right, sq, sk, alibi_slopes is not None)
    if v3:
        _check_v3_fwd(fn, q, v, causal, left, right, alibi_slopes, how)
    swapped = sq == 1 and hq > hk and left < 0 and right < 0 and alibi_slopes is None
    _require(not swapped or d == dv, fn,
             "seqlen_q == 1 GQA swap reshapes out to head_size_q (mha_fwd_kernels.cu:351): fails when head_dim != head_dim_v")
    out = _out_buffer(fn, out, (b, sq, hq, dv), q)
    lse = torch.full((b, hq, sq), math.nan, dtype=torch.float32, device=q.device)
    if sk == 0:
        out.zero_()
        lse.fill_(math.inf)
    else:
        for i in range(b):
            o, l = _fwd_seq(q[i], k[i], v[i], softmax_scale, left, right, _slopes(alibi_slopes, i, hq), v3)
            out[i].copy_(o.to(q.dtype))
            lse[i].copy_(l)
    if not return_softmax_lse:
        lse = torch.empty(0, dtype=torch.float32, device=q.device)
    rng = torch.empty(2, dtype=torch.int64, device=q.device)
    return out, lse, torch.empty(0, device=q.device), rng


def mha_fwd(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    dropout_p: float,
    softmax_scale: float,
    is_causal: bool,
    window_size_left: int,
    window_size_right: int,
    return_softmax_lse: bool,
    return_dropout_randval: bool,
    cu_seqlens_q: Optional[torch.Tensor] = None,
    cu_seqlens_kv: Optional[torch.Tensor] = None,
    out: Optional[Tensor] = None,
    bias: Optional[Tensor] = None,
    alibi_slopes: Optional[Tensor] = None,
    gen: Optional[Generator] = None,
):
    fn = "mha_fwd"
    _record_call(fn, locals())
    _unmodelled(dropout_p, return_dropout_randval, bias, padded=(cu_seqlens_q, cu_seqlens_kv))
    return _dense_fwd(fn, q, k, v, softmax_scale, is_causal, window_size_left, window_size_right,
                      return_softmax_lse, out, alibi_slopes, v3=False)


def fmha_v3_fwd(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    dropout_p: float,
    softmax_scale: float,
    is_causal: bool,
    window_size_left: int,
    window_size_right: int,
    return_softmax_lse: bool,
    return_dropout_randval: bool,
    how_v3_bf16_cvt: int,
    out: Optional[Tensor] = None,
    bias: Optional[Tensor] = None,
    alibi_slopes: Optional[Tensor] = None,
    gen: Optional[Generator] = None,
):
    fn = "fmha_v3_fwd"
    _record_call(fn, locals())
    _unmodelled(dropout_p, return_dropout_randval, bias)
    return _dense_fwd(fn, q, k, v, softmax_scale, is_causal, window_size_left, window_size_right,
                      return_softmax_lse, out, alibi_slopes, v3=True, how=how_v3_bf16_cvt)


def _varlen_fwd(fn, q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, softmax_scale, zero_tensors,
                is_causal, window_size_left, window_size_right, return_softmax_lse, out, alibi_slopes, v3, how=None):
    _check_tensor(fn, "q", q, 3)
    _check_tensor(fn, "k", k, 3, like=q)
    _check_tensor(fn, "v", v, 3, like=q)
    _check_heads(fn, q, k, v)
    _require(cu_seqlens_k is not None, fn, "cu_seqlens_k must be provided if paged_KV is false")
    tq, hq, _ = q.shape
    tk, dv = k.shape[0], v.shape[-1]
    _require(v.shape[0] == tk, fn, "v and k must have the same number of tokens")
    batch = cu_seqlens_q.shape[0] - 1 if isinstance(cu_seqlens_q, torch.Tensor) and cu_seqlens_q.dim() == 1 else 0
    _require(batch > 0, fn, "batch size must be postive")
    _check_cu(fn, "cu_seqlens_q", cu_seqlens_q, q, batch, tq, max_seqlen_q)
    _check_cu(fn, "cu_seqlens_k", cu_seqlens_k, q, batch, tk, max_seqlen_k)
    _check_alibi(fn, alibi_slopes, batch, hq, q)
    causal, left, right = _window(fn, is_causal, window_size_left, window_size_right, max_seqlen_q, max_seqlen_k,
                                  alibi_slopes is not None)
    if v3:
        _check_v3_fwd(fn, q, v, causal, left, right, alibi_slopes, how)
    out = _out_buffer(fn, out, (tq, hq, dv), q)
    lse = torch.full((hq, tq), math.nan, dtype=torch.float32, device=q.device)
    if zero_tensors:
        out.zero_()
        lse.fill_(-math.inf)
    if max_seqlen_k == 0:
        out.zero_()
        lse.fill_(math.inf)
    else:
        cq, ck = cu_seqlens_q.tolist(), cu_seqlens_k.tolist()
        for b in range(batch):
            qs, ks = slice(cq[b], cq[b + 1]), slice(ck[b], ck[b + 1])
            if cq[b + 1] == cq[b]:
                continue
            o, l = _fwd_seq(q[qs], k[ks], v[ks], softmax_scale, left, right, _slopes(alibi_slopes, b, hq), v3)
            out[qs].copy_(o.to(q.dtype))
            lse[:, qs] = l
    if not return_softmax_lse:
        lse = torch.empty(0, dtype=torch.float32, device=q.device)
    return out, lse, torch.empty(0, device=q.device), torch.empty(2, dtype=torch.int64, device=q.device)


def mha_varlen_fwd(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    cu_seqlens_k: Optional[torch.Tensor],
    max_seqlen_q: int,
    max_seqlen_k: int,
    min_seqlen_q: int,
    dropout_p: float,
    softmax_scale: float,
    logits_soft_cap: float,
    zero_tensors: bool,
    is_causal: bool,
    window_size_left: int,
    window_size_right: int,
    return_softmax_lse: bool,
    return_dropout_randval: bool,
    out: Optional[torch.Tensor] = None,
    block_table: Optional[torch.Tensor] = None,
    bias: Optional[torch.Tensor] = None,
    alibi_slopes: Optional[torch.Tensor] = None,
    gen: Optional[torch.Generator] = None,
    cu_seqlens_q_padded: Optional[torch.Tensor] = None,
    cu_seqlens_k_padded: Optional[torch.Tensor] = None,
):
    fn = "mha_varlen_fwd"
    _record_call(fn, locals())
    _unmodelled(dropout_p, return_dropout_randval, bias, block_table, (cu_seqlens_q_padded, cu_seqlens_k_padded),
                logits_soft_cap, min_seqlen_q)
    return _varlen_fwd(fn, q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, softmax_scale,
                       zero_tensors, is_causal, window_size_left, window_size_right, return_softmax_lse, out,
                       alibi_slopes, v3=False)


def fmha_v3_varlen_fwd(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    cu_seqlens_k: Optional[torch.Tensor],
    max_seqlen_q: int,
    max_seqlen_k: int,
    min_seqlen_q: int,
    dropout_p: float,
    softmax_scale: float,
    logits_soft_cap: float,
    zero_tensors: bool,
    is_causal: bool,
    window_size_left: int,
    window_size_right: int,
    return_softmax_lse: bool,
    return_dropout_randval: bool,
    how_v3_bf16_cvt: int,
    out: Optional[torch.Tensor] = None,
    block_table: Optional[torch.Tensor] = None,
    bias: Optional[torch.Tensor] = None,
    alibi_slopes: Optional[torch.Tensor] = None,
    gen: Optional[torch.Generator] = None,
):
    fn = "fmha_v3_varlen_fwd"
    _record_call(fn, locals())
    _unmodelled(dropout_p, return_dropout_randval, bias, block_table, (), logits_soft_cap, min_seqlen_q)
    return _varlen_fwd(fn, q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, softmax_scale,
                       zero_tensors, is_causal, window_size_left, window_size_right, return_softmax_lse, out,
                       alibi_slopes, v3=True, how=how_v3_bf16_cvt)


# --- backward ---------------------------------------------------------------------
def _grad_buffer(fn, name, t, like, fill):
    if t is None:
        return torch.full(like.shape, fill, dtype=like.dtype, device=like.device)  # torch::empty_like
    _check_tensor(fn, name, t, like.dim(), like=like)
    _require(t.shape == like.shape, fn, f"{name} has shape {tuple(t.shape)}, expected {tuple(like.shape)}")
    return t


def _check_bwd_inputs(fn, dout, q, k, v, out, softmax_lse, lse_shape, dims):
    _check_tensor(fn, "q", q, dims)
    for name, t in (("k", k), ("v", v), ("out", out), ("dout", dout)):
        _check_tensor(fn, name, t, dims, like=q)
    _check_heads(fn, q, k, v)
    _require(tuple(out.shape) == tuple(q.shape[:-1]) + (v.shape[-1],), fn, "out has the wrong shape")
    _require(dout.shape == out.shape, fn, "dout has the wrong shape")
    _require(isinstance(softmax_lse, torch.Tensor) and softmax_lse.dtype == torch.float32, fn, "softmax_lse must be float32")
    _require(tuple(softmax_lse.shape) == lse_shape, fn, f"softmax_lse has shape {tuple(softmax_lse.shape)}, expected {lse_shape}")
    _require(softmax_lse.is_contiguous(), fn, "softmax_lse must be contiguous (CK indexes softmax_d with lse's strides)")


def _check_v3_bwd(fn, q, v, causal, left, right, alibi, dropout_p, deterministic, how, varlen):
    arch = GFX["name"]
    d, dv = q.shape[-1], v.shape[-1]
    swa = left > 0 or right > 0
    _require(arch in V3_ARCHS, fn, f"no v3 backward kernels for {arch}")
    _require(alibi is None, fn, "the v3 backward kernels take no ALiBi")
    _require(how in (0, 1, 2), fn, f"how_v3_bf16_cvt must be 0, 1 or 2, got {how!r}")
    _require(left != 0, fn, "window left 0 has no v3 backward kernel")
    if arch == "gfx942":
        _require(not deterministic and d == dv and 64 <= d <= 192, fn, f"no gfx942 v3 backward kernel for ({d}, {dv})")
        _require(not (varlen and swa), fn, "no gfx942 v3 group-mode backward kernel with a sliding window")
    else:
        ok = 64 < d <= 128 and (d == dv or not varlen)
        if not varlen:
            ok = ok or (d == 192 and dv == 128 and not causal and left == -1 and right == -1)
            _require(how == 0, fn, "rtna/rtz (how_v3_bf16_cvt != 0) are deprecated on gfx950 (mha.py:1503)")
        _require(ok, fn, f"no gfx950 v3 backward kernel for ({d}, {dv})")
        _require(not (varlen and swa), fn, "no gfx950 v3 group-mode backward kernel with a sliding window")


def _dense_bwd(fn, dout, q, k, v, out, softmax_lse, softmax_scale, is_causal, window_size_left, window_size_right,
               dq, dk, dv, alibi_slopes, rng_state, v3, v3_args=None):
    _check_bwd_inputs(fn, dout, q, k, v, out, softmax_lse, (q.shape[0], q.shape[2], q.shape[1]), 4)
    b, sq, hq, _ = q.shape
    sk = k.shape[1]
    _require(b > 0, fn, "batch size must be positive")
    _check_alibi(fn, alibi_slopes, b, hq, q)
    if not v3:
        _require(isinstance(rng_state, torch.Tensor), fn,
                 "rng_state must be a tensor: mha_bwd reads rng_state.data_ptr() even without dropout (mha_bwd_kernels.cu:380)")
    causal = bool(is_causal)
    left = -1 if window_size_left >= sk else window_size_left
    right = 0 if causal else (-1 if window_size_right >= sk else window_size_right)
    if v3:
        _check_v3_bwd(fn, q, v, causal, left, right, alibi_slopes, *v3_args, varlen=False)
    dq_ = _grad_buffer(fn, "dq", dq, q, math.nan)
    dk_ = _grad_buffer(fn, "dk", dk, k, math.nan)
    dv_ = _grad_buffer(fn, "dv", dv, v, math.nan)
    for i in range(b):
        g = _bwd_seq(dout[i], q[i], k[i], v[i], out[i], softmax_lse[i], softmax_scale, left, right,
                     _slopes(alibi_slopes, i, hq))
        if v3:  # accumulates into dq: AITER zeroes dq first (mha.py:1564-1565)
            dq_[i].copy_((dq_[i].float() + g[0]).to(q.dtype))
        else:
            dq_[i].copy_(g[0].to(q.dtype))
        dk_[i].copy_(g[1].to(q.dtype))
        dv_[i].copy_(g[2].to(q.dtype))
    return dq_, dk_, dv_, torch.zeros(b, hq, sq, device=q.device)


def mha_bwd(
    dout: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    out: Tensor,
    softmax_lse: Tensor,
    dropout_p: float,
    softmax_scale: float,
    is_causal: bool,
    window_size_left: int,
    window_size_right: int,
    deterministic: bool,
    dq: Optional[Tensor] = None,
    dk: Optional[Tensor] = None,
    dv: Optional[Tensor] = None,
    dbias: Optional[Tensor] = None,
    bias: Optional[Tensor] = None,
    alibi_slopes: Optional[Tensor] = None,
    rng_state: Optional[Tensor] = None,
    gen: Optional[Generator] = None,
):
    fn = "mha_bwd"
    _record_call(fn, locals())
    _unmodelled(dropout_p, bias=bias if bias is not None else dbias)
    return _dense_bwd(fn, dout, q, k, v, out, softmax_lse, softmax_scale, is_causal, window_size_left,
                      window_size_right, dq, dk, dv, alibi_slopes, rng_state, v3=False)


def fmha_v3_bwd(
    dout: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    out: Tensor,
    softmax_lse: Tensor,
    dropout_p: float,
    softmax_scale: float,
    is_causal: bool,
    window_size_left: int,
    window_size_right: int,
    deterministic: bool,
    is_v3_atomic_fp32: bool,
    how_v3_bf16_cvt: int,
    dq: Optional[Tensor] = None,
    dk: Optional[Tensor] = None,
    dv: Optional[Tensor] = None,
    alibi_slopes: Optional[Tensor] = None,
    rng_state: Optional[Tensor] = None,
    gen: Optional[Generator] = None,
):
    fn = "fmha_v3_bwd"
    _record_call(fn, locals())
    _unmodelled(dropout_p)
    return _dense_bwd(fn, dout, q, k, v, out, softmax_lse, softmax_scale, is_causal, window_size_left,
                      window_size_right, dq, dk, dv, alibi_slopes, rng_state, v3=True,
                      v3_args=(dropout_p, deterministic, how_v3_bf16_cvt))


def _varlen_bwd(fn, dout, q, k, v, out, softmax_lse, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                softmax_scale, zero_tensors, is_causal, window_size_left, window_size_right, dq, dk, dv, alibi_slopes,
                v3, v3_args=None):
    tq, hq, _ = q.shape
    _check_bwd_inputs(fn, dout, q, k, v, out, softmax_lse, (hq, tq), 3)
    batch = cu_seqlens_q.shape[0] - 1
    _require(batch > 0, fn, "batch size must be positive")
    _check_cu(fn, "cu_seqlens_q", cu_seqlens_q, q, batch, tq, max_seqlen_q)
    _check_cu(fn, "cu_seqlens_k", cu_seqlens_k, q, batch, k.shape[0], max_seqlen_k)
    _check_alibi(fn, alibi_slopes, batch, hq, q)
    causal = bool(is_causal)
    left = -1 if window_size_left >= max_seqlen_k else window_size_left
    right = 0 if causal else (-1 if window_size_right >= max_seqlen_k else window_size_right)
    if v3:
        _check_v3_bwd(fn, q, v, causal, left, right, alibi_slopes, *v3_args, varlen=True)
    dq_ = _grad_buffer(fn, "dq", dq, q, math.nan)
    dk_ = _grad_buffer(fn, "dk", dk, k, math.nan)
    dv_ = _grad_buffer(fn, "dv", dv, v, math.nan)
    if zero_tensors:
        for t in (dq_, dk_, dv_):
            t.zero_()
    cq, ck = cu_seqlens_q.tolist(), cu_seqlens_k.tolist()
    for b in range(batch):
        qs, ks = slice(cq[b], cq[b + 1]), slice(ck[b], ck[b + 1])
        g = _bwd_seq(dout[qs], q[qs], k[ks], v[ks], out[qs], softmax_lse[:, qs], softmax_scale, left, right,
                     _slopes(alibi_slopes, b, hq))
        dq_[qs].copy_(g[0].to(q.dtype))
        dk_[ks].copy_(g[1].to(q.dtype))
        dv_[ks].copy_(g[2].to(q.dtype))
    return dq_, dk_, dv_, torch.zeros(batch, hq, tq, device=q.device)


def mha_varlen_bwd(
    dout: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    out: Tensor,
    softmax_lse: Tensor,
    cu_seqlens_q: Tensor,
    cu_seqlens_k: Tensor,
    max_seqlen_q: int,
    max_seqlen_k: int,
    dropout_p: float,
    softmax_scale: float,
    zero_tensors: bool,
    is_causal: bool,
    window_size_left: int,
    window_size_right: int,
    deterministic: bool,
    dq: Optional[Tensor] = None,
    dk: Optional[Tensor] = None,
    dv: Optional[Tensor] = None,
    alibi_slopes: Optional[Tensor] = None,
    rng_state: Optional[Tensor] = None,
    gen: Optional[Generator] = None,
    cu_seqlens_q_padded: Optional[Tensor] = None,
    cu_seqlens_k_padded: Optional[Tensor] = None,
):
    fn = "mha_varlen_bwd"
    _record_call(fn, locals())
    _unmodelled(dropout_p, padded=(cu_seqlens_q_padded, cu_seqlens_k_padded))
    return _varlen_bwd(fn, dout, q, k, v, out, softmax_lse, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                       softmax_scale, zero_tensors, is_causal, window_size_left, window_size_right, dq, dk, dv,
                       alibi_slopes, v3=False)


def fmha_v3_varlen_bwd(
    dout: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    out: Tensor,
    softmax_lse: Tensor,
    cu_seqlens_q: Tensor,
    cu_seqlens_k: Tensor,
    max_seqlen_q: int,
    max_seqlen_k: int,
    dropout_p: float,
    softmax_scale: float,
    zero_tensors: bool,
    is_causal: bool,
    window_size_left: int,
    window_size_right: int,
    deterministic: bool,
    is_v3_atomic_fp32: bool,
    how_v3_bf16_cvt: int,
    dq: Optional[Tensor] = None,
    dk: Optional[Tensor] = None,
    dv: Optional[Tensor] = None,
    alibi_slopes: Optional[Tensor] = None,
    rng_state: Optional[Tensor] = None,
    gen: Optional[Generator] = None,
    cu_seqlens_q_padded: Optional[Tensor] = None,
    cu_seqlens_k_padded: Optional[Tensor] = None,
):
    fn = "fmha_v3_varlen_bwd"
    _record_call(fn, locals())
    _unmodelled(dropout_p, padded=(cu_seqlens_q_padded, cu_seqlens_k_padded))
    _require(is_v3_atomic_fp32, fn, "the group-mode v3 backward kernels are a32 only (is_v3_atomic_fp32=True)")
    return _varlen_bwd(fn, dout, q, k, v, out, softmax_lse, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                       softmax_scale, zero_tensors, is_causal, window_size_left, window_size_right, dq, dk, dv,
                       alibi_slopes, v3=True, v3_args=(dropout_p, deterministic, how_v3_bf16_cvt))
