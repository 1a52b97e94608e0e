"""The AITER attention adapter (``backends/aiter/attention.py``), checked without AMD hardware.

1. Every ``_aiter().NAME(...)`` call binds to the real amd-aiter wheel's signature, each argument on
   the intended parameter; the torch model's functions have the wheel's signatures.
2. The model enforces the kernels' contract (dtypes, head dims, lse layout, rng_state, v3 limits).
3. On the model (as ``aiter``, the device looking like gfx942/gfx950), forward and backward match a
   float64 reference, dense and varlen, causal, GQA, windows, ALiBi, rows that see no key (out 0,
   lse +inf) and rows past ``cu_seqlens_q[-1]``, through the CK and the v3 entries.
4. The v3 decisions use the key length: cases where seqlen_q != seqlen_k flip them otherwise.
5. Declines give reasons; the arch guard.
"""

from __future__ import annotations

import dataclasses
import inspect

import pytest
import torch

from aiter_model import model, model_attention, wheel
from aiter_model.fixtures import arch_setter, assert_gfx9_arch_guard, call_names
from attention_ref import attention_ref, ref_grads
from helpers import assert_close_verbose, eps_tol
from vllm_rocm_accel.backends.aiter import attention as aa
from vllm_rocm_accel.checks.attention import check_dense, check_varlen

MODULE = "vllm_rocm_accel.backends.aiter.attention"


def _ref(q, k, v, dout, **opts):
    """float64 (out, lse, dq, dk, dv) of tests/attention_ref.py (our contract: bottom-right masks,
    out 0 / lse +inf on rows that see no key and rows past ``cu_seqlens_q[-1]``)."""
    out, lse = attention_ref(q, k, v, **opts)
    return (out, lse, *ref_grads(q, k, v, dout, **opts))


# ----------------------------------------------------------------------------
# fixtures
# ----------------------------------------------------------------------------
@pytest.fixture
def on_arch(monkeypatch, fake_aiter):
    """The adapter and the model see a gfx9 device (tensors stay on the CPU)."""
    return arch_setter(monkeypatch, fake_aiter, aa)


# ----------------------------------------------------------------------------
# 1. Signatures
# ----------------------------------------------------------------------------
def test_model_signatures_match_wheel():
    for name in model_attention.MODELLED_ATTENTION:
        sig = wheel.resolve_public_function(name)
        assert sig.relpath == "aiter/ops/mha.py", (name, sig.where)
        assert wheel.signature_mismatches(getattr(model_attention, name), sig) == [], name


def test_adapter_calls_bind_to_the_wheel_on_the_intended_parameters():
    calls = wheel.check_adapter_module(MODULE)
    assert sorted({c.name for c in calls}) == sorted(model_attention.MODELLED_ATTENTION)
    common_fwd = {"dropout_p": "0.0", "softmax_scale": "scale", "is_causal": "causal", "window_size_left": "left",
                  "window_size_right": "right", "return_softmax_lse": "need_lse", "return_dropout_randval": "False",
                  "alibi_slopes": "alibi_slopes"}
    varlen = {"cu_seqlens_q": "cu_seqlens_q", "cu_seqlens_k": "cu_seqlens_k", "max_seqlen_q": "p.seqlen_q",
              "max_seqlen_k": "p.seqlen_k"}
    common_bwd = {"dout": "dout", "softmax_lse": "lse", "out": "out", "dropout_p": "0.0", "softmax_scale": "scale",
                  "is_causal": "causal", "window_size_left": "left", "window_size_right": "right",
                  "deterministic": "False", "dq": "dq", "dk": "dk", "dv": "dv", "alibi_slopes": "alibi_slopes",
                  "rng_state": "rng_state"}
    expected = {
        "mha_fwd": {**common_fwd, "out": "None", "bias": "None", "cu_seqlens_q": "None", "cu_seqlens_kv": "None"},
        "fmha_v3_fwd": {**common_fwd, "how_v3_bf16_cvt": "_bf16_cvt(arch)", "bias": "None"},
        "mha_varlen_fwd": {**common_fwd, **varlen, "min_seqlen_q": "0", "logits_soft_cap": "0.0",
                           "zero_tensors": "False", "block_table": "None", "bias": "None"},
        "fmha_v3_varlen_fwd": {**common_fwd, **varlen, "min_seqlen_q": "0", "logits_soft_cap": "0.0",
                               "zero_tensors": "False", "how_v3_bf16_cvt": "_bf16_cvt(arch)", "bias": "None"},
        "mha_bwd": {**common_bwd, "dbias": "None", "bias": "None"},
        "fmha_v3_bwd": {**common_bwd, "is_v3_atomic_fp32": "not one_block", "how_v3_bf16_cvt": "cvt"},
        "mha_varlen_bwd": {**common_bwd, **varlen, "zero_tensors": "True"},
        "fmha_v3_varlen_bwd": {**common_bwd, **varlen, "zero_tensors": "True", "is_v3_atomic_fp32": "True",
                               "how_v3_bf16_cvt": "cvt"},
    }
    wheel.assert_adapter_bindings(MODULE, expected)


