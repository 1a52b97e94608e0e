"""The torch attention backend (math path on the CPU, and its SDPA path run on the CPU) against the
independent float64 reference of tests/attention_ref.py, on fresh random inputs.

Tolerances come from the precision: ``atol = max(2 * max|ref64 - ref_lowp|, floor)``, where
``ref_lowp`` is the reference computed in the input dtype (float32 softmax), and the floor is a few
units of the output's rounding (``8 * eps(dtype) * max|ref64|``, 32 for float32). The backend computes in float32
and rounds once, so it sits well inside that band.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from attention_ref import attention_ref, attention_tolerance, ref_grads
from helpers import assert_close_verbose, cuda_like
from vllm_rocm_accel.backends.torch import attention as ta
from vllm_rocm_accel.checks.attention import check_dense, check_varlen
from vllm_rocm_accel.inputs_attention import alibi_slopes, attention_flops, dense_qkv, varlen_qkv

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
INF = float("inf")


def _floor(dtype, ref) -> float:
    finite = ref[torch.isfinite(ref)]
    amax = float(finite.abs().max()) if finite.numel() else 1.0
    # float32: the backend's and the reference's float32 rounding differ by up to 12.4 eps * amax
    # (the decode case's dv, worst of 1000 seeds; 8 failed about 1 seed in 150): 32 gives room
    units = 32 if dtype == torch.float32 else 8
    return units * torch.finfo(dtype).eps * max(amax, 1e-3)


class Call:
    """One attention call: inputs, its AttnProblem, and the reference's options."""

    def __init__(self, q, k, v, cu_q=None, cu_k=None, max_q=None, max_k=None, *, softmax_scale=None, causal=False,
                 window=(-1, -1), softcap=0.0, alibi=None, dropout_p=0.0, seed=0):
        self.q, self.k, self.v, self.cu_q, self.cu_k, self.alibi = q, k, v, cu_q, cu_k, alibi
        if cu_q is None:
            self.p = check_dense(q, k, v, softmax_scale, causal, window, softcap, alibi, dropout_p, seed)
        else:
            self.p = check_varlen(q, k, v, cu_q, cu_k, max_q, max_k, softmax_scale, causal, window, softcap, alibi,
                                  dropout_p, seed)
        self.opts = dict(cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, softmax_scale=softmax_scale, causal=causal,
                         window_size=window, softcap=softcap, alibi_slopes=alibi)
        if dropout_p > 0:
            self.opts.update(dropout_keep=ta.dropout_keep_mask(self.p, q.device), dropout_p=dropout_p)

    def forward(self, need_lse=True):
        return ta.forward(self.q, self.k, self.v, self.cu_q, self.cu_k, self.alibi, self.p, need_lse)

    def backward(self, dout, out, lse):
        return ta.backward(dout, self.q, self.k, self.v, out, lse, self.cu_q, self.cu_k, self.alibi, self.p)


def check_call(c: Call, grads=True, need_lse=True, msg=""):
    """Forward (and backward) of ``c`` against the reference; returns (out, lse)."""
    p, dtype = c.p, c.q.dtype
    out, lse = c.forward(need_lse)
    assert out.shape == p.out_shape() and out.dtype == dtype and out.is_contiguous()
    out64, lse64 = attention_ref(c.q, c.k, c.v, **c.opts)
    outlp, lselp = attention_ref(c.q, c.k, c.v, upcast=False, **c.opts)
    assert torch.isfinite(out).all(), f"{msg} non-finite out"
    assert_close_verbose(out, out64, attention_tolerance(out64, outlp, _floor(dtype, out64)), 0, f"{msg} out")
    if need_lse:
        assert lse.shape == p.lse_shape() and lse.dtype == torch.float32 and lse.is_contiguous()
        assert not torch.isnan(lse).any() and not (lse == -INF).any()
        assert_close_verbose(lse, lse64, attention_tolerance(lse64, lselp, _floor(torch.float32, lse64)), 0,
                             f"{msg} lse")
    if grads:
        dout = torch.randn(out.shape).to(dtype)
        got = c.backward(dout, out, lse)
        want = ref_grads(c.q, c.k, c.v, dout, **c.opts)
        lowp = ref_grads(c.q, c.k, c.v, dout, upcast=False, **c.opts)
        for name, g, x, w, lp in zip("qkv", got, (c.q, c.k, c.v), want, lowp):
            assert g.shape == x.shape and g.dtype == x.dtype and g.is_contiguous(), f"{msg} d{name}"
            assert torch.isfinite(g).all(), f"{msg} non-finite d{name}"
            assert_close_verbose(g, w, attention_tolerance(w, lp, _floor(dtype, w)), 0, f"{msg} d{name}")
    return out, lse


