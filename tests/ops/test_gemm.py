"""The FP8 GEMM family on the CPU: torch and Triton (interpreter) backends against a float64
matmul of the dequantized operands, the checks, opcheck and compile."""

import pytest
import torch

from vllm_rocm_accel import rocm_accel_ops
from vllm_rocm_accel.backends.torch import gemm as torch_gemm
from vllm_rocm_accel.backends.triton import gemm as triton_gemm
from vllm_rocm_accel.checks.gemm import blocks

FORMATS = [torch.float8_e4m3fn, torch.float8_e4m3fnuz]
EPS = {torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11, torch.float32: 2.0**-24}
ACC = 2.0**-20  # float32 accumulation on the CPU (the interpreter and torch) is exact to ~K ulps


def _operands(m, n, k, fmt):
    a = torch.randn(m, k).mul_(2).to(fmt)
    w = torch.randn(n, k).to(fmt)
    return a, w


def _assert_matches(out, a, w, sa_full, sw_full, bias, msg):
    ad, wd = a.double() * sa_full, w.double() * sw_full
    ref = ad @ wd.t() + (bias.double() if bias is not None else 0)
    tol = EPS[out.dtype] * ref.abs() + ACC * (ad.abs() @ wd.abs().t()) + 1e-30
    err = (out.double() - ref).abs()
    if (err > tol).any():
        i = int(torch.argmax((err / tol).flatten()))
        r, c = divmod(i, out.shape[1])
        raise AssertionError(f"{msg}: {int((err > tol).sum())} of {out.numel()} beyond tolerance; worst at ({r}, {c}):"
                             f" got {out[r, c].item()}, ref {ref[r, c].item()}")


def _scales(kind_a, kind_w, m, n):
    sa = torch.rand(m, 1) + 0.25 if kind_a == "token" else torch.rand(()) + 0.25
    sw = torch.rand(n) + 0.25 if kind_w == "channel" else torch.rand(1, 1) + 0.25
    return sa, sw, (sa.double() if kind_a == "tensor" else sa.double().reshape(m, 1)), (
        sw.double() if kind_w == "tensor" else sw.double().reshape(n, 1))


SHAPES = [(1, 48, 64), (7, 40, 100), (33, 96, 512)]  # M = 1, 7; K not a multiple of the tile; split-K at M = 1


@pytest.mark.parametrize("backend", ["torch", "triton", None])
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("m,n,k", SHAPES)
def test_gemm_a8w8_matches_float64(seed, backend, fmt, m, n, k):
    a, w = _operands(m, n, k, fmt)
    for kinds in (("tensor", "tensor"), ("token", "channel"), ("token", "tensor"), ("tensor", "channel")):
        sa, sw, sa_full, sw_full = _scales(*kinds, m, n)
        for out_dtype, bias in ((torch.bfloat16, None), (torch.float32, torch.randn(n)),
                                (torch.float16, torch.randn(n, dtype=torch.float16))):
            out = rocm_accel_ops.gemm_a8w8(a, w, sa, sw, bias=bias, out_dtype=out_dtype, backend=backend)
            assert out.shape == (m, n) and out.dtype == out_dtype and out.is_contiguous()
            _assert_matches(out, a, w, sa_full, sw_full, bias, f"{backend} {kinds} {out_dtype}")


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_4099_rows(seed, backend):
    """M = 4099 (a partial last row tile after 4096), both GEMMs; N and K narrow for the interpreter."""
    m, n, k = 4099, 24, 160
    a, w = _operands(m, n, k, torch.float8_e4m3fn)
    for kinds in (("token", "channel"), ("tensor", "tensor")):
        sa, sw, sa_full, sw_full = _scales(*kinds, m, n)
        bias = torch.randn(n)
        out = rocm_accel_ops.gemm_a8w8(a, w, sa, sw, bias=bias, backend=backend)
        _assert_matches(out, a, w, sa_full, sw_full, bias, f"{backend} {kinds} M = {m}")
    sa, sw = torch.rand(m, blocks(k)) + 0.25, torch.rand(blocks(n), blocks(k)) + 0.25
    out = rocm_accel_ops.gemm_a8w8_blockscale(a, w, sa, sw, backend=backend)
    _assert_matches(out, a, w, *torch_gemm.expand_block_scales(sa.double(), sw.double(), m, n, k), None,
                    f"{backend} blockscale M = {m}")