def test_adapter_exports_only_the_contract():
    public = {n for n, v in vars(aa).items() if inspect.isfunction(v) and not n.startswith("_") and v.__module__ == aa.__name__}
    assert public == {"supports_args", "forward", "backward", "arch_unsupported_reason"}


# ----------------------------------------------------------------------------
# 2. The model's contract
# ----------------------------------------------------------------------------
def test_model_enforces_the_contract(on_arch):
    import aiter

    q = torch.randn(1, 4, 2, 16, dtype=torch.float16)
    k = torch.randn(1, 6, 2, 16, dtype=torch.float16)
    v = torch.randn(1, 6, 2, 16, dtype=torch.float16)
    out, lse, _, rng = aiter.mha_fwd(q, k, v, 0.0, 0.25, False, -1, -1, True, False)
    assert lse.shape == (1, 2, 4) and lse.dtype == torch.float32
    aiter.mha_bwd(out, q, k, v, out, lse, 0.0, 0.25, False, -1, -1, False, rng_state=rng)
    bf = lambda t: t.bfloat16()  # noqa: E731
    q128 = torch.randn(1, 4, 2, 128, dtype=torch.bfloat16)
    bad = [
        (lambda: aiter.mha_fwd(q.float(), k.float(), v.float(), 0.0, 0.25, False, -1, -1, True, False), "fp16 and bf16"),
        (lambda: aiter.mha_fwd(q[..., :12], k[..., :12], v[..., :12], 0.0, 0.25, False, -1, -1, True, False), "multiple of 8"),
        (lambda: aiter.mha_fwd(q, k.transpose(1, 3).contiguous().transpose(1, 3), v, 0.0, 0.25, False, -1, -1, True, False),
         "contiguous last dimension"),
        (lambda: aiter.mha_fwd(q.repeat(1, 1, 1, 1)[:, :1, :], k[:, :, :1], v[:, :, :1, :8], 0.0, 0.25, False, -1, -1, True, False),
         "head_size_q"),
        (lambda: aiter.mha_bwd(out, q, k, v, out, lse, 0.0, 0.25, False, -1, -1, False), "rng_state"),
        (lambda: aiter.mha_bwd(out, q, k, v, out, lse.transpose(1, 2).contiguous().transpose(1, 2), 0.0, 0.25, False,
                               -1, -1, False, rng_state=rng), "softmax_lse must be contiguous"),
        (lambda: aiter.fmha_v3_fwd(q, k, v, 0.0, 0.25, False, -1, -1, True, False, 1), "bf16 only"),
        (lambda: aiter.fmha_v3_fwd(bf(q), bf(k), bf(v), 0.0, 0.25, False, -1, -1, True, False, 1), "head dims"),
        (lambda: aiter.fmha_v3_fwd(q128, q128, q128, 0.0, 0.25, True, 0, -1, True, False, 1), "window"),
    ]
    for call, message in bad:
        with pytest.raises(model.AiterContractError, match=message):
            call()
    on_arch("gfx90a")
    with pytest.raises(model.AiterContractError, match="no v3 kernels for gfx90a"):
        aiter.fmha_v3_fwd(q128, q128, q128, 0.0, 0.25, False, -1, -1, True, False, 1)
    with pytest.raises(NotImplementedError):
        aiter.mha_fwd(q, k, v, 0.1, 0.25, False, -1, -1, True, False)


