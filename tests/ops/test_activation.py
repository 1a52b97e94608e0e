"""The activation family through the facade, on every backend this machine runs, against float64."""

import math

import pytest
import torch
import torch.nn.functional as F

from helpers import assert_close_verbose
from vllm_rocm_accel import rocm_accel_ops
from vllm_rocm_accel.inputs_activation import act_and_mul_inputs
from vllm_rocm_accel.ops import activation as act_ops
from vllm_rocm_accel.ops import register_all

BACKENDS = ["torch", "triton"]  # triton through TRITON_INTERPRET on the CPU
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
ULP = {torch.float32: 2.0**-23, torch.float16: 2.0**-10, torch.bfloat16: 2.0**-7}
VARIANTS = ["silu", "gelu", "gelu_tanh"]


def tol(dtype):
    """(atol, rtol). Two roundings to the dtype (the activation, then the product; vLLM's order),
    each <= half an ulp relative: <= 1 ulp together, so rtol = 2 ulps leaves a margin for the
    float32 exp/erf. atol: float32 evaluation of 1 + erf(g / sqrt 2) (and 1 + exp(-g)) for a
    very negative gate cancels; its absolute error is <~ |g| * 2^-24 <= 1e-6 for |g| <= 16,
    times |up| <= ~10 at scale 2: 1e-5 covers it (and fp16's subnormal steps, 6e-8)."""
    return 1e-5, 2 * ULP[dtype]


def ref(x: torch.Tensor, variant: str) -> torch.Tensor:
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


