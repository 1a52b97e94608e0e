"""The AITER norm adapter (``backends/aiter/norm.py``), checked without AMD hardware.

1. Every ``_aiter().NAME(...)`` call in the adapter modules binds to the real
   amd-aiter wheel's signatures (read with ``ast``, never imported).
2. With the torch model of aiter's contracts installed as ``aiter``, the
   adapters give rms_norm to within an ulp, honour in-place/out-of-place
   semantics, and pass what the kernels need (2-D views, distinct outputs).
3. ``supports_args`` refuses what the kernels cannot take, and accepts nothing
   the kernels' contract forbids.
4. The gate (platform, arch, AMD aiter, vLLM's flags) on simulated ROCm.
"""

from __future__ import annotations

import importlib
import inspect
import sys
import textwrap
from types import SimpleNamespace

import pytest
import torch

from aiter_model import model, wheel
from aiter_model.simulated_rocm import AMD_AITER, const, simulate_rocm
from helpers import assert_close_verbose
from vllm_rocm_accel import platform, settings
from vllm_rocm_accel.backends.aiter import norm as aiter_norm
from vllm_rocm_accel.ops import norm as ops_norm

# Adapter modules whose every `_aiter().NAME(...)` call is checked against the wheel.
# A new family's adapter is covered by adding its module here
# (test_every_aiter_adapter_module_is_listed fails until it is).
AITER_ADAPTER_MODULES = [
    "vllm_rocm_accel.backends.aiter.norm",
    "vllm_rocm_accel.backends.aiter.activation",
    "vllm_rocm_accel.backends.aiter.rope",
    "vllm_rocm_accel.backends.aiter.quant",
    "vllm_rocm_accel.backends.aiter.fused_quant",
    "vllm_rocm_accel.backends.aiter.gemm",
    "vllm_rocm_accel.backends.aiter.attention",
    "vllm_rocm_accel.backends.aiter.paged_attention",
    "vllm_rocm_accel.backends.aiter.kv_cache",
]

DTYPES = [torch.bfloat16, torch.float16]
# One rounding of a float32 result to a 16-bit float errs by at most half an ulp,
# i.e. <= eps/2 relative (eps = finfo.eps, the ulp at 1.0: 2^-7 bf16, 2^-10 fp16,
# the largest relative spacing), and the float32 arithmetic adds ~1e-6. So one
# ulp, rtol = eps (~7.8e-3 bf16, ~9.8e-4 fp16) with no atol, bounds a correct
# result with margin while a wrong weight, eps or row stride is far outside it.
# Below the smallest normal (6.1e-5 in fp16; bf16 shares fp32's range) the spacing
# is absolute, smallest_normal * eps (2^-24 fp16), which ATOL allows (one step).
RTOL = {dt: torch.finfo(dt).eps for dt in DTYPES}
ATOL = {dt: torch.finfo(dt).smallest_normal * torch.finfo(dt).eps for dt in DTYPES}
# Inputs are 0.1 * randn (mean square ~0.01), so EPS = 1e-3 moves the result by
# ~5%: an adapter that dropped or replaced eps would fail the comparison.
EPS = 1e-3
SCALE = 0.1


# ----------------------------------------------------------------------------
# 1. Signatures against the wheel
# ----------------------------------------------------------------------------
def test_wheel_resolves_norm_functions_to_ck_rmsnorm():
    # aiter/__init__.py star-imports ops.norm, ops.rmsnorm, ... in order, and
    # aiter/ops/triton/rmsnorm.py defines a different rms_norm: the CK one wins.
    sig = wheel.resolve_public_function("rms_norm")
    assert (sig.module, sig.relpath) == ("aiter.ops.rmsnorm", "aiter/ops/rmsnorm.py")
    assert [(p.name, p.kind, p.default) for p in sig.params] == [
        ("input", "positional_or_keyword", None),
        ("weight", "positional_or_keyword", None),
        ("epsilon", "positional_or_keyword", None),
        ("use_model_sensitive_rmsnorm", "positional_or_keyword", "0"),
    ]
    assert sig.returns == "Tensor"
    assert any(d.startswith("compile_ops(") for d in sig.decorators)
    assert sig.via and "from .ops.rmsnorm import *" in sig.via[0]

    add = wheel.resolve_public_function("rmsnorm2d_fwd_with_add")
    assert add.module == "aiter.ops.rmsnorm"
    assert [p.name for p in add.params] == [
        "out", "input", "residual_in", "residual_out", "weight", "epsilon", "use_model_sensitive_rmsnorm",
    ]
    assert [p.has_default for p in add.params] == [False] * 6 + [True]


