"""Paged attention through the facade and the registered ops, against a float64 reference built
by an independent per-sequence loop (tests/paged_ref.py): mixed prefill chunks and decodes, block
sizes 16 and 64, random non-contiguous block tables, FP8 caches, GQA, window, softcap, ALiBi, lse,
the ``out=`` form, rows past ``cu_seqlens_q[-1]``, forced splits, opcheck, fullgraph compile, and
bad inputs that must raise before any backend runs. Backends: torch, and triton (under
TRITON_INTERPRET on the CPU, tiny shapes)."""

from __future__ import annotations

import pytest
import torch

from attention_ref import FLOOR, attention_tolerance
from helpers import assert_close_verbose
from paged_ref import paged_case, paged_ref
from vllm_rocm_accel import dispatch, rocm_accel_ops
from vllm_rocm_accel.checks.paged_attention import check_paged_args
from vllm_rocm_accel.inputs_attention import alibi_slopes
from vllm_rocm_accel.ops import paged_attention as paged_ops

BACKENDS = ["torch", "triton"]
LSE_TOL = {torch.float32: (1e-5, 1e-5), torch.float16: (2e-3, 1e-3), torch.bfloat16: (2e-3, 1e-3)}

# (q rows, cached keys) per sequence: decodes (q 1) of lengths 1, 17, 300, prefill chunks with
# sk > sq, a sequence with no cached keys and one with no queries.
MIXED = ([1, 5, 1, 7, 1, 0, 3], [1, 17, 17, 300, 300, 9, 0])


def _dtype(backend: str) -> torch.dtype:
    return torch.float32 if backend == "torch" else torch.bfloat16


def _call(case, backend, **kw):
    return rocm_accel_ops.flash_attn_varlen_func(
        case.q, case.key_cache, case.value_cache, case.cu_seqlens_q, None, case.max_seqlen_q, case.max_seqlen_k,
        block_table=case.block_table, seqused_k=case.seqused_k, k_descale=case.k_scale, v_descale=case.v_scale,
        backend=backend, **kw)


def _ref_opts(kw: dict) -> dict:
    return {k: v for k, v in kw.items() if k in ("softmax_scale", "causal", "window_size", "softcap", "alibi_slopes")}


def _check(out, lse, case, msg, **kw):
    opts = _ref_opts(kw)
    out64, lse64 = paged_ref(case, upcast=True, **opts)
    out_lp, _ = paged_ref(case, upcast=False, **opts)
    dtype = case.q.dtype
    assert out.shape == out64.shape and out.dtype == dtype, f"{msg}: out {tuple(out.shape)} {out.dtype}"
    assert torch.isfinite(out).all(), f"{msg}: non-finite out"
    assert_close_verbose(out, out64, attention_tolerance(out64, out_lp, FLOOR[dtype]), 0.0, f"{msg} out")
    if lse is not None:
        assert lse.shape == lse64.shape and lse.dtype == torch.float32
        atol, rtol = LSE_TOL[dtype]
        assert_close_verbose(lse, lse64, atol, rtol, f"{msg} lse")


# --- numerics -------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("block_size", [16, 64])
def test_mixed_batch_causal_gqa(backend, block_size, seed):
    case = paged_case(*MIXED, heads_q=4, heads_k=2, head_dim=16, block_size=block_size, dtype=_dtype(backend),
                      extra_rows=2)
    before = [t.clone() for t in case.op_inputs()]
    out, lse = _call(case, backend, causal=True, return_lse=True)
    assert all(torch.equal(a, b) for a, b in zip(case.op_inputs(), before)), "inputs changed"
    _check(out, lse, case, f"{backend} bs={block_size}", causal=True)
    tail = slice(case.cu_seqlens_q[-1].item(), None)
    assert torch.equal(out[tail], torch.zeros_like(out[tail])) and torch.isposinf(lse[:, tail]).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_long_sequence(backend, seed):
    """Context 1000 (CPU-sized stand-in for the GPU test's 20000), decode and a chunk, MQA."""
    case = paged_case([1, 4], [1000, 1000], heads_q=4, heads_k=1, head_dim=32, block_size=64,
                      dtype=_dtype(backend))
    out, lse = _call(case, backend, causal=True, return_lse=True)
    _check(out, lse, case, f"{backend} long", causal=True)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cache", ["e4m3fn", "uint8"])
