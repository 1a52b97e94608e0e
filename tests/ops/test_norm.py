"""The norm family through the facade, on every backend this machine runs, against float64."""

import pytest
import torch

from helpers import assert_close_verbose
from vllm_rocm_accel import rocm_accel_ops
from vllm_rocm_accel.inputs import norm_inputs

BACKENDS = ["torch", "triton"]  # triton through TRITON_INTERPRET on the CPU
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# One rounding of the output plus vLLM's intermediate rounding to the weight dtype: 2 ulps.
ULP = {torch.float32: 2.0**-23, torch.float16: 2.0**-10, torch.bfloat16: 2.0**-7}


def tol(dtype):
    t = 2 * ULP[dtype]
    return max(t, 1e-5), max(t, 1e-5)


def ref_rms_norm(x, weight, eps):
    x64 = x.to(torch.float64)
    y = x64 * torch.rsqrt(x64.pow(2).mean(-1, keepdim=True) + eps)
    return y * weight.to(torch.float64) if weight is not None else y


def ref_fused_add(x, residual, weight, eps):
    s = x.to(torch.float64) + residual.to(torch.float64)
    return ref_rms_norm(s, weight, eps), s


def _inputs(shape, dtype, weight_dtype="same", scale=1.0):
    return norm_inputs(shape, dtype, weight_dtype=weight_dtype, scale=scale)