@pytest.mark.parametrize("module", AITER_ADAPTER_MODULES)
def test_adapter_calls_bind_to_wheel(module):
    calls = wheel.check_adapter_module(module)
    assert calls, f"{module}: no aiter calls found"


def test_norm_adapter_calls_land_on_the_right_parameters():
    """Not just 'binds': each positional argument of the adapter lands where the kernel expects it."""
    calls = {c.name: c for c in wheel.scan_adapter_module("vllm_rocm_accel.backends.aiter.norm").calls}
    assert set(calls) == {"rms_norm", "rmsnorm2d_fwd_with_add"}
    bound = wheel.check_call("rms_norm", calls["rms_norm"].args_count, calls["rms_norm"].kwarg_names)
    assert list(bound.arguments) == ["input", "weight", "epsilon"]
    add = calls["rmsnorm2d_fwd_with_add"]
    bound = wheel.check_call(add.name, add.args_count, add.kwarg_names)
    assert list(bound.arguments) == ["out", "input", "residual_in", "residual_out", "weight", "epsilon"]


def test_every_aiter_adapter_module_is_listed():
    missing = sorted(set(wheel.discover_aiter_adapter_modules()) - set(AITER_ADAPTER_MODULES))
    assert not missing, f"aiter adapter modules not in AITER_ADAPTER_MODULES (their calls are unchecked): {missing}"


def test_check_call_reports_calls_that_do_not_bind():
    with pytest.raises(AssertionError, match=r"(?s)too many positional.*def rms_norm\(input: Tensor"):
        wheel.check_call("rms_norm", 5)
    with pytest.raises(AssertionError, match=r"unexpected keyword argument 'eps'"):
        wheel.check_call("rms_norm", 3, ["eps"])
    with pytest.raises(AssertionError, match=r"(?s)missing a required argument: 'epsilon'.*aiter/ops/rmsnorm.py:\d+"):
        wheel.check_call("rmsnorm2d_fwd_with_add", 5)
    with pytest.raises(AssertionError, match=r"multiple values for argument 'weight'"):
        wheel.check_call("rms_norm", 3, ["weight"])
    bound = wheel.check_call("rmsnorm2d_fwd_with_add", 5, ["epsilon", "use_model_sensitive_rmsnorm"])
    assert repr(bound.arguments["epsilon"]) == "<kw epsilon>"
    with pytest.raises(LookupError, match="no module-level binding"):
        wheel.check_call("no_such_function_in_aiter", 0)


def test_scanner_flags_aiter_uses_it_cannot_check():
    source = textwrap.dedent(
        """
        import aiter as eager

        def _aiter():
            import aiter
            return aiter

        def ok(x, w):
            return _aiter().rms_norm(x, w, 1e-6, use_model_sensitive_rmsnorm=0)

        def bound_accessor(x):
            a = _aiter()
            return a.rms_norm(x)

        def starred(args):
            return _aiter().rms_norm(*args)

        def passed_around():
            return map(_aiter, [])

        def dynamic():
            import importlib
            return importlib.import_module("aiter.ops.rmsnorm")
        """
    )
    scan = wheel.scan_adapter_source(source, "fake.py")
    assert [(c.name, c.args_count, c.kwarg_names) for c in scan.calls] == [
        ("rms_norm", 3, ("use_model_sensitive_rmsnorm",)),
    ]
    text = "\n".join(scan.problems)
    assert "fake.py:2: `import aiter as eager` outside _aiter()" in text
    assert "fake.py:12: `_aiter()` used other than as" in text
    assert "fake.py:16: `_aiter().rms_norm(*args)` passes *args/**kwargs" in text
    assert "fake.py:19: `_aiter` referenced without being called" in text
    assert "imports aiter dynamically" in text
    assert len(scan.problems) == 5, scan.problems