# (rows, d): a single token, odd widths (one column block and several with a ragged
# tail in the interpreter's 256-wide blocks), a 3-D batch, and d = 1
SHAPES = [((1,), 123), ((7,), 64), ((2, 3), 300), ((5,), 1), ((3,), 517)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows,d", SHAPES)
@pytest.mark.parametrize("variant", VARIANTS)
def test_matches_float64(seed, backend, dtype, rows, d, variant):
    x = act_and_mul_inputs(rows, d, dtype)
    x0 = x.clone()
    y = call(variant, x, backend=backend)
    assert y.shape == rows + (d,) and y.dtype == dtype
    assert_close_verbose(y, ref(x, variant), *tol(dtype), msg=f"{variant} {backend} {dtype} {rows}x{d}")
    assert torch.equal(x, x0), "the op changed its input"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("variant", VARIANTS)
def test_torch_backend_is_bit_identical_to_vllm_native(seed, dtype, variant):
    """Routing keeps tokens identical: the torch backend repeats vLLM's forward_native exactly."""
    x = act_and_mul_inputs((4, 3), 96, dtype, row_pad=8)  # N-D and row-strided
    d = x.shape[-1] // 2
    if variant == "silu":
        want = F.silu(x[..., :d]) * x[..., d:]  # vLLM 0.32 SiluAndMul.forward_native
    else:  # GeluAndMul.forward_native (non-ROCm)
        want = F.gelu(x[..., :d], approximate="tanh" if variant == "gelu_tanh" else "none") * x[..., d:]
    got = call(variant, x, backend="torch")
    assert torch.equal(got, want)
    try:
        from vllm.model_executor.layers.activation import SiluAndMul
    except ImportError:
        return
    if variant == "silu":
        assert torch.equal(got, SiluAndMul.forward_native(x))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_out_forms_and_strided_rows(seed, backend, variant):
    """x as a row-strided view (no copy on triton), out as a dense tensor and as a row-strided view."""
    dtype = torch.bfloat16
    x = act_and_mul_inputs((6,), 200, dtype, row_pad=24)
    assert x.stride() == (424, 1)
    if backend == "triton":
        assert act_ops._triton().supports_args(x) is None  # served in place, no copy
    want = call(variant, x, backend=backend)
    assert_close_verbose(want, ref(x, variant), *tol(dtype))

    out = torch.randn(6, 200).to(dtype)
    got = call(variant, x, out=out, backend=backend)
    assert got is out and torch.equal(out, want), "out= differs from the out-of-place form"

    big = torch.randn(6, 3 * 200).to(dtype)  # out = the middle third of each row
    before = big.clone()
    view = big[:, 200:400]
    call(variant, x, out=view, backend=backend)
    assert torch.equal(view, want)
    assert torch.equal(big[:, :200], before[:, :200]) and torch.equal(big[:, 400:], before[:, 400:]), \
        "the out= form wrote outside out"


@pytest.mark.parametrize("backend", BACKENDS)
def test_zero_rows(backend):
    for shape in ((0, 64), (2, 0, 64)):
        x = torch.randn(shape)
        y = rocm_accel_ops.silu_and_mul(x, backend=backend)
        assert y.shape == shape[:-1] + (32,)
        out = torch.empty(shape[:-1] + (32,))
        assert rocm_accel_ops.gelu_and_mul(x, "tanh", out=out, backend=backend) is out


def test_rows_triton_cannot_see_without_a_copy(seed):
    """A permuted batch has no single row stride: explicit triton says why, auto serves it anyway."""
    x = act_and_mul_inputs((3, 2), 40, torch.float32).permute(1, 0, 2)  # strides (80, 160, 1)
    with pytest.raises(ValueError, match="cannot be viewed as rows"):
        rocm_accel_ops.silu_and_mul(x, backend="triton")
    assert_close_verbose(rocm_accel_ops.silu_and_mul(x), ref(x, "silu"), *tol(torch.float32))
    out = torch.empty(3, 2, 40).permute(1, 0, 2)
    with pytest.raises(ValueError, match="out .* cannot be viewed as rows"):
        rocm_accel_ops.silu_and_mul(x.contiguous(), out=out, backend="triton")


def test_auto_on_cpu_is_torch_and_aiter_refuses_with_a_reason(seed):
    x = act_and_mul_inputs((3,), 16, torch.bfloat16)
    rocm_accel_ops.reset_call_counts()
    rocm_accel_ops.silu_and_mul(x)
    rocm_accel_ops.gelu_and_mul(x, out=torch.empty(3, 16, dtype=torch.bfloat16))
    assert rocm_accel_ops.call_counts() == {("silu_and_mul", "torch"): 1, ("gelu_and_mul", "torch"): 1}
    with pytest.raises(ValueError, match="backend 'aiter' cannot serve"):
        rocm_accel_ops.silu_and_mul(x, backend="aiter")
    with pytest.raises(ValueError, match="not one of"):
        rocm_accel_ops.gelu_and_mul(x, backend="cuda")


def test_example_args_and_dispatchers():
    args = act_ops.example_args("silu_and_mul", 8, 14336, torch.bfloat16, torch.device("cpu"))
    assert args[0].shape == (8, 2 * 14336) and args[1] is None
    shape = act_ops.SILU_AND_MUL.call_shape(*args)
    assert (shape.rows, shape.cols) == (8, 14336)
    gargs = act_ops.example_args("gelu_and_mul", 8, 64, torch.bfloat16, torch.device("cpu"))
    assert act_ops.GELU_AND_MUL.auto(gargs).name == "torch"
    assert set(act_ops.DISPATCHERS) == {"silu_and_mul", "gelu_and_mul"}


# --- bad input: clear errors naming the argument, nothing mutated -----------------------------
BAD = [
    (lambda x, o: dict(x=x[:, :-1]), ValueError, "x has last dim 63"),
    (lambda x, o: dict(x=torch.tensor(1.0)), ValueError, "x is 0-d"),
    (lambda x, o: dict(x=torch.empty(3, 0)), ValueError, "x has last dim 0"),
    (lambda x, o: dict(x=x.to(torch.int32)), TypeError, "x has dtype torch.int32"),
    (lambda x, o: dict(x=x.tolist()), TypeError, "x must be a torch.Tensor"),
    (lambda x, o: dict(x=x, out=o[:, :-1]), ValueError, "out has shape"),
    (lambda x, o: dict(x=x, out=o.to(torch.float16)), ValueError, "out has dtype"),
    (lambda x, o: dict(x=x, out=o.to("meta")), ValueError, "out is on meta"),
    (lambda x, o: dict(x=x, out=o.tolist()), TypeError, "out must be a torch.Tensor"),
    (lambda x, o: dict(x=x, out=o[:1].expand(3, 32)), ValueError, "several elements at one address"),
    (lambda x, o: dict(x=x, out=x[:, :32]), ValueError, "out shares memory with x"),
    (lambda x, o: dict(x=x, out=x[:, 32:]), ValueError, "out shares memory with x"),
]
BAD_APPROX = [
    ("sigmoid", ValueError, "approximate must be 'none' or 'tanh'"),
    (None, TypeError, "approximate must be a str"),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("make,exc,msg", BAD)
@pytest.mark.parametrize("op", ["silu", "gelu"])
def test_bad_input_raises_and_mutates_nothing(seed, backend, make, exc, msg, op):
    x, o = torch.randn(3, 64), torch.randn(3, 32)
    x0, o0 = x.clone(), o.clone()
    kwargs = make(x, o)
    with pytest.raises(exc, match=msg):
        if op == "silu":
            rocm_accel_ops.silu_and_mul(backend=backend, **kwargs)
        else:
            rocm_accel_ops.gelu_and_mul(approximate="tanh", backend=backend, **kwargs)
    assert torch.equal(x, x0) and torch.equal(o, o0), "a rejected call changed a tensor"


@pytest.mark.parametrize("approximate,exc,msg", BAD_APPROX)
def test_bad_approximate(seed, approximate, exc, msg):
    x, out = torch.randn(3, 64), torch.randn(3, 32)
    out0 = out.clone()
    with pytest.raises(exc, match=msg):
        rocm_accel_ops.gelu_and_mul(x, approximate)
    with pytest.raises(exc, match=msg):
        rocm_accel_ops.gelu_and_mul(x, approximate, out=out)
    assert torch.equal(out, out0)


def test_bad_input_through_the_registered_ops():
    """The ops themselves (not only the facade) check before any backend runs."""
    ops = register_all()
    x = torch.randn(3, 64)
    out = torch.randn(3, 31)
    out0 = out.clone()
    with pytest.raises(ValueError, match="x has last dim 63"):
        ops["silu_and_mul"](x[:, :63], "torch")
    with pytest.raises(ValueError, match="out has shape"):
        ops["silu_and_mul_out"](out, x, "triton")
    with pytest.raises(ValueError, match="approximate"):
        ops["gelu_and_mul_out"](torch.empty(3, 32), x, "erf", "torch")
    assert torch.equal(out, out0)


# --- registration ----------------------------------------------------------------------------
EXPECTED_SCHEMAS = {
    "silu_and_mul": 'rocm_accel::silu_and_mul(Tensor x, str backend="auto") -> Tensor',
    "silu_and_mul_out": 'rocm_accel::silu_and_mul_out(Tensor(a0!) out, Tensor x, str backend="auto") -> ()',
    "gelu_and_mul": 'rocm_accel::gelu_and_mul(Tensor x, str approximate="none", str backend="auto") -> Tensor',
    "gelu_and_mul_out": 'rocm_accel::gelu_and_mul_out(Tensor(a0!) out, Tensor x, str approximate="none", '
    'str backend="auto") -> ()',
}


def test_schemas():
    ops = act_ops.register()
    for name, schema in EXPECTED_SCHEMAS.items():
        assert str(ops[name]._schema) == schema
        assert getattr(torch.ops.rocm_accel, name).default is ops[name]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_opcheck(seed, backend, dtype):
    ops = act_ops.register()
    x = act_and_mul_inputs((3,), 40, dtype)
    xs = act_and_mul_inputs((2, 2), 24, dtype, row_pad=8)
    torch.library.opcheck(ops["silu_and_mul"], (x, backend))
    torch.library.opcheck(ops["silu_and_mul"], (xs, backend))
    torch.library.opcheck(ops["silu_and_mul_out"], (torch.empty(3, 40, dtype=dtype), x, backend))
    for approximate in ("none", "tanh"):
        torch.library.opcheck(ops["gelu_and_mul"], (x, approximate, backend))
        torch.library.opcheck(ops["gelu_and_mul_out"], (torch.empty(3, 40, dtype=dtype), x, approximate, backend))


def test_compile_fullgraph_no_graph_break(seed):
    def mlp(h, w_up, buf):
        x = h @ w_up  # (T, 2d) gate||up, as a fused projection
        a = rocm_accel_ops.silu_and_mul(x)
        b = rocm_accel_ops.gelu_and_mul(x, "tanh")
        rocm_accel_ops.gelu_and_mul(x, out=buf)
        return a + b + buf

    torch._dynamo.reset()
    compiled = torch.compile(mlp, fullgraph=True, dynamic=True)
    w_up = torch.randn(16, 2 * 24)
    for rows in (5, 9):  # a second shape exercises the symbolic row count
        h = torch.randn(rows, 16)
        got = compiled(h, w_up, torch.empty(rows, 24))
        want = mlp(h, w_up, torch.empty(rows, 24))
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    explain = torch._dynamo.explain(mlp)(h, w_up, torch.empty(rows, 24))
    assert explain.graph_break_count == 0


# --- vLLM layers -------------------------------------------------------------------------------
def test_vllm_layers_routed_bit_identical(seed):
    """With the plugin registered, vLLM builds our SiluAndMul/GeluAndMul; they call our ops and
    give vLLM's forward_native bits; inputs our ops cannot take go to vLLM's own code."""
    pytest.importorskip("vllm")
    from vllm.config import VllmConfig, set_current_vllm_config
    from vllm.model_executor.custom_op import op_registry_oot
    from vllm.model_executor.layers.activation import GeluAndMul, SiluAndMul

    from vllm_rocm_accel import plugin

    plugin.register()
    assert op_registry_oot["SiluAndMul"].__name__ == "RocmAccelSiluAndMul"
    assert op_registry_oot["GeluAndMul"].__name__ == "RocmAccelGeluAndMul"
    with set_current_vllm_config(VllmConfig()):
        silu, gelu, gelu_tanh = SiluAndMul(), GeluAndMul(), GeluAndMul(approximate="tanh")
    assert type(silu).__name__ == "RocmAccelSiluAndMul" and type(gelu_tanh).__name__ == "RocmAccelGeluAndMul"
    x = act_and_mul_inputs((5,), 48, torch.bfloat16)
    rocm_accel_ops.reset_call_counts()
    assert torch.equal(silu(x), SiluAndMul.forward_native(x))
    assert torch.equal(type(silu).forward_native(x), SiluAndMul.forward_native(x))  # still a staticmethod
    d = 48
    assert torch.equal(gelu(x), F.gelu(x[..., :d]) * x[..., d:])
    assert torch.equal(gelu_tanh(x), F.gelu(x[..., :d], approximate="tanh") * x[..., d:])
    assert rocm_accel_ops.call_counts() == {("silu_and_mul", "torch"): 2, ("gelu_and_mul", "torch"): 2}
    x64 = torch.randn(3, 8, dtype=torch.float64)  # not a dtype of ours: vLLM's own code serves it
    rocm_accel_ops.reset_call_counts()
    # When the custom op is disabled in vLLM's (cached) compilation config, vLLM runs
    # forward_native through torch.compile, whose silu/gelu may differ from eager in the last
    # bit: vLLM's own result, not ours, so compared at float64 precision rather than bitwise.
    torch.testing.assert_close(silu(x64), SiluAndMul.forward_native(x64), rtol=1e-14, atol=1e-15)
    torch.testing.assert_close(gelu(x64), F.gelu(x64[..., :4]) * x64[..., 4:], rtol=1e-14, atol=1e-15)
    assert rocm_accel_ops.call_counts() == {}