def test_fp8_cache(backend, cache, seed):
    fmt = {"e4m3fn": torch.float8_e4m3fn, "uint8": torch.uint8}[cache]
    case = paged_case(*MIXED, heads_q=4, heads_k=2, head_dim=16, block_size=16, dtype=_dtype(backend), fp8=fmt)
    assert case.key_cache.dtype == fmt
    out, lse = _call(case, backend, causal=True, return_lse=True)
    _check(out, lse, case, f"{backend} fp8 {cache}", causal=True)


def test_fp8_fnuz_cache_on_torch(seed):
    """The MI300 format (float8_e4m3fnuz) as a float8 tensor: the torch backend reads it anywhere."""
    case = paged_case(*MIXED, heads_q=4, heads_k=2, head_dim=16, block_size=16, fp8=torch.float8_e4m3fnuz)
    out, lse = _call(case, "torch", causal=True, return_lse=True)
    _check(out, lse, case, "torch fp8 fnuz", causal=True)


OPTION_CASES = [
    dict(causal=True, window_size=(8, 0)),
    dict(window_size=(3, 2)),
    dict(causal=True, softcap=5.0),
    dict(causal=True, alibi_slopes="per_head"),
    dict(causal=False, alibi_slopes="per_batch", softmax_scale=0.3),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("opts", OPTION_CASES, ids=lambda o: ",".join(sorted(o)))
def test_window_softcap_alibi(backend, opts, seed):
    case = paged_case(*MIXED, heads_q=4, heads_k=2, head_dim=16, block_size=16, dtype=_dtype(backend))
    kw = dict(opts)
    if "alibi_slopes" in kw:
        kw["alibi_slopes"] = alibi_slopes(4, batch=len(MIXED[0]) if kw["alibi_slopes"] == "per_batch" else None)
    out, lse = _call(case, backend, return_lse=True, **kw)
    _check(out, lse, case, f"{backend} {opts}", **kw)


@pytest.mark.parametrize("backend", BACKENDS)
def test_out_form_writes_into_the_given_tensor(backend, seed):
    """vLLM hands in a view of its output buffer: strided rows, unit last dim."""
    case = paged_case(*MIXED, heads_q=4, heads_k=2, head_dim=16, block_size=16, dtype=_dtype(backend),
                      extra_rows=1)
    buf = torch.full((case.q.shape[0], 4, 24), float("nan"), dtype=case.q.dtype)
    out = buf[:, :, 4:20]
    got, lse = _call(case, backend, causal=True, return_lse=True, out=out)
    assert got is out
    assert torch.isnan(buf[:, :, :4]).all() and torch.isnan(buf[:, :, 20:]).all(), "wrote outside out"
    _check(out, lse, case, f"{backend} out=", causal=True)
    got = _call(case, backend, causal=True, out=torch.empty_like(case.q))
    _check(got, None, case, f"{backend} out= no lse", causal=True)


@pytest.mark.parametrize("backend", BACKENDS)
def test_forced_splits_agree(backend, seed):
    """G = 1, 2, 16 (and the heuristic) give the same result within fp32 rounding."""
    case = paged_case([1, 1, 3], [300, 33, 300], heads_q=2, heads_k=1, head_dim=16, block_size=16,
                      dtype=torch.float32 if backend == "torch" else torch.float16)
    results = {g: _call(case, backend, causal=True, return_lse=True, num_splits=g) for g in (0, 1, 2, 16)}
    out1, lse1 = results[1]
    for g, (o, lse) in results.items():
        assert_close_verbose(o, out1, 2e-3 if o.dtype == torch.float16 else 1e-6, 0.0, f"G={g} out")
        assert_close_verbose(lse, lse1, 1e-5, 1e-6, f"G={g} lse")


def test_num_splits_reaches_the_backend_unchanged(monkeypatch):
    """The op passes num_splits through (0 = heuristic): only the triton backend splits, so it
    resolves 0 itself (see test_triton_resolves_num_splits_zero_through_split_k)."""
    seen = []

    def spy(out, *args):
        seen.append(args[-1])
        out.zero_()

    for disp in (paged_ops.PAGED_ATTN_FWD, paged_ops.PAGED_ATTN_FWD_OUT):
        monkeypatch.setitem(disp.backends, "torch", dispatch.Backend("torch", spy, dispatch.torch_supported,
                                                                      lambda *a: None))
    case = paged_case([1], [20], heads_q=2, heads_k=1, head_dim=16, block_size=16)
    for g in (0, 1, 4):
        _call(case, "torch", num_splits=g)
    _call(case, "torch", num_splits=0, out=torch.empty_like(case.q))
    assert seen == [0, 1, 4, 0]


def test_triton_resolves_num_splits_zero_through_split_k(monkeypatch):
    """0 asks split_k.choose_num_splits with the call's batch, kv heads and max lengths; G >= 1
    is used as given."""
    from vllm_rocm_accel.backends.triton import paged_attention as tpa

    asked, launched = [], []
    monkeypatch.setattr(tpa, "choose_num_splits", lambda *a: asked.append(a) or 3)
    monkeypatch.setattr(tpa, "_launch", lambda *a: launched.append(a[12]))
    monkeypatch.setattr(tpa, "_fill_tail", lambda *a: None)
    case = paged_case([1, 2], [20, 40], heads_q=2, heads_k=1, head_dim=16, block_size=16)
    p = check_paged_args(case.q, case.key_cache, case.value_cache, case.cu_seqlens_q, case.seqused_k,
                         case.block_table, 2, 40, 0.25, True, -1, 0, 0.0, None, None, None, 0)
    out = torch.empty_like(case.q)
    for g in (0, 1, 4):
        tpa.forward(out, case.q, case.key_cache, case.value_cache, case.cu_seqlens_q, case.seqused_k,
                    case.block_table, None, None, None, p, None, g)
    assert launched == [3, 1, 4]
    assert asked == [(2, 1, 2, 40, case.q.device)]


def test_auto_on_cpu_is_torch_and_counted():
    case = paged_case([1], [5], heads_q=2, heads_k=2, head_dim=8, block_size=16)
    rocm_accel_ops.reset_call_counts()
    _call(case, "auto")
    _call(case, "auto", out=torch.empty_like(case.q))
    counts = rocm_accel_ops.call_counts()
    assert counts.get(("paged_attn_fwd", "torch")) == 1 and counts.get(("paged_attn_fwd_out", "torch")) == 1


def test_non_unit_stride_cache_views(seed):
    """vLLM's kv_cache.unbind(0): key and value caches are strided views of one tensor."""
    case = paged_case(*MIXED, heads_q=4, heads_k=2, head_dim=16, block_size=16)
    kv = torch.stack([case.key_cache, case.value_cache], dim=1)  # (num_blocks, 2, bs, Hk, D)
    case.key_cache, case.value_cache = kv.unbind(1)
    assert not case.key_cache.is_contiguous()
    out = _call(case, "torch", causal=True)
    _check(out, None, case, "strided caches", causal=True)


def test_empty_and_keyless_calls():
    case = paged_case([0, 0], [0, 0], heads_q=2, heads_k=1, head_dim=8, block_size=16, extra_rows=3)
    out, lse = _call(case, "torch", causal=True, return_lse=True)
    assert torch.equal(out, torch.zeros_like(out)) and torch.isposinf(lse).all()
    case = paged_case([1], [0], heads_q=2, heads_k=1, head_dim=8, block_size=16)
    out, lse = _call(case, "torch", return_lse=True)  # max_seqlen_k = 0: no backend call needed
    assert torch.equal(out, torch.zeros_like(out)) and torch.isposinf(lse).all()
    case = paged_case([], [], heads_q=2, heads_k=1, head_dim=8, block_size=16)
    with pytest.raises(ValueError, match="batch"):  # as in part 1: a batch of none is refused
        _call(case, "torch", return_lse=True)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_long_context_on_gpu(backend, seed):
    case = paged_case([1, 1, 17, 1], [1, 17, 1000, 20000], heads_q=8, heads_k=2, head_dim=128, block_size=16,
                      dtype=torch.bfloat16)
    out, lse = _call(case.to("cuda"), backend, causal=True, return_lse=True)
    _check(out.cpu(), lse.cpu(), case, f"{backend} 20000 on gpu", causal=True)


# --- registration: opcheck, compile -----------------------------------------------------------------
def _op_args(case, return_lse=True, causal=True):
    scale = case.q.shape[-1] ** -0.5
    return (*case.op_inputs(), case.max_seqlen_q, case.max_seqlen_k, scale, causal, -1, 0 if causal else -1, 0.0,
            None, case.k_scale, case.v_scale, 0, return_lse, "torch")


@pytest.mark.parametrize("fp8", [None, torch.uint8])  # opcheck cannot multiply float8 tensors on the CPU
@pytest.mark.parametrize("return_lse", [True, False])
def test_opcheck(fp8, return_lse, seed):
    case = paged_case([1, 3], [5, 20], heads_q=2, heads_k=1, head_dim=16, block_size=16, fp8=fp8, extra_rows=1)
    args = _op_args(case, return_lse)
    torch.library.opcheck(torch.ops.rocm_accel.paged_attn_fwd.default, args)
    torch.library.opcheck(torch.ops.rocm_accel.paged_attn_fwd_out.default, (torch.empty_like(case.q), *args))


def test_fullgraph_compile(seed):
    """A decode step's attention (the allocating form and the out= form) under fullgraph=True."""
    case = paged_case(*MIXED, heads_q=4, heads_k=2, head_dim=16, block_size=16)

    def step(q, kc, vc, cu, used, table, out):
        a, lse = rocm_accel_ops.flash_attn_varlen_func(q, kc, vc, cu, None, case.max_seqlen_q, case.max_seqlen_k,
                                                       causal=True, softcap=4.0, return_lse=True,
                                                       block_table=table, seqused_k=used)
        rocm_accel_ops.flash_attn_varlen_func(q, kc, vc, cu, None, case.max_seqlen_q, case.max_seqlen_k,
                                              causal=True, softcap=4.0, block_table=table, seqused_k=used, out=out)
        return a * 2, lse, out + 1

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    out_c, out_e = torch.empty_like(case.q), torch.empty_like(case.q)
    got = compiled(*case.op_inputs(), out_c)
    want = step(*case.op_inputs(), out_e)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)
    torch.testing.assert_close(out_c, out_e)


