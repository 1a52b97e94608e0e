"""The AITER paged-attention adapter (``backends/aiter/paged_attention.py``), checked without AMD hardware.

1. Every ``_aiter().NAME(...)`` call binds to the amd-aiter wheel's signature, each argument on the
   intended parameter; the model's functions have the wheel's signatures.
2. The model enforces the kernels' contract (page sizes, int32 tables, cu_seqlens_k, dense out ...).
3. On the model (as ``aiter``, the device looking like gfx942), forward matches a float64 reference
   (gathered per sequence in a loop) on fresh random inputs: mixed prefill + decode through
   ``mha_varlen_fwd`` (block 128), decodes through ``paged_attention_v1`` (block 16, GQA, a sequence
   without a query), random block tables, causal, windows, ALiBi, softcap, rows without keys / past
   ``cu_seqlens_q[-1]`` (out 0, lse +inf).
4. Declines give reasons (FP8 caches, block sizes, head dims, softcap with ALiBi / window, LSE on a
   decode-only kernel); the arch guard.
"""

from __future__ import annotations

import dataclasses
import inspect

import pytest
import torch

from aiter_model import model, model_paged_attention as mpa, wheel
from aiter_model.fixtures import arch_setter, assert_gfx9_arch_guard, call_names
from helpers import assert_close_verbose, eps_tol
from paged_ref import case_of, paged_ref
from vllm_rocm_accel.backends.aiter import paged_attention as ap
from vllm_rocm_accel.checks.paged_attention import check_paged_args

MODULE = "vllm_rocm_accel.backends.aiter.paged_attention"


def make_problem(q, kc, vc, cu_q, seqused_k, table, causal=True, window=(-1, -1), softcap=0.0, alibi=None):
    lq = (cu_q[1:] - cu_q[:-1]).tolist()
    return check_paged_args(q, kc, vc, cu_q, seqused_k, table, max(lq), int(seqused_k.max()), q.shape[2] ** -0.5,
                            causal, window[0], window[1], softcap, alibi, None, None, 1)


