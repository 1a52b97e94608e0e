"""The fused FP8 quant family on a real GPU (skipped without one): Triton kernels compiled for the device,
against the torch reference (the unfused composition) and float64.

Triton and torch compute the same float32 steps but may sum (and take ``exp``) in another order, which
can move a 16-bit intermediate by one step: so scales agree to one 16-bit step of the row's (group's)
amax, dequantized values to one FP8 ulp, and nearly every FP8 byte is identical.
"""

import pytest
import torch

from helpers import assert_close_verbose, edited_config, same_fp8_codes
from vllm_rocm_accel import fp8, rocm_accel_ops
from vllm_rocm_accel.inputs import norm_inputs
from vllm_rocm_accel.inputs_activation import act_and_mul_inputs

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")]

FORMATS = [torch.float8_e4m3fn, torch.float8_e4m3fnuz]
DTYPES = [torch.bfloat16, torch.float16, torch.float32]
MIN_NORMAL_EXP = {torch.float8_e4m3fn: -6, torch.float8_e4m3fnuz: -7}
EPS = 1e-6
SAME_BYTES = 0.995


def fp8_ulp(v, fmt):
    e = torch.floor(torch.log2(v.abs().clamp(min=1e-300))).clamp(min=MIN_NORMAL_EXP[fmt])
    return torch.pow(2.0, e - 3)


def rtol_of(dtype):
    return torch.finfo(dtype).eps + 1e-5


def _expand(s, shape, group):
    return s.double().repeat_interleave(group, dim=-1) if group else s.double().expand(shape)


def agree(got, want, fmt, dtype, msg, group=0):
    (q, s), (qr, sr) = got, want
    assert q.dtype == qr.dtype == fmt and q.shape == qr.shape and q.is_contiguous(), msg
    assert s.shape == sr.shape and s.stride() == sr.stride() and s.dtype == torch.float32, msg
    assert torch.isfinite(s).all() and (s > 0).all(), f"{msg}: bad scales"
    rtol = rtol_of(dtype)
    # the scales are amaxes of values rounded twice to x's dtype (the norm's output, then its product
    # with the weight), and the kernel's rstd may differ from torch's in its last bit: one step of
    # each rounding, two in all (seen on the H200: fp16 4099 x 7168, 1.5 fp16 eps on one row in 4099)
    assert_close_verbose(s, sr, 0.0, 2 * rtol, msg=f"{msg} scales")
    deq, ref = q.double() * _expand(s, q.shape, group), qr.double() * _expand(sr, q.shape, group)
    # the larger of the two codes' ulps: a code just below a power of two and one just above it
    # are one ulp apart in the upper binade (two of the lower one's)
    ulp = torch.maximum(fp8_ulp(qr.double(), fmt), fp8_ulp(q.double(), fmt))
    tol = ulp * _expand(sr, q.shape, group) * (1 + 1e-9) + ref.abs() * rtol
    bad = ~((deq - ref).abs() <= tol)
    assert not bad.any(), f"{msg}: {int(bad.sum())} of {q.numel()} values differ by more than one FP8 ulp"
    same = same_fp8_codes(q, qr).float().mean().item()  # zeros of either sign count as identical
    assert same >= SAME_BYTES, f"{msg}: only {same:.4%} of q bit-identical to the torch reference"


def against_float64(q, s, y64, fmt, dtype, msg, group=0):
    rtol = rtol_of(dtype)
    if group:
        amax = y64.reshape(y64.shape[:-1] + (-1, group)).abs().amax(-1)
    else:
        amax = y64.abs().amax(-1, keepdim=True)
    assert_close_verbose(s, amax.clamp(min=fp8.AMAX_FLOOR) / fp8.fp8_max(fmt), 0.0, rtol, msg=f"{msg} scales vs f64")
    sf = _expand(s, q.shape, group)
    deq = q.double() * sf
    bad = ~((deq - y64).abs() <= fp8_ulp(y64 / sf, fmt) * sf * (1 + 1e-9) + y64.abs() * rtol)
    assert not bad.any(), f"{msg}: {int(bad.sum())} of {q.numel()} values more than one FP8 ulp from float64"


