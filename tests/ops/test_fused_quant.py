"""The fused FP8 quant family through the facade, on every backend this machine runs, against float64
and against the unfused composition of the norm / activation and quant ops."""

import pytest
import torch

from helpers import assert_close_verbose
from vllm_rocm_accel import fp8, rocm_accel_ops
from vllm_rocm_accel.inputs import norm_inputs
from vllm_rocm_accel.inputs_activation import act_and_mul_inputs
from vllm_rocm_accel.ops import fused_quant as fq_ops

BACKENDS = ["torch", "triton"]  # triton through TRITON_INTERPRET on the CPU
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
FORMATS = [torch.float8_e4m3fn, torch.float8_e4m3fnuz]
MIN_NORMAL_EXP = {torch.float8_e4m3fn: -6, torch.float8_e4m3fnuz: -7}
EPS = 1e-5


# --- references and the comparison ------------------------------------------------------------
def norm64(x, weight, eps, residual=None):
    """RMSNorm of x (+ residual) in float64, no rounding anywhere."""
    s = x.double() if residual is None else x.double() + residual.double()
    y = s * torch.rsqrt(s.pow(2).mean(-1, keepdim=True) + eps)
    return y if weight is None else y * weight.double()


def silu_mul64(x):
    d = x.shape[-1] // 2
    g, u = x[..., :d].double(), x[..., d:].double()
    return g * torch.sigmoid(g) * u


def rounding_rtol(dtype) -> float:
    """Relative error of the op's intermediate value against float64: the norm / activation output is
    rounded to the 16-bit dtype twice (vLLM's RMSNorm: to the weight's dtype, times the weight, rounded
    again; vLLM's SiluAndMul: silu, then the product), half an ulp each, i.e. finfo.eps in all, plus
    float32 arithmetic (rsqrt, exp, the sum of squares: ~1e-6)."""
    return torch.finfo(dtype).eps + 1e-5


def fp8_ulp(v: torch.Tensor, fmt) -> torch.Tensor:
    """The spacing of ``fmt`` (3 mantissa bits) at |v|, float64; subnormal spacing below the normals."""
    e = torch.floor(torch.log2(v.abs().clamp(min=1e-300))).clamp(min=MIN_NORMAL_EXP[fmt])
    return torch.pow(2.0, e - 3)


def check_against_float64(q, s, y64, fmt, dtype, group=0, msg=""):
    """``s`` is amax(|y64|) / fp8_max (per row, or per group of ``group`` columns) up to the op's
    16-bit roundings, floored for all-zero rows; ``q * s`` is within one FP8 ulp (at y64 / s, times s)
    of ``y64``, plus those roundings. Says where it fails, with both values."""
    assert q.dtype == fmt and q.shape == y64.shape, f"{msg}: q {q.dtype} {tuple(q.shape)}"
    assert s.dtype == torch.float32 and torch.isfinite(s).all() and (s > 0).all(), f"{msg}: scales {s}"
    rtol = rounding_rtol(dtype)
    if group:
        amax = y64.reshape(y64.shape[:-1] + (-1, group)).abs().amax(-1)
        s_full = s.double().repeat_interleave(group, dim=-1)
    else:
        amax = y64.abs().amax(-1, keepdim=True)
        s_full = s.double().expand(y64.shape)
    want_s = amax.clamp(min=fp8.AMAX_FLOOR) / fp8.fp8_max(fmt)
    assert_close_verbose(s, want_s, 0.0, rtol, msg=f"{msg} scales")
    deq = q.double() * s_full
    tol = fp8_ulp(y64 / s_full, fmt) * s_full * (1 + 1e-9) + y64.abs() * rtol
    bad = ~((deq - y64).abs() <= tol)
    if bad.any():
        i = tuple(int(k) for k in bad.nonzero()[0])
        raise AssertionError(f"{msg}: {int(bad.sum())} of {q.numel()} dequantized values off by more than one FP8 "
                             f"ulp; first at {i}: q*s={deq[i].item()!r}, float64 {y64[i].item()!r}, scale "
                             f"{s_full[i].item()!r}")