# --- bad inputs: ValueError naming the problem, before any backend, out untouched ----------------
def _bad_cases():
    def case(**kw):
        return paged_case([1, 3], [20, 40], heads_q=2, heads_k=1, head_dim=16, block_size=16, **kw)

    c = case()
    c.block_table[1, 1] = c.key_cache.shape[0]  # a block the sequence reads, one past the cache
    yield "table past the cache", c, {}, "block_table pointing past the cache"
    c = case()
    c.block_table[0, 0] = -1
    yield "negative block", c, {}, "block_table pointing past the cache"
    c = case(spare_cols=0)
    c.seqused_k[1] = c.block_table.shape[1] * 16 + 1
    c.max_seqlen_k = int(c.seqused_k[1])
    yield "seq longer than the table", c, {}, "seq_lens longer than the table allows"
    c = case()
    c.max_seqlen_k = 39
    yield "seqused_k past max_seqlen_k", c, {}, "max_seqlen_k"
    c = case()
    c.seqused_k[0] = -1
    yield "negative seqused_k", c, {}, "seqused_k"
    c = case()
    c.cu_seqlens_q = torch.tensor([0, 3, 1], dtype=torch.int32)
    yield "cu_seqlens_q decreasing", c, {}, "non-decreasing"
    c = case()
    c.max_seqlen_q = 2
    yield "max_seqlen_q short", c, {}, "max_seqlen_q"
    c = case()
    c.key_cache = c.key_cache.half()
    yield "dtype mismatch", c, {}, "key_cache has dtype"
    c = case()
    c.value_cache = c.value_cache.half()
    yield "value dtype mismatch", c, {}, "value_cache has dtype"
    yield "negative num_splits", case(), {"num_splits": -1}, "num_splits"
    c = case()
    c.seqused_k = c.seqused_k.long()
    yield "seqused_k int64", c, {}, "seqused_k has dtype"
    c = case()
    c.block_table = c.block_table[:1]
    yield "table rows", c, {}, "block_table has 1 rows"
    c = case(fp8=torch.float8_e4m3fn)
    c.k_scale = None
    yield "fp8 without k_scale", c, {}, "k_scale is required"
    c = case(fp8=torch.float8_e4m3fn)
    c.v_scale = c.v_scale.double()
    yield "fp8 scale dtype", c, {}, "v_scale must be a float32"
    c = case()
    c.k_scale = torch.ones(1)
    yield "scale without fp8", c, {}, "k_scale is given but the cache is not FP8"
    c = case()
    c.key_cache = c.key_cache[..., :8]
    yield "head_dim mismatch", c, {}, "head_dim"
    yield "dropout", case(), {"dropout_p": 0.1}, "dropout_p"
    yield "window", case(), {"window_size": (-3, 0)}, "window_size"


