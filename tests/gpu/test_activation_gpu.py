"""The activation family on a real GPU (skipped without one): Triton kernels compiled for the device."""

import math

import pytest
import torch
import torch.nn.functional as F

from helpers import assert_close_verbose
from vllm_rocm_accel import rocm_accel_ops
from vllm_rocm_accel.inputs_activation import act_and_mul_inputs
from vllm_rocm_accel.ops import register_all

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")]

ULP = {torch.float32: 2.0**-23, torch.float16: 2.0**-10, torch.bfloat16: 2.0**-7}


def tol(dtype):
    """(atol, rtol): two roundings (activation, product) <= 1 ulp, 2 ulps with margin for the
    float32 exp/erf; atol for float32's cancellation in 1 + erf(g / sqrt 2) at g << 0."""
    return 1e-5, 2 * ULP[dtype]


def ref(x, variant):
    d = x.shape[-1] // 2
    g, u = x[..., :d].double(), x[..., d:].double()
    if variant == "silu":
        a = g * torch.sigmoid(g)
    elif variant == "gelu":
        a = 0.5 * g * (1 + torch.erf(g / math.sqrt(2)))
    else:
        a = 0.5 * g * (1 + torch.tanh(math.sqrt(2 / math.pi) * (g + 0.044715 * g**3)))
    return a * u


def call(variant, x, out=None, backend=None):
    if variant == "silu":
        return rocm_accel_ops.silu_and_mul(x, out=out, backend=backend)
    return rocm_accel_ops.gelu_and_mul(x, "tanh" if variant == "gelu_tanh" else "none", out=out, backend=backend)


# (tokens, d): decode, odd widths, Llama-3-8B (14336) and Llama-2-7B (11008) MLPs at prefill sizes
SHAPES = [(1, 14336), (7, 123), (33, 5121), (512, 14336), (4099, 11008), ((2, 3), 4096), (1, 1)]


@pytest.mark.parametrize("backend", ["triton", "torch", None])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("rows,d", SHAPES)
@pytest.mark.parametrize("variant", ["silu", "gelu", "gelu_tanh"])
def test_numerics_on_gpu(seed, backend, dtype, rows, d, variant):
    x = act_and_mul_inputs(rows, d, dtype, "cuda")
    y = call(variant, x, backend=backend)
    assert_close_verbose(y, ref(x, variant), *tol(dtype), msg=f"{variant} {backend} {dtype} {rows}x{d}")
    out = torch.empty_like(y)
    assert call(variant, x, out=out, backend=backend) is out and torch.equal(out, y)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_triton_within_two_ulps_of_vllm_native(seed, dtype):
    """Same op order as vLLM's forward_native: an activation one ulp off (exp differs in the last
    bit) moves the rounded product by at most ~2 ulps."""
    x = act_and_mul_inputs(256, 14336, dtype, "cuda")
    d = 14336
    native = F.silu(x[..., :d]) * x[..., d:]
    got = rocm_accel_ops.silu_and_mul(x, backend="triton")
    assert_close_verbose(got, native, 1e-6, 2 * ULP[dtype], msg="triton vs vLLM native")
    assert torch.equal(rocm_accel_ops.silu_and_mul(x, backend="torch"), native)


def test_auto_picks_triton_on_cuda(seed):
    rocm_accel_ops.reset_call_counts()
    x = act_and_mul_inputs(64, 4096, torch.bfloat16, "cuda")
    rocm_accel_ops.silu_and_mul(x)
    rocm_accel_ops.gelu_and_mul(x, "tanh")
    assert rocm_accel_ops.call_counts() == {("silu_and_mul", "triton"): 1, ("gelu_and_mul", "triton"): 1}


def test_strided_rows_and_out_on_gpu(seed):
    x = act_and_mul_inputs(50, 1024, torch.bfloat16, "cuda", row_pad=1024)  # gate||up slice of a wider row
    big = torch.randn(50, 3 * 1024, device="cuda").to(torch.bfloat16)
    before = big.clone()
    out = big[:, 1024:2048]
    rocm_accel_ops.silu_and_mul(x, out=out, backend="triton")
    assert_close_verbose(out, ref(x, "silu"), *tol(torch.bfloat16))
    assert torch.equal(big[:, :1024], before[:, :1024]) and torch.equal(big[:, 2048:], before[:, 2048:])


def test_opcheck_on_gpu(seed):
    ops = register_all()
    x = act_and_mul_inputs(5, 256, torch.bfloat16, "cuda")
    for backend in ("triton", "torch"):
        torch.library.opcheck(ops["silu_and_mul"], (x, backend))
        torch.library.opcheck(ops["silu_and_mul_out"], (torch.empty(5, 256, device="cuda", dtype=torch.bfloat16), x, backend))
        torch.library.opcheck(ops["gelu_and_mul"], (x, "tanh", backend))
        torch.library.opcheck(ops["gelu_and_mul_out"], (torch.empty(5, 256, device="cuda", dtype=torch.bfloat16), x, "none", backend))


def test_compile_fullgraph_and_cuda_graph(seed):
    def mlp(x):
        return rocm_accel_ops.silu_and_mul(x) * 2 + rocm_accel_ops.gelu_and_mul(x, "tanh")

    x = act_and_mul_inputs(16, 4096, torch.bfloat16, "cuda")
    want = mlp(x)
    compiled = torch.compile(mlp, fullgraph=True)
    torch.testing.assert_close(compiled(x), want, atol=0, rtol=0)
    xs = x.clone()
    mlp(xs)  # warm up (JIT) outside capture
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        out = mlp(xs)
    x2 = act_and_mul_inputs(16, 4096, torch.bfloat16, "cuda")
    xs.copy_(x2)
    g.replay()
    torch.testing.assert_close(out, mlp(x2), atol=0, rtol=0)


def test_int64_offsets_for_huge_row_strides(seed):
    """Rows far apart (row stride * rows >= 2**31 elements): the launcher switches to int64 offsets."""
    try:
        base = torch.empty(3, 2**30 + 4096, device="cuda", dtype=torch.bfloat16)  # 6.4 GB; row 2 at > 2**31
    except torch.OutOfMemoryError:
        pytest.skip("not enough GPU memory")
    x = base[:, :8192]
    x.normal_()
    y = rocm_accel_ops.silu_and_mul(x, backend="triton")
    assert_close_verbose(y, ref(x, "silu"), *tol(torch.bfloat16))
    del base
    torch.cuda.empty_cache()