def norm64(x, w, r=None):
    s = x.double() if r is None else x.double() + r.double()
    y = s * torch.rsqrt(s.pow(2).mean(-1, keepdim=True) + EPS)
    return y if w is None else y * w.double()


def silu64(x):
    d = x.shape[-1] // 2
    g, u = x[..., :d].double(), x[..., d:].double()
    return g * torch.sigmoid(g) * u


# 4096 / 8192: whole rows; 7168: whole rows padded 12.5% below 256 rows, the chunked kernel (1024-column
# chunks, measured on an H200) from 256 rows, as 5120 (and 5000: a partial last chunk);
# 16384: whole rows, 16 warps; 20000: looped always; 123 and leading dims: the edges.
NORM_SHAPES = [(1, 4096), (7, 7168), (257, 5120), (300, 5000), (4099, 4096), (4099, 7168), (33, 8192), (5, 16384),
               (3, 20000), (2, 3, 123), (64, 5120)]


@pytest.mark.parametrize("fmt", FORMATS, ids=str)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", NORM_SHAPES)
def test_norm_quant_triton_matches_reference(seed, fmt, dtype, shape):
    x, r, w = norm_inputs(shape, dtype, "cuda", scale=3.0)
    x[(0,) * (len(shape) - 1)] = 0  # an all-zero row
    got = rocm_accel_ops.rms_norm_dynamic_quant(x, w, EPS, dtype=fmt, backend="triton")
    want = rocm_accel_ops.rms_norm_dynamic_quant(x, w, EPS, dtype=fmt, backend="torch")
    agree(got, want, fmt, dtype, f"rms {shape} {dtype}")
    against_float64(*got, norm64(x, w), fmt, dtype, f"rms {shape} {dtype}")
    first = (0,) * (len(shape) - 1)
    assert not got[0][first].float().any() and got[1][first].item() == pytest.approx(
        fp8.AMAX_FLOOR / fp8.fp8_max(fmt), rel=1e-6)

    x[first] = torch.randn_like(x[first])
    r[first] = -x[first]  # a row whose sum x + residual is zero
    y64 = norm64(x, w, r)
    want_sum = (x.float() + r.float()).to(dtype)
    rt, rr = r.clone(), r.clone()
    got = rocm_accel_ops.fused_add_rms_norm_dynamic_quant(x, rt, w, EPS, dtype=fmt, backend="triton")
    want = rocm_accel_ops.fused_add_rms_norm_dynamic_quant(x, rr, w, EPS, dtype=fmt, backend="torch")
    assert torch.equal(rt, want_sum) and torch.equal(rr, want_sum), "residual is not x + residual"
    agree(got, want, fmt, dtype, f"add {shape} {dtype}")
    against_float64(*got, y64, fmt, dtype, f"add {shape} {dtype}")
    assert not got[0][first].float().any()


SILU_SHAPES = [(1, 4096), (7, 7168), (257, 14336), (4099, 2048), (4099, 4096), ((2, 3), 384), (33, 18432)]


@pytest.mark.parametrize("fmt", FORMATS, ids=str)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows,d", SILU_SHAPES)
@pytest.mark.parametrize("group,column_major", [(128, False), (128, True), (64, False)])
def test_silu_group_quant_triton_matches_reference(seed, fmt, dtype, rows, d, group, column_major):
    x = act_and_mul_inputs(rows, d, dtype, "cuda")
    lead = (rows,) if isinstance(rows, int) else rows
    x[(0,) * len(lead)][:group] = 0  # an all-zero group
    got = rocm_accel_ops.silu_and_mul_group_quant(x, group, column_major, dtype=fmt, backend="triton")
    want = rocm_accel_ops.silu_and_mul_group_quant(x, group, column_major, dtype=fmt, backend="torch")
    agree(got, want, fmt, dtype, f"silu {rows}x{d} g{group} cm={column_major} {dtype}", group)
    against_float64(*got, silu64(x), fmt, dtype, f"silu {rows}x{d}", group)
    assert not got[0][(0,) * len(lead)][:group].float().any()