@pytest.mark.parametrize("case", list(_bad_cases()), ids=lambda c: c[0])
@pytest.mark.parametrize("form", ["alloc", "out"])
def test_bad_inputs_raise_before_any_backend(case, form):
    name, c, kw, match = case
    out = torch.full((c.q.shape[0], 2, 16), 7.0)
    sentinel = out.clone()
    before = [t.clone() for t in c.op_inputs()]
    rocm_accel_ops.reset_call_counts()
    with pytest.raises(ValueError, match=match):
        _call(c, "torch", **kw, **({"out": out} if form == "out" else {}))
    assert rocm_accel_ops.call_counts() == {}, "a backend ran"
    assert torch.equal(out, sentinel), "out was written"
    assert all(torch.equal(a, b) for a, b in zip(c.op_inputs(), before))


@pytest.mark.parametrize("form", ["alloc", "out"])
def test_bad_inputs_raise_through_the_op_too(form):
    c = paged_case([1, 3], [20, 40], heads_q=2, heads_k=1, head_dim=16, block_size=16)
    c.block_table[1, 2] = 99
    args = _op_args(c)
    with pytest.raises(ValueError, match="past the cache"):
        if form == "out":
            torch.ops.rocm_accel.paged_attn_fwd_out(torch.empty_like(c.q), *args)
        else:
            torch.ops.rocm_accel.paged_attn_fwd(*args)


