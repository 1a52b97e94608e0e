"""The attention family through the facade and the registered ops: every backend this machine
runs (torch; triton under TRITON_INTERPRET, tiny shapes), against float64, plus opcheck,
autograd registration, fullgraph compile, head-dim padding and bad inputs."""

from __future__ import annotations

import pytest
import torch

from attention_ref import FLOOR, attention_ref, attention_tolerance, ref_grads
from helpers import assert_close_verbose
from vllm_rocm_accel import rocm_accel_ops
from vllm_rocm_accel.inputs_attention import alibi_slopes, dense_qkv, varlen_qkv

BACKENDS = ["torch", "triton"]


def _ref_pair(q, k, v, **opts):
    return attention_ref(q, k, v, upcast=True, **opts), attention_ref(q, k, v, upcast=False, **opts)


def _check_forward(out, lse, q, k, v, msg, **opts):
    (out64, lse64), (out_lp, _) = _ref_pair(q, k, v, **opts)
    atol = attention_tolerance(out64, out_lp, FLOOR[q.dtype])
    assert_close_verbose(out, out64, atol, 0.0, f"{msg} out")
    if lse is not None:
        assert_close_verbose(lse, lse64, 1e-3 if q.dtype != torch.float32 else 1e-5, 1e-4, f"{msg} lse")


def _grads(fn, q, k, v, dout):
    qs, ks, vs = (t.detach().clone().requires_grad_(True) for t in (q, k, v))
    out = fn(qs, ks, vs)
    out.backward(dout)
    return qs.grad, ks.grad, vs.grad


def _check_grads(got, q, k, v, dout, msg, **opts):
    want = ref_grads(q, k, v, dout, **opts)
    for name, g, w in zip("qkv", got, want):
        assert g is not None and g.shape == w.shape, f"{msg} d{name} shape"
        scale = float(w.abs().max()) or 1.0
        floor = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 6e-2}[q.dtype] * scale
        assert_close_verbose(g, w, floor, 0.0, f"{msg} d{name}")


