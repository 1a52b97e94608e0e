"""The FP8 quant family through the facade, on every backend this machine runs, against float64."""

import math

import pytest
import torch

from vllm_rocm_accel import fp8, rocm_accel_ops
from vllm_rocm_accel.ops import quant as quant_ops

BACKENDS = ["torch", "triton"]  # triton through TRITON_INTERPRET on the CPU
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
FORMATS = [torch.float8_e4m3fn, torch.float8_e4m3fnuz]
MIN_NORMAL_EXP = {torch.float8_e4m3fn: -6, torch.float8_e4m3fnuz: -7}


def inputs(lead, hidden, dtype, *, row_pad=0, scale=3.0):
    full = (torch.randn(lead + (hidden + row_pad,)) * scale).to(dtype)
    return full[..., :hidden] if row_pad else full


def fp8_ulp(v: torch.Tensor, fmt) -> torch.Tensor:
    """The spacing of ``fmt`` (3 mantissa bits) at |v|, float64; subnormal spacing below the normals."""
    e = torch.floor(torch.log2(v.abs().clamp(min=1e-300))).clamp(min=MIN_NORMAL_EXP[fmt])
    return torch.pow(2.0, e - 3)


def check_quantized(q, scale, x, fmt, msg=""):
    """q is within one FP8 ulp of clamp(x / scale) computed in float64 (with the op's own scale),
    and ``scale`` follows the rule amax / fp8_max (checked by the caller's expected amax)."""
    assert q.dtype == fmt and q.shape == x.shape, msg
    m = fp8.fp8_max(fmt)
    v = (x.double() / scale.double()).clamp(-m, m)
    err = (q.double() - v).abs()
    bad = err > fp8_ulp(v, fmt) * (1 + 1e-9)
    assert not bad.any(), (f"{msg}: {int(bad.sum())} of {q.numel()} values off by more than one FP8 ulp; worst "
                           f"q={q.double()[bad][0].item()} want {v[bad][0].item()}")
    assert torch.isfinite(q.double()).all(), msg


def expected_scale(amax: torch.Tensor, fmt) -> torch.Tensor:
    return (amax.double().clamp(min=fp8.AMAX_FLOOR) / fp8.fp8_max(fmt))


# --- formats ----------------------------------------------------------------------------------
def test_fp8_format_by_arch(monkeypatch):
    from vllm_rocm_accel import platform

    assert rocm_accel_ops.fp8_dtype("cpu") == torch.float8_e4m3fn
    assert fp8.fp8_max(torch.float8_e4m3fnuz) == 240.0 == torch.finfo(torch.float8_e4m3fnuz).max
    assert fp8.fp8_max(torch.float8_e4m3fn) == 448.0 == torch.finfo(torch.float8_e4m3fn).max
    monkeypatch.setattr(platform, "platform_kind", lambda: "rocm")
    monkeypatch.setattr(platform, "device_index", lambda device: 0)
    for arch, fmt in (("gfx942", torch.float8_e4m3fnuz), ("gfx950", torch.float8_e4m3fn),
                      ("gfx90a", torch.float8_e4m3fn)):
        monkeypatch.setattr(platform, "device_arch", lambda index=0, _a=arch: _a)
        assert fp8.fp8_dtype(torch.device("cuda", 0)) == fmt, arch
    with pytest.raises(ValueError, match="not an FP8 format"):
        fp8.fp8_max(torch.float16)


# --- numerics ---------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("lead,hidden", [((1,), 64), ((7,), 200), ((2, 3), 96)])
def test_per_tensor_dynamic_and_static(seed, backend, dtype, fmt, lead, hidden):
    x = inputs(lead, hidden, dtype)
    q, s = rocm_accel_ops.per_tensor_quant(x, dtype=fmt, backend=backend)
    assert s.shape == (1,) and s.dtype == torch.float32
    torch.testing.assert_close(s.double(), expected_scale(x.double().abs().max(), fmt).reshape(1), rtol=1e-6, atol=0)
    check_quantized(q, s, x, fmt, f"dynamic {backend}")
    static = torch.tensor([0.005], dtype=torch.float32)
    q2, s2 = rocm_accel_ops.per_tensor_quant(x, static, dtype=fmt, backend=backend)
    assert torch.equal(s2, static) and s2.data_ptr() != static.data_ptr(), "the scale output aliases the input"
    check_quantized(q2, s2, x, fmt, f"static {backend}")  # clamps: 0.005 * 448 = 2.24 < max |x|
    assert (q2.double().abs() == fp8.fp8_max(fmt)).any()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("lead,hidden,row_pad", [((1,), 64, 0), ((7,), 200, 8), ((2, 3), 96, 0)])