def test_auto_picks_triton_on_cuda(seed):
    x, r, w = norm_inputs((64, 4096), torch.bfloat16, "cuda")
    g = act_and_mul_inputs(64, 4096, torch.bfloat16, "cuda")
    rocm_accel_ops.reset_call_counts()
    rocm_accel_ops.rms_norm_dynamic_quant(x, w, EPS)
    rocm_accel_ops.fused_add_rms_norm_dynamic_quant(x, r, w, EPS)
    q, _ = rocm_accel_ops.silu_and_mul_group_quant(g)
    assert rocm_accel_ops.call_counts() == {("rms_norm_dynamic_quant", "triton"): 1,
                                            ("fused_add_rms_norm_dynamic_quant", "triton"): 1,
                                            ("silu_and_mul_group_quant", "triton"): 1}
    assert q.dtype == rocm_accel_ops.fp8_dtype(torch.device("cuda"))


def test_strided_rows_weightless_and_fp32_weight(seed):
    fmt = fp8.fp8_dtype(torch.device("cuda"))
    qkv = torch.randn(50, 3 * 1024, device="cuda", dtype=torch.bfloat16)
    res_buf = torch.randn(50, 2 * 1024, device="cuda", dtype=torch.bfloat16)
    x, r = qkv[:, :1024], res_buf[:, :1024]  # (column slices of one buffer would be refused as overlapping)
    w32 = torch.rand(1024, device="cuda") + 0.5
    for w in (None, w32):
        got = rocm_accel_ops.rms_norm_dynamic_quant(x, w, EPS, dtype=fmt, backend="triton")
        agree(got, rocm_accel_ops.rms_norm_dynamic_quant(x.contiguous(), w, EPS, dtype=fmt, backend="torch"), fmt,
              torch.bfloat16, f"strided w={None if w is None else w.dtype}")
    beside = res_buf[:, 1024:].clone()
    rr = r.contiguous()
    want = rocm_accel_ops.fused_add_rms_norm_dynamic_quant(x, rr, w32, EPS, dtype=fmt, backend="torch")
    got = rocm_accel_ops.fused_add_rms_norm_dynamic_quant(x, r, w32, EPS, dtype=fmt, backend="triton")
    agree(got, want, fmt, torch.bfloat16, "strided add")
    assert torch.equal(r, rr) and torch.equal(res_buf[:, 1024:], beside)
    gate_up = torch.randn(40, 2 * 2048 + 256, device="cuda", dtype=torch.bfloat16)[:, : 2 * 2048]
    got = rocm_accel_ops.silu_and_mul_group_quant(gate_up, 128, True, dtype=fmt, backend="triton")
    want = rocm_accel_ops.silu_and_mul_group_quant(gate_up.contiguous(), 128, True, dtype=fmt, backend="torch")
    agree(got, want, fmt, torch.bfloat16, "strided silu", 128)


def test_int64_offsets(seed):
    """Rows 2**30 elements apart (views of a 6 GiB buffer): offsets past 2**31 take IDX64."""
    fmt = fp8.fp8_dtype(torch.device("cuda"))
    stride = 2**30 + 256
    buf = torch.empty(3 * stride, device="cuda", dtype=torch.bfloat16)
    x = buf.as_strided((3, 4096), (stride, 1))
    x.copy_(torch.randn(3, 4096, device="cuda"))
    w = torch.rand(4096, device="cuda", dtype=torch.bfloat16) + 0.5
    agree(rocm_accel_ops.rms_norm_dynamic_quant(x, w, EPS, dtype=fmt, backend="triton"),
          rocm_accel_ops.rms_norm_dynamic_quant(x.contiguous(), w, EPS, dtype=fmt, backend="torch"), fmt,
          torch.bfloat16, "idx64 rms")
    g = buf.as_strided((3, 2 * 2048), (stride, 1))
    agree(rocm_accel_ops.silu_and_mul_group_quant(g, 128, False, dtype=fmt, backend="triton"),
          rocm_accel_ops.silu_and_mul_group_quant(g.contiguous(), 128, False, dtype=fmt, backend="torch"), fmt,
          torch.bfloat16, "idx64 silu", 128)
    del buf
    torch.cuda.empty_cache()


