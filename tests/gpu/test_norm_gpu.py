"""The norm family on a real GPU (skipped without one): Triton kernels compiled for the device."""

import pytest
import torch

from helpers import assert_close_verbose
from vllm_rocm_accel import rocm_accel_ops
from vllm_rocm_accel.inputs import norm_inputs
from vllm_rocm_accel.ops import register_all

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")]

ULP = {torch.float32: 2.0**-23, torch.float16: 2.0**-10, torch.bfloat16: 2.0**-7}


def tol(dtype):
    t = 2 * ULP[dtype]
    return max(t, 1e-5), max(t, 1e-5)


def ref(x, w, eps, r=None):
    s = x.double() if r is None else x.double() + r.double()
    y = s * torch.rsqrt(s.pow(2).mean(-1, keepdim=True) + eps)
    return (y * w.double() if w is not None else y), s


SHAPES = [(1, 123), (7, 4096), (33, 5120), (4099, 8192), (2, 3, 5121), (5, 16384), (3, 40000)]


@pytest.mark.parametrize("backend", ["triton", "torch", None])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", SHAPES)
def test_numerics_on_gpu(seed, backend, dtype, shape):
    x, r, w = norm_inputs(shape, dtype, "cuda")
    want, s = ref(x, w, 1e-6)
    assert_close_verbose(rocm_accel_ops.rms_norm(x, w, 1e-6, backend=backend), want, *tol(dtype))
    want_add, s = ref(x, w, 1e-6, r)
    out, res = rocm_accel_ops.fused_add_rms_norm(x, r, w, 1e-6, inplace=False, backend=backend)
    assert_close_verbose(out, want_add, *tol(dtype))
    assert torch.equal(res, (x.float() + r.float()).to(dtype))
    xi, ri = x.clone(), r.clone()
    rocm_accel_ops.fused_add_rms_norm(xi, ri, w, 1e-6, backend=backend)
    assert torch.equal(xi, out) and torch.equal(ri, res)


def test_auto_picks_triton_on_cuda(seed):
    rocm_accel_ops.reset_call_counts()
    x, r, w = norm_inputs((64, 4096), torch.bfloat16, "cuda")
    rocm_accel_ops.rms_norm(x, w, 1e-6)
    rocm_accel_ops.fused_add_rms_norm(x, r, w, 1e-6)
    assert rocm_accel_ops.call_counts() == {("rms_norm", "triton"): 1, ("fused_add_rms_norm", "triton"): 1}


def test_strided_rows_on_gpu(seed):
    qkv = torch.randn(50, 3 * 1024, device="cuda", dtype=torch.bfloat16)
    q = qkv[:, :1024]
    w = torch.rand(1024, device="cuda", dtype=torch.bfloat16) + 0.5
    assert_close_verbose(rocm_accel_ops.rms_norm(q, w, 1e-6, backend="triton"), ref(q, w, 1e-6)[0], *tol(torch.bfloat16))


def test_opcheck_on_gpu(seed):
    ops = register_all()
    x, r, w = norm_inputs((5, 256), torch.bfloat16, "cuda")
    for backend in ("triton", "torch"):
        torch.library.opcheck(ops["rms_norm"], (x, w, 1e-6, backend))
        torch.library.opcheck(ops["fused_add_rms_norm"], (x, r, w, 1e-6, backend))
        torch.library.opcheck(ops["fused_add_rms_norm_"], (x.clone(), r.clone(), w, 1e-6, backend))


def test_compile_fullgraph_and_cuda_graph(seed):
    def layer(x, r, w):
        x, r = rocm_accel_ops.fused_add_rms_norm(x, r, w, 1e-6)
        return rocm_accel_ops.rms_norm(x * 2, w, 1e-6), r

    x, r, w = norm_inputs((16, 4096), torch.bfloat16, "cuda")
    want = layer(x.clone(), r.clone(), w)
    compiled = torch.compile(layer, fullgraph=True)
    got = compiled(x.clone(), r.clone(), w)
    for g, e in zip(got, want):
        torch.testing.assert_close(g, e, atol=0, rtol=0)
    # capture the eager facade calls in a CUDA graph and replay on new data
    xs, rs = x.clone(), r.clone()
    layer(xs, rs, w)  # warm up (JIT) outside capture
    xs.copy_(x), rs.copy_(r)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        out = layer(xs, rs, w)
    x2, r2, _ = norm_inputs((16, 4096), torch.bfloat16, "cuda")
    xs.copy_(x2), rs.copy_(r2)
    g.replay()
    want2 = layer(x2.clone(), r2.clone(), w)
    torch.testing.assert_close(out[0], want2[0], atol=0, rtol=0)



def test_cached_compiled_kernel_matches_ordinary_launch(seed, monkeypatch):
    """The launcher's compiled-kernel cache serves aligned calls only, with Triton's own results."""
    from vllm_rocm_accel.backends.triton import fast_launch
    from vllm_rocm_accel.backends.triton import norm as tn

    if not fast_launch.enabled():
        pytest.skip("fast launch is off on this platform (ROCm)")
    assert tn._FAST
    buf = torch.randn(33 * 4096 + 8, device="cuda", dtype=torch.bfloat16)
    w = torch.rand(4096, device="cuda", dtype=torch.bfloat16) + 0.5
    tn._compiled.clear()
    for offset in (0, 1):  # offset 1: x not 16-byte aligned -> ordinary launch, nothing cached
        x = buf[offset:offset + 33 * 4096].view(33, 4096)
        fast = [rocm_accel_ops.rms_norm(x, w, 1e-6, backend="triton") for _ in range(2)]
        monkeypatch.setattr(tn, "_FAST", False)
        slow = rocm_accel_ops.rms_norm(x, w, 1e-6, backend="triton")
        monkeypatch.setattr(tn, "_FAST", True)
        assert torch.equal(fast[0], slow) and torch.equal(fast[1], slow)
        assert_close_verbose(slow, ref(x, w, 1e-6)[0], *tol(torch.bfloat16))
        assert len(tn._compiled) == 1, "only the aligned call may be cached"
    r = torch.randn(33, 4096, device="cuda", dtype=torch.bfloat16)
    x = buf[:33 * 4096].view(33, 4096)
    for _ in range(2):  # second call from the cache
        out, res = rocm_accel_ops.fused_add_rms_norm(x, r, w, 1e-6, inplace=False, backend="triton")
        want, _ = ref(x, w, 1e-6, r)
        assert_close_verbose(out, want, *tol(torch.bfloat16))
        assert torch.equal(res, (x.float() + r.float()).to(torch.bfloat16))
    assert len(tn._compiled) == 2
