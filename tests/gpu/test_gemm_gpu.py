"""The FP8 GEMM family on a real GPU (skipped without one): the Triton kernels compiled for the
device and the torch backend's ``torch._scaled_mm`` paths, against a float64 matmul of the
dequantized operands."""

import pytest
import torch

from vllm_rocm_accel import fp8, rocm_accel_ops
from vllm_rocm_accel.backends.torch import gemm as torch_gemm
from vllm_rocm_accel.checks.gemm import blocks

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")]

EPS = {torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11, torch.float32: 2.0**-24}
ACC = 2.0**-9
"""Accumulation error allowed, relative to sum |a_k w_k|. Hopper's FP8 tensor cores keep about
14 bits while they sum (DeepSeek-V3 report). Measured on the H100: cuBLAS's default (promoting)
path up to 4.5e-5 of the bound; Triton promoting every 128 up to 1.4e-4 (K = 100); Triton's
fast accumulation (our default there, as vLLM's CUTLASS sm90 FP8 kernels) up to 7e-4 at
K = 4096. A wrong scale or index errs by O(|ref|), ~sqrt(K) times more than the bound allows."""


def _check(out, a, w, sa_full, sw_full, bias, msg, roundings=1):
    """out vs float64 (a * sa) @ (w * sw).T + bias: ``roundings`` output roundings (the torch
    backend adds some biases after rounding the product) plus float32 accumulation."""
    ad, wd = a.double() * sa_full, w.double() * sw_full
    ref = ad @ wd.t()
    if bias is not None:
        ref = ref + bias.double()
    bound = ad.abs() @ wd.abs().t()
    tol = roundings * EPS[out.dtype] * ref.abs() + ACC * bound + 1e-30
    err = (out.double() - ref).abs()
    bad = err > tol
    if bad.any():
        i = int(torch.argmax((err / tol).flatten()))
        r, c = divmod(i, out.shape[1])
        raise AssertionError(f"{msg}: {int(bad.sum())} of {out.numel()} beyond tolerance; worst at ({r}, {c}): "
                             f"got {out[r, c].item()}, ref {ref[r, c].item()}, tol {tol[r, c].item():.3g}")


def _operands(m, n, k, fmt):
    a = torch.randn(m, k, device="cuda").mul_(2).to(fmt)
    w = torch.randn(n, k, device="cuda").to(fmt)
    return a, w


SCALINGS = [("tensor", "tensor"), ("token", "tensor"), ("tensor", "channel"), ("token", "channel")]


@pytest.mark.parametrize("backend", ["triton", "torch", None])
@pytest.mark.parametrize("m,n,k", [(1, 4096, 4096), (7, 1024, 14336), (16, 14336, 4096), (33, 96, 100),
                                   (300, 4096, 4096), (1500, 2048, 4000), (4099, 512, 1024), (4096, 1024, 4000),
                                   (4100, 256, 1000)])
def test_gemm_a8w8_matches_float64(seed, backend, m, n, k):
    """M >= 1024 takes the persistent TMA kernel on cuda (K = 4000: a K tail TMA zero-fills;
    K = 1000: rows not 16-byte multiples, so the tiled fallback)."""
    fmt = fp8.fp8_dtype(torch.device("cuda"))
    a, w = _operands(m, n, k, fmt)
    for a_kind, w_kind in SCALINGS:
        sa = torch.rand(m, 1, device="cuda") + 0.25 if a_kind == "token" else torch.rand((), device="cuda") + 0.25
        sw = torch.rand(n, 1, device="cuda") + 0.25 if w_kind == "channel" else torch.rand(1, device="cuda") + 0.25
        for out_dtype in (torch.bfloat16, torch.float16, torch.float32):
            for bias in (None, torch.randn(n, device="cuda", dtype=out_dtype)):
                out = rocm_accel_ops.gemm_a8w8(a, w, sa, sw, bias=bias, out_dtype=out_dtype, backend=backend)
                assert out.shape == (m, n) and out.dtype == out_dtype
                _check(out, a, w, sa.double().reshape(-1, 1) if a_kind == "token" else sa.double(),
                       sw.double().reshape(-1, 1) if w_kind == "channel" else sw.double(), bias,
                       f"{backend} {a_kind}/{w_kind} {out_dtype} bias={bias is not None}",
                       roundings=2 if backend == "torch" and bias is not None else 1)


@pytest.mark.parametrize("backend", ["triton", "torch", None])
@pytest.mark.parametrize("m,n,k", [(1, 4096, 4096), (16, 14336, 4096), (129, 384, 1000), (2048, 4096, 4096),
                                   (4099, 256, 7168), (300, 512, 8320), (1500, 384, 7008),
                                   (256, 384, 1152)])