SHAPES = [(1, 123), (7, 4096), (2, 3, 5120), (3, 8192), (5, 5121)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_rms_norm_matches_float64(seed, backend, dtype, shape):
    x, _, w = _inputs(shape, dtype)
    out = rocm_accel_ops.rms_norm(x, w, 1e-6, backend=backend)
    assert out.dtype == dtype and out.shape == x.shape
    atol, rtol = tol(dtype)
    assert_close_verbose(out, ref_rms_norm(x, w, 1e-6), atol, rtol, f"{backend} {dtype} {shape}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_fused_add_rms_norm_in_and_out_of_place(seed, backend, dtype, shape):
    x, r, w = _inputs(shape, dtype)
    ref_out, ref_sum = ref_fused_add(x, r, w, 1e-6)
    x0, r0 = x.clone(), r.clone()
    out, res = rocm_accel_ops.fused_add_rms_norm(x, r, w, 1e-6, inplace=False, backend=backend)
    assert torch.equal(x, x0) and torch.equal(r, r0), "out-of-place form changed its inputs"
    atol, rtol = tol(dtype)
    assert_close_verbose(out, ref_out, atol, rtol, "out")
    # the residual is one rounding of the exact sum
    assert torch.equal(res, (x0.to(torch.float32) + r0.to(torch.float32)).to(dtype))
    xi, ri = rocm_accel_ops.fused_add_rms_norm(x, r, w, 1e-6, backend=backend)
    assert xi is x and ri is r
    assert torch.equal(x, out) and torch.equal(r, res), "in-place result differs from out-of-place"


@pytest.mark.parametrize("backend", BACKENDS)
def test_weightless_and_mixed_weight_dtype(seed, backend):
    x, _, _ = _inputs((4, 300), torch.bfloat16)
    out = rocm_accel_ops.rms_norm(x, None, 1e-5, backend=backend)
    assert_close_verbose(out, ref_rms_norm(x, None, 1e-5), *tol(torch.bfloat16))
    w32 = torch.rand(300) + 0.5  # fp32 weight with bf16 activations, as vLLM allows
    out = rocm_accel_ops.rms_norm(x, w32, 1e-5, backend=backend)
    assert out.dtype == torch.bfloat16
    assert_close_verbose(out, ref_rms_norm(x, w32, 1e-5), *tol(torch.bfloat16))


@pytest.mark.parametrize("backend", BACKENDS)
def test_strided_rows_and_large_values(seed, backend):
    big = torch.randn(6, 3 * 256, dtype=torch.float16) * 100  # q/k/v-style slice: row stride 768
    x = big[:, 256:512]
    w = torch.rand(256, dtype=torch.float16) + 0.5
    out = rocm_accel_ops.rms_norm(x, w, 1e-6, backend=backend)
    assert_close_verbose(out, ref_rms_norm(x, w, 1e-6), *tol(torch.float16))
    r = torch.randn(6, 256, dtype=torch.float16)
    xr, rr = x.clone(), r.clone()
    rocm_accel_ops.fused_add_rms_norm(x, r, w, 1e-6, backend=backend)  # in place on a strided view
    ref_out, _ = ref_fused_add(xr, rr, w, 1e-6)
    assert_close_verbose(x, ref_out, *tol(torch.float16))
    assert torch.equal(big[:, :256], big[:, :256].clone())  # neighbours untouched (sanity of the view)


@pytest.mark.parametrize("backend", BACKENDS)
def test_single_token_and_zero_rows(seed, backend):
    x, r, w = _inputs((1, 4096), torch.bfloat16)
    assert_close_verbose(rocm_accel_ops.rms_norm(x, w, 1e-6, backend=backend), ref_rms_norm(x, w, 1e-6), *tol(torch.bfloat16))
    empty = torch.randn(0, 64)
    assert rocm_accel_ops.rms_norm(empty, torch.randn(64), 1e-6, backend=backend).shape == (0, 64)


# --- bad input: clear errors naming the argument, nothing mutated -----------------------------
BAD_CALLS = [
    (lambda x, r, w: (x.to(torch.int32), w, 1e-6), TypeError, "x has dtype torch.int32"),
    (lambda x, r, w: ("x", w, 1e-6), TypeError, "x must be a torch.Tensor"),
    (lambda x, r, w: (x, w[:-1], 1e-6), ValueError, "weight has shape"),
    (lambda x, r, w: (x, w.to("meta"), 1e-6), ValueError, "weight is on meta"),
    (lambda x, r, w: (x, w.to(torch.int64), 1e-6), TypeError, "weight has dtype"),
    (lambda x, r, w: (torch.tensor(1.0), None, 1e-6), ValueError, "x is 0-d"),
    (lambda x, r, w: (torch.empty(4, 0), None, 1e-6), ValueError, "hidden size 0"),
    (lambda x, r, w: (x, w, -1.0), ValueError, "epsilon must be finite and >= 0"),
    (lambda x, r, w: (x, w, float("nan")), ValueError, "epsilon"),
    (lambda x, r, w: (x, w, "1e-6"), TypeError, "epsilon must be a float"),
]


@pytest.mark.parametrize("make,exc,msg", BAD_CALLS)
def test_rms_norm_bad_input(seed, make, exc, msg):
    x, r, w = _inputs((3, 16), torch.float32)
    with pytest.raises(exc, match=msg):
        rocm_accel_ops.rms_norm(*make(x, r, w))


BAD_ADD = [
    (lambda x, r, w: (x, r[:, :-1], w), "residual has shape"),
    (lambda x, r, w: (x, r.to(torch.float16), w), "residual has dtype"),
    (lambda x, r, w: (x, r.to("meta"), w), "residual is on meta"),
    (lambda x, r, w: (x, r, w[:3]), "weight has shape"),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("make,msg", BAD_ADD)
def test_fused_add_bad_input_mutates_nothing(seed, backend, make, msg):
    x, r, w = _inputs((3, 16), torch.float32)
    args = make(x, r, w)
    before = [a.clone() if isinstance(a, torch.Tensor) and a.device.type != "meta" else a for a in args]
    with pytest.raises(ValueError, match=msg):
        rocm_accel_ops.fused_add_rms_norm(*args, 1e-6, backend=backend)
    for a, b in zip(args, before):
        if isinstance(a, torch.Tensor) and a.device.type != "meta":
            assert torch.equal(a, b), "a rejected in-place call changed its input"


def test_compile_fullgraph_no_graph_break(seed):
    def layer(x, residual, w1, w2):
        h = rocm_accel_ops.rms_norm(x, w1, 1e-6)
        h2, res = rocm_accel_ops.fused_add_rms_norm(h * 2, residual, w2, 1e-6, inplace=False)
        x3, res3 = rocm_accel_ops.fused_add_rms_norm(h2.clone(), res.clone(), w1, 1e-6)
        return x3 + 1, res3

    torch._dynamo.reset()
    compiled = torch.compile(layer, fullgraph=True, dynamic=True)
    for rows in (5, 9):  # a second shape exercises the symbolic row count
        x, r, w1 = _inputs((rows, 64), torch.float32)
        w2 = torch.rand(64) + 0.5
        got = compiled(x, r.clone(), w1, w2)
        want = layer(x, r.clone(), w1, w2)
        for g, e in zip(got, want):
            torch.testing.assert_close(g, e, atol=1e-5, rtol=1e-5)
    explain = torch._dynamo.explain(layer)(x, r.clone(), w1, w2)
    assert explain.graph_break_count == 0