# ----------------------------------------------------------------------------
# 3. Forward and backward against the float64 reference
# ----------------------------------------------------------------------------
DENSE = [
    # id, B, Sq, Sk, Hq, Hk, D, Dv, causal, window, alibi, dtype, arch, forward entry, backward entry
    ("plain", 2, 5, 7, 4, 4, 16, 16, False, (-1, -1), False, torch.float16, "gfx942", "mha_fwd", "mha_bwd"),
    ("causal_empty_rows", 2, 7, 4, 4, 2, 16, 24, True, (-1, -1), False, torch.bfloat16, "gfx942", "mha_fwd", "mha_bwd"),
    ("gqa_window", 1, 9, 9, 6, 2, 32, 32, False, (3, 1), False, torch.float16, "gfx90a", "mha_fwd", "mha_bwd"),
    ("mqa_causal_window_alibi", 2, 6, 8, 4, 1, 16, 16, True, (2, -1), True, torch.float16, "gfx942", "mha_fwd", "mha_bwd"),
    ("decode_gqa", 2, 1, 9, 4, 2, 16, 16, True, (-1, -1), False, torch.bfloat16, "gfx942", "mha_fwd", "mha_bwd"),
    ("v3_causal", 1, 136, 100, 2, 1, 128, 128, True, (-1, -1), False, torch.bfloat16, "gfx942", "fmha_v3_fwd", "fmha_v3_bwd"),
    ("v3_gfx950", 1, 136, 136, 2, 2, 128, 128, False, (-1, -1), False, torch.bfloat16, "gfx950", "fmha_v3_fwd", "fmha_v3_bwd"),
]


@pytest.mark.parametrize("case", DENSE, ids=[c[0] for c in DENSE])
def test_dense_forward_backward(on_arch, seed, case):
    _, B, sq, sk, hq, hk, d, dv, causal, window, use_alibi, dtype, arch, fwd_name, bwd_name = case
    on_arch(arch)
    q = torch.randn(B, sq, hq, 2 * d, dtype=dtype)[..., :d]  # strided rows: must be honoured
    k = torch.randn(B, sk, hk, d, dtype=dtype)
    v = torch.randn(B, sk, hk, dv, dtype=dtype)
    alibi = torch.rand(B, hq) if use_alibi else None
    p = check_dense(q, k, v, None, causal, window, 0.0, alibi, 0.0)
    assert aa.supports_args(q, k, v, None, None, alibi, p) is None
    out, lse = aa.forward(q, k, v, None, None, alibi, p, True)
    assert call_names() == [fwd_name]
    assert out.shape == p.out_shape() and out.dtype == dtype and out.is_contiguous()
    assert lse.shape == p.lse_shape() and lse.dtype == torch.float32 and lse.is_contiguous()
    out_only, none = aa.forward(q, k, v, None, None, alibi, p, False)
    assert none is None and torch.equal(out_only, out)
    assert model.CALLS[-1].args["return_softmax_lse"] is False
    model.CALLS.clear()
    dout = torch.randn(out.shape, dtype=dtype)
    r_out, r_lse, r_dq, r_dk, r_dv = _ref(q, k, v, dout, softmax_scale=p.softmax_scale, causal=causal,
                                          window_size=window, alibi_slopes=alibi)
    assert_close_verbose(out, r_out, *eps_tol(dtype, r_out, 2), msg="out")
    assert_close_verbose(lse, r_lse, 1e-4, 1e-5, msg="lse")
    model.CALLS.clear()
    dq, dk, dvv = aa.backward(dout, q, k, v, out, lse, None, None, alibi, p)
    assert call_names() == [bwd_name]
    for name, got, ref, t in (("dq", dq, r_dq, q), ("dk", dk, r_dk, k), ("dv", dvv, r_dv, v)):
        assert got.shape == t.shape and got.dtype == dtype and got.is_contiguous()
        assert_close_verbose(got, ref, *eps_tol(dtype, ref, 8), msg=name)
    call = model.CALLS[0]
    assert call.tensor("softmax_lse").shape == p.lse_shape()
    if "v3" in bwd_name:
        assert call.args["how_v3_bf16_cvt"] == (0 if arch == "gfx950" else 1)