DENSE_CASES = [
    # (B, Sq, Sk, Hq, Hk, D, Dv, opts)
    (2, 9, 9, 4, 2, 16, 16, dict(causal=True)),
    (1, 12, 5, 2, 1, 32, 16, dict(causal=True)),                      # Sq > Sk: the first rows see no key
    (2, 5, 13, 4, 4, 16, 16, dict(causal=True, window_size=(3, 0))),  # Sq < Sk, sliding window
    (1, 10, 10, 8, 1, 16, 16, dict(softcap=5.0)),                     # MQA 8:1, softcap
    (2, 7, 11, 2, 2, 16, 16, dict(window_size=(2, 3))),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", DENSE_CASES, ids=lambda c: f"{c[:7]}{sorted(c[7])}")
def test_dense_forward_backward(backend, case, seed):
    b, sq, sk, hq, hk, d, dv, opts = case
    dtype = torch.float16 if backend == "triton" else torch.float32
    q, k, v = dense_qkv(b, sq, sk, hq, hk, d, dv, dtype=dtype)
    q0, k0, v0 = q.clone(), k.clone(), v.clone()
    out, lse = rocm_accel_ops.flash_attn_func(q, k, v, return_lse=True, backend=backend, **opts)
    assert torch.equal(q, q0) and torch.equal(k, k0) and torch.equal(v, v0), "inputs changed"
    assert out.shape == (b, sq, hq, dv) and out.dtype == dtype and lse.shape == (b, hq, sq)
    _check_forward(out, lse, q, k, v, f"{backend} {case}", **opts)
    dout = torch.randn_like(out)
    got = _grads(lambda a, b_, c: rocm_accel_ops.flash_attn_func(a, b_, c, backend=backend, **opts), q, k, v, dout)
    _check_grads(got, q, k, v, dout, f"{backend} {case}", **opts)


@pytest.mark.parametrize("backend", BACKENDS)
def test_varlen_mixed_lengths(backend, seed):
    """Lengths 1, 7, 0 (empty) and a longer one in one batch; causal with Sq != Sk per sequence."""
    dtype = torch.bfloat16 if backend == "triton" else torch.float32
    lens_q, lens_k = [1, 7, 0, 20], [3, 7, 4, 17]
    q, k, v, cu_q, cu_k, mq, mk = varlen_qkv(lens_q, lens_k, 4, 2, 16, dtype=dtype)
    opts = dict(cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, causal=True)
    out, lse = rocm_accel_ops.flash_attn_varlen_func(q, k, v, cu_q, cu_k, mq, mk, causal=True, return_lse=True,
                                                     backend=backend)
    assert out.shape == (sum(lens_q), 4, 16) and lse.shape == (4, sum(lens_q))
    assert torch.isfinite(out).all()
    _check_forward(out, lse, q, k, v, f"{backend} varlen", **opts)
    dout = torch.randn_like(out)
    fn = lambda a, b, c: rocm_accel_ops.flash_attn_varlen_func(a, b, c, cu_q, cu_k, mq, mk, causal=True,  # noqa: E731
                                                               backend=backend)
    _check_grads(_grads(fn, q, k, v, dout), q, k, v, dout, f"{backend} varlen", **opts)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("per_batch", [False, True])
def test_alibi(backend, per_batch, seed):
    q, k, v = dense_qkv(2, 8, 8, 4, 2, 16, dtype=torch.float32 if backend == "torch" else torch.float16)
    slopes = alibi_slopes(4, batch=2 if per_batch else None)
    out = rocm_accel_ops.flash_attn_func(q, k, v, causal=True, alibi_slopes=slopes, backend=backend)
    _check_forward(out, None, q, k, v, f"{backend} alibi", causal=True, alibi_slopes=slopes)


@pytest.mark.parametrize("d", [20, 72])
def test_head_dim_padding(d, seed):
    """20 is padded to 24 before the op (and the output sliced); 72 goes to the op as is.
    The softmax scale is the unpadded head dim's, and gradients come back at the caller's size."""
    q, k, v = dense_qkv(1, 6, 6, 2, 1, d, dtype=torch.float32)
    out = rocm_accel_ops.flash_attn_func(q, k, v, causal=True, backend="torch")
    assert out.shape == (1, 6, 2, d)
    _check_forward(out, None, q, k, v, f"d={d}", causal=True)
    dout = torch.randn_like(out)
    got = _grads(lambda a, b, c: rocm_accel_ops.flash_attn_func(a, b, c, causal=True, backend="torch"), q, k, v, dout)
    assert got[0].shape == q.shape
    _check_grads(got, q, k, v, dout, f"d={d}", causal=True)


def test_auto_on_cpu_is_torch_and_counted():
    q, k, v = dense_qkv(1, 4, 4, 2, 2, 16, dtype=torch.float32)
    rocm_accel_ops.reset_call_counts()
    rocm_accel_ops.flash_attn_func(q, k, v)
    assert rocm_accel_ops.call_counts().get(("flash_attn_fwd", "torch")) == 1


def test_explicit_backends_that_cannot_serve_say_why():
    q, k, v = dense_qkv(1, 4, 4, 2, 2, 16, dtype=torch.float32)
    with pytest.raises(ValueError, match="aiter"):
        rocm_accel_ops.flash_attn_func(q, k, v, backend="aiter")
    with pytest.raises(ValueError, match="(?i)dropout"):
        rocm_accel_ops.flash_attn_func(q.half(), k.half(), v.half(), dropout_p=0.1, backend="triton")
    with pytest.raises(ValueError, match="backend='cuda'"):
        rocm_accel_ops.flash_attn_func(q, k, v, backend="cuda")


def test_dropout_replays_under_manual_seed(seed):
    q, k, v = dense_qkv(1, 8, 8, 2, 2, 16, dtype=torch.float32)
    torch.manual_seed(seed)
    a = rocm_accel_ops.flash_attn_func(q, k, v, dropout_p=0.3)
    torch.manual_seed(seed)
    b = rocm_accel_ops.flash_attn_func(q, k, v, dropout_p=0.3)
    c = rocm_accel_ops.flash_attn_func(q, k, v, dropout_p=0.3)
    nodrop = rocm_accel_ops.flash_attn_func(q, k, v)
    assert torch.equal(a, b) and not torch.equal(a, c) and not torch.equal(a, nodrop)


def test_empty_calls():
    q, k, v = dense_qkv(2, 0, 5, 2, 2, 16, dtype=torch.float32)
    out, lse = rocm_accel_ops.flash_attn_func(q, k, v, return_lse=True)
    assert out.shape == (2, 0, 2, 16) and lse.shape == (2, 2, 0)
    q, k, v = dense_qkv(1, 3, 0, 2, 2, 16, dtype=torch.float32)
    out, lse = rocm_accel_ops.flash_attn_func(q, k, v, return_lse=True)
    assert torch.equal(out, torch.zeros_like(out)) and torch.isinf(lse).all() and (lse > 0).all()


# --- bad inputs: ValueError/TypeError naming the argument, before any backend ----------------
def _varlen():
    return varlen_qkv([3, 5], [4, 6], 2, 1, 16, dtype=torch.float32)


def _bad_varlen_cases():
    q, k, v, cu_q, cu_k, mq, mk = _varlen()
    yield "non-monotonic", (q, k, v, torch.tensor([0, 5, 3], dtype=torch.int32), cu_k, 5, mk), "non-decreasing"
    yield "wrong length", (q, k, v, cu_q[:2], cu_k, mq, mk), "entries"
    yield "max_seqlen short", (q, k, v, cu_q, cu_k, 4, mk), "max_seqlen_q"
    yield "int64 cu", (q, k, v, cu_q.long(), cu_k, mq, mk), "int32"
    yield "past the end", (q, k, v, cu_q, torch.tensor([0, 4, 11], dtype=torch.int32), mq, 7), "past"
    yield "first not 0", (q, k, v, torch.tensor([1, 4, 8], dtype=torch.int32), cu_k, mq, mk), r"\[0\] must be 0"
    yield "dtype mismatch", (q, k.half(), v, cu_q, cu_k, mq, mk), "dtype"
    yield "device mismatch", (q, k, v, cu_q.to("meta"), cu_k, mq, mk), "meta"
    yield "heads", (q[:, :1].expand(-1, 3, -1).contiguous(), k[:, :1].expand(-1, 2, -1).contiguous(),
                    v[:, :1].expand(-1, 2, -1).contiguous(), cu_q, cu_k, mq, mk), "multiple"


@pytest.mark.parametrize("case", list(_bad_varlen_cases()), ids=lambda c: c[0])
def test_bad_varlen_inputs_raise_valueerror(case):
    _, args, match = case
    before = [a.clone() if isinstance(a, torch.Tensor) and a.device.type == "cpu" else a for a in args]
    with pytest.raises((ValueError, TypeError), match=match):
        rocm_accel_ops.flash_attn_varlen_func(*args)
    for a, b in zip(args, before):
        if isinstance(a, torch.Tensor) and a.device.type == "cpu":
            assert torch.equal(a, b)


@pytest.mark.parametrize("kwargs, match", [
    (dict(window_size=(-2, 0)), "window_size"),
    (dict(window_size=3), "window_size"),
    (dict(dropout_p=1.0), "dropout_p"),
    (dict(softcap=-1.0), "softcap"),
    (dict(softmax_scale=0.0), "softmax_scale"),
    (dict(alibi_slopes=torch.ones(3)), "alibi_slopes"),
    (dict(alibi_slopes=torch.ones(2, dtype=torch.float64)), "alibi_slopes"),
])
def test_bad_dense_options(kwargs, match):
    q, k, v = dense_qkv(1, 4, 4, 2, 2, 16, dtype=torch.float32)
    with pytest.raises((ValueError, TypeError), match=match):
        rocm_accel_ops.flash_attn_func(q, k, v, **kwargs)


def test_bad_dense_shapes():
    q, k, v = dense_qkv(1, 4, 4, 2, 2, 16, dtype=torch.float32)
    with pytest.raises(ValueError, match="4-D"):
        rocm_accel_ops.flash_attn_func(q[0], k[0], v[0])
    with pytest.raises(ValueError, match="head_dim"):
        rocm_accel_ops.flash_attn_func(q, k[..., :8], v)
    with pytest.raises(TypeError, match="dtype"):
        rocm_accel_ops.flash_attn_func(q.long(), k, v)


# --- registration: opcheck, autograd, compile --------------------------------------------
def _op_args(varlen: bool, requires_grad: bool):
    if varlen:
        q, k, v, cu_q, cu_k, mq, mk = varlen_qkv([2, 5], [4, 5], 2, 1, 16, dtype=torch.float32)
    else:
        (q, k, v), cu_q, cu_k, mq, mk = dense_qkv(2, 5, 6, 2, 1, 16, dtype=torch.float32), None, None, 0, 0
    q, k, v = (t.requires_grad_(requires_grad) for t in (q, k, v))
    return (q, k, v, cu_q, cu_k, mq, mk, 0.25, True, -1, 0, 0.0, None, 0.0, 0, True, "torch")


@pytest.mark.parametrize("varlen", [False, True])
def test_opcheck_forward_with_autograd(varlen):
    torch.library.opcheck(torch.ops.rocm_accel.flash_attn_fwd.default, _op_args(varlen, True))


@pytest.mark.parametrize("varlen", [False, True])
def test_opcheck_backward(varlen):
    args = _op_args(varlen, False)
    out, lse = torch.ops.rocm_accel.flash_attn_fwd(*args)
    bwd_args = (torch.randn_like(out), *args[:3], out, lse, *args[3:15], "torch")
    torch.library.opcheck(torch.ops.rocm_accel.flash_attn_bwd.default, bwd_args)


def test_fullgraph_compile_forward_backward(seed):
    """One training step's attention compiled with fullgraph=True: forward and the AOT backward graph."""
    q, k, v = dense_qkv(1, 8, 8, 4, 2, 16, dtype=torch.float32)

    def step(q, k, v):
        return rocm_accel_ops.flash_attn_func(q, k, v, causal=True, softcap=3.0).square().sum()

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    got = _grads(lambda a, b, c: compiled(a, b, c), q, k, v, torch.tensor(1.0))
    want = _grads(lambda a, b, c: step(a, b, c), q, k, v, torch.tensor(1.0))
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_backward_recomputes_lse_when_forward_skipped_it(seed, backend):
    """torch.ops.rocm_accel.flash_attn_fwd called directly with return_lse=False: backward still
    works (triton recomputes the lse with its own forward; torch recomputes the probabilities)."""
    args = list(_op_args(False, True))
    args[15] = False
    args[16] = backend
    out, lse = torch.ops.rocm_accel.flash_attn_fwd(*args)
    assert lse.numel() == 0
    dout = torch.randn_like(out)
    out.backward(dout)
    q, k, v = args[:3]
    want = ref_grads(q.detach(), k.detach(), v.detach(), dout, causal=True, softmax_scale=0.25)
    for g, w in zip((q.grad, k.grad, v.grad), want):
        assert_close_verbose(g, w, 1e-4 * float(w.abs().max()), 0.0, "grad")


@pytest.mark.parametrize("deterministic", [False, True])
def test_deterministic_travels_from_the_facade_to_the_backward(deterministic, monkeypatch, seed):
    """flash_attn_func(deterministic=...) reaches the backward op through autograd (the forward
    saves it), where the problem the backend sees carries it (the cuda policy keeps cuDNN's
    atomic backward off with True); the gradients are the same either way on the CPU."""
    from vllm_rocm_accel.ops import attention as attn_ops

    seen = []
    real = attn_ops.FLASH_ATTN_BWD.select

    def spy(backend, args, *rest, **kw):
        seen.append(args[-1].deterministic)
        return real(backend, args, *rest, **kw)

    monkeypatch.setattr(attn_ops.FLASH_ATTN_BWD, "select", spy)
    q, k, v = dense_qkv(1, 6, 6, 2, 2, 16, dtype=torch.float32)
    dout = torch.randn(1, 6, 2, 16)
    got = _grads(lambda a, b, c: rocm_accel_ops.flash_attn_func(a, b, c, causal=True, deterministic=deterministic),
                 q, k, v, dout)
    assert seen == [deterministic]
    _check_grads(got, q, k, v, dout, f"deterministic={deterministic}", causal=True)


# --- the host path: memoized checks, cached choices, no autograd kernel for inference ---------
@pytest.mark.parametrize("kwargs, match", [
    (dict(softmax_scale=-0.5), "softmax_scale"),
    (dict(softmax_scale=True), "softmax_scale"),
    (dict(softcap=float("nan")), "softcap"),
    (dict(window_size=(True, 0)), "window_size"),
    (dict(window_size=(1.0, 0)), "window_size"),
    (dict(dropout_p=1), "dropout_p"),
])
def test_bad_options_raise_after_an_accepted_call_of_the_same_shapes(kwargs, match):
    """The checks' memo stores accepted calls only, keyed with each scalar's type and value:
    a call that differs from an accepted one in one bad option still raises."""
    q, k, v = dense_qkv(1, 4, 4, 2, 2, 16, dtype=torch.float32)
    good = dict(softmax_scale=0.5, softcap=0.0, window_size=(1, 0), dropout_p=0.0)
    rocm_accel_ops.flash_attn_func(q, k, v, **good)
    with pytest.raises((ValueError, TypeError), match=match):
        rocm_accel_ops.flash_attn_func(q, k, v, **{**good, **kwargs})


def test_dense_checks_are_memoized_for_accepted_calls_only():
    from vllm_rocm_accel.checks import attention as checks

    q, k, v = dense_qkv(2, 5, 7, 4, 2, 16, dtype=torch.float32)
    first = checks.check_dense(q, k, v, None, True, (-1, -1), 0.0, None, 0.0)
    again = checks.check_dense(q.clone(), k.clone(), v.clone(), None, True, (-1, -1), 0.0, None, 0.0)
    assert again is first and first.softmax_scale == 0.25 and first.seqlen_k == 7
    other = checks.check_dense(q, k, v, 0.5, True, (-1, -1), 0.0, None, 0.0)
    assert other is not first and other.softmax_scale == 0.5
    # int and float spellings of a scale give the same problem; dropout calls (a seed each) are not stored
    assert checks.check_dense(q, k, v, 1, True, (-1, -1), 0.0, None, 0.0).softmax_scale == 1.0
    drop = checks.check_dense(q, k, v, None, True, (-1, -1), 0.0, None, 0.1, seed=7)
    assert drop.seed == 7 and checks.check_dense(q, k, v, None, True, (-1, -1), 0.0, None, 0.1, seed=8).seed == 8
    # a window given as a list is checked every time (not a key), with the same result
    listed = checks.check_dense(q, k, v, None, True, [-1, -1], 0.0, None, 0.0)
    assert listed == first and listed is not first


def test_dense_choices_are_cached_and_bounded(monkeypatch):
    """Dense calls cache auto's choice under a key of the whole problem (so the cuDNN eligibility
    and the policy walk run once per shape); varlen calls, whose sizes change every step, do not;
    the cache is cleared when it reaches its limit."""
    from vllm_rocm_accel import dispatch
    from vllm_rocm_accel.ops import attention as attn_ops

    monkeypatch.setattr(dispatch, "CHOICE_CACHE_LIMIT", 3)
    attn_ops.FLASH_ATTN_FWD.clear_caches()
    for s in range(2, 9):
        q, k, v = dense_qkv(1, s, s, 2, 2, 16, dtype=torch.float32)
        rocm_accel_ops.flash_attn_func(q, k, v, causal=True)
        assert 1 <= len(attn_ops.FLASH_ATTN_FWD._chosen) <= 3
    attn_ops.FLASH_ATTN_FWD.clear_caches()
    rocm_accel_ops.flash_attn_varlen_func(*_varlen(), causal=True)
    assert not attn_ops.FLASH_ATTN_FWD._chosen


@pytest.mark.parametrize("mode", ["no_grad", "inference_mode", "grad_enabled"])
def test_inference_calls_match_autograd_calls(mode, seed):
    """Without a gradient to track, the facade calls the op below the autograd key; the result
    is the one the autograd kernel gives, in every grad mode, and is not part of a graph."""
    q, k, v = dense_qkv(1, 6, 6, 2, 1, 16, dtype=torch.float32)
    qg, kg, vg = (t.clone().requires_grad_(True) for t in (q, k, v))
    want = rocm_accel_ops.flash_attn_func(qg, kg, vg, causal=True)
    ctx = {"no_grad": torch.no_grad, "inference_mode": torch.inference_mode, "grad_enabled": torch.enable_grad}[mode]
    with ctx():
        got, lse = rocm_accel_ops.flash_attn_func(q, k, v, causal=True, return_lse=True)
    assert want.grad_fn is not None and got.grad_fn is None and not got.requires_grad
    torch.testing.assert_close(got, want.detach(), rtol=0, atol=0)
    _check_forward(got, lse, q, k, v, mode, causal=True)


def test_fullgraph_compile_of_an_inference_call(seed):
    q, k, v = dense_qkv(1, 8, 8, 4, 2, 16, dtype=torch.float32)
    fn = torch.compile(lambda a, b, c: rocm_accel_ops.flash_attn_func(a, b, c, causal=True), fullgraph=True,
                       backend="aot_eager")
    with torch.no_grad():
        got = fn(q, k, v)
    _check_forward(got, None, q, k, v, "compiled no_grad", causal=True)


def test_eager_backward_skips_the_dispatcher_only_when_plain(monkeypatch, seed):
    """Plain eager autograd calls ``flash_attn_bwd``'s implementation directly; under a dispatch
    mode (what tracers and FakeTensor use) the op itself is dispatched; the gradients are the same."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from vllm_rocm_accel.ops import attention as attn_ops

    direct = []
    impl = attn_ops.flash_attn_bwd_impl
    monkeypatch.setattr(attn_ops, "flash_attn_bwd_impl", lambda *a: direct.append(1) or impl(*a))
    q, k, v = (t.requires_grad_(True) for t in dense_qkv(2, 33, 17, 4, 2, 32, dtype=torch.float32))
    out = rocm_accel_ops.flash_attn_func(q, k, v, causal=True, backend="torch")
    dout = torch.randn_like(out)
    plain = torch.autograd.grad(out, (q, k, v), dout, retain_graph=True)
    assert direct == [1]

    seen = []

    class Spy(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            seen.append(str(func))
            return func(*args, **(kwargs or {}))

    with Spy():
        spied = torch.autograd.grad(out, (q, k, v), dout, retain_graph=True)
    assert direct == [1] and any("rocm_accel.flash_attn_bwd" in name for name in seen)
    for a, b in zip(plain, spied):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_eager_inference_forward_skips_the_dispatcher_only_when_plain(monkeypatch, seed):
    """A plain eager forward without gradients calls ``flash_attn_fwd``'s implementation directly
    (dense and varlen); with a gradient or under a dispatch mode the op is dispatched; same results."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from vllm_rocm_accel.ops import attention as attn_ops

    direct = []
    impl = attn_ops.flash_attn_fwd_impl
    monkeypatch.setattr(attn_ops, "flash_attn_fwd_impl", lambda *a: direct.append(1) or impl(*a))
    q, k, v = dense_qkv(2, 33, 17, 4, 2, 32, dtype=torch.float32)
    with torch.no_grad():
        plain = rocm_accel_ops.flash_attn_func(q, k, v, causal=True, backend="torch")
    assert direct == [1]
    qv, kv, vv, cu_q, cu_k, max_q, max_k = varlen_qkv([3, 7], [5, 7], 4, 2, 32, dtype=torch.float32)
    rocm_accel_ops.flash_attn_varlen_func(qv, kv, vv, cu_q, cu_k, max_q, max_k, backend="torch")
    assert direct == [1, 1]

    seen = []

    class Spy(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            seen.append(str(func))
            return func(*args, **(kwargs or {}))

    with Spy(), torch.no_grad():
        spied = rocm_accel_ops.flash_attn_func(q, k, v, causal=True, backend="torch")
    assert direct == [1, 1] and any("rocm_accel.flash_attn_fwd" in name for name in seen)
    torch.testing.assert_close(plain, spied, rtol=0, atol=0)
    trained = rocm_accel_ops.flash_attn_func(q.requires_grad_(True), k, v, causal=True, backend="torch")
    assert direct == [1, 1] and trained.grad_fn is not None
    torch.testing.assert_close(trained.detach(), plain, rtol=0, atol=0)