def test_resolver_follows_python_import_semantics(tmp_path):
    """Later star imports shadow earlier ones, __all__ limits them, explicit imports and conditionals count."""
    pkg = tmp_path / "aiter"
    (pkg / "ops").mkdir(parents=True)
    files = {
        "__init__.py": """
            from .ops.a import *
            from .ops.b import *
            from .ops.c import *
            from .ops.a import g as renamed
            from .ops.b import h
            h = 3
            if FLAG:
                def cond(x): ...
            """,
        "ops/__init__.py": "",
        "ops/a.py": """
            def f(a, b=1): ...
            def g(*, key=None): ...
            def only_in_a(p, /, q, *rest, **kw): ...
            """,
        "ops/b.py": """
            from torch import Tensor
            def f(x, y, z=2.5): ...
            def h(): ...
            def _private(): ...
            """,
        "ops/c.py": """
            __all__ = ["k"]
            def f(): ...
            from .a import only_in_a as k
            """,
    }
    for name, text in files.items():
        (pkg / name).write_text(textwrap.dedent(text))

    def resolve(name):
        return wheel.resolve_public_function(name, root=pkg)

    f = resolve("f")  # b shadows a; c's f is not in c.__all__
    assert f.relpath == "aiter/ops/b.py" and [p.name for p in f.params] == ["x", "y", "z"] and f.params[2].default == "2.5"
    k = resolve("k")
    assert (k.def_name, k.relpath) == ("only_in_a", "aiter/ops/a.py") and len(k.via) == 2
    assert [p.kind for p in k.params] == ["positional_only", "positional_or_keyword", "var_positional", "var_keyword"]
    renamed = resolve("renamed")
    assert renamed.def_name == "g" and renamed.params[0].kind == "keyword_only"
    with pytest.raises(LookupError, match="a class or an assignment"):
        resolve("h")  # rebound by `h = 3` after the import
    with pytest.raises(LookupError, match="conditional block"):
        resolve("cond")
    with pytest.raises(LookupError, match="no module-level binding of '_private'"):
        resolve("_private")  # star imports skip private names
    with pytest.raises(LookupError, match="import from outside the aiter package"):
        resolve("Tensor")
    with pytest.raises(AssertionError, match=r"unexpected keyword argument 'key'"):
        wheel.check_call("f", 2, ["key"], root=pkg)


@pytest.mark.parametrize("name", model.MODELLED)
def test_model_signatures_match_wheel(name):
    assert wheel.signature_mismatches(getattr(model, name), wheel.resolve_public_function(name)) == []


def test_signature_mismatches_reports_drift():
    real = wheel.resolve_public_function("rms_norm")

    def drifted(input, weight, eps, use_model_sensitive_rmsnorm=1): ...

    def keyword_only(input, weight, *, epsilon, use_model_sensitive_rmsnorm=0): ...

    assert any("parameter names" in m for m in wheel.signature_mismatches(drifted, real))
    assert any("default 1 != wheel's 0" in m for m in wheel.signature_mismatches(drifted, real))
    assert wheel.signature_mismatches(keyword_only, real) == [
        "epsilon: kind keyword_only != wheel's positional_or_keyword",
        "use_model_sensitive_rmsnorm: kind keyword_only != wheel's positional_or_keyword",
    ]