def make_inputs(lq, lk, hq, hk, d, bs, dtype, tail_q=0, spare_blocks=3, strided_cache=False):
    """A paged cache in random (non-contiguous) block order; q packed by cu_seqlens_q."""
    nb_per = [(n + bs - 1) // bs for n in lk]
    max_blocks = max(nb_per) + 1
    num_blocks = sum(nb_per) + spare_blocks
    perm = torch.randperm(num_blocks).to(torch.int32)
    table = torch.full((len(lq), max_blocks), num_blocks + 7, dtype=torch.int32)  # unused entries: junk
    at = 0
    for b, n in enumerate(nb_per):
        table[b, :n] = perm[at:at + n]
        at += n
    if strided_cache:  # vLLM's kv_cache.unbind(0) views
        kv = torch.randn(2, num_blocks, bs, hk, d, dtype=dtype)
        kc, vc = kv.unbind(0)
    else:
        kc = torch.randn(num_blocks, bs, hk, d, dtype=dtype)
        vc = torch.randn(num_blocks, bs, hk, d, dtype=dtype)
    cu_q = torch.tensor([0] + torch.tensor(lq).cumsum(0).tolist(), dtype=torch.int32)
    q = torch.randn(sum(lq) + tail_q, hq, d, dtype=dtype)
    seqused_k = torch.tensor(lk, dtype=torch.int32)
    return q, kc, vc, cu_q, seqused_k, table


@pytest.fixture
def on_arch(monkeypatch, fake_aiter):
    """The adapter and the models see a gfx9 device (tensors stay on the CPU)."""
    return arch_setter(monkeypatch, fake_aiter, ap)


# ----------------------------------------------------------------------------
# 1. Signatures
# ----------------------------------------------------------------------------
def test_model_signatures_match_wheel():
    where = {"mha_varlen_fwd": "aiter/ops/mha.py", "paged_attention_v1": "aiter/ops/attention.py"}
    for name in mpa.MODELLED_PAGED_ATTENTION:
        sig = wheel.resolve_public_function(name)
        assert sig.relpath == where[name], (name, sig.relpath)
        assert wheel.signature_mismatches(getattr(mpa, name), sig) == [], name


def test_adapter_calls_bind_to_the_wheel_on_the_intended_parameters():
    calls = wheel.check_adapter_module(MODULE)
    assert sorted({c.name for c in calls}) == sorted(mpa.MODELLED_PAGED_ATTENTION)
    expected = {
        "mha_varlen_fwd": {
            "q": "q", "k": "key_cache", "v": "value_cache", "cu_seqlens_q": "cu_q", "cu_seqlens_k": "cu_k",
            "max_seqlen_q": "p.max_seqlen_q", "max_seqlen_k": "p.max_seqlen_k", "min_seqlen_q": "0",
            "dropout_p": "0.0", "softmax_scale": "float(p.softmax_scale)", "logits_soft_cap": "float(p.softcap)",
            "zero_tensors": "False", "is_causal": "causal", "window_size_left": "left", "window_size_right": "right",
            "return_softmax_lse": "need_lse", "return_dropout_randval": "False", "out": "out",
            "block_table": "block_table", "bias": "None", "alibi_slopes": "alibi_slopes",
        },
        "paged_attention_v1": {
            "out": "od", "workspace_buffer": "workspace", "query": "qd", "key_cache": "key_cache",
            "value_cache": "value_cache", "scale": "float(p.softmax_scale)", "block_tables": "block_table.contiguous()",
            "cu_query_lens": "None", "context_lens": "seqused_k", "max_context_len": "p.max_seqlen_k",
            "alibi_slopes": "alibi_slopes", "kv_cache_dtype": "'auto'", "kv_cache_layout": "'NHD'",
            "logits_soft_cap": "float(p.softcap)", "k_scale": "one", "v_scale": "one", "fp8_out_scale": "None",
            "partition_size": "PA_PARTITION", "mtp": "1", "sliding_window": "p.window_left + 1",
        },
    }
    wheel.assert_adapter_bindings(MODULE, expected)


def test_adapter_exports_only_the_contract():
    public = {n for n, v in vars(ap).items() if inspect.isfunction(v) and not n.startswith("_") and v.__module__ == ap.__name__}
    assert public == {"supports_args", "forward", "arch_unsupported_reason"}


# ----------------------------------------------------------------------------
# 2. The model's contract
# ----------------------------------------------------------------------------
def test_model_enforces_the_contract(on_arch):
    import aiter

    q, kc, vc, cu_q, sk, table = make_inputs([3, 1], [130, 5], 2, 1, 64, 128, torch.float16)
    cu_k = torch.tensor([0, 130, 135], dtype=torch.int32)
    args = (q, kc, vc, cu_q, cu_k, 3, 130, 0, 0.0, 0.125, 0.0, False, True, -1, -1, True, False)
    out, lse, _, _ = aiter.mha_varlen_fwd(*args, block_table=table)
    assert lse.shape == (2, q.shape[0])
    bad = [
        (lambda: aiter.mha_varlen_fwd(*args, block_table=table.long()), "int32"),
        (lambda: aiter.mha_varlen_fwd(*args[:4], None, *args[5:], block_table=table), "cu_seqlens_k"),
        (lambda: aiter.mha_varlen_fwd(q, kc[:, :64], vc[:, :64], *args[3:], block_table=table), "divisible by 128"),
        (lambda: aiter.mha_varlen_fwd(*args[:4], torch.tensor([0, 400, 405], dtype=torch.int32), args[5], 400,
                                      *args[7:], block_table=table), "more than block_table holds"),
        (lambda: aiter.mha_varlen_fwd(*args, block_table=table.T.contiguous().T), "contiguous last dimension"),
    ]
    for call, message in bad:
        with pytest.raises(model.AiterContractError, match=message):
            call()
    q, kc, vc, cu_q, sk, table = make_inputs([1, 1], [20, 5], 4, 2, 64, 16, torch.bfloat16)
    one = torch.ones(1)
    ws = torch.empty(10**6, dtype=torch.uint8)
    od = torch.empty(2, 4, 64, dtype=torch.bfloat16)
    pa = lambda **kw: aiter.paged_attention_v1(  # noqa: E731
        kw.get("out", od), ws, kw.get("q", q), kw.get("kc", kc), kw.get("vc", vc), 0.125, kw.get("table", table),
        None, sk, 20, None, "auto", "NHD", 0.0, one, one)
    pa()
    for kw, message in [
        (dict(table=table.T.contiguous().T), "contiguous"),
        (dict(kc=kc.repeat(1, 4, 1, 1), vc=vc.repeat(1, 4, 1, 1)), "block size 64"),
        (dict(q=q[..., :32], kc=kc[..., :32], vc=vc[..., :32], out=od[..., :32].contiguous()), "multiple of 64"),
        (dict(out=od.transpose(0, 1).contiguous().transpose(0, 1)), "densely"),
    ]:
        with pytest.raises(model.AiterContractError, match=message):
            pa(**kw)


# ----------------------------------------------------------------------------
# 3. Forward against the float64 reference
# ----------------------------------------------------------------------------
CASES = [
    # id, seqlens_q, seqlens_k, tail_q, Hq, Hk, D, block, dtype, causal, window, softcap, alibi, lse, entry
    ("mixed_prefill_decode_causal_gqa", [5, 1, 1, 3, 1], [140, 1, 300, 3, 129], 2, 4, 2, 64, 128, torch.bfloat16,
     True, (-1, -1), 0.0, False, True, "mha_varlen_fwd"),
    ("mixed_window_softcap_empty", [4, 1, 0, 6], [2, 200, 17, 6], 0, 2, 1, 32, 128, torch.float16,
     True, (3, -1), 5.0, False, True, "mha_varlen_fwd"),
    ("mixed_noncausal_alibi_no_keys", [3, 1, 2], [0, 131, 9], 1, 2, 2, 16, 256, torch.float16,
     False, (2, 1), 0.0, True, True, "mha_varlen_fwd"),
    ("decode_block16_gqa", [1, 1, 0, 1, 1], [1, 17, 5, 300, 600], 1, 8, 2, 64, 16, torch.bfloat16,
     True, (-1, -1), 0.0, False, False, "paged_attention_v1"),
    ("decode_block32_window_alibi", [1, 1, 1], [40, 3, 70], 0, 4, 4, 128, 32, torch.float16,
     True, (9, -1), 0.0, True, False, "paged_attention_v1"),
    ("decode_softcap_mqa_no_keys", [1, 1], [0, 33], 0, 4, 1, 64, 16, torch.float16,
     True, (-1, -1), 4.0, False, False, "paged_attention_v1"),
    ("decode_with_lse_block128", [1, 1], [129, 7], 0, 4, 2, 64, 128, torch.bfloat16,
     True, (-1, -1), 0.0, False, True, "mha_varlen_fwd"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_forward_matches_reference(on_arch, seed, case):
    _, lq, lk, tail, hq, hk, d, bs, dtype, causal, window, softcap, use_alibi, want_lse, entry = case
    q, kc, vc, cu_q, seqused_k, table = make_inputs(lq, lk, hq, hk, d, bs, dtype, tail_q=tail, strided_cache=True)
    alibi = torch.rand(hq) if use_alibi else None
    p = make_problem(q, kc, vc, cu_q, seqused_k, table, causal, window, softcap, alibi)
    assert ap.supports_args(q, kc, vc, cu_q, seqused_k, table, alibi, None, None, p) is None
    out = torch.full((q.shape[0], hq, d), 7.0, dtype=dtype)  # every element must be written
    lse = torch.full((hq, q.shape[0]), 7.0) if want_lse else None
    cu_q0, table0 = cu_q.clone(), table.clone()
    ap.forward(out, q, kc, vc, cu_q, seqused_k, table, alibi, None, None, p, lse, 4)
    assert call_names() == [entry]
    assert torch.equal(cu_q, cu_q0) and torch.equal(table, table0)
    r_out, r_lse = paged_ref(case_of(q, kc, vc, cu_q, seqused_k, table), softmax_scale=p.softmax_scale,
                             causal=p.causal, window_size=(p.window_left, p.window_right), softcap=p.softcap,
                             alibi_slopes=alibi)  # float64, per sequence, on the gathered keys
    assert_close_verbose(out, r_out, *eps_tol(dtype, r_out, 3), msg="out")
    if want_lse:
        assert_close_verbose(lse, r_lse, 1e-4, 1e-5, msg="lse")
    if entry == "paged_attention_v1":
        call = model.CALLS[0]
        assert call.args["cu_query_lens"] is None and call.args["sliding_window"] == window[0] + 1
        assert call.tensor("query").shape == (len(lq), hq, d)


def test_decode_prefers_paged_attention_v1_without_lse(on_arch, seed):
    """A decode batch with block 128: paged_attention_v1 is not eligible (block > 32), CK serves it."""
    q, kc, vc, cu_q, sk, table = make_inputs([1, 1], [3, 9], 2, 1, 64, 128, torch.float16)
    p = make_problem(q, kc, vc, cu_q, sk, table)
    out = torch.empty(q.shape[0], 2, 64, dtype=torch.float16)
    ap.forward(out, q, kc, vc, cu_q, sk, table, None, None, None, p, None, 1)
    assert call_names() == ["mha_varlen_fwd"]


# ----------------------------------------------------------------------------
# 4. Declines and the arch guard
# ----------------------------------------------------------------------------
def test_declines_give_reasons():
    q, kc, vc, cu_q, sk, table = make_inputs([2, 1], [5, 9], 4, 2, 64, 128, torch.float16)
    p = make_problem(q, kc, vc, cu_q, sk, table)
    r = lambda **kw: ap.supports_args(q, kc, vc, cu_q, sk, table, None, None, None, dataclasses.replace(p, **kw))  # noqa: E731
    assert r() is None
    assert "FP8" in r(fp8=True, cache_dtype=torch.float8_e4m3fnuz)
    assert "float16/bfloat16" in r(dtype=torch.float32)
    assert "divisible by 128" in r(block_size=16) and "one query per sequence" in r(block_size=16)
    assert r(block_size=16, max_seqlen_q=1) is None  # a decode batch: paged_attention_v1
    assert "multiples of 64" in r(block_size=16, max_seqlen_q=1, head_dim=32, head_dim_v=32)
    assert "one head size" in r(block_size=16, max_seqlen_q=1, head_dim_v=128)
    assert "block sizes" in r(block_size=64, max_seqlen_q=1)
    assert "loops of 16" in r(block_size=16, max_seqlen_q=1, num_heads_q=24, num_heads_k=1)
    assert "softcap with ALiBi" in r(softcap=5.0, has_alibi=True)
    assert "softcap with a sliding window" in r(block_size=16, max_seqlen_q=1, softcap=5.0, window_left=8)
    assert r(softcap=5.0, window_left=8) is None  # CK masks after capping
    assert "multiple of 8" in r(head_dim=12)
    assert "unbounded" in r(causal=False, window_right=12, max_seqlen_k=9, max_seqlen_q=20)
    assert "heads" in r(num_heads_q=3, num_heads_k=2)
    if "return_lse" in {f.name for f in dataclasses.fields(type(p))}:
        assert "no LSE" in r(block_size=16, max_seqlen_q=1, return_lse=True)
    two_d = torch.rand(2, 4)
    assert "(Hq,)" in ap.supports_args(q, kc, vc, cu_q, sk, table, two_d, None, None,
                                       dataclasses.replace(p, block_size=16, max_seqlen_q=1, has_alibi=True))


def test_lse_on_a_decode_only_kernel_raises(on_arch):
    q, kc, vc, cu_q, sk, table = make_inputs([1, 1], [3, 9], 2, 1, 64, 16, torch.float16)
    p = make_problem(q, kc, vc, cu_q, sk, table)
    out = torch.empty(q.shape[0], 2, 64, dtype=torch.float16)
    with pytest.raises(ValueError, match="no LSE"):
        ap.forward(out, q, kc, vc, cu_q, sk, table, None, None, None, p, torch.empty(2, q.shape[0]), 1)
    assert call_names() == []


def test_arch_guard(monkeypatch):
    assert_gfx9_arch_guard(monkeypatch, ap)
