"""The AITER activation adapter (``backends/aiter/activation.py``), checked without AMD hardware.

1. The model's functions have the real amd-aiter wheel's signatures, and each adapter call
   lands its arguments on the right parameters (``test_aiter_norm.py`` also binds every
   ``_aiter().NAME(...)`` call of this module against the wheel).
2. The torch model enforces the HIP kernel's contract.
3. With the model installed as ``aiter``, the adapter is right to within one rounding and
   passes what the kernel needs (x itself, no copy; a distinct dense out).
4. ``supports_args`` refuses what the kernel cannot take, and whatever it accepts runs on
   the model without a contract error.
5. The gate: ROCm gfx9 + AMD aiter + the master flag alone (vLLM has no activation flag).
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from aiter_model import model, model_activation, wheel
from aiter_model.simulated_rocm import simulate_rocm
from helpers import assert_close_verbose
from vllm_rocm_accel import policy, settings
from vllm_rocm_accel.backends.aiter import activation as aiter_act
from vllm_rocm_accel.inputs_activation import act_and_mul_inputs
from vllm_rocm_accel.ops import activation as ops_act

DTYPES = [torch.bfloat16, torch.float16]
# AITER rounds act(g) * up once: half an ulp relative; rtol = eps (one ulp at 1.0) bounds it
# with margin, atol one subnormal step of fp16. Float32 act error is ~1e-6 relative, except
# 1 + erf(g / sqrt 2) for g << 0 (absolute error |g| * 2^-24 times |up|): atol 1e-5 below.
RTOL = {dt: torch.finfo(dt).eps for dt in DTYPES}
ATOL = 1e-5
FNS = {"silu": "silu_and_mul", "gelu": "gelu_and_mul", "gelu_tanh": "gelu_tanh_and_mul"}


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


def run(variant, x, out=None):
    if variant == "silu":
        return aiter_act.silu_and_mul(x, out)
    return aiter_act.gelu_and_mul(x, "tanh" if variant == "gelu_tanh" else "none", out)


# ----------------------------------------------------------------------------
# 1. Signatures
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", model_activation.MODELLED)
def test_model_signatures_match_wheel(name):
    real = wheel.resolve_public_function(name)
    assert (real.module, real.relpath) == ("aiter.ops.activation", "aiter/ops/activation.py")
    assert [p.name for p in real.params] == ["out", "input"]
    assert wheel.signature_mismatches(getattr(model_activation, name), real) == []


def test_adapter_calls_land_on_the_right_parameters():
    calls = {c.name: c for c in wheel.scan_adapter_module("vllm_rocm_accel.backends.aiter.activation").calls}
    assert set(calls) == set(FNS.values())
    for name, c in calls.items():
        bound = wheel.check_call(name, c.args_count, c.kwarg_names)
        assert list(bound.arguments) == ["out", "input"]
        assert c.source.endswith("(out, x)"), c.source  # out first, as the kernel's signature


def test_fake_aiter_exposes_the_activation_models(fake_aiter):
    import aiter

    for name in FNS.values():
        assert getattr(aiter, name) is getattr(model_activation, name)
    assert aiter.rms_norm is model.rms_norm and aiter.MODELLED == model.MODELLED  # norm's names intact


# ----------------------------------------------------------------------------
# 2. The model's contract
# ----------------------------------------------------------------------------
def test_vector_width_matches_the_kernel():
    for d in list(range(1, 1100)) + [4096, 5121, 11008, 14336, 14337]:
        assert aiter_act.vector_width(d) == model_activation.kernel_vec_size(d), d
    assert [model_activation.kernel_vec_size(d) for d in (63, 64, 127, 128, 192, 256, 512, 14336)] == \
        [1, 1, 1, 2, 4, 4, 8, 8]


def test_model_enforces_the_kernels_contract(fake_aiter, seed):
    import aiter

    x = act_and_mul_inputs((4,), 256, torch.bfloat16)
    out = torch.empty(4, 256, dtype=torch.bfloat16)
    odd = act_and_mul_inputs((4,), 260, torch.bfloat16)  # vec 4: 260 % 4 == 0 ...
    ragged = act_and_mul_inputs((4,), 258, torch.bfloat16)  # ... 258 % 4 != 0
    buf = torch.randn(4 * 512 + 1).to(torch.bfloat16)
    bad = [
        (lambda: aiter.silu_and_mul(out.float(), x.float()), "float16 and bfloat16 only"),
        (lambda: aiter.silu_and_mul(out, act_and_mul_inputs((4,), 256, torch.bfloat16, row_pad=8)), "not contiguous"),
        (lambda: aiter.silu_and_mul(torch.empty(256, 4, dtype=torch.bfloat16).t(), x), "out .* is not contiguous"),
        (lambda: aiter.gelu_and_mul(out.half(), x), "out has dtype torch.float16"),
        (lambda: aiter.gelu_and_mul(out[:3], x), "out has shape"),
        (lambda: aiter.gelu_tanh_and_mul(torch.empty(4, 258, dtype=torch.bfloat16), ragged), "vector width 4"),
        (lambda: aiter.silu_and_mul(out[:0], x[:0]), "no rows"),
        (lambda: aiter.silu_and_mul(out, buf[1:].view(4, 512)), "not aligned"),
        (lambda: aiter.silu_and_mul(x.view(-1)[:1024].view(4, 256), x), "out shares memory with input"),
        (lambda: aiter.silu_and_mul(out, x[:, :511]), r"\(\.\.\., 2 \* d\)"),
    ]
    for call, message in bad:
        with pytest.raises(model.AiterContractError, match=message):
            call()
    assert len(model.CALLS) == len(bad)  # recorded before being checked
    aiter.silu_and_mul(torch.empty(4, 260, dtype=torch.bfloat16), odd)  # and a good call runs


@pytest.mark.parametrize("variant", list(FNS))
def test_model_rounds_once(seed, variant):
    x = act_and_mul_inputs((8,), 256, torch.bfloat16)
    out = torch.empty(8, 256, dtype=torch.bfloat16)
    getattr(model_activation, FNS[variant])(out, x)
    assert_close_verbose(out, ref(x, variant), ATOL, RTOL[torch.bfloat16] / 2 + 1e-6)


# ----------------------------------------------------------------------------
# 3. The adapter on the model
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("variant", list(FNS))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows,d", [((1,), 64), ((7,), 200), ((2, 3), 512), ((3,), 14336)])
def test_adapter_on_the_model(fake_aiter, seed, variant, dtype, rows, d):
    x = act_and_mul_inputs(rows, d, dtype)
    x0 = x.clone()
    assert aiter_act.supports_args(x) is None
    y = run(variant, x)
    assert y.shape == rows + (d,) and y.dtype == dtype and y.is_contiguous()
    assert_close_verbose(y, ref(x, variant), ATOL, RTOL[dtype], msg=f"{variant} {dtype} {rows}x{d}")
    assert torch.equal(x, x0)
    [call] = fake_aiter.CALLS
    assert call.name == FNS[variant]
    assert call.tensor("input").data_ptr == x.data_ptr() and call.tensor("input").shape == tuple(x.shape)
    assert call.tensor("out").data_ptr == y.data_ptr() != x.data_ptr()

    out = torch.empty(rows + (d,), dtype=dtype)
    assert run(variant, x, out) is out and torch.equal(out, y)
    assert fake_aiter.CALLS[-1].tensor("out").data_ptr == out.data_ptr()


def test_adapter_skips_zero_rows(fake_aiter):
    x = torch.empty(0, 128, dtype=torch.bfloat16)
    assert aiter_act.silu_and_mul(x).shape == (0, 64)
    assert fake_aiter.CALLS == []  # no zero-block launch


# ----------------------------------------------------------------------------
# 4. supports_args
# ----------------------------------------------------------------------------
def test_supports_args_refuses_what_the_kernel_cannot_take(seed):
    x = act_and_mul_inputs((4,), 256, torch.bfloat16)
    assert aiter_act.supports_args(x) is None
    assert aiter_act.supports_args(x, torch.empty(4, 256, dtype=torch.bfloat16)) is None
    assert "float16/bfloat16" in aiter_act.supports_args(x.float())
    assert "not contiguous" in aiter_act.supports_args(act_and_mul_inputs((4,), 256, torch.bfloat16, row_pad=8))
    assert "out" in aiter_act.supports_args(x, torch.empty(4, 512, dtype=torch.bfloat16)[:, :256])
    assert "vector width 8" in aiter_act.supports_args(act_and_mul_inputs((2,), 5121, torch.bfloat16))
    assert "vector width 2" in aiter_act.supports_args(act_and_mul_inputs((2,), 131, torch.float16))
    buf = torch.randn(4 * 512 + 8).to(torch.bfloat16)
    assert "aligned" in aiter_act.supports_args(buf[1:1 + 4 * 512].view(4, 512))
    assert aiter_act.supports_args(buf[8:].view(4, 512)) is None  # 16-byte aligned offset


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: act_and_mul_inputs((2, 3, 1), 64, torch.bfloat16), id="dense_4d"),
        pytest.param(lambda: act_and_mul_inputs((5,), 3, torch.float16), id="tiny_d"),
        pytest.param(lambda: act_and_mul_inputs((5,), 11008, torch.bfloat16), id="llama2_7b"),
        pytest.param(lambda: act_and_mul_inputs((1,), 130, torch.bfloat16), id="vec2"),
    ],
)
def test_supports_args_admits_only_what_the_kernel_contract_allows(fake_aiter, seed, make):
    x = make()
    assert aiter_act.supports_args(x) is None, "case meant to be accepted"
    for variant in FNS:
        assert_close_verbose(run(variant, x), ref(x, variant), ATOL, RTOL[x.dtype])


# ----------------------------------------------------------------------------
# 5. The gate: the master flag alone
# ----------------------------------------------------------------------------


@pytest.fixture
def simulate():
    with pytest.MonkeyPatch.context() as mp:

        def apply(arch="gfx942", **env):
            simulate_rocm(mp, arch, **env)
            settings.refresh()

        yield apply
    settings.refresh()


@pytest.mark.parametrize("disp", [ops_act.SILU_AND_MUL, ops_act.GELU_AND_MUL], ids=lambda d: d.op)
def test_gate_is_the_master_flag_alone(simulate, disp):
    cuda = torch.device("cuda", 0)
    reason = lambda: disp.unsupported_reason(disp.backends["aiter"], cuda)  # noqa: E731
    simulate(VLLM_ROCM_USE_AITER="1")
    assert reason() is None
    simulate(VLLM_ROCM_USE_AITER="1", VLLM_ROCM_USE_AITER_RMSNORM="0")  # other features' flags do not matter
    assert reason() is None
    simulate(VLLM_ROCM_USE_AITER="0")
    assert "VLLM_ROCM_USE_AITER=0" in reason()
    simulate()
    assert "VLLM_ROCM_USE_AITER=0" in reason() and "default" in reason()
    simulate(arch="gfx1100", VLLM_ROCM_USE_AITER="1")
    assert "gfx1100" in reason()
    assert "cpu" in disp.unsupported_reason(disp.backends["aiter"], torch.device("cpu"))


@pytest.mark.parametrize("disp", [ops_act.SILU_AND_MUL, ops_act.GELU_AND_MUL], ids=lambda d: d.op)
def test_a_cached_choice_is_not_reused_for_a_less_aligned_x(fake_aiter, seed, monkeypatch, disp):
    """The facade caches its choice per call signature. At d = 192 aiter loads 8 bytes (bfloat16
    x 4): x at an 8-byte offset goes to aiter, then x of the same shape at a 4-byte offset must
    not reuse that choice (explicit aiter refuses it; auto serves it elsewhere, right). CPU
    tensors; the aiter backend reads as available and auto walks the rocm_gfx9 policy."""
    monkeypatch.setitem(disp.backends, "aiter", dataclasses.replace(disp.backends["aiter"],
                                                                    supported=lambda device: None))
    monkeypatch.setattr(policy, "family_of", lambda device: "rocm_gfx9")
    disp.clear_caches()
    variant = "silu" if disp is ops_act.SILU_AND_MUL else "gelu"
    call = getattr(ops_act, f"{disp.op}_impl")
    base = (torch.randn(64 * 384 + 8) * 2).to(torch.bfloat16)
    assert base.data_ptr() % 16 == 0 and aiter_act.vector_width(192) * 2 == 8
    try:
        for backend in ("aiter", "auto"):
            fake_aiter.CALLS.clear()
            x8 = base[4:4 + 64 * 384].view(64, 384)
            out = call(x8, backend=backend)
            assert [c.name for c in fake_aiter.CALLS] == [FNS[variant]]
            assert_close_verbose(out, ref(x8, variant), atol=ATOL, rtol=RTOL[torch.bfloat16])
            fake_aiter.CALLS.clear()
            x4 = base[2:2 + 64 * 384].view(64, 384)
            if backend == "aiter":
                with pytest.raises(ValueError, match="8-byte vector loads"):
                    call(x4, backend=backend)
            else:
                assert_close_verbose(call(x4, backend=backend), ref(x4, variant), atol=ATOL, rtol=RTOL[torch.bfloat16])
            assert fake_aiter.CALLS == []
    finally:
        monkeypatch.undo()
        disp.clear_caches()