def test_repeated_calls_reuse_the_compiled_kernels(seed):
    """Same shapes twice: identical results (the fast launcher's cached kernel is the one Triton picked)."""
    x, r, w = norm_inputs((300, 4096), torch.bfloat16, "cuda")
    first = rocm_accel_ops.rms_norm_dynamic_quant(x, w, EPS, backend="triton")
    second = rocm_accel_ops.rms_norm_dynamic_quant(x, w, EPS, backend="triton")
    assert torch.equal(first[0].view(torch.uint8), second[0].view(torch.uint8)) and torch.equal(first[1], second[1])


def test_compile_fullgraph_on_gpu(seed):
    def block(h, residual, w, gate_up):
        q1, s1 = rocm_accel_ops.fused_add_rms_norm_dynamic_quant(h, residual, w, EPS)
        q2, s2 = rocm_accel_ops.silu_and_mul_group_quant(gate_up, 128, True)
        deq2 = (q2.float().reshape(q2.shape[0], -1, 128) * s2.unsqueeze(-1)).reshape(q2.shape)
        return q1.float() * s1, deq2

    x, r, w = norm_inputs((64, 4096), torch.bfloat16, "cuda")
    g = act_and_mul_inputs(64, 4096, torch.bfloat16, "cuda")
    torch._dynamo.reset()
    compiled = torch.compile(block, fullgraph=True)
    r1, r2 = r.clone(), r.clone()
    got, want = compiled(x, r1, w, g), block(x, r2, w, g)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert torch.equal(r1, r2)


@pytest.mark.parametrize("fmt", FORMATS, ids=str)
@pytest.mark.parametrize("ftz", [False, True])
def test_silu_ftz_gives_the_same_codes(seed, monkeypatch, fmt, ftz):
    """``ftz_silu`` (kernels/triton/fused_quant.py's ``_silu_ftz``) on and off: the same FP8 bytes
    and scales (zeros' sign aside), gates spanning the flush-to-zero edges included: silu's
    denominator past 2**126 (gate in (-88.8, -87.3)), exp's subnormal range (gate > 87.4) and
    subnormal gates."""
    from vllm_rocm_accel.backends.triton import fused_quant as tfq

    x = act_and_mul_inputs(64, 1024, torch.bfloat16, "cuda")
    g = x[:, :1024]
    g[1] = torch.linspace(-89.0, -87.0, 1024, device="cuda")  # a whole group of them, and mixed below
    g[2, ::3] = -88.0
    g[3] = torch.linspace(85.0, 100.0, 1024, device="cuda")
    g[4, ::2] = 1e-39
    g[5, :128] = -1e-39
    want = rocm_accel_ops.silu_and_mul_group_quant(x, 128, False, dtype=fmt, backend="triton")
    for edited in edited_config(monkeypatch, tfq):
        edited["cuda"]["silu_mul_group_quant"]["ftz_silu"] = ftz
        assert tfq.silu_group_variant("cuda")[2] is ftz
        got = rocm_accel_ops.silu_and_mul_group_quant(x, 128, False, dtype=fmt, backend="triton")
    assert torch.equal(got[1], want[1]), "scales differ"
    same = same_fp8_codes(got[0], want[0])
    assert same.all(), f"{int((~same).sum())} FP8 codes differ"