# ----------------------------------------------------------------------------
# 2. The model's contract
# ----------------------------------------------------------------------------
def test_model_enforces_the_kernels_contract(fake_aiter, seed):
    import aiter  # the model, installed by the fixture

    assert aiter is fake_aiter and aiter.rms_norm is model.rms_norm and aiter.CALLS is model.CALLS
    x = torch.randn(4, 64, dtype=torch.bfloat16)
    r = torch.randn(4, 64, dtype=torch.bfloat16)
    w = torch.randn(64, dtype=torch.bfloat16)
    out, ro = torch.empty_like(x), torch.empty_like(x)
    bad = [
        (lambda: aiter.rms_norm(x.float(), w.float(), EPS), "only supports float16 and bfloat16"),
        (lambda: aiter.rms_norm(x, w.half(), EPS), "weight dtype torch.float16 != input dtype"),
        (lambda: aiter.rms_norm(x.view(2, 2, 64), w, EPS), "must be 2-D"),
        (lambda: aiter.rms_norm(x.t().contiguous().t(), w, EPS), "last-dim stride 4"),
        (lambda: aiter.rms_norm(x, torch.randn(128, dtype=torch.bfloat16)[::2], EPS), "weight has stride 2"),
        (lambda: aiter.rms_norm(x, w[:32], EPS), r"weight must be \(64,\)"),
        (lambda: aiter.rms_norm(x, w, torch.tensor(EPS)), "epsilon must be a Python float"),
        (lambda: aiter.rmsnorm2d_fwd_with_add(x, x, r, ro, w, EPS), "out shares memory with input"),
        (lambda: aiter.rmsnorm2d_fwd_with_add(out, x, r, r, w, EPS), "residual_out shares memory with residual_in"),
        (lambda: aiter.rmsnorm2d_fwd_with_add(out, x, r, out, w, EPS), "out shares memory with residual_out"),
        (lambda: aiter.rmsnorm2d_fwd_with_add(out.half(), x, r, ro, w, EPS), "out has dtype torch.float16"),
        (lambda: aiter.rmsnorm2d_fwd_with_add(out, x, r[:3], ro, w, EPS), "residual_in has shape"),
    ]
    for call, message in bad:
        with pytest.raises(model.AiterContractError, match=message):
            call()
    assert len(model.CALLS) == len(bad)  # recorded before being checked
    assert model.CALLS[0].tensor("input").dtype == torch.float32


def test_model_rounds_once_like_ck(fake_aiter, seed):
    """AITER rounds y = x * inv_rms * w once; the two-pass pipeline (hidden > 8192) normalises the stored sum."""
    x = (torch.randn(8, 4096) * 3).to(torch.bfloat16)
    w = (torch.randn(4096) * 3).to(torch.bfloat16)
    y = model.rms_norm(x, w, 1e-6)
    xf = x.float()
    inv = torch.rsqrt((xf * xf).sum(-1, keepdim=True) / 4096 + 1e-6)
    assert torch.equal(y, (xf * inv * w.float()).to(torch.bfloat16))
    double_rounded = (xf * inv).to(torch.bfloat16).float().mul(w.float()).to(torch.bfloat16)
    assert not torch.equal(y, double_rounded)  # the difference vLLM's kernel would make

    for hidden, two_pass in ((8192, False), (8200, True)):
        x = torch.randn(2, hidden, dtype=torch.bfloat16)
        r = torch.randn(2, hidden, dtype=torch.bfloat16)
        w = torch.randn(hidden, dtype=torch.bfloat16)
        out, ro = torch.empty_like(x), torch.empty_like(x)
        model.rmsnorm2d_fwd_with_add(out, x, r, ro, w, 1e-6)
        acc = x.float() + r.float()
        assert torch.equal(ro, acc.to(torch.bfloat16))
        inv = torch.rsqrt((acc * acc).sum(-1, keepdim=True) / hidden + 1e-6)
        source = ro.float() if two_pass else acc
        assert torch.equal(out, (source * inv * w.float()).to(torch.bfloat16)), hidden


# ----------------------------------------------------------------------------
# 3. The adapters on the model
# ----------------------------------------------------------------------------
LAYOUTS = ["3d", "2d_row_strided", "3d_row_strided"]