def test_triton_split_k_is_exercised():
    """At M = 1 the interpreter config deals K over several programs (the split-K epilogue runs)."""
    assert triton_gemm.gemm_params(torch.device("cpu"), 1, 48, 512)[-1] > 1


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("m,n,k", [(1, 64, 256), (7, 200, 300), (20, 128, 128)])
@pytest.mark.parametrize("column_major", [False, True])
def test_blockscale_matches_float64(seed, backend, fmt, m, n, k, column_major):
    a, w = _operands(m, n, k, fmt)
    sa = torch.rand(m, blocks(k)) + 0.25
    if column_major:
        sa = sa.t().contiguous().t()
    sw = torch.rand(blocks(n), blocks(k)) + 0.25
    sa_full, sw_full = torch_gemm.expand_block_scales(sa.double(), sw.double(), m, n, k)
    for out_dtype in (torch.bfloat16, torch.float32):
        out = rocm_accel_ops.gemm_a8w8_blockscale(a, w, sa, sw, out_dtype=out_dtype, backend=backend)
        _assert_matches(out, a, w, sa_full, sw_full, None, f"{backend} blockscale {out_dtype}")


@pytest.mark.parametrize("block_n", [32, 128, 256])
def test_blockscale_tile_widths_match_float64(seed, block_n):
    """The Triton blockscale kernel's two scalings: tiles inside one 128-wide W block (BLOCK_N <= 128:
    the W scale a scalar per K block, one FFMA an element) and tiles spanning two (256: row and
    column vectors), with N and K tails (300 = 2 x 128 + 44) and every W block's scale distinct."""
    m, n, k = 7, 300, 300
    a, w = _operands(m, n, k, torch.float8_e4m3fn)
    sa = torch.rand(m, blocks(k)) + 0.25
    sw = torch.rand(blocks(n), blocks(k)) * 4 + 0.25
    sa_full, sw_full = torch_gemm.expand_block_scales(sa.double(), sw.double(), m, n, k)
    out = torch.empty(m, n, dtype=torch.float32)
    triton_gemm.gemm_a8w8_blockscale(out, a, w, sa, sw, params=(16, block_n, 128, 2, 4, 1))
    _assert_matches(out, a, w, sa_full, sw_full, None, f"blockscale BLOCK_N {block_n}")


def test_blockscale_scales_really_vary_per_block(seed):
    """Scaling one 128-block of K changes only its share: the kernel reads the per-block scale."""
    a, w = _operands(4, 128, 256, torch.float8_e4m3fn)
    sa, sw = torch.ones(4, 2), torch.ones(1, 2)
    base = rocm_accel_ops.gemm_a8w8_blockscale(a, w, sa, sw, out_dtype=torch.float32, backend="triton")
    sw2 = sw.clone()
    sw2[0, 1] = 3.0
    out = rocm_accel_ops.gemm_a8w8_blockscale(a, w, sa, sw2, out_dtype=torch.float32, backend="triton")
    second = a[:, 128:].float() @ w[:, 128:].float().t()
    torch.testing.assert_close(out, base + 2 * second, rtol=1e-5, atol=1e-4)


def test_empty_and_zero_k():
    a, w = torch.empty(0, 64).to(torch.float8_e4m3fn), torch.randn(16, 64).to(torch.float8_e4m3fn)
    assert rocm_accel_ops.gemm_a8w8(a, w, torch.ones(1), torch.ones(1)).shape == (0, 16)
    a0, w0 = torch.empty(3, 0).to(torch.float8_e4m3fn), torch.empty(16, 0).to(torch.float8_e4m3fn)
    bias = torch.randn(16)
    out = rocm_accel_ops.gemm_a8w8(a0, w0, torch.ones(1), torch.ones(1), bias=bias, out_dtype=torch.float32)
    torch.testing.assert_close(out, bias.expand(3, 16))
    assert rocm_accel_ops.gemm_a8w8_blockscale(a0, w0, torch.ones(3, 0), torch.ones(1, 0)).abs().sum() == 0


def test_all_zero_rows_give_zeros(seed):
    a, w = _operands(5, 32, 64, torch.float8_e4m3fn)
    a[2] = 0
    out = rocm_accel_ops.gemm_a8w8(a, w, torch.rand(5, 1), torch.rand(32, 1), backend="triton")
    assert torch.isfinite(out).all() and (out[2] == 0).all()