def test_out_of_wrong_shape_or_dtype():
    c = paged_case([1, 3], [20, 40], heads_q=2, heads_k=1, head_dim=16, block_size=16)
    with pytest.raises(ValueError, match="out has shape"):
        _call(c, "torch", out=torch.empty(4, 2, 8))
    with pytest.raises(ValueError, match="out has dtype"):
        _call(c, "torch", out=torch.empty(4, 2, 16, dtype=torch.float16))


def test_public_function_rules():
    c = paged_case([1, 3], [20, 40], heads_q=2, heads_k=1, head_dim=16, block_size=16)
    q = c.q.clone().requires_grad_(True)
    with pytest.raises(ValueError, match="forward-only"):
        rocm_accel_ops.flash_attn_varlen_func(q, c.key_cache, c.value_cache, c.cu_seqlens_q, None, 3, 40,
                                              block_table=c.block_table, seqused_k=c.seqused_k)
    with torch.no_grad():  # no gradient wanted: fine
        rocm_accel_ops.flash_attn_varlen_func(q, c.key_cache, c.value_cache, c.cu_seqlens_q, None, 3, 40,
                                              block_table=c.block_table, seqused_k=c.seqused_k)
    with pytest.raises(ValueError, match="cu_seqlens_k must be None"):
        rocm_accel_ops.flash_attn_varlen_func(c.q, c.key_cache, c.value_cache, c.cu_seqlens_q, c.cu_seqlens_q,
                                              3, 40, block_table=c.block_table, seqused_k=c.seqused_k)
    with pytest.raises(ValueError, match="seqused_k"):
        rocm_accel_ops.flash_attn_varlen_func(c.q, c.key_cache, c.value_cache, c.cu_seqlens_q, None, 3, 40,
                                              block_table=c.block_table)
    k = torch.randn(60, 1, 16)
    cu_k = torch.tensor([0, 20, 60], dtype=torch.int32)
    for kw in (dict(seqused_k=c.seqused_k), dict(out=torch.empty_like(c.q)), dict(k_descale=torch.ones(1))):
        with pytest.raises(ValueError, match="only supported with block_table"):
            rocm_accel_ops.flash_attn_varlen_func(c.q, k, k, c.cu_seqlens_q, cu_k, 3, 40, **kw)
    with pytest.raises(ValueError, match="num_splits"):
        rocm_accel_ops.flash_attn_varlen_func(c.q, k, k, c.cu_seqlens_q, cu_k, 3, 40, num_splits=-1)