VARLEN = [
    # id, seqlens_q, seqlens_k, tail_q, tail_k, Hq, Hk, D, causal, window, alibi, dtype, arch, fwd, bwd
    ("plain_tail", [3, 5, 2], [4, 2, 6], 2, 1, 2, 2, 16, False, (-1, -1), False, torch.float16, "gfx942",
     "mha_varlen_fwd", "mha_varlen_bwd"),
    ("causal_gqa_empty", [3, 0, 5], [4, 2, 3], 0, 2, 4, 2, 16, True, (-1, -1), False, torch.bfloat16, "gfx942",
     "mha_varlen_fwd", "mha_varlen_bwd"),
    ("window_alibi_no_keys", [4, 3], [5, 0], 1, 0, 2, 1, 32, False, (1, 2), True, torch.float16, "gfx950",
     "mha_varlen_fwd", "mha_varlen_bwd"),
    ("v3_causal", [6, 3], [4, 7], 1, 0, 2, 1, 128, True, (-1, -1), False, torch.bfloat16, "gfx942",
     "fmha_v3_varlen_fwd", "fmha_v3_varlen_bwd"),
]


def _cu(lens):
    return torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist(), dtype=torch.int32)


@pytest.mark.parametrize("case", VARLEN, ids=[c[0] for c in VARLEN])
def test_varlen_forward_backward(on_arch, seed, case):
    _, lq, lk, tail_q, tail_k, hq, hk, d, causal, window, use_alibi, dtype, arch, fwd_name, bwd_name = case
    on_arch(arch)
    cu_q, cu_k = _cu(lq), _cu(lk)
    q = torch.randn(sum(lq) + tail_q, hq, d, dtype=dtype)
    k = torch.randn(sum(lk) + tail_k, hk, d, dtype=dtype)
    v = torch.randn(sum(lk) + tail_k, hk, d, dtype=dtype)
    alibi = torch.rand(hq) if use_alibi else None
    p = check_varlen(q, k, v, cu_q, cu_k, max(lq), max(lk), None, causal, window, 0.0, alibi, 0.0)
    assert aa.supports_args(q, k, v, cu_q, cu_k, alibi, p) is None
    out, lse = aa.forward(q, k, v, cu_q, cu_k, alibi, p, True)
    assert call_names() == [fwd_name]
    assert out.shape == p.out_shape() and lse.shape == p.lse_shape() and lse.is_contiguous()
    dout = torch.randn(out.shape, dtype=dtype)
    r_out, r_lse, r_dq, r_dk, r_dv = _ref(q, k, v, dout, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k,
                                          softmax_scale=p.softmax_scale, causal=causal, window_size=window,
                                          alibi_slopes=alibi)
    assert_close_verbose(out, r_out, *eps_tol(dtype, r_out, 2), msg="out")
    assert_close_verbose(lse, r_lse, 1e-4, 1e-5, msg="lse")
    model.CALLS.clear()
    dq, dk, dvv = aa.backward(dout, q, k, v, out, lse, cu_q, cu_k, alibi, p)
    assert call_names() == [bwd_name]
    for name, got, ref in (("dq", dq, r_dq), ("dk", dk, r_dk), ("dv", dvv, r_dv)):
        assert_close_verbose(got, ref, *eps_tol(dtype, ref, 8), msg=name)
    assert model.CALLS[0].args["zero_tensors"] is True


# ----------------------------------------------------------------------------
# 4. v3 decisions use the key length
# ----------------------------------------------------------------------------
def test_v3_forward_window_normalized_with_seqlen_k(on_arch, seed):
    """left = 200 >= seqlen_k = 128 is no window (v3); judged against seqlen_q = 512 it would be a
    sliding window (CK)."""
    q = torch.randn(1, 512, 1, 128, dtype=torch.bfloat16)
    k = torch.randn(1, 128, 1, 128, dtype=torch.bfloat16)
    v = torch.randn(1, 128, 1, 128, dtype=torch.bfloat16)
    p = check_dense(q, k, v, None, True, (200, -1), 0.0, None, 0.0)
    out, lse = aa.forward(q, k, v, None, None, None, p, True)
    assert call_names() == ["fmha_v3_fwd"]
    r_out, r_lse = attention_ref(q, k, v, softmax_scale=p.softmax_scale, causal=True, window_size=(200, -1))
    assert_close_verbose(out, r_out, *eps_tol(torch.bfloat16, r_out, 2), msg="out")  # empty rows: 0, not the kernel's
    assert_close_verbose(lse, r_lse, 1e-4, 1e-5, msg="lse")
    p_wide = dataclasses.replace(p, seqlen_k=600)  # had the window been judged against a long key set
    assert not aa._use_v3_fwd("gfx942", p_wide)