# --- dense ---------------------------------------------------------------------------------------
# (B, Sq, Sk, Hq, Hk, D, Dv, options); alibi "h" = (Hq,) slopes, "bh" = (B, Hq) slopes
DENSE = [
    (2, 33, 33, 4, 4, 64, 64, {}),
    (2, 17, 40, 4, 1, 72, 72, dict(causal=True)),  # Sq < Sk, GQA 4:1, D not a power of two
    (1, 40, 17, 2, 2, 16, 16, dict(causal=True)),  # Sq > Sk: the first 23 rows see no key
    (2, 24, 24, 4, 2, 64, 32, dict(window=(5, 3))),  # Dv != D
    (2, 20, 31, 4, 4, 16, 16, dict(softcap=5.0, window=(7, -1), softmax_scale=0.5)),
    (2, 19, 19, 8, 2, 72, 72, dict(causal=True, alibi="h")),
    (2, 13, 29, 4, 4, 64, 64, dict(alibi="bh", window=(3, 2), softcap=2.0)),
    (1, 1, 64, 4, 1, 64, 64, dict(causal=True)),  # one query (decode)
]


def _alibi(kind, batch, hq):
    if kind is None:
        return None
    if kind == "h":
        return alibi_slopes(hq)
    # per-sequence slopes that differ, so a batch-indexing bug shows
    return (alibi_slopes(hq, batch) * torch.linspace(0.5, 2.0, batch).view(-1, 1)).contiguous()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", DENSE, ids=lambda c: "-".join(map(str, c[:7])) + str(c[7]))
def test_dense(seed, dtype, case):
    b, sq, sk, hq, hk, d, dv, opts = case
    opts = dict(opts)
    alibi = _alibi(opts.pop("alibi", None), b, hq)
    q, k, v = dense_qkv(b, sq, sk, hq, hk, d, dv, dtype=dtype)
    out, lse = check_call(Call(q, k, v, alibi=alibi, **opts), msg=f"{case} {dtype}")
    if opts.get("causal") and sq > sk:  # rows that see no key: exact zeros and +inf
        assert (out[:, : sq - sk] == 0).all() and (lse[:, :, : sq - sk] == INF).all()


# --- varlen --------------------------------------------------------------------------------------
# (seqlens_q, seqlens_k, Hq, Hk, D, Dv, options); options may add extra packed rows past the last
# sequence ("extra_q"/"extra_k") and raise max_seqlen above the longest sequence ("max_pad").
VARLEN = [
    ([1, 7, 33, 0], [1, 7, 33, 0], 4, 4, 64, 64, {}),
    ([1, 7, 33, 0], [1, 7, 33, 0], 4, 1, 72, 72, dict(causal=True)),
    ([1, 7, 33, 0], [5, 3, 40, 2], 2, 2, 16, 16, dict(causal=True, extra_q=3, extra_k=2)),  # Sq>Sk and Sq<Sk
    ([4, 2, 9], [0, 3, 12], 4, 2, 64, 32, dict(window=(4, 1), max_pad=5)),  # a sequence with no keys
    ([1, 7, 33, 0], [9, 7, 20, 0], 4, 4, 16, 16, dict(softcap=3.0, alibi="bh", causal=True)),
    ([3, 12], [12, 3], 8, 2, 72, 72, dict(alibi="h", window=(2, 2))),
]