BAD = [
    (dict(a=torch.randn(4, 64)), TypeError, "a has dtype"),
    (dict(w=torch.randn(16, 64).to(torch.float8_e4m3fnuz)), ValueError, "same FP8 format"),
    (dict(w=torch.randn(16, 32).to(torch.float8_e4m3fn)), ValueError, "w has shape"),
    (dict(a=torch.randn(2, 4, 64).to(torch.float8_e4m3fn)), ValueError, "a has shape"),
    (dict(a_scale=torch.ones(3, 1)), ValueError, "a_scale has shape"),
    (dict(w_scale=torch.ones(16, 2)), ValueError, "w_scale has shape"),
    (dict(a_scale=torch.ones(1, dtype=torch.float16)), TypeError, "a_scale has dtype"),
    (dict(bias=torch.ones(15)), ValueError, "bias has shape"),
    (dict(out_dtype=torch.int8), ValueError, "out_dtype"),
    (dict(a=torch.randn(64, 4).to(torch.float8_e4m3fn).t()), ValueError, "a has strides"),
]


@pytest.mark.parametrize("override,exc,match", BAD)
def test_gemm_a8w8_rejects_bad_input(override, exc, match):
    args = dict(a=torch.randn(4, 64).to(torch.float8_e4m3fn), w=torch.randn(16, 64).to(torch.float8_e4m3fn),
                a_scale=torch.ones(4, 1), w_scale=torch.ones(16, 1), bias=None, out_dtype=torch.bfloat16)
    args.update(override)
    with pytest.raises(exc, match=match):
        rocm_accel_ops.gemm_a8w8(**args)


@pytest.mark.parametrize("override,match", [
    (dict(a_scale=torch.ones(4, 1)), r"a_scale has shape \(4, 1\); expected \(M, ceil\(K/128\)\) = \(4, 2\)"),
    (dict(w_scale=torch.ones(2, 2)), r"w_scale has shape \(2, 2\); expected \(ceil\(N/128\), ceil\(K/128\)\) = \(1, 2\)"),
])
def test_blockscale_rejects_bad_scales(override, match):
    args = dict(a=torch.randn(4, 200).to(torch.float8_e4m3fn), w=torch.randn(16, 200).to(torch.float8_e4m3fn),
                a_scale=torch.ones(4, 2), w_scale=torch.ones(1, 2))
    args.update(override)
    with pytest.raises(ValueError, match=match):
        rocm_accel_ops.gemm_a8w8_blockscale(**args)


def test_explicit_aiter_backend_says_why_off_rocm():
    a, w = _operands(4, 16, 64, torch.float8_e4m3fn)
    with pytest.raises(ValueError, match="backend 'aiter' cannot serve"):
        rocm_accel_ops.gemm_a8w8(a, w, torch.ones(1), torch.ones(1), backend="aiter")


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_opcheck(seed, backend):
    """opcheck without its schema test, which multiplies the inputs and has no FP8 multiply on the
    CPU; the schema's promise (no input mutated) is checked on the bytes instead."""
    utils = ("test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")
    a, w = _operands(5, 32, 64, torch.float8_e4m3fn)
    cases = [(torch.ops.rocm_accel.gemm_a8w8.default,
              (a, w, torch.rand(5, 1), torch.rand(32, 1), torch.randn(32), torch.float32, backend)),
             (torch.ops.rocm_accel.gemm_a8w8.default,
              (a, w, torch.rand(()), torch.rand(32), None, torch.bfloat16, backend)),
             (torch.ops.rocm_accel.gemm_a8w8_blockscale.default,
              (a, w, torch.rand(5, 1), torch.rand(1, 1), torch.bfloat16, backend)),
             (torch.ops.rocm_accel.gemm_a8w8_blockscale.default,
              (a, w, torch.rand(1, 5).t(), torch.rand(1, 1), torch.float16, backend))]  # column-major a_scale
    for op, args in cases:
        before = [t.view(torch.uint8).clone() if t.dtype.itemsize == 1 else t.clone()
                  for t in args if isinstance(t, torch.Tensor)]
        torch.library.opcheck(op, args, test_utils=utils)
        after = [t.view(torch.uint8) if t.dtype.itemsize == 1 else t for t in args if isinstance(t, torch.Tensor)]
        assert all(torch.equal(x, y) for x, y in zip(before, after)), f"{op} mutated an input"


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_fullgraph_compile(seed, backend):
    """Both FP8 linear layouts, quant + GEMM, in one fullgraph graph: per token x per channel,
    and 1 x 128 groups (column-major scales) x 128 x 128 blocks; bit-equal to eager, and the
    GEMMs match float64 on the dequantized operands."""
    def linear(x, w, sw, wb, swb):
        q, sx = rocm_accel_ops.per_token_quant(x, dtype=torch.float8_e4m3fn, backend=backend)
        qg, sg = rocm_accel_ops.per_token_group_quant(x, 128, True, dtype=torch.float8_e4m3fn, backend=backend)
        return (q, sx, rocm_accel_ops.gemm_a8w8(q, w, sx, sw, backend=backend),
                qg, sg, rocm_accel_ops.gemm_a8w8_blockscale(qg, wb, sg, swb, backend=backend))

    x = torch.randn(6, 256, dtype=torch.bfloat16)
    w, sw = torch.randn(32, 256).to(torch.float8_e4m3fn), torch.rand(32, 1) + 0.5
    wb, swb = torch.randn(136, 256).to(torch.float8_e4m3fn), torch.rand(2, 2) + 0.5
    got, want = torch.compile(linear, fullgraph=True)(x, w, sw, wb, swb), linear(x, w, sw, wb, swb)
    for g, e in zip(got, want):
        assert torch.equal(g.view(torch.uint8) if g.dtype.itemsize == 1 else g,
                           e.view(torch.uint8) if e.dtype.itemsize == 1 else e)
    q, sx, y, qg, sg, yb = want
    _assert_matches(y, q, w, sx.double(), sw.double(), None, f"{backend} compiled per token")
    _assert_matches(yb, qg, wb, *torch_gemm.expand_block_scales(sg.double(), swb.double(), 6, 136, 256), None,
                    f"{backend} compiled blockscale")