def test_per_token(seed, backend, dtype, fmt, lead, hidden, row_pad):
    x = inputs(lead, hidden, dtype, row_pad=row_pad)
    x[..., 0, :] = 0  # an all-zero row: zeros and a finite scale
    q, s = rocm_accel_ops.per_token_quant(x, dtype=fmt, backend=backend)
    assert s.shape == lead + (1,) and s.dtype == torch.float32
    torch.testing.assert_close(s.double(), expected_scale(x.double().abs().amax(-1, keepdim=True), fmt),
                               rtol=1e-6, atol=0)
    check_quantized(q, s, x, fmt, f"per token {backend}")
    assert torch.equal(q[..., 0, :].double(), torch.zeros_like(x[..., 0, :], dtype=torch.float64))
    ub = torch.tensor(2.0)
    q2, s2 = rocm_accel_ops.per_token_quant(x, dtype=fmt, scale_ub=ub, backend=backend)
    torch.testing.assert_close(s2.double(), expected_scale(x.double().abs().amax(-1, keepdim=True).clamp(max=2.0), fmt),
                               rtol=1e-6, atol=0)
    check_quantized(q2, s2, x, fmt, f"per token scale_ub {backend}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("lead,hidden,group", [((1,), 256, 128), ((7,), 96, 32), ((2, 3), 128, 64), ((5,), 48, 16)])
@pytest.mark.parametrize("column_major", [False, True])
def test_per_token_group(seed, backend, dtype, fmt, lead, hidden, group, column_major):
    x = inputs(lead, hidden, dtype)
    x.reshape(-1, hidden)[0, :group] = 0  # an all-zero group
    q, s = rocm_accel_ops.per_token_group_quant(x, group, column_major, dtype=fmt, backend=backend)
    groups = hidden // group
    assert s.shape == lead + (groups,) and s.dtype == torch.float32
    tokens = math.prod(lead)
    if column_major:  # (size-1 dims have no meaningful stride)
        st = s.reshape(tokens, groups).stride()
        assert (tokens == 1 or st[0] == 1) and (groups == 1 or st[1] == tokens), f"scales not column-major: {st}"
    amax = x.double().reshape(lead + (groups, group)).abs().amax(-1)
    torch.testing.assert_close(s.double(), expected_scale(amax, fmt), rtol=1e-6, atol=0)
    s_full = s.unsqueeze(-1).expand(lead + (groups, group)).reshape(x.shape)
    check_quantized(q, s_full, x, fmt, f"group {backend}")
    assert torch.equal(q.reshape(-1, hidden)[0, :group].double(), torch.zeros(group, dtype=torch.float64))


@pytest.mark.parametrize("backend,fmt", [("torch", FORMATS[0]), ("torch", FORMATS[1]), ("triton", FORMATS[0])])
def test_4099_tokens(seed, backend, fmt):
    """M = 4099 (a partial last row tile after 4096) for every quant op, zero rows at both ends.
    A narrow hidden, one format and no option sweep on Triton keep the interpreter at ~17 s
    (options and formats are swept at small M above; they do not touch the row tiling)."""
    x = inputs((4099,), 32, torch.bfloat16)
    x[0], x[-1] = 0, 0
    q, s = rocm_accel_ops.per_tensor_quant(x, dtype=fmt, backend=backend)
    torch.testing.assert_close(s.double(), expected_scale(x.double().abs().max(), fmt).reshape(1), rtol=1e-6, atol=0)
    check_quantized(q, s, x, fmt, f"per tensor {backend}")
    q, s = rocm_accel_ops.per_token_quant(x, dtype=fmt, backend=backend)
    torch.testing.assert_close(s.double(), expected_scale(x.double().abs().amax(-1, keepdim=True), fmt),
                               rtol=1e-6, atol=0)
    check_quantized(q, s, x, fmt, f"per token {backend}")
    assert not q[0].double().any() and not q[-1].double().any()
    q, s = rocm_accel_ops.per_token_group_quant(x, 16, dtype=fmt, backend=backend)
    torch.testing.assert_close(s.double(), expected_scale(x.double().view(4099, 2, 16).abs().amax(-1), fmt),
                               rtol=1e-6, atol=0)
    check_quantized(q, s.repeat_interleave(16, -1), x, fmt, f"group {backend}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_backends_agree_on_values(seed, backend):
    """Switching backend changes quantized values by rounding at most: scales agree to float32
    rounding and q to one FP8 ulp."""
    x = inputs((9,), 256, torch.bfloat16)
    for fmt in FORMATS:
        qt, st = rocm_accel_ops.per_token_group_quant(x, 128, dtype=fmt, backend="torch")
        qb, sb = rocm_accel_ops.per_token_group_quant(x, 128, dtype=fmt, backend=backend)
        torch.testing.assert_close(sb, st, rtol=1e-6, atol=0)
        ulp = fp8_ulp(qt.double(), fmt)
        assert ((qb.double() - qt.double()).abs() <= ulp).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_zero_size(backend):
    x = torch.randn(0, 128)
    q, s = rocm_accel_ops.per_token_quant(x, backend=backend)
    assert q.shape == (0, 128) and s.shape == (0, 1)
    q, s = rocm_accel_ops.per_token_group_quant(x, 64, True, backend=backend)
    assert q.shape == (0, 128) and s.shape == (0, 2)
    q, s = rocm_accel_ops.per_tensor_quant(x, backend=backend)
    assert q.shape == (0, 128) and s.shape == (1,) and torch.isfinite(s).all()


# --- dispatch ---------------------------------------------------------------------------------
def test_auto_on_cpu_is_torch_and_aiter_refuses_with_a_reason(seed):
    x = inputs((3,), 128, torch.bfloat16)
    rocm_accel_ops.reset_call_counts()
    rocm_accel_ops.per_token_quant(x)
    rocm_accel_ops.per_token_group_quant(x)
    rocm_accel_ops.per_tensor_quant(x)
    assert rocm_accel_ops.call_counts() == {("per_token_quant", "torch"): 1, ("per_token_group_quant", "torch"): 1,
                                            ("per_tensor_quant", "torch"): 1}
    with pytest.raises(ValueError, match="backend 'aiter' cannot serve"):
        rocm_accel_ops.per_token_quant(x, backend="aiter")
    assert rocm_accel_ops.per_token_quant(x)[0].dtype == torch.float8_e4m3fn  # the CPU's format by default


def test_example_args_and_dispatchers():
    for op, disp in quant_ops.DISPATCHERS.items():
        args = quant_ops.example_args(op, 8, 4096, torch.bfloat16, torch.device("cpu"))
        assert disp.select("auto", args, None).name == "torch"


# --- bad input --------------------------------------------------------------------------------
BAD = [
    ("per_token_group_quant", lambda: (torch.randn(3, 200), 128), ValueError, "not a multiple of group_size=128"),
    ("per_token_group_quant", lambda: (torch.randn(3, 128), 0), ValueError, "group_size must be positive"),
    ("per_token_group_quant", lambda: (torch.randn(3, 128), 64.0), TypeError, "group_size must be an int"),
    ("per_token_group_quant", lambda: (torch.randn(3, 128), 64, 1), TypeError, "column_major_scales must be a bool"),
    ("per_token_quant", lambda: (torch.randn(3, 128), torch.float16), ValueError, "dtype must be"),
    ("per_token_quant", lambda: (torch.randn(3, 128), None, torch.tensor([1.0, 2.0])), ValueError, "scale_ub has shape"),
    ("per_token_quant", lambda: (torch.randn(3, 128), None, torch.tensor(1.0, dtype=torch.float16)), TypeError,
     "scale_ub has dtype"),
    ("per_token_quant", lambda: (torch.randint(0, 5, (3, 128)),), TypeError, "x has dtype"),
    ("per_token_quant", lambda: (torch.tensor(1.0),), ValueError, "x is 0-d"),
    ("per_tensor_quant", lambda: (torch.randn(3, 128), torch.tensor([0.1], dtype=torch.float64)), TypeError,
     "scale has dtype"),
    ("per_tensor_quant", lambda: (torch.randn(3, 128), [0.1]), TypeError, "scale must be a torch.Tensor"),
    ("per_tensor_quant", lambda: ("x",), TypeError, "x must be a torch.Tensor"),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op,make,exc,msg", BAD, ids=[f"{b[0]}-{b[3][:24]}" for b in BAD])
def test_bad_input_raises(backend, op, make, exc, msg):
    args = make()
    with pytest.raises(exc, match=msg):
        getattr(rocm_accel_ops, op)(*args, backend=backend)


def test_bad_input_through_the_registered_ops():
    ops = quant_ops.register()
    with pytest.raises(ValueError, match="not a multiple of group_size"):
        ops["per_token_group_quant"](torch.randn(2, 100), 64, False, None, "auto")
    with pytest.raises(ValueError, match="dtype must be"):
        ops["per_tensor_quant"](torch.randn(2, 64), None, torch.bfloat16, "auto")


# --- registration -----------------------------------------------------------------------------
EXPECTED_SCHEMAS = {
    "per_tensor_quant": "rocm_accel::per_tensor_quant(Tensor x, Tensor? scale=None, ScalarType? dtype=None, "
                        "str backend=\"auto\") -> (Tensor, Tensor)",
    "per_token_quant": "rocm_accel::per_token_quant(Tensor x, ScalarType? dtype=None, Tensor? scale_ub=None, "
                       "str backend=\"auto\") -> (Tensor, Tensor)",
    "per_token_group_quant": "rocm_accel::per_token_group_quant(Tensor x, SymInt group_size=128, "
                             "bool column_major_scales=False, ScalarType? dtype=None, str backend=\"auto\") "
                             "-> (Tensor, Tensor)",
}


def test_schemas():
    ops = quant_ops.register()
    for name, schema in EXPECTED_SCHEMAS.items():
        assert str(ops[name]._schema) == schema


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_opcheck(seed, backend, fmt):
    ops = quant_ops.register()
    x = inputs((3,), 128, torch.bfloat16)
    xs = inputs((2, 2), 64, torch.float32, row_pad=16)
    torch.library.opcheck(ops["per_tensor_quant"], (x, None, fmt, backend))
    torch.library.opcheck(ops["per_tensor_quant"], (x, torch.tensor([0.05]), fmt, backend))
    torch.library.opcheck(ops["per_token_quant"], (xs, fmt, None, backend))
    torch.library.opcheck(ops["per_token_quant"], (x, fmt, torch.tensor(1.5), backend))
    for column_major in (False, True):
        torch.library.opcheck(ops["per_token_group_quant"], (x, 64, column_major, fmt, backend))
        torch.library.opcheck(ops["per_token_group_quant"], (xs, 32, column_major, fmt, backend))


def test_compile_fullgraph_no_graph_break(seed):
    def quantize_all(h):
        q1, s1 = rocm_accel_ops.per_token_group_quant(h, 64, True)
        q2, s2 = rocm_accel_ops.per_token_quant(h)
        q3, s3 = rocm_accel_ops.per_tensor_quant(h)
        deq = (q1.float().reshape(h.shape[0], -1, 64) * s1.unsqueeze(-1)).reshape(h.shape)
        return deq + q2.float() * s2 + q3.float() * s3

    torch._dynamo.reset()
    compiled = torch.compile(quantize_all, fullgraph=True, dynamic=True)
    for rows in (5, 9):
        h = torch.randn(rows, 128)
        torch.testing.assert_close(compiled(h), quantize_all(h), atol=0, rtol=0)
    explain = torch._dynamo.explain(quantize_all)(h)
    assert explain.graph_break_count == 0