@pytest.mark.parametrize("column_major", [False, True])
def test_blockscale_matches_float64(seed, backend, m, n, k, column_major):
    fmt = fp8.fp8_dtype(torch.device("cuda"))
    a, w = _operands(m, n, k, fmt)
    sa = torch.rand(m, blocks(k), device="cuda") + 0.25
    if column_major:
        sa = sa.t().contiguous().t()
    sw = torch.rand(blocks(n), blocks(k), device="cuda") + 0.25
    sa_full, sw_full = torch_gemm.expand_block_scales(sa.double(), sw.double(), m, n, k)
    for out_dtype in (torch.bfloat16, torch.float32):
        out = rocm_accel_ops.gemm_a8w8_blockscale(a, w, sa, sw, out_dtype=out_dtype, backend=backend)
        _check(out, a, w, sa_full, sw_full, None, f"{backend} blockscale {out_dtype} cm={column_major}")


def test_torch_backend_takes_scaled_mm_where_it_can():
    """On an FP8 GPU the torch backend is cuBLAS's _scaled_mm (not the float32 fallback)."""
    fmt = fp8.fp8_dtype(torch.device("cuda"))
    a, w = _operands(64, 256, 512, fmt)
    if torch_gemm.scaled_mm_format(a.device) is None:
        pytest.skip("no FP8 matmul on this GPU")
    assert torch_gemm.scaled_mm_refusal(a, w, "token", "channel", torch.bfloat16) is None
    assert torch_gemm.scaled_mm_refusal(a, w, "tensor", "tensor", torch.float16) is None


def test_fnuz_on_nvidia_is_declined_by_triton_and_served_by_auto(seed):
    if torch.version.hip:
        pytest.skip("NVIDIA only")
    a, w = _operands(8, 64, 256, torch.float8_e4m3fnuz)
    sa, sw = torch.rand(8, 1, device="cuda") + 0.5, torch.rand(64, 1, device="cuda") + 0.5
    with pytest.raises(ValueError, match="triton.*e4m3fnuz"):
        rocm_accel_ops.gemm_a8w8(a, w, sa, sw, backend="triton")
    out = rocm_accel_ops.gemm_a8w8(a, w, sa, sw)
    _check(out, a, w, sa.double(), sw.double(), None, "auto fnuz")


def test_fullgraph_compile(seed):
    fmt = fp8.fp8_dtype(torch.device("cuda"))

    def linear(x, w, sw, bias):
        q, sx = rocm_accel_ops.per_token_quant(x, dtype=fmt)
        return rocm_accel_ops.gemm_a8w8(q, w, sx, sw, bias=bias)

    x = torch.randn(37, 512, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(256, 512, device="cuda").to(fmt)
    sw = torch.rand(256, 1, device="cuda") + 0.5
    bias = torch.randn(256, device="cuda", dtype=torch.bfloat16)
    compiled = torch.compile(linear, fullgraph=True)
    torch.testing.assert_close(compiled(x, w, sw, bias), linear(x, w, sw, bias), rtol=0, atol=0)


def test_large_m_takes_the_persistent_kernel_on_hopper():
    """What the float64 test above runs at M >= 1024: the persistent TMA kernel (K = 4000), the
    tiled fallback where a row is not a 16-byte multiple (K = 1000)."""
    if torch.cuda.get_device_capability() < (9, 0) or torch.version.hip:
        pytest.skip("the persistent kernel is shipped for NVIDIA Hopper and newer")
    from vllm_rocm_accel.backends.triton import gemm as tg

    fmt = fp8.fp8_dtype(torch.device("cuda"))
    a, w = _operands(4096, 1024, 4000, fmt)
    assert tg.gemm_kernel(a.device, 4096, 1024, 4000) == "persistent" and tg.tma_reason(a, w) is None
    assert tg.gemm_kernel(a.device, 1500, 2048, 4000) == "persistent"
    a, w = _operands(4100, 256, 1000, fmt)
    assert tg.tma_reason(a, w) is not None


def test_blockscale_takes_the_persistent_kernel_on_hopper():
    """What the blockscale float64 test runs on the persistent TMA kernel: M = 2048 and 4099, M = 300
    with K = 8320 (the K >= 8192 rule), M = 1500 with a K tail (7008 = 54 x 128 + 96, zero-filled
    by TMA); M = 129 with K = 1000 is tiled (the rule, and a row of 1000 bytes TMA cannot take)."""
    if torch.cuda.get_device_capability() < (9, 0) or torch.version.hip:
        pytest.skip("the persistent kernel is shipped for NVIDIA Hopper and newer")
    from vllm_rocm_accel.backends.triton import gemm as tg

    dev = torch.device("cuda")
    for m, n, k in [(2048, 4096, 4096), (4099, 256, 7168), (300, 512, 8320), (1500, 384, 7008)]:
        assert tg.blockscale_kernel(dev, m, n, k) == "persistent", (m, n, k)
        assert tg.tma_reason(*_operands(m, n, k, fp8.fp8_dtype(dev))) is None
    assert tg.blockscale_kernel(dev, 129, 384, 1000) == "tiled"