def test_auto_takes_cublas_blockwise_only_where_it_sums_right(seed, monkeypatch):
    """torch 2.11's block-wise _scaled_mm returned wrong sums on an H200 wherever K / 128 is not a
    multiple of 4 (benchmarks/results/exp_blockwise_ld_h200_s10.log). With the cuda policy and an
    sm90 GPU simulated (the cuBLAS call stubbed by the float32 fallback, recorded), M = 100 goes
    to cuBLAS at K = 512 (4 blocks) only: at K = 640 (5 blocks) and with a float16 out auto takes
    Triton, and the torch backend named explicitly takes its float32 fallback. M = 16 takes Triton
    at K = 512 and cuBLAS at K = 8192 (the policy's measured small-M, long-K rule)."""
    from vllm_rocm_accel import policy
    from vllm_rocm_accel.ops import gemm as ops_gemm

    cublas = []

    def stub(a, w, a_scale, w_scale, out_dtype):
        cublas.append(tuple(w.shape))
        return torch_gemm._blockscale_dequant_mm(a, w, a_scale, w_scale, out_dtype)

    monkeypatch.setattr(torch_gemm, "_blockwise_scaled_mm_device", lambda device: True)
    monkeypatch.setattr(torch_gemm, "_blockwise_scaled_mm", stub)
    monkeypatch.setattr(policy, "family_of", lambda device: "cuda")
    ops_gemm.BLOCKSCALE.clear_caches()
    try:
        n = 128
        for m, k, out_dtype, backend, want in [(100, 512, torch.bfloat16, "auto", "torch"),
                                               (100, 640, torch.bfloat16, "auto", "triton"),
                                               (100, 512, torch.float16, "auto", "triton"),
                                               (100, 640, torch.bfloat16, "torch", "torch"),
                                               (16, 512, torch.bfloat16, "auto", "triton"),  # small M: triton
                                               (16, 8192, torch.bfloat16, "auto", "torch")]:  # ... unless K >= 8192
            a, w = _operands(m, n, k, torch.float8_e4m3fn)
            sa, sw = torch.rand(m, blocks(k)) + 0.25, torch.rand(blocks(n), blocks(k)) + 0.25
            cublas.clear()
            rocm_accel_ops.reset_call_counts()
            out = rocm_accel_ops.gemm_a8w8_blockscale(a, w, sa, sw, out_dtype=out_dtype, backend=backend)
            assert rocm_accel_ops.call_counts() == {("gemm_a8w8_blockscale", want): 1}, (k, out_dtype, backend)
            assert cublas == ([(n, k)] if k in (512, 8192) and want == "torch" else []), (k, out_dtype, backend)
            _assert_matches(out, a, w, *torch_gemm.expand_block_scales(sa.double(), sw.double(), m, n, k), None,
                            f"K = {k} {out_dtype} {backend}")
        a, w = _operands(4, n, 640, torch.float8_e4m3fn)
        assert "K / 128 = 5 is not a multiple of 4" in torch_gemm.blockwise_scaled_mm_refusal(a, w)
    finally:
        monkeypatch.undo()
        ops_gemm.BLOCKSCALE.clear_caches()