@pytest.mark.parametrize("sk,one_block", [(256, True), (320, False)])
def test_gfx950_one_block_uses_seqlen_k(on_arch, seed, sk, one_block):
    on_arch("gfx950")
    q = torch.randn(1, 512, 1, 128, dtype=torch.bfloat16)
    k = torch.randn(1, sk, 1, 128, dtype=torch.bfloat16)
    v = torch.randn(1, sk, 1, 128, dtype=torch.bfloat16)
    p = check_dense(q, k, v, None, False, (-1, -1), 0.0, None, 0.0)
    out, lse = aa.forward(q, k, v, None, None, None, p, True)
    model.CALLS.clear()
    aa.backward(torch.randn_like(out), q, k, v, out, lse, None, None, None, p)
    [call] = model.CALLS
    assert call.name == "fmha_v3_bwd"
    assert call.args["is_v3_atomic_fp32"] is (not one_block)  # seqlen_q = 512 would always say "not one block"
    assert call.args["how_v3_bf16_cvt"] == 0 and call.args["deterministic"] is False


def test_v3_skipped_where_aiter_would_fail(on_arch):
    q = torch.randn(1, 200, 2, 128, dtype=torch.bfloat16)
    p = check_dense(q, q, q, None, True, (0, -1), 0.0, None, 0.0)  # left 0: AITER's swa test says "no window"
    assert not aa._use_v3_fwd("gfx942", p)
    p = check_dense(q, q, q, None, False, (-1, -1), 0.0, None, 0.0)
    assert aa._use_v3_fwd("gfx942", p) and not aa._use_v3_fwd("gfx90a", p)
    assert not aa._use_v3_fwd("gfx942", dataclasses.replace(p, dtype=torch.float16))
    assert not aa._use_v3_fwd("gfx942", dataclasses.replace(p, seqlen_q=128))  # decode-ish: CK (py:1227)
    assert aa._use_v3_fwd("gfx950", dataclasses.replace(p, head_dim=192))
    assert not aa._use_v3_fwd("gfx942", dataclasses.replace(p, head_dim=192))


# ----------------------------------------------------------------------------
# 5. Declines and the arch guard
# ----------------------------------------------------------------------------
def test_declines_give_reasons():
    q = torch.randn(1, 4, 2, 16, dtype=torch.float16)
    p = check_dense(q, q, q, None, False, (-1, -1), 0.0, None, 0.0)
    assert aa.supports_args(q, q, q, None, None, None, p) is None
    r = lambda **kw: aa.supports_args(q, q, q, None, None, None, dataclasses.replace(p, **kw))  # noqa: E731
    assert "dropout" in r(dropout_p=0.1)
    assert "float16/bfloat16" in r(dtype=torch.float32)
    assert "softcap" in r(softcap=5.0)
    assert "multiple of 8" in r(head_dim=12)
    assert "multiple of 8" in r(head_dim_v=20)
    assert "unbounded" in r(seqlen_q=20, seqlen_k=4, window_right=6)  # right >= sk but < sq - 1
    assert r(seqlen_q=20, seqlen_k=4, window_right=19) is None
    assert "head_dim != head_dim_v" in r(seqlen_q=1, num_heads_k=1, head_dim_v=32)
    assert r(seqlen_q=1, num_heads_k=1, head_dim_v=32, has_alibi=True) is None
    assert "32-bit" in r(total_q=2**27, num_heads_q=32, head_dim=128)


def test_arch_guard(monkeypatch):
    assert_gfx9_arch_guard(monkeypatch, aa)