def _make(layout: str, hidden: int, dtype: torch.dtype, pad: int):
    """(x, base, view): x lives in base; view(t) takes x's region of any tensor shaped like base."""
    if layout == "3d":
        base = torch.randn(2, 5, hidden) * SCALE
        view = lambda t: t  # noqa: E731
    elif layout == "2d_row_strided":  # a column slice of a wider tensor: row stride hidden + pad
        base = torch.randn(7, hidden + pad) * SCALE
        view = lambda t: t[:, :hidden]  # noqa: E731
    else:  # 3-D slice: strides (5 * (hidden + pad), hidden + pad, 1), still one 2-D view
        base = torch.randn(2, 5, hidden + pad) * SCALE
        view = lambda t: t[..., :hidden]  # noqa: E731
    base = base.to(dtype)
    return view(base), base, view


def _rms_norm_ref(x: torch.Tensor, weight, eps: float) -> torch.Tensor:
    x64 = x.double()
    y = x64 * torch.rsqrt(x64.pow(2).mean(-1, keepdim=True) + eps)
    return y * weight.double() if weight is not None else y


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.int16)


def _weight(with_weight: bool, hidden: int, dtype: torch.dtype):
    return torch.randn(hidden).to(dtype) if with_weight else None


def _check_passed_weight(call: model.Call, weight, hidden: int, dtype: torch.dtype) -> None:
    w = call.tensor("weight")
    assert (w.shape, w.stride, w.dtype) == ((hidden,), (1,), dtype)
    if weight is not None:
        assert w.data_ptr == weight.data_ptr()