def test_value_checks_follow_the_setting(fresh_settings, monkeypatch):
    calls = []
    monkeypatch.setattr(paged_ops, "check_paged_values", lambda *a: calls.append(a))
    c = paged_case([1], [5], heads_q=2, heads_k=1, head_dim=8, block_size=16)
    fresh_settings(VLLM_ROCM_ACCEL_CHECK_SEQLENS="0")
    _call(c, "torch")
    assert calls == []
    fresh_settings(VLLM_ROCM_ACCEL_CHECK_SEQLENS="1")
    _call(c, "torch")
    assert len(calls) == 1


@pytest.mark.parametrize("form", ["facade", "op", "op_out"])
def test_check_values_false_skips_the_value_checks(fresh_settings, monkeypatch, form):
    """check_values=False (the vLLM backend's calls, metadata validated once per step on the host)
    skips the index values' host read even with the setting on; the argument checks still run."""
    fresh_settings(VLLM_ROCM_ACCEL_CHECK_SEQLENS="1")
    calls = []
    monkeypatch.setattr(paged_ops, "check_paged_values", lambda *a: calls.append(a))
    c = paged_case([1, 3], [5, 20], heads_q=2, heads_k=1, head_dim=8, block_size=16)

    def go(**kw):
        if form == "facade":
            return _call(c, "torch", causal=True, **kw)
        args = _op_args(c)
        if form == "op":
            return torch.ops.rocm_accel.paged_attn_fwd(*args, **kw)[0]
        out = torch.empty_like(c.q)
        torch.ops.rocm_accel.paged_attn_fwd_out(out, *args, **kw)
        return out

    go()
    assert len(calls) == 1, "the spy does not see the op's value check"
    out = go(check_values=False)
    assert len(calls) == 1, "check_values=False still ran the value check"
    _check(out, None, c, f"{form} check_values=False", causal=True)
    with pytest.raises(ValueError, match="q must be"):  # argument checks are not affected
        rocm_accel_ops.flash_attn_varlen_func(c.q[0], c.key_cache, c.value_cache, c.cu_seqlens_q, None, 3, 20,
                                              block_table=c.block_table, seqused_k=c.seqused_k, check_values=False)