def _varlen(case, dtype):
    lq, lk, hq, hk, d, dv, opts = case
    opts = dict(opts)
    extra_q, extra_k, pad = opts.pop("extra_q", 0), opts.pop("extra_k", 0), opts.pop("max_pad", 0)
    alibi = _alibi(opts.pop("alibi", None), len(lq), hq)
    q, k, v, cu_q, cu_k, mq, mk = varlen_qkv(lq + [extra_q], lk + [extra_k], hq, hk, d, dv, dtype=dtype)
    cu_q, cu_k = cu_q[:-1].contiguous(), cu_k[:-1].contiguous()  # the extra rows are in no sequence
    mq, mk = max(lq) + pad, max(lk) + pad
    return Call(q, k, v, cu_q, cu_k, mq, mk, alibi=alibi, **opts), extra_q


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", VARLEN, ids=lambda c: f"{c[0]}-{c[1]}-{c[2:6]}-{c[6]}")
def test_varlen(seed, dtype, case):
    c, extra_q = _varlen(case, dtype)
    out, lse = check_call(c, msg=f"{case} {dtype}")
    if extra_q:  # rows past cu_seqlens_q[-1]
        assert (out[-extra_q:] == 0).all() and (lse[:, -extra_q:] == INF).all()


def test_varlen_sequences_with_no_keys_or_no_keys_at_all(seed):
    # sequence 0 has queries but no keys: its rows give 0 and +inf, with finite gradients
    q, k, v, cu_q, cu_k, mq, mk = varlen_qkv([5, 3], [0, 4], 4, 2, 16, dtype=torch.float32)
    out, lse = check_call(Call(q, k, v, cu_q, cu_k, mq, mk))
    assert (out[:5] == 0).all() and (lse[:, :5] == INF).all() and torch.isfinite(lse[:, 5:]).all()
    # no keys in the whole batch (total_k == 0, max_seqlen_k == 0)
    q, k, v, cu_q, cu_k, mq, mk = varlen_qkv([5, 3], [0, 0], 4, 2, 16, dtype=torch.bfloat16)
    c = Call(q, k, v, cu_q, cu_k, mq, mk, causal=True)
    out, lse = check_call(c)
    assert (out == 0).all() and (lse == INF).all()
    dq, dk, dv = c.backward(torch.randn(out.shape).to(out.dtype), out, lse)
    assert (dq == 0).all() and dk.shape == k.shape == (0, 2, 16) and dv.shape == v.shape


def test_rows_in_no_sequence_are_never_read(seed):
    """NaN in q/k/v/dout rows past cu_seqlens[-1] must not reach any output or gradient."""
    q, k, v, cu_q, cu_k, mq, mk = varlen_qkv([3, 7, 4], [6, 2, 5], 4, 2, 16, dtype=torch.float16)
    cu_q, cu_k = cu_q[:-1].contiguous(), cu_k[:-1].contiguous()
    for x, end in ((q, 10), (k, 8), (v, 8)):
        x[end:] = float("nan")
    c = Call(q, k, v, cu_q, cu_k, 7, 6, causal=True)
    out, lse = c.forward()
    assert torch.isfinite(out).all() and (out[10:] == 0).all() and (lse[:, 10:] == INF).all()
    dout = torch.randn(out.shape).to(out.dtype)
    dout[10:] = float("nan")
    for g, end in zip(c.backward(dout, out, lse), (10, 8, 8)):
        assert torch.isfinite(g).all() and (g[end:] == 0).all()
    clean = Call(q[:10].clone(), k[:8].clone(), v[:8].clone(), cu_q, cu_k, 7, 6, causal=True)
    assert torch.equal(out[:10], clean.forward()[0])


def test_window_rows_with_no_key_dense(seed):
    # window (0, 0) with Sq > Sk: query i sees only key i - (Sq - Sk); the first Sq - Sk rows see nothing
    q, k, v = dense_qkv(2, 12, 5, 2, 1, 16, dtype=torch.float16)
    out, lse = check_call(Call(q, k, v, window=(0, 0)))
    assert (out[:, :7] == 0).all() and (lse[:, :, :7] == INF).all() and torch.isfinite(lse[:, :, 7:]).all()


def test_non_contiguous_inputs(seed):
    """q, k, v as head slices of a fused qkv tensor (stride(-1) == 1, other strides not packed)."""
    hq, hk, d = 4, 2, 64
    fused = torch.randn(2, 21, hq + 2 * hk, d).to(torch.bfloat16)
    q, k, v = fused[:, :, :hq], fused[:, :, hq:hq + hk], fused[:, :, hq + hk:]
    assert not q.is_contiguous()
    check_call(Call(q, k, v, causal=True))
    packed = fused.reshape(42, hq + 2 * hk, d)
    q, k, v = packed[:, :hq], packed[:, hq:hq + hk], packed[:, hq + hk:]
    cu = torch.tensor([0, 20, 42], dtype=torch.int32)
    check_call(Call(q, k, v, cu, cu, 22, 22, window=(6, -1)))