@pytest.mark.parametrize("with_weight", [True, False], ids=["weight", "no_weight"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("hidden", [123, 4096])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_rms_norm_adapter(fake_aiter, seed, dtype, hidden, layout, with_weight):
    x, base, _ = _make(layout, hidden, dtype, pad=37)
    base_before = base.clone()
    weight = _weight(with_weight, hidden, dtype)
    expected = _rms_norm_ref(x, weight, EPS)

    out = aiter_norm.rms_norm(x, weight, EPS)

    assert out.shape == x.shape and out.dtype == dtype
    assert_close_verbose(out, expected, atol=ATOL[dtype], rtol=RTOL[dtype], msg=f"rms_norm {layout}")
    assert torch.equal(_bits(base), _bits(base_before)), "rms_norm wrote to its input"

    [call] = fake_aiter.CALLS
    assert call.name == "rms_norm"
    inp = call.tensor("input")
    rows = x.numel() // hidden
    assert inp.shape == (rows, hidden) and inp.stride == (base.stride(-2), 1)
    assert inp.data_ptr == x.data_ptr(), "the adapter copied x instead of passing a 2-D view"
    _check_passed_weight(call, weight, hidden, dtype)
    assert call.args["epsilon"] == EPS and call.args["use_model_sensitive_rmsnorm"] == 0


@pytest.mark.parametrize("inplace", [False, True], ids=["out_of_place", "inplace"])
@pytest.mark.parametrize("with_weight", [True, False], ids=["weight", "no_weight"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("hidden", [123, 4096])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_fused_add_rms_norm_adapter(fake_aiter, seed, dtype, hidden, layout, with_weight, inplace):
    x, xbase, view = _make(layout, hidden, dtype, pad=37)
    r, rbase, rview = _make(layout, hidden, dtype, pad=11)  # different row stride from x's
    xbase_before, rbase_before = xbase.clone(), rbase.clone()
    weight = _weight(with_weight, hidden, dtype)
    total = x.clone().double() + r.clone().double()
    expected_out, expected_residual = _rms_norm_ref(total, weight, EPS), total

    out, residual = aiter_norm.fused_add_rms_norm(x, r, weight, EPS, inplace)

    assert out.shape == x.shape and residual.shape == r.shape and out.dtype == residual.dtype == dtype
    assert_close_verbose(out, expected_out, atol=ATOL[dtype], rtol=RTOL[dtype], msg=f"out {layout}")
    assert_close_verbose(residual, expected_residual, atol=ATOL[dtype], rtol=RTOL[dtype], msg=f"residual {layout}")
    if inplace:
        assert out is x and residual is r
        # x and residual now hold the results; the rest of their storage (padding) is untouched.
        want_x, want_r = xbase_before.clone(), rbase_before.clone()
        view(want_x).copy_(out)
        rview(want_r).copy_(residual)
        assert torch.equal(_bits(xbase), _bits(want_x)) and torch.equal(_bits(rbase), _bits(want_r))
    else:
        assert torch.equal(_bits(xbase), _bits(xbase_before)), "out-of-place form changed x"
        assert torch.equal(_bits(rbase), _bits(rbase_before)), "out-of-place form changed residual"
        assert out.data_ptr() not in (x.data_ptr(), r.data_ptr())
        assert residual.data_ptr() not in (x.data_ptr(), r.data_ptr(), out.data_ptr())

    [call] = fake_aiter.CALLS
    assert call.name == "rmsnorm2d_fwd_with_add"
    rows = x.numel() // hidden
    info = {k: call.tensor(k) for k in ("out", "input", "residual_in", "residual_out")}
    assert all(t.shape == (rows, hidden) for t in info.values())
    assert info["input"].data_ptr == x.data_ptr() and info["input"].stride == (xbase.stride(-2), 1)
    assert info["residual_in"].data_ptr == r.data_ptr() and info["residual_in"].stride == (rbase.stride(-2), 1)
    ptrs = [t.data_ptr for t in info.values()]
    assert len(set(ptrs)) == 4, "outputs must be distinct from the inputs and each other"
    _check_passed_weight(call, weight, hidden, dtype)
    assert call.args["epsilon"] == EPS


# ----------------------------------------------------------------------------
# 4. supports_args
# ----------------------------------------------------------------------------
def test_supports_args(seed):
    H = 64
    x = torch.randn(2, 3, H, dtype=torch.bfloat16)
    w = torch.randn(H, dtype=torch.bfloat16)
    assert aiter_norm.supports_args(x, w, EPS) is None
    assert aiter_norm.supports_args(x, None, EPS) is None
    assert aiter_norm.supports_args(x[:, :, :].reshape(6, H)[::2], w, EPS) is None  # row-strided 2-D

    assert "float16/bfloat16" in aiter_norm.supports_args(x.float(), w.float(), EPS)
    assert "weight dtype" in aiter_norm.supports_args(x, w.half(), EPS)
    last_dim_strided = torch.randn(2, 3, 2 * H, dtype=torch.bfloat16)[..., ::2]
    assert last_dim_strided.stride(-1) == 2
    assert "unit-stride" in aiter_norm.supports_args(last_dim_strided, w, EPS)
    permuted = torch.randn(3, 2, H, dtype=torch.bfloat16).permute(1, 0, 2)  # (2, 3, H), strides (H, 2H, 1)
    assert "without a copy" in aiter_norm.supports_args(permuted, w, EPS)
    assert aiter_norm.supports_args(permuted.contiguous(), w, EPS) is None

    r = torch.randn_like(x)
    assert aiter_norm.supports_args_add(x, r, w, EPS) is None
    assert aiter_norm.supports_args_add(x, r, None, EPS) is None
    assert "residual" in aiter_norm.supports_args_add(x, r.permute(1, 0, 2).contiguous().permute(1, 0, 2), w, EPS)
    assert "float16/bfloat16" in aiter_norm.supports_args_add(x.float(), r.float(), None, EPS)


def _rand(*shape, dtype=torch.bfloat16):
    return (torch.randn(*shape) * SCALE).to(dtype)


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(lambda H: (_rand(3, 1, 4, H), _rand(H)), id="dense_4d"),
        pytest.param(lambda H: (_rand(1, H).expand(4, H), _rand(H)), id="expanded_rows"),
        pytest.param(lambda H: (_rand(4, 2 * H)[:, H:], None), id="row_strided_no_weight"),
        # (2, 1, H) with stride (H, 2H, 1): contiguous, the size-1 dim's stride is arbitrary
        pytest.param(lambda H: (_rand(1, 2, H).transpose(0, 1), _rand(H)), id="size1_dim_any_stride"),
    ],
)
def test_supports_args_admits_only_what_the_kernel_contract_allows(fake_aiter, seed, case):
    """Whatever supports_args accepts must run on the model without a contract error, and be right."""
    H, dtype = 96, torch.bfloat16
    x, weight = case(H)
    assert aiter_norm.supports_args(x, weight, EPS) is None, "case meant to be accepted"
    out = aiter_norm.rms_norm(x, weight, EPS)
    assert_close_verbose(out, _rms_norm_ref(x, weight, EPS), atol=ATOL[dtype], rtol=RTOL[dtype])
    x, r = x.contiguous(), _rand(*x.shape)
    assert aiter_norm.supports_args_add(x, r, weight, EPS) is None
    out, _ = aiter_norm.fused_add_rms_norm(x, r, weight, EPS, False)
    assert_close_verbose(out, _rms_norm_ref(x.double() + r.double(), weight, EPS), atol=ATOL[dtype], rtol=RTOL[dtype])


@pytest.mark.parametrize("make_weight", [lambda H: _rand(2 * H)[::2], lambda H: _rand(1).expand(H)],
                         ids=["strided_weight", "expanded_weight"])
def test_supports_args_refuses_a_weight_the_kernel_would_misread(make_weight):
    """CK reads the weight as contiguous: a strided or expanded weight must go to another backend."""
    H = 96
    x, r, w = _rand(4, H), _rand(4, H), make_weight(H)
    assert "strided weight" in aiter_norm.supports_args(x, w, EPS)
    assert "strided weight" in aiter_norm.supports_args_add(x, r, w, EPS)


# ----------------------------------------------------------------------------
# 5. The gate
# ----------------------------------------------------------------------------
PYPI_AITER = platform.AiterInstall(
    True, False, "/opt/venv/site-packages/aiter", "aiter", "0.13",
    "the aiter at /opt/venv/site-packages/aiter (aiter) is not AMD's AITER "
    "(PyPI's 'aiter' is an async-iterator library; install amd-aiter)",
)


@pytest.fixture
def simulate():
    """simulate(kind=, arch=, install=, **env): fake the platform and the AITER flags, re-read settings."""
    with pytest.MonkeyPatch.context() as mp:

        def apply(kind="rocm", arch="gfx942", install=AMD_AITER, **env):
            simulate_rocm(mp, arch, kind, install, **env)
            settings.refresh()

        yield apply
    settings.refresh()  # after the undo: the real platform and environment, every cache cleared


def _aiter_reason(dispatcher=ops_norm.RMS_NORM, device=torch.device("cuda", 0)):
    return dispatcher.unsupported_reason(dispatcher.backends["aiter"], device)


def test_gate_open_on_gfx942_with_amd_aiter(simulate):
    simulate(VLLM_ROCM_USE_AITER="1")
    assert _aiter_reason() is None
    assert _aiter_reason(ops_norm.FUSED_ADD_RMS_NORM) is None
    assert "cpu" in _aiter_reason(device=torch.device("cpu"))


def test_gate_master_flag(simulate):
    simulate(VLLM_ROCM_USE_AITER="0")
    reason = _aiter_reason()
    assert reason is not None and "VLLM_ROCM_USE_AITER=0" in reason and "environment" in reason
    simulate()  # unset: vLLM's default is off
    reason = _aiter_reason()
    assert reason is not None and "VLLM_ROCM_USE_AITER=0" in reason and "default" in reason


def test_gate_rmsnorm_flag(simulate):
    simulate(VLLM_ROCM_USE_AITER="1", VLLM_ROCM_USE_AITER_RMSNORM="0")
    reason = _aiter_reason()
    assert reason is not None and "VLLM_ROCM_USE_AITER_RMSNORM=0" in reason
    simulate(VLLM_ROCM_USE_AITER="1", VLLM_ROCM_USE_AITER_RMSNORM="1", VLLM_ROCM_USE_AITER_MOE="0")
    assert _aiter_reason() is None  # another feature's flag does not matter


def test_gate_arch(simulate):
    simulate(arch="gfx1100", VLLM_ROCM_USE_AITER="1")
    reason = _aiter_reason()
    assert reason is not None and "gfx1100" in reason
    simulate(arch="gfx950", VLLM_ROCM_USE_AITER="1")
    assert _aiter_reason() is None


def test_gate_pypi_aiter(simulate):
    simulate(install=PYPI_AITER, VLLM_ROCM_USE_AITER="1")
    reason = _aiter_reason()
    assert reason == PYPI_AITER.why and "not AMD's" in reason


def test_gate_not_rocm(simulate):
    simulate(kind="cuda", arch="sm_90", VLLM_ROCM_USE_AITER="1")
    assert "platform is cuda" in _aiter_reason()


def test_aiter_install_tells_pypi_aiter_from_amd_without_importing(tmp_path):
    pkg = tmp_path / "aiter"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("raise ImportError('aiter must not be imported by detection')\n")
    assert "aiter" not in sys.modules
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(tmp_path))
        platform.clear_caches()
        info = platform.aiter_install()
        assert info.found and not info.is_amd and info.location == str(pkg)
        assert "PyPI" in info.why and "not AMD's" in info.why

        (pkg / "jit").mkdir()
        (pkg / "jit" / "core.py").write_text("raise ImportError('not this either')\n")
        (pkg / "ops").mkdir()
        importlib.invalidate_caches()
        assert not platform.aiter_install().is_amd  # cached until cleared
        platform.clear_caches()
        info = platform.aiter_install()
        assert info.found and info.is_amd and str(pkg) in info.why
        assert "aiter" not in sys.modules
    platform.clear_caches()
    assert "aiter" not in sys.modules


def test_normalize_gcn_arch():
    assert platform.normalize_gcn_arch("gfx942:sramecc+:xnack-") == "gfx942"
    assert platform.normalize_gcn_arch("gfx90a:sramecc-:xnack+") == "gfx90a"
    assert platform.normalize_gcn_arch("GFX950 ") == "gfx950"


def test_device_arch_reads_gcn_arch_name():
    archs = {0: "gfx942:sramecc+:xnack-", 1: "gfx1100"}
    asked = []

    def props(index):
        asked.append(index)
        return SimpleNamespace(gcnArchName=archs[index], major=9, minor=4, name="AMD Instinct")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(platform, "platform_kind", const("rocm"))
        mp.setattr(torch.cuda, "get_device_properties", props)
        platform.clear_caches()
        assert platform.device_arch(0) == "gfx942"
        assert platform.device_arch(1) == "gfx1100"
        assert platform.is_gfx9(0) and not platform.is_gfx9(1)
        assert platform.device_arch(0) == "gfx942" and asked == [0, 1]  # cached per index
    platform.clear_caches()


def test_if_aiter_supported(simulate, seed):
    ran = []

    @platform.if_aiter_supported
    def double(t):
        ran.append(t)
        return t * 2

    assert inspect.signature(double) == inspect.signature(double.__wrapped__)
    x = torch.randn(5)
    for kind in ("cpu", "cuda"):
        simulate(kind=kind, VLLM_ROCM_USE_AITER="1")
        assert double(x) is None
    simulate(arch="gfx1100")
    assert double(x) is None
    simulate(install=PYPI_AITER)
    assert double(x) is None
    assert ran == []
    simulate(VLLM_ROCM_USE_AITER="0")  # flags are not considered, only platform + arch + AMD aiter
    assert torch.equal(double(x), x * 2) and ran == [x]