def test_check_values_false_lets_a_bad_value_past_the_check_stage():
    """What the value check would refuse (seqused_k past max_seqlen_k, harmless here: the keys
    are in the table) reaches the backend with check_values=False."""
    c = paged_case([1, 3], [5, 20], heads_q=2, heads_k=1, head_dim=8, block_size=16)
    with pytest.raises(ValueError, match="longer than max_seqlen_k"):
        rocm_accel_ops.flash_attn_varlen_func(c.q, c.key_cache, c.value_cache, c.cu_seqlens_q, None, 3, 19,
                                              block_table=c.block_table, seqused_k=c.seqused_k, backend="torch")
    rocm_accel_ops.reset_call_counts()
    rocm_accel_ops.flash_attn_varlen_func(c.q, c.key_cache, c.value_cache, c.cu_seqlens_q, None, 3, 19,
                                          block_table=c.block_table, seqused_k=c.seqused_k, backend="torch",
                                          check_values=False)
    assert rocm_accel_ops.call_counts() == {("paged_attn_fwd", "torch"): 1}


def test_check_values_false_only_with_block_table():
    q = torch.randn(4, 2, 8)
    cu = torch.tensor([0, 1, 4], dtype=torch.int32)
    with pytest.raises(ValueError, match="check_values=False is only supported with block_table"):
        rocm_accel_ops.flash_attn_varlen_func(q, q, q, cu, cu, 3, 3, check_values=False)


def test_opcheck_without_value_checks(seed):
    case = paged_case([1, 3], [5, 20], heads_q=2, heads_k=1, head_dim=16, block_size=16, extra_rows=1)
    args = (*_op_args(case), False)
    torch.library.opcheck(torch.ops.rocm_accel.paged_attn_fwd.default, args)
    torch.library.opcheck(torch.ops.rocm_accel.paged_attn_fwd_out.default, (torch.empty_like(case.q), *args))


def test_explicit_backends_that_cannot_serve_say_why():
    c = paged_case([1], [5], heads_q=2, heads_k=1, head_dim=8, block_size=16)
    with pytest.raises(ValueError, match="aiter runs on ROCm"):
        _call(c, "aiter")


def test_aiter_gate_follows_vllm_mha_flag(monkeypatch, fresh_settings):
    """On a simulated MI300 the aiter backend is gated by VLLM_ROCM_USE_AITER(_MHA), as vLLM does."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from vllm_rocm_accel import platform

    install = platform.AiterInstall(True, True, "/opt/aiter", "amd-aiter", "0.1.7", "AMD aiter (simulated)")
    monkeypatch.setattr(platform, "platform_kind", lambda: "rocm")
    monkeypatch.setattr(platform, "device_arch", lambda index=0: "gfx942")
    monkeypatch.setattr(platform, "aiter_install", lambda: install)
    monkeypatch.setattr(platform, "device_index", lambda device: 0)
    with FakeTensorMode(allow_non_fake_inputs=True):
        args = paged_ops.example_args("paged_attn_fwd", 4, 4096, torch.bfloat16, torch.device("cuda", 0))
        disp = paged_ops.PAGED_ATTN_FWD
        fresh_settings(VLLM_ROCM_USE_AITER="1", VLLM_ROCM_USE_AITER_MHA="0")
        assert "VLLM_ROCM_USE_AITER_MHA=0" in disp.refusal("aiter", args)
        fresh_settings(VLLM_ROCM_USE_AITER="0", VLLM_ROCM_USE_AITER_MHA=None)
        assert "VLLM_ROCM_USE_AITER=0" in disp.refusal("aiter", args)