def check_same_as(got, want, fmt, dtype, msg, group=0):
    """Two results of the same computation by different code: scales to the 16-bit rounding of the
    amax (one step where float32 sums differ in the last bit), dequantized values to one FP8 ulp."""
    (q, s), (qr, sr) = got, want
    assert q.dtype == qr.dtype == fmt and q.shape == qr.shape and s.shape == sr.shape and s.stride() == sr.stride(), msg
    rtol = rounding_rtol(dtype)
    assert_close_verbose(s, sr, 0.0, rtol, msg=f"{msg} scales")
    rep = (lambda t: t.double().repeat_interleave(group, dim=-1)) if group else (lambda t: t.double().expand(q.shape))
    deq, ref = q.double() * rep(s), qr.double() * rep(sr)
    tol = fp8_ulp(qr.double(), fmt) * rep(sr) * (1 + 1e-9) + ref.abs() * rtol
    bad = ~((deq - ref).abs() <= tol)
    assert not bad.any(), f"{msg}: {int(bad.sum())} of {q.numel()} values differ by more than one FP8 ulp"


def _rows(lead):
    n = 1
    for k in lead:
        n *= k
    return n


# --- numerics: rms_norm_dynamic_quant ----------------------------------------------------------
NORM_SHAPES = [((1,), 64, 0), ((7,), 123, 0), ((2, 3), 96, 16), ((5,), 200, 8), ((3,), 1000, 0)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("fmt", FORMATS, ids=str)
@pytest.mark.parametrize("lead,hidden,row_pad", NORM_SHAPES)
def test_rms_norm_dynamic_quant_matches_float64(seed, backend, dtype, fmt, lead, hidden, row_pad):
    x = norm_inputs(lead + (hidden + row_pad,), dtype, scale=3.0)[0]
    x = x[..., :hidden] if row_pad else x
    w = norm_inputs((hidden,), dtype)[2]
    x[(0,) * len(lead)] = 0  # an all-zero row: zeros and the floor scale
    x0 = x.clone()
    q, s = rocm_accel_ops.rms_norm_dynamic_quant(x, w, EPS, dtype=fmt, backend=backend)
    assert torch.equal(x, x0), "x was modified"
    assert s.shape == lead + (1,) and q.is_contiguous()
    check_against_float64(q, s, norm64(x, w, EPS), fmt, dtype, msg=f"{backend} {dtype} {lead}x{hidden}")
    first = (0,) * len(lead)
    assert not q[first].view(torch.uint8).any(), "an all-zero row must quantize to +0"
    assert s[first].item() == pytest.approx(fp8.AMAX_FLOOR / fp8.fp8_max(fmt), rel=1e-6)
    # the fused op is the unfused composition on the same backend
    unfused = rocm_accel_ops.per_token_quant(rocm_accel_ops.rms_norm(x, w, EPS, backend=backend), dtype=fmt,
                                             backend=backend)
    if backend == "torch":
        assert torch.equal(q.view(torch.uint8), unfused[0].view(torch.uint8)) and torch.equal(s, unfused[1])
    else:
        check_same_as((q, s), unfused, fmt, dtype, f"{backend} vs unfused")


@pytest.mark.parametrize("backend", BACKENDS)
def test_rms_norm_dynamic_quant_without_weight_and_with_fp32_weight(seed, backend):
    x, _, _ = norm_inputs((4, 300), torch.bfloat16, scale=2.0)
    fmt = torch.float8_e4m3fn
    q, s = rocm_accel_ops.rms_norm_dynamic_quant(x, None, 1e-3, dtype=fmt, backend=backend)
    check_against_float64(q, s, norm64(x, None, 1e-3), fmt, torch.bfloat16, msg="no weight")
    w32 = torch.rand(300) + 0.5  # fp32 weight with bf16 activations, as the norm family allows
    q, s = rocm_accel_ops.rms_norm_dynamic_quant(x, w32, 1e-3, dtype=fmt, backend=backend)
    check_against_float64(q, s, norm64(x, w32, 1e-3), fmt, torch.bfloat16, msg="fp32 weight")
    unfused = rocm_accel_ops.per_token_quant(rocm_accel_ops.rms_norm(x, w32, 1e-3, backend="torch"), dtype=fmt,
                                             backend="torch")
    check_same_as((q, s), unfused, fmt, torch.bfloat16, "fp32 weight vs unfused torch")


# --- numerics: fused_add_rms_norm_dynamic_quant --------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("fmt", FORMATS, ids=str)
@pytest.mark.parametrize("lead,hidden,row_pad", NORM_SHAPES)
def test_fused_add_rms_norm_dynamic_quant_matches_float64(seed, backend, dtype, fmt, lead, hidden, row_pad):
    xf, rf, _ = norm_inputs(lead + (hidden + row_pad,), dtype, scale=3.0)
    x, r = (xf[..., :hidden], rf[..., :hidden]) if row_pad else (xf, rf)
    w = norm_inputs((hidden,), dtype)[2]
    first = (0,) * len(lead)
    r[first] = -x[first]  # x + residual == 0 on one row: zeros and the floor scale
    x0, r0, pad0 = x.clone(), r.clone(), rf[..., hidden:].clone()
    want_sum = (x0.float() + r0.float()).to(dtype)  # the norm family's residual: one rounding of the sum
    y64 = norm64(x0, w, EPS, r0)
    q, s = rocm_accel_ops.fused_add_rms_norm_dynamic_quant(x, r, w, EPS, dtype=fmt, backend=backend)
    assert torch.equal(x, x0), "x was modified (only residual is updated in place)"
    assert torch.equal(r, want_sum), "residual is not x + residual"
    assert torch.equal(rf[..., hidden:], pad0), "wrote outside residual's rows"
    check_against_float64(q, s, y64, fmt, dtype, msg=f"{backend} {dtype} {lead}x{hidden}")
    assert not q[first].view(torch.uint8).any()
    # the unfused composition: the norm family's fused add (out of place) then per_token_quant
    normed, summed = rocm_accel_ops.fused_add_rms_norm(x0, r0.clone(), w, EPS, inplace=False, backend=backend)
    assert torch.equal(summed, want_sum)
    unfused = rocm_accel_ops.per_token_quant(normed, dtype=fmt, backend=backend)
    if backend == "torch":
        assert torch.equal(q.view(torch.uint8), unfused[0].view(torch.uint8)) and torch.equal(s, unfused[1])
    else:
        check_same_as((q, s), unfused, fmt, dtype, f"{backend} vs unfused")


@pytest.mark.parametrize("backend", BACKENDS)
def test_fused_add_writes_only_residuals_rows(seed, backend):
    """A residual that is a row-strided slice: the columns beside it stay untouched."""
    xf, rf, w = norm_inputs((6, 100), torch.float16, scale=2.0)
    x, r = xf[:, :80], rf[:, :80]
    w = w[:80].contiguous()
    beside = rf[:, 80:].clone()
    want = (x.float() + r.float()).to(torch.float16)
    rocm_accel_ops.fused_add_rms_norm_dynamic_quant(x, r, w, EPS, backend=backend)
    assert torch.equal(rf[:, 80:], beside) and torch.equal(r, want)


# --- numerics: silu_and_mul_group_quant ----------------------------------------------------------
SILU_SHAPES = [((1,), 128, 128, 0), ((7,), 96, 32, 0), ((2, 3), 128, 64, 16), ((5,), 48, 16, 0), ((3,), 120, 24, 8)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("fmt", FORMATS, ids=str)
@pytest.mark.parametrize("lead,d,group,row_pad", SILU_SHAPES)
@pytest.mark.parametrize("column_major", [False, True])
def test_silu_and_mul_group_quant_matches_float64(seed, backend, dtype, fmt, lead, d, group, row_pad, column_major):
    x = act_and_mul_inputs(lead, d, dtype, row_pad=row_pad)
    first = (0,) * len(lead)
    x[first][:group] = 0  # gate of the first group zero: an all-zero group
    x0 = x.clone()
    q, s = rocm_accel_ops.silu_and_mul_group_quant(x, group, column_major, dtype=fmt, backend=backend)
    assert torch.equal(x, x0)
    groups = d // group
    assert q.shape == lead + (d,) and s.shape == lead + (groups,) and q.is_contiguous()
    tokens = _rows(lead)
    if column_major:
        st = s.reshape(tokens, groups).stride()
        assert (tokens == 1 or st[0] == 1) and (groups == 1 or st[1] == tokens), f"scales not column-major: {st}"
    check_against_float64(q, s, silu_mul64(x), fmt, dtype, group, msg=f"{backend} {dtype} {lead} d={d} g={group}")
    assert not q[first][:group].float().any(), "an all-zero group must quantize to zeros (-0 where up < 0)"
    assert s[first][0].item() == pytest.approx(fp8.AMAX_FLOOR / fp8.fp8_max(fmt), rel=1e-6)
    unfused = rocm_accel_ops.per_token_group_quant(rocm_accel_ops.silu_and_mul(x, backend=backend), group,
                                                   column_major, dtype=fmt, backend=backend)
    if backend == "torch":
        assert torch.equal(q.view(torch.uint8), unfused[0].view(torch.uint8)) and torch.equal(s, unfused[1])
    else:
        check_same_as((q, s), unfused, fmt, dtype, f"{backend} vs unfused", group)


@pytest.mark.parametrize("backend", BACKENDS)
def test_backends_agree(seed, backend):
    """Switching backend changes quantized values by rounding at most."""
    x, r, w = norm_inputs((9, 256), torch.bfloat16, scale=2.0)
    g = act_and_mul_inputs(9, 256, torch.bfloat16)
    for fmt in FORMATS:
        ref = rocm_accel_ops.rms_norm_dynamic_quant(x, w, EPS, dtype=fmt, backend="torch")
        check_same_as(rocm_accel_ops.rms_norm_dynamic_quant(x, w, EPS, dtype=fmt, backend=backend), ref, fmt,
                      torch.bfloat16, "rms")
        r1, r2 = r.clone(), r.clone()
        ref = rocm_accel_ops.fused_add_rms_norm_dynamic_quant(x, r1, w, EPS, dtype=fmt, backend="torch")
        got = rocm_accel_ops.fused_add_rms_norm_dynamic_quant(x, r2, w, EPS, dtype=fmt, backend=backend)
        check_same_as(got, ref, fmt, torch.bfloat16, "add")
        assert torch.equal(r1, r2)
        ref = rocm_accel_ops.silu_and_mul_group_quant(g, 128, True, dtype=fmt, backend="torch")
        check_same_as(rocm_accel_ops.silu_and_mul_group_quant(g, 128, True, dtype=fmt, backend=backend), ref, fmt,
                      torch.bfloat16, "silu", 128)


@pytest.fixture
def big_interpreter_programs(monkeypatch):
    """The Triton launch config with 128 rows (tiles) per program, for many-token shapes under the
    interpreter (one program at a time there); the launch caches are cleared before and after."""
    import copy
    import functools

    from vllm_rocm_accel.backends.triton import fused_quant as triton_fq

    cfg = copy.deepcopy(triton_fq._config())
    fam = cfg[triton_fq._family("cpu")]
    fam["rms_norm_quant"]["tables"]["default"] = [{"max_cols": 10**9, "rows_per_program": 128, "num_warps": 4}]
    fam["silu_mul_group_quant"]["tables"]["default"] = [
        {"max_tiles": 10**12, "elements_per_program": 2048, "num_warps": 4}]
    triton_fq.clear_caches()
    monkeypatch.setattr(triton_fq, "_config", functools.lru_cache(maxsize=1)(lambda: cfg))
    try:
        yield
    finally:
        monkeypatch.undo()
        triton_fq.clear_caches()


@pytest.mark.parametrize("backend", BACKENDS)
def test_many_tokens_small_rows(seed, backend, big_interpreter_programs):
    """4099 tokens (an odd count past 4096), small rows; the last program is a partial one."""
    fmt = torch.float8_e4m3fn
    x, r, w = norm_inputs((4099, 16), torch.bfloat16, scale=2.0)
    q, s = rocm_accel_ops.rms_norm_dynamic_quant(x, w, EPS, dtype=fmt, backend=backend)
    check_against_float64(q, s, norm64(x, w, EPS), fmt, torch.bfloat16, msg="4099 rms")
    y64 = norm64(x, w, EPS, r)
    q, s = rocm_accel_ops.fused_add_rms_norm_dynamic_quant(x, r, w, EPS, dtype=fmt, backend=backend)
    check_against_float64(q, s, y64, fmt, torch.bfloat16, msg="4099 add")
    g = act_and_mul_inputs(4099, 32, torch.bfloat16)
    q, s = rocm_accel_ops.silu_and_mul_group_quant(g, 16, True, dtype=fmt, backend=backend)
    check_against_float64(q, s, silu_mul64(g), fmt, torch.bfloat16, 16, msg="4099 silu")


@pytest.mark.parametrize("backend", BACKENDS)
def test_zero_tokens(backend):
    x = torch.randn(0, 64)
    r = torch.randn(0, 64)
    w = torch.ones(64)
    q, s = rocm_accel_ops.rms_norm_dynamic_quant(x, w, EPS, backend=backend)
    assert q.shape == (0, 64) and s.shape == (0, 1)
    q, s = rocm_accel_ops.fused_add_rms_norm_dynamic_quant(x, r, w, EPS, backend=backend)
    assert q.shape == (0, 64) and s.shape == (0, 1)
    q, s = rocm_accel_ops.silu_and_mul_group_quant(torch.randn(0, 2, 128), 32, True, backend=backend)
    assert q.shape == (0, 2, 64) and s.shape == (0, 2, 2)


# --- dispatch ---------------------------------------------------------------------------------
def test_auto_on_cpu_is_torch_and_aiter_refuses_with_a_reason(seed):
    x, r, w = norm_inputs((3, 128), torch.bfloat16)
    g = act_and_mul_inputs(3, 128, torch.bfloat16)
    rocm_accel_ops.reset_call_counts()
    rocm_accel_ops.rms_norm_dynamic_quant(x, w, EPS)
    rocm_accel_ops.fused_add_rms_norm_dynamic_quant(x, r, w, EPS)
    q, _ = rocm_accel_ops.silu_and_mul_group_quant(g)
    assert rocm_accel_ops.call_counts() == {("rms_norm_dynamic_quant", "torch"): 1,
                                            ("fused_add_rms_norm_dynamic_quant", "torch"): 1,
                                            ("silu_and_mul_group_quant", "torch"): 1}
    assert q.dtype == torch.float8_e4m3fn  # the CPU's format by default
    with pytest.raises(ValueError, match="backend 'aiter' cannot serve"):
        rocm_accel_ops.rms_norm_dynamic_quant(x, w, EPS, backend="aiter")
    with pytest.raises(ValueError, match="backend 'aiter' cannot serve"):
        rocm_accel_ops.silu_and_mul_group_quant(g, backend="aiter")


def test_example_args_and_dispatchers():
    for op, disp in fq_ops.DISPATCHERS.items():
        for hidden in (4096, 32):
            args = fq_ops.example_args(op, 8, hidden, torch.bfloat16, torch.device("cpu"))
            assert disp.select("auto", args, None).name == "torch"
            assert "aiter runs on ROCm" in dict(disp.explain(args))["aiter"]


# --- bad input: errors name the argument, nothing is modified ------------------------------------
def _norm_bad():
    x, r, w = norm_inputs((3, 64), torch.bfloat16)
    return x, r, w


BAD_NORM = [
    (lambda x, r, w: (x.to(torch.int32), w, EPS), TypeError, "x has dtype"),
    (lambda x, r, w: (torch.tensor(1.0), None, EPS), ValueError, "x is 0-d"),
    (lambda x, r, w: (x[:, :0], None, EPS), ValueError, "hidden size 0"),
    (lambda x, r, w: (x, w[:32], EPS), ValueError, "weight has shape"),
    (lambda x, r, w: (x, w.to(torch.int64), EPS), TypeError, "weight has dtype"),
    (lambda x, r, w: (x, w, -1.0), ValueError, "epsilon must be finite"),
    (lambda x, r, w: (x, w, "1e-6"), TypeError, "epsilon must be a float"),
    (lambda x, r, w: (x, w, EPS, torch.float16), ValueError, "dtype must be"),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("make,exc,msg", BAD_NORM, ids=[b[2][:20] for b in BAD_NORM])
def test_bad_norm_input_raises(backend, make, exc, msg):
    x, r, w = _norm_bad()
    args = make(x, r, w)
    with pytest.raises(exc, match=msg):
        rocm_accel_ops.rms_norm_dynamic_quant(*args, backend=backend)


BAD_ADD = [
    (lambda x, r, w: (x, r[:2], w, EPS), ValueError, "residual has shape"),
    (lambda x, r, w: (x, r.half(), w, EPS), ValueError, "residual has dtype"),
    (lambda x, r, w: (x, r, w[:3], EPS), ValueError, "weight has shape"),
    (lambda x, r, w: (x, r, w, float("nan")), ValueError, "epsilon must be finite"),
    (lambda x, r, w: (x, r, w, EPS, torch.int8), ValueError, "dtype must be"),
    (lambda x, r, w: (x, x, w, EPS), ValueError, "residual shares memory with x"),
    (lambda x, r, w: (x, r[:1].expand(3, 64), w, EPS), ValueError, "several elements at one address"),
    (lambda x, r, w: (x, None, w, EPS), TypeError, "residual must be a torch.Tensor"),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("make,exc,msg", BAD_ADD, ids=[b[2][:20] for b in BAD_ADD])
def test_bad_fused_add_input_raises_and_leaves_residual(backend, make, exc, msg):
    x, r, w = _norm_bad()
    args = make(x, r, w)
    before = [a.clone() if isinstance(a, torch.Tensor) else a for a in args]
    with pytest.raises(exc, match=msg):
        rocm_accel_ops.fused_add_rms_norm_dynamic_quant(*args, backend=backend)
    for a, b in zip(args, before):
        if isinstance(a, torch.Tensor):
            assert torch.equal(a, b), "a bad call modified its input"


BAD_SILU = [
    (lambda: (torch.randn(3, 129),), ValueError, "expected an even"),
    (lambda: (torch.randn(3, 2 * 200), 128), ValueError, "not a multiple of group_size=128"),
    (lambda: (torch.randn(3, 256), 0), ValueError, "group_size must be positive"),
    (lambda: (torch.randn(3, 256), 64.0), TypeError, "group_size must be an int"),
    (lambda: (torch.randn(3, 256), 64, 1), TypeError, "column_major_scales must be a bool"),
    (lambda: (torch.randn(3, 256), 64, False, torch.bfloat16), ValueError, "dtype must be"),
    (lambda: (torch.randint(0, 5, (3, 256)),), TypeError, "x has dtype"),
    (lambda: ("x",), TypeError, "x must be a torch.Tensor"),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("make,exc,msg", BAD_SILU, ids=[b[2][:20] for b in BAD_SILU])
def test_bad_silu_input_raises(backend, make, exc, msg):
    with pytest.raises(exc, match=msg):
        rocm_accel_ops.silu_and_mul_group_quant(*make(), backend=backend)


def test_bad_input_through_the_registered_ops():
    ops = fq_ops.register()
    x, r, w = _norm_bad()
    r0 = r.clone()
    with pytest.raises(ValueError, match="residual has shape"):
        ops["fused_add_rms_norm_dynamic_quant"](x, r[:2], w, EPS, None, "auto")
    with pytest.raises(ValueError, match="residual shares memory with x"):
        ops["fused_add_rms_norm_dynamic_quant"](x, x, w, EPS, None, "auto")
    with pytest.raises(ValueError, match="dtype must be"):
        ops["fused_add_rms_norm_dynamic_quant"](x, r, w, EPS, torch.float16, "triton")
    assert torch.equal(r, r0)
    with pytest.raises(ValueError, match="not a multiple of group_size"):
        ops["silu_and_mul_group_quant"](torch.randn(2, 200), 64, False, None, "auto")
    with pytest.raises(ValueError, match="backend 'nope'|is not one of"):
        ops["rms_norm_dynamic_quant"](x, w, EPS, None, "nope")


# --- registration -----------------------------------------------------------------------------
EXPECTED_SCHEMAS = {
    "rms_norm_dynamic_quant": "rocm_accel::rms_norm_dynamic_quant(Tensor x, Tensor? weight, float epsilon, "
                              "ScalarType? dtype=None, str backend=\"auto\") -> (Tensor, Tensor)",
    "fused_add_rms_norm_dynamic_quant": "rocm_accel::fused_add_rms_norm_dynamic_quant(Tensor x, Tensor(a1!) residual, "
                                        "Tensor? weight, float epsilon, ScalarType? dtype=None, "
                                        "str backend=\"auto\") -> (Tensor, Tensor)",
    "silu_and_mul_group_quant": "rocm_accel::silu_and_mul_group_quant(Tensor x, SymInt group_size=128, "
                                "bool column_major_scales=False, ScalarType? dtype=None, str backend=\"auto\") "
                                "-> (Tensor, Tensor)",
}


def test_schemas():
    ops = fq_ops.register()
    for name, schema in EXPECTED_SCHEMAS.items():
        assert str(ops[name]._schema) == schema
        assert getattr(torch.ops.rocm_accel, name).default is ops[name]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("fmt", FORMATS, ids=str)
def test_opcheck(seed, backend, fmt):
    ops = fq_ops.register()
    x, r, w = norm_inputs((3, 96), torch.bfloat16, scale=2.0)
    xs, rs, _ = norm_inputs((2, 2, 80), torch.float32)
    xs, rs = xs[..., :64], rs[..., :64]
    for weight in (w, None):
        torch.library.opcheck(ops["rms_norm_dynamic_quant"], (x, weight, EPS, fmt, backend))
        torch.library.opcheck(ops["fused_add_rms_norm_dynamic_quant"], (x, r.clone(), weight, EPS, fmt, backend))
    torch.library.opcheck(ops["rms_norm_dynamic_quant"], (xs, None, 1e-3, fmt, backend))
    torch.library.opcheck(ops["fused_add_rms_norm_dynamic_quant"], (xs, rs.clone(), None, 1e-3, fmt, backend))
    g = act_and_mul_inputs((2, 3), 64, torch.bfloat16, row_pad=8)
    for column_major in (False, True):
        torch.library.opcheck(ops["silu_and_mul_group_quant"], (g, 32, column_major, fmt, backend))


def test_compile_fullgraph_no_graph_break(seed):
    def block(h, residual, w, gate_up):
        q1, s1 = rocm_accel_ops.rms_norm_dynamic_quant(h, w, EPS)
        q2, s2 = rocm_accel_ops.fused_add_rms_norm_dynamic_quant(h, residual, w, EPS)
        q3, s3 = rocm_accel_ops.silu_and_mul_group_quant(gate_up, 32, True)
        deq3 = (q3.float().reshape(q3.shape[0], -1, 32) * s3.unsqueeze(-1)).reshape(q3.shape)
        return q1.float() * s1 + q2.float() * s2, deq3

    torch._dynamo.reset()
    compiled = torch.compile(block, fullgraph=True, dynamic=True)
    for rows in (5, 9):
        h, r, w = norm_inputs((rows, 128), torch.float32)
        g = act_and_mul_inputs(rows, 64, torch.float32)
        r_eager, r_compiled = r.clone(), r.clone()
        want = block(h, r_eager, w, g)
        got = compiled(h, r_compiled, w, g)
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, atol=0, rtol=0)
        assert torch.equal(r_compiled, r_eager), "the compiled graph lost the in-place residual update"
    explain = torch._dynamo.explain(block)(h, r.clone(), w, g)
    assert explain.graph_break_count == 0
