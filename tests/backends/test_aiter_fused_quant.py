"""The AITER fused RMSNorm + quant adapter (``backends/aiter/fused_quant.py``), checked without AMD hardware.

1. Every ``_aiter().NAME(...)`` call of the adapter binds to the real amd-aiter wheel's signature,
   argument by argument, and the torch model has the wheel's signatures; the CK facts the adapter's
   decisions rest on are still in the wheel's sources; AITER's SiLU-and-mul + group quant is not
   in the ``aiter`` namespace.
2. The torch model enforces the kernels' contract and computes as they do (the unrounded float32
   norm, scale = absmax / fp8_max, NaN codes for all-zero rows).
3. With the model installed as ``aiter``, the adapter agrees with the torch backend (the unfused
   composition) to the 16-bit rounding AITER skips and one FP8 ulp, and with float64; all-zero
   rows follow the rule; the residual is updated in place; x is passed itself, 2-D, and the outputs
   are fresh.
4. ``supports_args_norm`` refuses what the kernels cannot take; what it accepts runs on the model.
5. The gate (master flag alone, FP8 arch), the SiLU op's refusal, and that the adapter imports aiter
   only when it calls it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from aiter_model import model, model_fused_quant, model_quant, wheel
from aiter_model.simulated_rocm import simulate_rocm
from helpers import assert_close_verbose
from vllm_rocm_accel import fp8, settings
from vllm_rocm_accel.backends.aiter import fused_quant as aiter_fq
from vllm_rocm_accel.backends.torch import fused_quant as torch_fq
from vllm_rocm_accel.inputs import norm_inputs
from vllm_rocm_accel.ops import fused_quant as fq_ops

MODULE = "vllm_rocm_accel.backends.aiter.fused_quant"
FORMATS = [fp8.FN, fp8.FNUZ]
DTYPES = [torch.bfloat16, torch.float16]
EPS = 1e-5
F32_RTOL = 2.0**-20  # float32 arithmetic in a different order (rsqrt, sums): a few float32 ulps


# ----------------------------------------------------------------------------
# Inputs and the comparison
# ----------------------------------------------------------------------------
def fp8_ulp(v: torch.Tensor, fmt: torch.dtype) -> torch.Tensor:
    a = v.double().abs().clamp(min=torch.finfo(fmt).smallest_normal)
    return torch.exp2(torch.floor(torch.log2(a)) - 3)


def skipped_rounding(dtype) -> float:
    """AITER quantizes the float32 norm, the reference its 16-bit rounding(s): relative finfo.eps."""
    return torch.finfo(dtype).eps + F32_RTOL


def assert_close_to_reference(got, want, fmt, dtype, msg=""):
    """Scales to the skipped 16-bit rounding of the amax; ``q * s`` within one FP8 ulp (at the
    reference's code, times its scale) of the reference's, plus that rounding."""
    (q, s), (qr, sr) = got, want
    assert q.dtype == qr.dtype == fmt and q.shape == qr.shape and s.shape == sr.shape, msg
    assert q.is_contiguous() and s.dtype == torch.float32, msg
    rtol = skipped_rounding(dtype)
    assert_close_verbose(s, sr, 0.0, rtol, msg=f"{msg} scales")
    deq, ref = q.double() * s.double(), qr.double() * sr.double()
    tol = fp8_ulp(qr, fmt) * sr.double() * (1 + 1e-9) + ref.abs() * rtol
    bad = ~((deq - ref).abs() <= tol)  # NaN anywhere is bad
    if bad.any():
        i = tuple(int(k) for k in bad.nonzero()[0])
        raise AssertionError(f"{msg}: {int(bad.sum())} of {q.numel()} dequantized values off by more than one FP8 ulp; "
                             f"first at {i}: {deq[i].item()!r} vs {ref[i].item()!r}; NaN {int(torch.isnan(deq).sum())}")


def assert_close_to_float64(q, s, x, w, fmt, residual=None, msg=""):
    s64 = x.double() if residual is None else x.double() + residual.double()
    y = s64 * torch.rsqrt(s64.pow(2).mean(-1, keepdim=True) + EPS) * (1.0 if w is None else w.double())
    amax = y.abs().amax(-1, keepdim=True).clamp(min=fp8.AMAX_FLOOR)
    assert_close_verbose(s, amax / fp8.fp8_max(fmt), 0.0, 1e-5, msg=f"{msg} scales vs float64")
    deq = q.double() * s.double()
    bad = ~((deq - y).abs() <= fp8_ulp(y / s.double(), fmt) * s.double() * (1 + 1e-9) + y.abs() * 1e-5)
    assert not bad.any(), f"{msg}: {int(bad.sum())} values more than one FP8 ulp from float64"


def zero_row_rules_hold(q, s, rows, fmt):
    floor = torch.tensor(fp8.AMAX_FLOOR, dtype=torch.float32) / fp8.fp8_max(fmt)
    qf, sf = q.float().reshape(-1, q.shape[-1]), s.reshape(-1)
    for r in rows:
        assert torch.equal(qf[r], torch.zeros_like(qf[r])) and not torch.isnan(qf[r]).any(), f"row {r}: {qf[r][:8]}"
        assert torch.equal(sf[r], floor), f"row {r}: scale {sf[r].item()}"


def case(lead, hidden, dtype, zero_rows=(), with_weight=True):
    x, r, w = norm_inputs(lead + (hidden,), dtype, scale=3.0)
    for i in zero_rows:
        x.view(-1, hidden)[i] = 0
        r.view(-1, hidden)[i] = 0
    return x, r, (w if with_weight else None)


# ----------------------------------------------------------------------------
# 1. The wheel
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", model_fused_quant.MODELLED_FUSED_QUANT)
def test_model_signatures_match_wheel(name):
    sig = wheel.resolve_public_function(name)
    assert (sig.module, sig.relpath) == ("aiter.ops.rmsnorm", "aiter/ops/rmsnorm.py")  # CK, not ops/triton
    assert sig.decorators == ("compile_ops('module_rmsnorm')",)
    assert wheel.signature_mismatches(getattr(model_fused_quant, name), sig) == []


def test_adapter_calls_bind_to_wheel_and_land_on_the_right_parameters():
    calls = wheel.check_adapter_module(MODULE)
    assert {c.name for c in calls} == set(model_fused_quant.MODELLED_FUSED_QUANT)
    got = []
    for c in calls:
        bound = wheel.check_call(c.name, c.args_count, c.kwarg_names)
        got.append((c.name, list(bound.arguments)))
    assert got == [
        ("rmsnorm2d_fwd_with_dynamicquant", ["out", "input", "yscale", "weight", "epsilon"]),
        ("rmsnorm2d_fwd_with_add_dynamicquant",
         ["out", "input", "residual_in", "residual_out", "yscale", "weight", "epsilon"]),
    ]
    sources = [c.source for c in calls]
    assert "q.view(-1, hidden), x.view(-1, hidden), scales.view(-1, 1)" in sources[0]
    assert "residual.view(-1, hidden), residual_out.view(-1, hidden), scales.view(-1, 1)" in sources[1]


def test_aiters_silu_group_quant_is_outside_the_checked_namespace():
    """The declined op: only aiter.ops.triton.activation defines it (a Triton kernel, as ours)."""
    with pytest.raises(LookupError, match="no module-level binding"):
        wheel.resolve_public_function("act_mul_and_fp8_group_quant")
    text = (wheel.aiter_source_root() / "ops" / "triton" / "activation.py").read_text()
    assert "def act_mul_and_fp8_group_quant(" in text and "import triton" in text


CK = "aiter_meta/3rdparty/composable_kernel/"


def test_kernel_facts_the_adapter_relies_on():
    itfs = wheel.squash(wheel.wheel_member("aiter_meta/csrc/py_itfs_ck/rmsnorm_ck_kernels.cu"))
    for fn in ("void rmsnorm2d_with_dynamicquant(", "void rmsnorm2d_with_add_dynamicquant("):
        body = itfs[itfs.index(fn):]
        body = body[:body.index("{stream});")]
        assert "std::string out_dtype_str = torchDTypeToStr(out.dtype());" in body
        assert "2, // fused_quant" in body and "int stride = input.stride(0);" in body
        assert "ck rmsnorm2d only support fp16 and bf16 data type" in body
        assert "r = rmsnorm2d_fwd(" not in body  # the dispatcher's -1 (no instance) is ignored
    # both torch FP8 dtypes are the one string "fp8": CK writes the arch's own fp8_t
    common = wheel.squash(wheel.wheel_member("aiter_meta/csrc/include/py_itfs_common.h"))
    assert 'F("fp8", torch::kFloat8_e4m3fnuz) \\ F("fp8", torch::kFloat8_e4m3fn)' in common
    config = wheel.squash(wheel.wheel_member(CK + "include/ck_tile/core/config.hpp"))
    assert "#if defined(__gfx950__) || defined(__gfx12__) #define CK_TILE_USE_OCP_FP8 1 #else #define CK_TILE_USE_OCP_FP8 0" in config
    # no fused-quant instance above 8192, and the last bucket has no upper bound
    gen = wheel.squash(wheel.wheel_member(CK + "example/ck_tile/10_rmsnorm2d/generate.py"))
    assert 'if (fused_quant == 1 or fused_quant == 2) and hs_key == "big": continue' in gen
    assert 'n_cnd = f"(a.n <= {n_})" if (i_n < len(blob_per_t) - 1) else ""' in gen
    assert 'scale_list = [("fp32,fp32")]' in gen
    # the norm is not rounded before the quant epilogue
    one_pass = wheel.squash(wheel.wheel_member(CK + "include/ck_tile/ops/rmsnorm2d/pipeline/rmsnorm2d_fwd_pipeline_one_pass.hpp"))
    assert "auto rmsn_ = acc[idx] * inv_rms_[i_idx] * gamma_;" in one_pass
    assert "store_tile(y_residual_window, cast_tile<YResidualDataType>(acc));" in one_pass
    # absmax from 0 (so all-zero rows: scale 0, 0 / 0), scale = absmax / max, values divided by it
    epi = wheel.squash(wheel.wheel_member(CK + "include/ck_tile/ops/epilogue/dynamic_quant_epilogue.hpp"))
    assert "return reduce(o_acc_tmp, type_convert<AccDataType>(0), f_absmax);" in epi
    assert "return v_ / type_convert<AccDataType>(numeric<ODataType>::max());" in epi
    assert "o_acc_tmp(idx) = o_acc_tmp[idx] / y_scale(row_id);" in epi


# ----------------------------------------------------------------------------
# 2. The model
# ----------------------------------------------------------------------------
def test_fake_aiter_exposes_the_models(fake_aiter):
    import aiter

    for name in model_fused_quant.MODELLED_FUSED_QUANT:
        assert getattr(aiter, name) is getattr(model_fused_quant, name)
    assert aiter.rms_norm is model.rms_norm and aiter.dynamic_per_token_scaled_quant is model_quant.dynamic_per_token_scaled_quant


def test_model_enforces_the_kernels_contract(fake_aiter, seed, monkeypatch):
    import aiter

    fmt = fp8.FN
    x, r, w = norm_inputs((4, 256), torch.bfloat16)
    q, sc = torch.empty(4, 256, dtype=fmt), torch.empty(4, 1)
    dq, adq = aiter.rmsnorm2d_fwd_with_dynamicquant, aiter.rmsnorm2d_fwd_with_add_dynamicquant
    wide = torch.randn(2, 8200).to(torch.bfloat16)
    bad = [
        (lambda: dq(q, x.float(), sc, w.float(), EPS), "float16 and bfloat16"),
        (lambda: dq(q, x.view(2, 2, 256), sc, w, EPS), "2-D"),
        (lambda: dq(q.to(torch.float16), x, sc, w, EPS), "the kernel writes"),
        (lambda: dq(q[:2], x, sc, w, EPS), "out has shape"),
        (lambda: dq(q, x, sc.double(), w, EPS), "float32"),
        (lambda: dq(q, x, torch.empty(3, 1), w, EPS), "room for 3 floats"),
        (lambda: dq(q, x, sc, w[:128], EPS), "weight must be"),
        (lambda: dq(q, x, sc, w.half(), EPS), "weight dtype"),
        (lambda: dq(torch.empty(2, 8200, dtype=fmt), wide, torch.empty(2, 1), torch.ones(8200, dtype=torch.bfloat16),
                    EPS), "hidden 8200 > 8192"),
        (lambda: dq(q[:0], x[:0], sc, w, EPS), "no rows"),
        (lambda: dq(q, x, x.view(torch.float32)[:, :1], w, EPS), "yscale shares memory with input"),
        (lambda: adq(q, x, r, x, sc, w, EPS), "residual_out shares memory with input"),
        (lambda: adq(q, x, r[:, :128], torch.empty_like(r), sc, w, EPS), "residual_in has shape"),
        (lambda: adq(q, x, r, torch.empty_like(r).half(), sc, w, EPS), "residual_out has dtype"),
        (lambda: dq(q, x, sc, w, "1e-6"), "epsilon must be a Python float"),
    ]
    for call, message in bad:
        with pytest.raises(model.AiterContractError, match=message):
            call()
    assert len(model.CALLS) == len(bad)  # recorded before being checked
    with pytest.raises(NotImplementedError):
        dq(q.view(torch.int8), x, sc, w, EPS)
    with pytest.raises(NotImplementedError):
        dq(q, x, sc, w, EPS, use_model_sensitive_rmsnorm=1)
    monkeypatch.setattr(model_quant, "TORCH_FP8", fp8.FNUZ)  # a gfx942 build
    with pytest.raises(model.AiterContractError, match="the kernel writes torch.float8_e4m3fnuz"):
        dq(q, x, sc, w, EPS)
    dq(torch.empty(4, 256, dtype=fp8.FNUZ), x, sc, w, EPS)  # and a good call runs


@pytest.mark.parametrize("fmt", FORMATS, ids=str)
def test_model_computes_as_the_kernels(seed, fmt):
    """Unrounded float32 norm, scale = absmax / fp8_max from 0, q = RNE(clamp(y / scale)); zero rows NaN."""
    x, r, w = norm_inputs((5, 256), torch.bfloat16, scale=3.0)
    x[2] = 0
    q, sc = torch.empty(5, 256, dtype=fmt), torch.empty(5, 1)
    model_fused_quant.rmsnorm2d_fwd_with_dynamicquant(q, x, sc, w, EPS)
    acc = x.float()
    y = acc * torch.rsqrt((acc * acc).sum(-1, keepdim=True) / 256 + EPS) * w.float()
    scale = y.abs().amax(-1, keepdim=True) / fp8.fp8_max(fmt)
    assert torch.equal(sc, scale)
    m = fp8.fp8_max(fmt)
    want = (y / scale).clamp(-m, m).to(fmt)
    live = torch.tensor([True, True, False, True, True])
    assert torch.equal(q[live].view(torch.uint8), want[live].view(torch.uint8))
    assert sc[2].item() == 0 and torch.isnan(q[2].float()).all()
    # the fused add: residual_out is the rounded sum, the norm is of the float32 sum
    q2, sc2, ro = torch.empty(5, 256, dtype=fmt), torch.empty(5, 1), torch.empty_like(r)
    model_fused_quant.rmsnorm2d_fwd_with_add_dynamicquant(q2, x, r, ro, sc2, w, EPS)
    s32 = x.float() + r.float()
    assert torch.equal(ro, s32.to(torch.bfloat16))
    y = s32 * torch.rsqrt((s32 * s32).sum(-1, keepdim=True) / 256 + EPS) * w.float()
    assert torch.equal(sc2, y.abs().amax(-1, keepdim=True) / m)


# ----------------------------------------------------------------------------
# 3. The adapter on the model
# ----------------------------------------------------------------------------
SHAPES = [((1,), 256), ((7,), 4096), ((2, 3), 512), ((5,), 8192), ((3,), 123), ((4,), 12)]


@pytest.mark.parametrize("fmt", FORMATS, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("lead,hidden", SHAPES)
def test_rms_norm_dynamic_quant_matches_reference(fake_aiter, seed, fmt, dtype, lead, hidden):
    rows = 1
    for n in lead:
        rows *= n
    zero_rows = (0, rows - 1) if rows > 2 else ()
    x, _, w = case(lead, hidden, dtype, zero_rows)
    x0 = x.clone()
    assert aiter_fq.supports_args_norm(x, w, EPS, fmt) is None
    got = aiter_fq.rms_norm_dynamic_quant(x, w, EPS, fmt)
    assert_close_to_reference(got, torch_fq.rms_norm_dynamic_quant(x, w, EPS, fmt), fmt, dtype, f"{lead}x{hidden}")
    assert_close_to_float64(*got, x, w, fmt, msg=f"{lead}x{hidden}")
    zero_row_rules_hold(*got, zero_rows, fmt)
    assert torch.equal(x, x0)
    [call] = fake_aiter.CALLS
    assert call.name == "rmsnorm2d_fwd_with_dynamicquant"
    assert call.tensor("input").data_ptr == x.data_ptr() and call.tensor("input").shape == (rows, hidden)
    assert call.tensor("out").data_ptr == got[0].data_ptr() and call.tensor("yscale").data_ptr == got[1].data_ptr()
    assert call.tensor("weight").data_ptr == w.data_ptr() and call.args["epsilon"] == EPS


@pytest.mark.parametrize("fmt", FORMATS, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("lead,hidden", SHAPES)
def test_fused_add_updates_residual_and_matches_reference(fake_aiter, seed, fmt, dtype, lead, hidden):
    x, r, w = case(lead, hidden, dtype, zero_rows=(0,))
    x0, r0 = x.clone(), r.clone()
    r_ref = r.clone()
    want = torch_fq.fused_add_rms_norm_dynamic_quant(x0, r_ref, w, EPS, fmt)
    assert aiter_fq.supports_args_norm(x, w, EPS, fmt, r) is None
    got = aiter_fq.fused_add_rms_norm_dynamic_quant(x, r, w, EPS, fmt)
    assert torch.equal(x, x0), "x was modified"
    assert torch.equal(r, r_ref), "residual is not x + residual"
    assert_close_to_reference(got, want, fmt, dtype, f"add {lead}x{hidden}")
    assert_close_to_float64(*got, x0, w, fmt, r0, msg=f"add {lead}x{hidden}")
    zero_row_rules_hold(*got, (0,), fmt)
    [call] = fake_aiter.CALLS
    assert call.name == "rmsnorm2d_fwd_with_add_dynamicquant"
    assert call.tensor("input").data_ptr == x.data_ptr() and call.tensor("residual_in").data_ptr == r.data_ptr()
    assert call.tensor("residual_out").data_ptr not in (r.data_ptr(), x.data_ptr())  # fresh, copied back


@pytest.mark.parametrize("fmt", FORMATS, ids=str)
def test_weightless_uses_ones(fake_aiter, seed, fmt):
    x, r, _ = case((3,), 384, torch.bfloat16)
    got = aiter_fq.rms_norm_dynamic_quant(x, None, EPS, fmt)
    assert_close_to_reference(got, torch_fq.rms_norm_dynamic_quant(x, None, EPS, fmt), fmt, torch.bfloat16)
    weight = fake_aiter.CALLS[0].tensor("weight")
    assert weight.shape == (384,) and weight.dtype == torch.bfloat16


def test_empty_inputs_never_reach_aiter(fake_aiter):
    x = torch.empty(0, 256, dtype=torch.bfloat16)
    w = torch.ones(256, dtype=torch.bfloat16)
    for got in (aiter_fq.rms_norm_dynamic_quant(x, w, EPS, fp8.FN),
                aiter_fq.fused_add_rms_norm_dynamic_quant(x, torch.empty_like(x), w, EPS, fp8.FN)):
        assert got[0].shape == (0, 256) and got[1].shape == (0, 1)
    assert fake_aiter.CALLS == []


@pytest.mark.parametrize("arch,fmt", [("gfx942", fp8.FNUZ), ("gfx950", fp8.FN)])
def test_on_a_simulated_arch_the_adapter_passes_the_builds_format(fake_aiter, seed, monkeypatch, arch, fmt):
    monkeypatch.setattr(model_quant, "TORCH_FP8", fmt)
    monkeypatch.setattr(aiter_fq, "_device_arch", lambda device: arch)
    other = fp8.FN if fmt == fp8.FNUZ else fp8.FNUZ
    x, r, w = case((3,), 384, torch.bfloat16)
    assert aiter_fq.supports_args_norm(x, w, EPS, fmt) is None
    assert f"write {fmt} on {arch}" in aiter_fq.supports_args_norm(x, w, EPS, other)
    assert f"write {fmt} on {arch}" in aiter_fq.supports_args_norm(x, w, EPS, other, r)
    assert_close_to_reference(aiter_fq.rms_norm_dynamic_quant(x, w, EPS, fmt),
                              torch_fq.rms_norm_dynamic_quant(x, w, EPS, fmt), fmt, torch.bfloat16)
    with pytest.raises(model.AiterContractError, match="the kernel writes"):
        aiter_fq.rms_norm_dynamic_quant(x, w, EPS, other)  # what supports_args spares the kernel


# ----------------------------------------------------------------------------
# 4. supports_args
# ----------------------------------------------------------------------------
def test_supports_args_refuses_what_the_kernels_cannot_take(seed):
    fmt = fp8.FN
    x, r, w = norm_inputs((4, 256), torch.bfloat16)
    buf = torch.randn(4 * 256 + 8).to(torch.bfloat16)
    cases = {
        "float16/bfloat16 x": (torch.randn(4, 256), None, None),
        "x (shape (4, 256), stride (512, 1)) is not contiguous": (torch.randn(4, 512).to(torch.bfloat16)[:, :256],
                                                                  None, None),
        "x is not 16-byte aligned": (buf[1:1 + 1024].view(4, 256), None, None),
        "weight dtype": (x, w.float(), None),
        "reads weight as contiguous": (x, torch.ones(512, dtype=torch.bfloat16)[::2], None),
        "hidden size 8200 > 8192": (torch.randn(2, 8200).to(torch.bfloat16), None, None),
        "32-bit ints": (torch.empty(2**31 // 4096 + 1, 4096, dtype=torch.bfloat16, device="meta"), None, None),
        "residual (shape": (x, w, torch.randn(4, 512).to(torch.bfloat16)[:, :256]),
        "float16/bfloat16 residual": (x, w, r.float()),
    }
    for reason, (xx, ww, rr) in cases.items():
        why = aiter_fq.supports_args_norm(xx, ww, EPS, fmt, rr)
        assert why is not None and reason in why, (reason, why)
    assert aiter_fq.supports_args_norm(buf[8:8 + 1024].view(4, 256), None, EPS, fmt) is None  # 16-byte offset
    assert aiter_fq.supports_args_norm(torch.empty(0, 3, dtype=torch.float16), None, EPS, fmt) is None


@pytest.mark.parametrize("hidden", [1, 4, 123, 5120, 8192])
@pytest.mark.parametrize("fmt", FORMATS, ids=str)
def test_supports_args_admits_only_what_the_kernel_contract_allows(fake_aiter, seed, hidden, fmt):
    x, r, w = case((3,), hidden, torch.float16, zero_rows=(1,))
    assert aiter_fq.supports_args_norm(x, w, EPS, fmt) is None and aiter_fq.supports_args_norm(x, w, EPS, fmt, r) is None
    assert_close_to_reference(aiter_fq.rms_norm_dynamic_quant(x, w, EPS, fmt),
                              torch_fq.rms_norm_dynamic_quant(x, w, EPS, fmt), fmt, torch.float16)
    r2 = r.clone()
    want = torch_fq.fused_add_rms_norm_dynamic_quant(x, r2, w, EPS, fmt)
    assert_close_to_reference(aiter_fq.fused_add_rms_norm_dynamic_quant(x, r, w, EPS, fmt), want, fmt, torch.float16)
    assert torch.equal(r, r2)


# ----------------------------------------------------------------------------
# 5. The gate, the SiLU op's refusal, lazy import
# ----------------------------------------------------------------------------


@pytest.fixture
def simulate():
    """simulate(arch=, **env): a ROCm GPU of ``arch`` with AMD aiter, the AITER flags as given."""
    with pytest.MonkeyPatch.context() as mp:

        def apply(arch="gfx942", **env):
            simulate_rocm(mp, arch, **env)
            settings.refresh()

        yield apply
    settings.refresh()


def _reason(dispatcher, device=torch.device("cuda", 0)):
    return dispatcher.unsupported_reason(dispatcher.backends["aiter"], device)


NORM_DISPATCHERS = [fq_ops.RMS_NORM_QUANT, fq_ops.FUSED_ADD_RMS_NORM_QUANT]


def test_gate_is_the_master_flag_alone(simulate):
    """As vLLM 0.32's fusion passes: VLLM_ROCM_USE_AITER on, whatever the RMSNORM and LINEAR flags say."""
    simulate(VLLM_ROCM_USE_AITER="1", VLLM_ROCM_USE_AITER_RMSNORM="0", VLLM_ROCM_USE_AITER_LINEAR="0")
    for d in NORM_DISPATCHERS:
        assert _reason(d) is None
    simulate(VLLM_ROCM_USE_AITER="0")
    for d in NORM_DISPATCHERS:
        assert "VLLM_ROCM_USE_AITER=0" in _reason(d)
    simulate()
    assert "default" in _reason(fq_ops.RMS_NORM_QUANT)


def test_gate_needs_an_fp8_arch(simulate):
    simulate(arch="gfx90a", VLLM_ROCM_USE_AITER="1")
    for d in NORM_DISPATCHERS:
        assert "gfx90a" in _reason(d)
    simulate(arch="gfx950", VLLM_ROCM_USE_AITER="1")
    assert _reason(fq_ops.RMS_NORM_QUANT) is None


def test_silu_group_quant_has_no_aiter_backend(simulate, fake_aiter):
    simulate(VLLM_ROCM_USE_AITER="1")
    reason = _reason(fq_ops.SILU_AND_MUL_GROUP_QUANT)
    assert "no HIP/CK silu-and-mul + group-quant kernel" in reason
    assert aiter_fq.supports_args_silu(torch.zeros(2, 256), 128, False, fp8.FN) == aiter_fq.SILU_GROUP_QUANT_UNSUPPORTED
    with pytest.raises(ValueError, match="no HIP/CK"):
        aiter_fq.silu_and_mul_group_quant(torch.zeros(2, 256), 128, False, fp8.FN)
    assert fake_aiter.CALLS == []


IMPORT_CHECK = """
import json, sys, torch
from vllm_rocm_accel.backends.aiter import fused_quant
x = torch.randn(4, 256).to(torch.bfloat16)
reasons = [fused_quant.supports_args_norm(x, None, 1e-6, torch.float8_e4m3fn),
           fused_quant.supports_args_norm(x, None, 1e-6, torch.float8_e4m3fn, torch.randn(4, 256).to(torch.bfloat16))]
print(json.dumps({"aiter_imported": "aiter" in sys.modules, "reasons": reasons}))
"""


def test_adapter_imports_aiter_only_when_it_calls_it(tmp_path):
    trap = tmp_path / "aiter"
    trap.mkdir()
    (trap / "__init__.py").write_text("raise SystemExit('aiter was imported')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", IMPORT_CHECK], env=env, capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"aiter_imported": False, "reasons": [None, None]}
    assert wheel.scan_adapter_module(MODULE).problems == ()