def test_query_blocks(seed, monkeypatch):
    """Tiny score tiles: many query blocks, same result (and dropout masks per block)."""
    q, k, v, cu_q, cu_k, mq, mk = varlen_qkv([1, 7, 33, 0], [9, 7, 30, 4], 4, 2, 16, dtype=torch.float32)
    monkeypatch.setattr(ta, "_MAX_SCORE_ELEMENTS", 4 * 4 * mk * 5)  # 5 query rows per block
    c = Call(q, k, v, cu_q, cu_k, mq, mk, causal=True)
    assert len(ta._blocks(c.p)) == 7
    check_call(c)
    check_call(Call(q, k, v, cu_q, cu_k, mq, mk, causal=True, dropout_p=0.3, seed=11))


# --- dropout -------------------------------------------------------------------------------------
def test_dropout_is_seeded(seed):
    q, k, v = dense_qkv(2, 16, 24, 4, 2, 16, dtype=torch.float32)
    a, lse_a = Call(q, k, v, dropout_p=0.25, seed=seed).forward()
    b, lse_b = Call(q, k, v, dropout_p=0.25, seed=seed).forward()
    c, lse_c = Call(q, k, v, dropout_p=0.25, seed=seed + 1).forward()
    plain, lse_plain = Call(q, k, v).forward()
    assert torch.equal(a, b), "same seed must give the same output"
    assert not torch.equal(a, c), "another seed must give another mask"
    assert not torch.equal(a, plain)
    # the lse is the undropped softmax's
    assert torch.equal(lse_a, lse_c) and torch.allclose(lse_a, lse_plain, atol=1e-6, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_dropout_matches_masked_reference(seed, dtype):
    """Output and gradients equal the reference with the same keep mask applied (dense, varlen)."""
    q, k, v = dense_qkv(2, 17, 23, 4, 2, 16, dtype=dtype)
    check_call(Call(q, k, v, causal=True, dropout_p=0.2, seed=seed), msg="dense")
    q, k, v, cu_q, cu_k, mq, mk = varlen_qkv([1, 7, 33, 0], [3, 7, 20, 0], 4, 4, 72, 64, dtype=dtype)
    check_call(Call(q, k, v, cu_q, cu_k, mq, mk, window=(5, 5), alibi=alibi_slopes(4), dropout_p=0.4, seed=seed),
               msg="varlen")


def test_dropout_keeps_the_mean(seed):
    """v = 1: each output is sum_j P_ij keep_ij / (1 - p), whose mean over rows is 1."""
    p_drop = 0.3
    q, k, _ = dense_qkv(4, 64, 64, 8, 8, 16, dtype=torch.float32)
    v = torch.ones(4, 64, 8, 16)
    c = Call(q, k, v, dropout_p=p_drop, seed=seed)
    keep = ta.dropout_keep_mask(c.p, "cpu")
    assert keep.shape == (4, 8, 64, 64)
    frac = keep.float().mean().item()
    assert abs(frac - (1 - p_drop)) < 0.01, frac  # 131072 draws: sd ~ 0.0013
    out, _ = c.forward()
    mean = out[..., 0].mean().item()
    assert abs(mean - 1.0) < 0.03, mean  # 2048 rows, each of sd ~ 0.2 (softmax over 64 keys)


# --- the SDPA path, run on the CPU -----------------------------------------------------------------
SDPA_CASES = [
    ("dense", dict()),
    ("dense", dict(causal=True)),  # Sq == Sk: is_causal
    ("dense_tall", dict(causal=True)),  # Sq > Sk: bottom-right mask, rows with no key
    ("dense", dict(window=(3, 1))),
    ("varlen", dict()),
    ("varlen", dict(causal=True)),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("gqa", [1, 4])
@pytest.mark.parametrize("kind,opts", SDPA_CASES, ids=lambda x: str(x))
def test_sdpa_path(seed, monkeypatch, dtype, gqa, kind, opts):
    calls = []
    real = torch.nn.functional.scaled_dot_product_attention

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(ta, "_SDPA_DEVICES", ("cpu",))
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    hk = 2
    if kind == "varlen":
        q, k, v, cu_q, cu_k, mq, mk = varlen_qkv([1, 7, 33, 0], [5, 7, 20, 0], hk * gqa, hk, 64, 32, dtype=dtype)
        c = Call(q, k, v, cu_q, cu_k, mq, mk, **opts)
    else:
        sq, sk = (30, 11) if kind == "dense_tall" else (19, 19)
        q, k, v = dense_qkv(2, sq, sk, hk * gqa, hk, 64, 64, dtype=dtype)
        c = Call(q, k, v, **opts)
    out, lse = check_call(c, need_lse=False)
    assert lse is None
    assert len(calls) == 1, "the forward goes through SDPA; the backward uses the explicit formulas"
    if kind == "dense" and not c.p.windowed or (kind == "dense" and opts == dict(causal=True)):
        assert calls[0]["attn_mask"] is None and calls[0]["is_causal"] == bool(opts.get("causal"))
    else:
        assert calls[0]["attn_mask"] is not None and not calls[0]["is_causal"]
    # need_lse (or dropout/softcap/ALiBi) takes the math path
    calls.clear()
    c.forward(need_lse=True)
    assert not calls


def test_sdpa_not_taken_for_math_features(monkeypatch, seed):
    monkeypatch.setattr(ta, "_SDPA_DEVICES", ("cpu",))
    q, k, v = dense_qkv(1, 8, 8, 2, 2, 16)
    assert ta._sdpa_eligible(q, Call(q, k, v).p)
    for opts in (dict(dropout_p=0.1), dict(softcap=1.0), dict(alibi=alibi_slopes(2))):
        assert not ta._sdpa_eligible(q, Call(q, k, v, **opts).p), opts


# --- contract details ----------------------------------------------------------------------------
def test_supports_everything():
    q, k, v, cu_q, cu_k, mq, mk = varlen_qkv([3, 0], [2, 5], 4, 1, 256, 8)
    c = Call(q, k, v, cu_q, cu_k, mq, mk, dropout_p=0.5, softcap=1.0, alibi=alibi_slopes(4, 2), seed=3)
    assert ta.supports_args(q, k, v, cu_q, cu_k, c.alibi, c.p) is None


def test_no_host_reads_on_meta():
    """Forward and backward run on meta tensors (which have no values to read): nothing in them
    depends on reading cu_seqlens (or any tensor) to the host."""
    q, k, v, cu_q, cu_k, mq, mk = varlen_qkv([1, 7, 33, 0], [5, 7, 20, 0], 4, 2, 16, dtype=torch.bfloat16)
    meta = [x.to("meta") for x in (q, k, v, cu_q, cu_k)]
    c = Call(*meta, mq, mk, causal=True, alibi=alibi_slopes(4, device="meta"))
    out, lse = c.forward()
    assert out.shape == c.p.out_shape() and lse.shape == c.p.lse_shape()
    dq, dk, dv = c.backward(torch.empty(out.shape, dtype=out.dtype, device="meta"), out, lse)
    assert dq.shape == q.shape and dk.shape == k.shape and dv.shape == v.shape


def test_inputs_and_flops():
    q, k, v, cu_q, cu_k, mq, mk = varlen_qkv([1, 7, 0], [2, 0, 5], 4, 2, 16, 8)
    assert q.shape == (8, 4, 16) and k.shape == (7, 2, 16) and v.shape == (7, 2, 8)
    assert cu_q.tolist() == [0, 1, 8, 8] and cu_k.tolist() == [0, 2, 2, 7] and cu_q.dtype == torch.int32
    assert (mq, mk) == (7, 5)
    s = alibi_slopes(8)
    assert s.dtype == torch.float32 and torch.allclose(s, 2.0 ** (-torch.arange(1, 9, dtype=torch.float32)))
    assert alibi_slopes(8, 3).shape == (3, 8)
    assert attention_flops(2, 4, 128, 128, 64) == 4 * 2 * 4 * 128 * 128 * 64
    assert attention_flops(2, 4, 128, 128, 64, causal=True) == 2 * 2 * 4 * 128 * 128 * 64
    assert attention_flops(1, 1, 128, 64, 32, 16, mode="bwd") == 2.5 * 2 * 128 * 64 * 48
    # causal Sq > Sk: rows 0..Sq-Sk-1 see nothing, then 1..Sk keys
    assert attention_flops(1, 1, 6, 4, 8, causal=True) == 2 * (1 + 2 + 3 + 4) * 16


# -- the cuDNN path and the fast path the cuda policy prefers (predicates only: no GPU here) -------
@pytest.fixture
def cudnn_says_yes(monkeypatch):
    """torch's own cuDNN checks need a GPU: stand them in with 'yes' (our conditions are under test)."""
    asked = []
    monkeypatch.setattr(ta, "_cudnn_accepts", lambda qb, kb, vb, is_causal: asked.append(is_causal) or True)
    monkeypatch.setattr(ta, "_cudnn_ops_present", lambda: True)
    return asked


def _fast(b=2, sq=64, sk=64, hq=4, hk=4, d=64, dv=None, dtype=torch.bfloat16, causal=False, window=(-1, -1),
          softcap=0.0, alibi=False, dropout=0.0, device="cuda", deterministic=False, which="fast_path"):
    make = cuda_like if device == "cuda" else (lambda *s, dtype: torch.empty(*s, dtype=dtype))
    q, k, v = make(b, sq, hq, d, dtype=dtype), make(b, sk, hk, d, dtype=dtype), make(b, sk, hk, dv or d, dtype=dtype)
    slopes = make(hq, dtype=torch.float32) if alibi else None
    p = check_dense(q, k, v, None, causal, window, softcap, slopes, dropout)
    if deterministic:
        p = dataclasses.replace(p, deterministic=True)
    if which == "cudnn_serves":
        return ta.cudnn_serves(q, k, v, p)
    return getattr(ta, which)(q, k, v, None, None, slopes, p)


def test_fast_path_takes_plain_dense_calls(cudnn_says_yes):
    assert _fast()
    assert _fast(causal=True)
    assert _fast(d=128, dtype=torch.float16, causal=True, sq=300, sk=300)
    assert _fast(hq=8, hk=8, d=128, sq=17, sk=900)
    assert cudnn_says_yes == [False, True, True, False]  # square causal -> cuDNN's is_causal
    assert _fast(which="fast_backward") and _fast(causal=True, which="fast_backward")


def test_fast_backward_declines_a_deterministic_backward(cudnn_says_yes):
    assert _fast(deterministic=True)  # the forward does not care
    assert not _fast(deterministic=True, which="fast_backward")


def test_cudnn_path_serves_other_head_dims_than_the_policy_measured(cudnn_says_yes):
    """cuDNN takes D = 72 / 96 (multiples of 8 <= 128); the policy's fast path only 64 / 128."""
    for d in (72, 96, 8):
        assert _fast(d=d, which="cudnn_serves") and not _fast(d=d)
    assert not _fast(d=136, which="cudnn_serves") and not _fast(d=60, which="cudnn_serves")


def test_cudnn_path_asks_torch_last(monkeypatch):
    """Everything ours allows, and torch's own checks say no: not served (no call made)."""
    monkeypatch.setattr(ta, "_cudnn_accepts", lambda *a: False)
    monkeypatch.setattr(ta, "_cudnn_ops_present", lambda: True)
    assert not _fast(which="cudnn_serves") and not _fast()


@pytest.mark.parametrize("case", [
    dict(device="cpu"), dict(dtype=torch.float32), dict(hk=1),
    dict(d=256), dict(d=72), dict(d=96), dict(dv=32), dict(causal=True, sq=32, sk=64), dict(window=(8, 0)),
    dict(softcap=5.0), dict(alibi=True), dict(dropout=0.1), dict(sk=0),
], ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
def test_fast_path_declines_what_cudnn_would_mask_or_lacks(cudnn_says_yes, case):
    """Not a GPU, fp32, GQA, head dims other than the measured 64 / 128, Dv != D, causal with Sq != Sk
    (cuDNN's causal is top-left), windows, softcap, ALiBi, dropout, empty keys: the Triton kernels
    (or the math path) serve those, forward and backward."""
    assert not _fast(**case)
    assert not _fast(which="fast_backward", **case)

