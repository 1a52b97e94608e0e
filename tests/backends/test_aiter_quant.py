"""The AITER FP8 quant adapter (``backends/aiter/quant.py``), checked without AMD hardware.

1. Every ``_aiter().NAME(...)`` call of the adapter binds to the real amd-aiter wheel's signature,
   argument by argument, and the torch model has the wheel's signatures; the kernel facts the
   adapter's decisions rest on are still in the wheel's HIP source.
2. The torch model enforces the kernels' contract and computes as they do (scale = amax times a
   float32 reciprocal of fp8_max, the group kernel's 1e-10 floor, the per-row kernel's NaN rows).
3. With the model installed as ``aiter``, the adapter agrees with the torch backend (the
   reference, ``backends/torch/quant.py``) within one FP8 ulp after dequantization, in both FP8
   formats, over leading dims, zero rows and groups, and column-major group scales; it passes x
   itself (no copy) and its own fresh outputs.
4. ``supports_args_*`` refuse what the kernels cannot take; what they accept runs on the model.
5. The arch guard, and that the adapter imports aiter only when it calls it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from aiter_model import model, model_quant, wheel
from aiter_model.simulated_rocm import simulate_rocm
from helpers import assert_close_verbose
from vllm_rocm_accel import fp8, platform, rocm_accel_ops, settings
from vllm_rocm_accel.backends.aiter import quant as aiter_quant
from vllm_rocm_accel.backends.torch import quant as torch_quant
from vllm_rocm_accel.ops import quant as ops_quant

MODULE = "vllm_rocm_accel.backends.aiter.quant"
FORMATS = [fp8.FN, fp8.FNUZ]
DTYPES = [torch.bfloat16, torch.float16]
SCALE_RTOL = 2.0**-22  # amax * f32(1 / fp8_max) vs amax / fp8_max: within two float32 ulps


# ----------------------------------------------------------------------------
# Inputs and the comparison
# ----------------------------------------------------------------------------
def quant_inputs(lead: tuple, hidden: int, dtype: torch.dtype, zero_rows=(), spread: float = 2.0) -> torch.Tensor:
    """Fresh N(0, 1) rows, each times its own exp(N(0, spread)) (so rows have distinct scales);
    the rows listed in ``zero_rows`` (flat indices) all zero."""
    x = torch.randn(lead + (hidden,)) * torch.exp(torch.randn(lead + (1,)) * spread)
    flat = x.view(-1, hidden)
    for r in zero_rows:
        flat[r] = 0.0
    return x.to(dtype)


def fp8_ulp(v: torch.Tensor, fmt: torch.dtype) -> torch.Tensor:
    """The spacing of ``fmt`` (3 mantissa bits) at |v|, float64; subnormal spacing below its normals."""
    a = v.double().abs().clamp(min=torch.finfo(fmt).smallest_normal)
    return torch.exp2(torch.floor(torch.log2(a)) - 3)


def assert_dequant_within_ulp(q, s, q_ref, s_ref, fmt, msg=""):
    """``q * s`` within one FP8 ulp (at the reference's code, times the reference's scale) of
    ``q_ref * s_ref``, plus the scales' float32 rounding; ``s``/``s_ref`` broadcast against ``q``.
    On failure, says where, with both codes, scales and the NaN counts."""
    assert q.dtype == q_ref.dtype == fmt, f"{msg}: dtypes {q.dtype}, {q_ref.dtype}, want {fmt}"
    assert q.shape == q_ref.shape and s.shape == s_ref.shape, (
        f"{msg}: shapes q {tuple(q.shape)} vs {tuple(q_ref.shape)}, scales {tuple(s.shape)} vs {tuple(s_ref.shape)}")
    sb, sb_ref = s.double().expand(q.shape), s_ref.double().expand(q.shape)
    deq, ref = q.double() * sb, q_ref.double() * sb_ref
    tol = fp8_ulp(q_ref, fmt) * sb_ref * (1 + 1e-9) + ref.abs() * SCALE_RTOL
    bad = ~((deq - ref).abs() <= tol)  # NaN anywhere is bad
    if bad.any():
        i = tuple(int(k) for k in bad.nonzero()[0])
        codes = (int(q.view(torch.uint8)[i]), int(q_ref.view(torch.uint8)[i]))
        raise AssertionError(
            f"{msg}: {int(bad.sum())} of {q.numel()} dequantized values off by more than one FP8 ulp; first at {i}: "
            f"q={q.double()[i].item()!r} (code {codes[0]}) * s={sb[i].item()!r} vs "
            f"q={q_ref.double()[i].item()!r} (code {codes[1]}) * s={sb_ref[i].item()!r}; "
            f"NaN: {int(torch.isnan(deq).sum())} here, {int(torch.isnan(ref).sum())} in the reference"
        )


def assert_matches_reference(got, want, fmt, msg=""):
    (q, s), (q_ref, s_ref) = got, want
    assert s.dtype == torch.float32, msg
    assert_close_verbose(s, s_ref, 0.0, SCALE_RTOL, msg=f"{msg} scales")
    assert_dequant_within_ulp(q, s, q_ref, s_ref, fmt, msg)
    assert q.is_contiguous(), msg


def zero_row_rules_hold(q, s, rows, fmt):
    """Rows (flat indices) of an all-zero input: codes 0, scale AMAX_FLOOR / fp8_max (to the float32
    rounding of AMAX_FLOOR * f32(1 / fp8_max), which the group kernel computes)."""
    floor = torch.tensor(fp8.AMAX_FLOOR, dtype=torch.float32) / fp8.fp8_max(fmt)
    qf = q.float().reshape(-1, q.shape[-1])
    sf = s.reshape(qf.shape[0], -1)
    for r in rows:
        assert torch.equal(qf[r], torch.zeros_like(qf[r])), f"row {r}: codes {qf[r][:8].tolist()}..."
        assert_close_verbose(sf[r], floor.expand_as(sf[r]), 0.0, SCALE_RTOL, msg=f"row {r}: scale")


# ----------------------------------------------------------------------------
# 1. The wheel: signatures and the kernel facts the adapter relies on
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", model_quant.MODELLED_QUANT)
def test_model_signatures_match_wheel(name):
    sig = wheel.resolve_public_function(name)
    assert (sig.module, sig.relpath) == ("aiter.ops.quant", "aiter/ops/quant.py")
    assert sig.decorators == ("compile_ops('module_quant')",)
    assert wheel.signature_mismatches(getattr(model_quant, name), sig) == []


def test_adapter_calls_bind_to_wheel():
    calls = wheel.check_adapter_module(MODULE)
    assert {c.name for c in calls} == set(model_quant.MODELLED_QUANT)  # and nothing the model does not cover


def test_adapter_calls_land_on_the_right_parameters():
    calls = wheel.scan_adapter_module(MODULE).calls
    got = []
    for c in calls:
        bound = wheel.check_call(c.name, c.args_count, c.kwarg_names)
        got.append((c.name, list(bound.arguments), c.source.split(f".{c.name}(")[1]))
    assert got == [
        ("static_per_tensor_quant", ["out", "input", "scale"], "q, x, s)"),
        ("dynamic_per_token_scaled_quant", ["out", "input", "scales"], "q, x, scales)"),
        ("dynamic_per_token_scaled_quant", ["out", "input", "scales", "shuffle_scale"],
         "q, x.view(-1, group_size), scales, shuffle_scale=column_major)"),
    ]


def _body(source: str, signature_start: str) -> str:
    """The brace-balanced body of the first function whose text starts with ``signature_start``."""
    start = source.index(signature_start)
    open_at = source.index("{", start)
    depth = 0
    for i in range(open_at, len(source)):
        depth += {"{": 1, "}": -1}.get(source[i], 0)
        if depth == 0:
            return source[open_at:i + 1]
    raise AssertionError(f"unbalanced braces after {signature_start!r}")


def test_kernel_facts_the_adapter_relies_on():
    cu = wheel.wheel_member("aiter_meta/csrc/kernels/quant_kernels.cu")
    flat = wheel.squash(cu)
    # group kernel: absMax floored at 1e-10f (= AMAX_FLOOR); shuffle_scale -> (groups, tokens) order
    group = wheel.squash(_body(cu, "template <typename DTYPE_I, typename DTYPE_O, int thread_data_size = 32>"))
    assert "float absMax = 1e-10f;" in group
    assert "groupId = y * ori_rows + x;" in group and "scale[groupId] = inverted_scale;" in group
    # per-row kernel: absMax from 0, so all-zero rows get scale 0
    per_row = _body(cu, "__device__ std::tuple<float, DTYPE_I*> data_to_per_row_scale(")
    assert "float absMax = 0.f;" in wheel.squash(per_row)
    # scale_ub is a parameter of both kernels and read by neither
    for kernel in ("dynamic_per_group_scaled_quant_kernel(", "dynamic_per_token_scaled_quant_kernel("):
        text = cu[cu.index(kernel):]
        body = _body(text, kernel)
        assert "scale_ub" in text[:text.index("{")] and "scale_ub" not in body, kernel
    # which kernel, contiguity checks, the group kernel's ori_cols
    entry = wheel.squash(_body(cu, "void dynamic_per_token_scaled_quant(torch::Tensor& out,"))
    assert "TORCH_CHECK(input.is_contiguous()); TORCH_CHECK(out.is_contiguous());" in entry
    assert "if(cols == 32 || cols == 64 || cols == 128)" in entry and "int ori_cols = out.size(-1);" in entry
    # static per-tensor: no contiguity check; dynamic per-tensor: scale starts at 0
    assert "is_contiguous" not in _body(cu, "void static_per_tensor_quant(torch::Tensor& out,")
    assert "vllm::initializeScale<<<dim3(1), dim3(64), 0, stream>>>( scale.data_ptr<float>(), 1, 0.0f);" in flat
    # 1 / scale, rows padded to 4 bytes, float16/bfloat16 inputs only
    assert "1.0f / (*scale)" in flat and "static constexpr int32_t ooba_o = 4 / sizeof(DTYPE_O);" in flat
    static = wheel.squash(_body(cu, "void static_per_tensor_quant(torch::Tensor& out,"))
    per_row_launch = flat[flat.index("#define DYNAMIC_PER_TOKEN_SCALED_QUANT_KERNEL_IMPL"):
                          flat.index("#define DYNAMIC_PER_TOKEN_SCALED_QUANT_KERNEL_DISPATCH")]
    for launch in (static, entry, per_row_launch):
        assert "AITER_DISPATCH_FLOATING16_TYPES" in launch and "VLLM_DISPATCH" not in launch
    # the clamp: +-240 for e4m3fnuz, +-448 for e4m3fn, then the hardware conversion
    vec = wheel.squash(wheel.wheel_member("aiter_meta/csrc/include/ck_tile/vec_convert.h"))
    assert "static constexpr float d = is_e4m3_fnuz ? 240.0f : 448.0f;" in vec and "v_cvt_pk_fp8_f32" in vec
    # the host's torch_fp8: fnuz on gfx94x, fn otherwise
    common = wheel.squash(wheel.wheel_member("aiter_meta/csrc/include/py_itfs_common.h"))
    assert ('isGPUArch({"gfx94"}) ? at::ScalarType::Float8_e4m3fnuz : at::ScalarType::Float8_e4m3fn' in common)


def test_wheel_group_helper_calls_the_kernel_as_the_adapter_does():
    """``per_group_quant_hip`` (the wheel's own 1 x g wrapper) passes x.view(-1, g) and shuffle_scale."""
    path = wheel.aiter_source_root() / "ops" / "quant.py"
    text = wheel.squash(path.read_text())
    assert "dynamic_per_token_scaled_quant( y, x.view(-1, group_size), scale, shuffle_scale=transpose_scale," in text
    assert "assert group_size in [ 32, 64, 128, ]" in text


# ----------------------------------------------------------------------------
# 2. The model
# ----------------------------------------------------------------------------
def test_fake_aiter_exposes_the_quant_models(fake_aiter):
    import aiter

    for name in model_quant.MODELLED_QUANT:
        assert getattr(aiter, name) is getattr(model_quant, name)
    assert aiter.rms_norm is model.rms_norm and aiter.MODELLED == model.MODELLED  # other families intact


def test_model_enforces_the_kernels_contract(fake_aiter, seed, monkeypatch):
    import aiter

    fmt = fp8.FNUZ
    x = torch.randn(4, 256).to(torch.bfloat16)
    q = torch.empty(4, 256, dtype=fmt)
    s1 = torch.ones(1)
    sc = torch.empty(4, 1)
    buf = torch.randn(4 * 256 + 8).to(torch.bfloat16)
    st, dyn = aiter.static_per_tensor_quant, aiter.dynamic_per_token_scaled_quant
    bad = [
        (lambda: st(q, x.float(), s1), "float16 and bfloat16 only"),
        (lambda: st(q, torch.randn(4, 512).to(torch.bfloat16)[:, :256], s1), "not contiguous"),
        (lambda: st(q, x, s1.double()), "float32"),
        (lambda: st(q.to(torch.float16), x, s1), "not support output type"),
        (lambda: st(torch.empty(4, 258, dtype=fmt), torch.randn(4, 258).to(torch.bfloat16), s1), "multiple of 4"),
        (lambda: st(q[:0], x[:0], s1), "cols == 0|rows == 0"),
        (lambda: st(q, buf[1:1 + 1024].view(4, 256), s1), "aligned"),
        (lambda: st(q[:2], x, s1), "elements"),
        (lambda: dyn(q, torch.randn(4, 512).to(torch.bfloat16)[:, :256], sc), r"input.is_contiguous\(\)"),
        (lambda: dyn(torch.empty(256, 4, dtype=fmt).t(), x, sc), r"out.is_contiguous\(\)"),
        (lambda: dyn(q, x, torch.empty(3, 1)), "room for 3 floats"),
        (lambda: dyn(q, x, sc.double()), "float32"),
        (lambda: dyn(torch.empty(4, 130, dtype=fmt), torch.randn(4, 130).to(torch.bfloat16), sc), "multiple of 4"),
        (lambda: dyn(torch.empty(2, 96, dtype=fmt), torch.randn(3, 64).to(torch.bfloat16), torch.empty(3)),
         "not a multiple of the group size"),
        (lambda: dyn(q, x, sc, shuffle_scale=1), "must be a bool"),
        (lambda: dyn(q, x, x.view(torch.float32)[:, :1]), "scales shares memory with input"),
    ]
    for call, message in bad:
        with pytest.raises(model.AiterContractError, match=message):
            call()
    assert len(model.CALLS) == len(bad)  # recorded before being checked
    with pytest.raises(NotImplementedError):
        dyn(q, x, sc, num_rows=torch.ones(1, dtype=torch.int32))
    with pytest.raises(NotImplementedError):
        st(q.view(torch.int8), x, s1)
    monkeypatch.setattr(model_quant, "TORCH_FP8", fp8.FN)  # a gfx950 build
    with pytest.raises(model.AiterContractError, match="not support output type: torch.float8_e4m3fnuz"):
        st(q, x, s1)
    st(torch.empty(4, 256, dtype=fp8.FN), x, s1)  # and a good call runs
    dyn(torch.empty(4, 256, dtype=fp8.FN), x, sc)


@pytest.mark.parametrize("fmt", FORMATS)
def test_model_computes_as_the_kernels(seed, fmt):
    inv_max = torch.tensor(1.0 / fp8.fp8_max(fmt), dtype=torch.float32)
    # per-row kernel (cols 256): scale = amax * f32(1 / max), no floor: an all-zero row is NaN, scale 0
    x = quant_inputs((5,), 256, torch.bfloat16, zero_rows=(2,))
    q, s = torch.empty(5, 256, dtype=fmt), torch.empty(5, 1)
    model_quant.dynamic_per_token_scaled_quant(q, x, s)
    amax = x.float().abs().amax(-1, keepdim=True)
    assert torch.equal(s, amax * inv_max)
    want = (x.float() * torch.reciprocal(s)).clamp(-fp8.fp8_max(fmt), fp8.fp8_max(fmt)).to(fmt)
    live = torch.tensor([True, True, False, True, True])
    assert torch.equal(q[live].view(torch.uint8), want[live].view(torch.uint8))
    assert s[2].item() == 0 and torch.isnan(q[2].float()).all()
    # group kernel (cols 64 of rows of 192): floored at 1e-10, (tokens, groups) or shuffled (groups, tokens)
    x = quant_inputs((4,), 192, torch.float16, zero_rows=(1,))
    for shuffle in (False, True):
        q, s = torch.empty(4, 192, dtype=fmt), torch.empty(4 * 3)
        model_quant.dynamic_per_token_scaled_quant(q, x.view(-1, 64), s, shuffle_scale=shuffle)
        amax = x.float().view(4, 3, 64).abs().amax(-1).clamp(min=1e-10)
        grid = s.view(3, 4).t() if shuffle else s.view(4, 3)
        assert torch.equal(grid, amax * inv_max)
        assert torch.equal(q[1].float(), torch.zeros(192))
    # static: x * (1 / scale), clamped at +-fp8_max
    x = quant_inputs((3,), 64, torch.bfloat16)
    scale = torch.tensor([float(x.float().abs().max()) / fp8.fp8_max(fmt) / 2])  # half of x clamps
    q = torch.empty(3, 64, dtype=fmt)
    model_quant.static_per_tensor_quant(q, x, scale)
    m = fp8.fp8_max(fmt)
    want = (x.float() * torch.reciprocal(scale)).clamp(-m, m).to(fmt)
    assert torch.equal(q.view(torch.uint8), want.view(torch.uint8))
    assert q.float().abs().max().item() == m


def test_model_writes_scales_through_the_data_pointer(seed):
    """Strides of scales are ignored, as the kernel ignores them: a column-major view gets the shuffled order."""
    x = quant_inputs((6,), 256, torch.bfloat16)
    s = torch.empty(2, 6).t()  # (6 tokens, 2 groups), storage (groups, tokens)
    q = torch.empty(6, 256, dtype=fp8.FN)
    model_quant.dynamic_per_token_scaled_quant(q, x.view(-1, 128), s, shuffle_scale=True)
    amax = x.float().view(6, 2, 128).abs().amax(-1)
    assert torch.equal(s, amax * torch.tensor(1 / 448, dtype=torch.float32))


# ----------------------------------------------------------------------------
# 3. The adapter on the model, against the torch backend
# ----------------------------------------------------------------------------
SHAPES = [((1,), 256), ((7,), 4096), ((2, 3), 512), ((5,), 5124), ((3,), 200), ((4,), 12)]


@pytest.mark.parametrize("fmt", FORMATS, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("lead,hidden", SHAPES)
def test_per_tensor_matches_reference(fake_aiter, seed, fmt, dtype, lead, hidden):
    x = quant_inputs(lead, hidden, dtype, spread=0.5)
    x0 = x.clone()
    assert aiter_quant.supports_args_per_tensor(x, None, fmt) is None
    got = aiter_quant.per_tensor_quant(x, None, fmt)
    want = torch_quant.per_tensor_quant(x, None, fmt)
    assert torch.equal(got[1], want[1])  # the scale is taken as the torch backend takes it: bit-identical
    assert_matches_reference(got, want, fmt, f"dynamic {fmt} {dtype} {lead}x{hidden}")
    [call] = fake_aiter.CALLS
    assert call.name == "static_per_tensor_quant"
    assert call.tensor("input").data_ptr == x.data_ptr()  # x itself, no copy
    assert call.tensor("out").data_ptr == got[0].data_ptr() and call.tensor("scale").data_ptr == got[1].data_ptr()

    static = (x.float().abs().amax() / fp8.fp8_max(fmt) * 0.75).reshape(())  # some values clamp
    got = aiter_quant.per_tensor_quant(x, static, fmt)
    want = torch_quant.per_tensor_quant(x, static, fmt)
    assert torch.equal(got[1], want[1]) and got[1].data_ptr() != static.data_ptr()
    assert_matches_reference(got, want, fmt, f"static {fmt} {dtype} {lead}x{hidden}")
    assert torch.equal(x, x0)


@pytest.mark.parametrize("fmt", FORMATS, ids=str)
def test_per_tensor_all_zero_follows_the_floor(fake_aiter, fmt):
    x = torch.zeros(3, 64, dtype=torch.bfloat16)
    q, s = aiter_quant.per_tensor_quant(x, None, fmt)
    zero_row_rules_hold(q, s.expand(3), range(3), fmt)
    assert_matches_reference((q, s), torch_quant.per_tensor_quant(x, None, fmt), fmt)


@pytest.mark.parametrize("fmt", FORMATS, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("lead,hidden", SHAPES + [((6,), 32), ((2, 5), 64), ((9,), 128)])
def test_per_token_matches_reference(fake_aiter, seed, fmt, dtype, lead, hidden):
    rows = 1
    for n in lead:
        rows *= n
    zero_rows = (0, rows - 1) if rows > 2 else ()
    x = quant_inputs(lead, hidden, dtype, zero_rows=zero_rows)
    assert aiter_quant.supports_args_per_token(x, fmt, None) is None
    got = aiter_quant.per_token_quant(x, fmt, None)
    want = torch_quant.per_token_quant(x, fmt, None)
    assert_matches_reference(got, want, fmt, f"{fmt} {dtype} {lead}x{hidden}")
    zero_row_rules_hold(*got, zero_rows, fmt)
    [call] = fake_aiter.CALLS
    assert call.name == "dynamic_per_token_scaled_quant" and call.args["scale_ub"] is None
    assert call.tensor("input").data_ptr == x.data_ptr() and call.tensor("input").shape == tuple(x.shape)
    assert call.tensor("out").data_ptr == got[0].data_ptr() and call.tensor("scales").data_ptr == got[1].data_ptr()


@pytest.mark.parametrize("fmt", FORMATS, ids=str)
def test_per_token_tiny_rows_keep_aiters_scale(fake_aiter, seed, fmt):
    """The documented deviation: a bfloat16 row with 0 < max|x| < AMAX_FLOOR keeps amax / fp8_max
    (the rule says AMAX_FLOOR / fp8_max) and AITER's codes: still a faithful FP8 encoding of the row
    (q * scale within half an FP8 ulp of x, as the rule's is); every other row follows the rule."""
    x = quant_inputs((4,), 256, torch.bfloat16, spread=0.5)
    x[1] = (torch.randn(256) * 1e-12).to(torch.bfloat16)
    q, s = aiter_quant.per_token_quant(x, fmt, None)
    q_ref, s_ref = torch_quant.per_token_quant(x, fmt, None)
    amax = x[1].float().abs().max()
    assert 0 < amax < fp8.AMAX_FLOOR
    assert_close_verbose(s[1], (amax / fp8.fp8_max(fmt)).reshape(1), 0.0, SCALE_RTOL)
    assert s[1] < s_ref[1]
    for codes, scale, who in ((q[1], s[1], "aiter"), (q_ref[1], s_ref[1], "rule")):
        err = (codes.double() * scale.double() - x[1].double()).abs()
        half_ulp = fp8_ulp(codes, fmt) * scale.double() / 2 * (1 + 1e-6)
        assert (err <= half_ulp).all(), f"{who}: {int((err > half_ulp).sum())} codes off by more than half an ulp"
    live = torch.tensor([True, False, True, True])
    assert_matches_reference((q[live], s[live]), (q_ref[live], s_ref[live]), fmt)


@pytest.mark.parametrize("fmt", FORMATS, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("group_size", aiter_quant.GROUP_SIZES)
@pytest.mark.parametrize("column_major", [False, True])
@pytest.mark.parametrize("lead,groups", [((1,), 1), ((7,), 3), ((2, 3), 4), ((5,), 40)])
def test_per_token_group_matches_reference(fake_aiter, seed, fmt, dtype, group_size, column_major, lead, groups):
    hidden = group_size * groups
    x = quant_inputs(lead, hidden, dtype)
    flat = x.view(-1, groups, group_size)
    flat[0, groups // 2] = 0  # an all-zero group
    if flat.shape[0] > 2:
        flat[-1] = 0  # and an all-zero row
    assert aiter_quant.supports_args_per_token_group(x, group_size, column_major, fmt) is None
    q, s = aiter_quant.per_token_group_quant(x, group_size, column_major, fmt)
    q_ref, s_ref = torch_quant.per_token_group_quant(x, group_size, column_major, fmt)
    assert s.stride() == s_ref.stride(), "not the torch backend's scales layout"
    s_full = s.repeat_interleave(group_size, dim=-1)
    assert_dequant_within_ulp(q, s_full, q_ref, s_ref.repeat_interleave(group_size, dim=-1), fmt,
                              f"{fmt} {dtype} g{group_size} cm={column_major} {lead}x{hidden}")
    assert_close_verbose(s, s_ref, 0.0, SCALE_RTOL, msg="group scales")
    floor = torch.tensor(fp8.AMAX_FLOOR, dtype=torch.float32) / fp8.fp8_max(fmt)
    assert_close_verbose(s.reshape(-1, groups)[0, groups // 2], floor, 0.0, SCALE_RTOL, msg="zero group's scale")
    assert torch.equal(q.float().view(-1, groups, group_size)[0, groups // 2], torch.zeros(group_size))
    [call] = fake_aiter.CALLS
    assert call.name == "dynamic_per_token_scaled_quant" and call.args["shuffle_scale"] is column_major
    assert call.tensor("input").data_ptr == x.data_ptr()
    assert call.tensor("input").shape == (x.numel() // group_size, group_size)
    assert call.tensor("out").shape == tuple(x.shape) and call.tensor("scales").data_ptr == s.data_ptr()


@pytest.mark.parametrize("fmt", FORMATS, ids=str)
def test_empty_inputs_never_reach_aiter(fake_aiter, fmt):
    for x in (torch.empty(0, 256, dtype=torch.bfloat16), torch.empty(3, 0, dtype=torch.float16)):
        for got, want in (
            (aiter_quant.per_tensor_quant(x, None, fmt), torch_quant.per_tensor_quant(x, None, fmt)),
            (aiter_quant.per_token_quant(x, fmt, None), torch_quant.per_token_quant(x, fmt, None)),
            (aiter_quant.per_token_group_quant(x, 128, True, fmt),
             torch_quant.per_token_group_quant(x, 128, True, fmt)),
        ):
            assert got[0].shape == want[0].shape and got[0].dtype == fmt
            assert got[1].shape == want[1].shape and torch.equal(got[1], want[1])
    assert fake_aiter.CALLS == []


def test_per_token_refuses_scale_ub_even_when_called_directly(fake_aiter):
    x = torch.randn(2, 64).to(torch.bfloat16)
    with pytest.raises(ValueError, match="ignores scale_ub"):
        aiter_quant.per_token_quant(x, fp8.FN, torch.ones(()))
    assert fake_aiter.CALLS == []


@pytest.mark.parametrize("arch,fmt", [("gfx942", fp8.FNUZ), ("gfx950", fp8.FN)])
def test_on_a_simulated_arch_the_adapter_passes_the_builds_format(fake_aiter, seed, monkeypatch, arch, fmt):
    monkeypatch.setattr(model_quant, "TORCH_FP8", aiter_quant.kernel_fp8_dtype(arch))
    monkeypatch.setattr(aiter_quant, "_device_arch", lambda device: arch)
    other = fp8.FN if fmt == fp8.FNUZ else fp8.FNUZ
    x = quant_inputs((3,), 384, torch.bfloat16)
    assert aiter_quant.supports_args_per_tensor(x, None, fmt) is None
    assert aiter_quant.supports_args_per_token(x, fmt, None) is None
    assert aiter_quant.supports_args_per_token_group(x, 128, False, fmt) is None
    assert f"write {fmt} on {arch}" in aiter_quant.supports_args_per_tensor(x, None, other)
    assert f"write {fmt} on {arch}" in aiter_quant.supports_args_per_token(x, other, None)
    assert f"write {fmt} on {arch}" in aiter_quant.supports_args_per_token_group(x, 128, True, other)
    assert_matches_reference(aiter_quant.per_token_quant(x, fmt, None), torch_quant.per_token_quant(x, fmt, None), fmt)
    with pytest.raises(model.AiterContractError, match="not support output type"):
        aiter_quant.per_token_quant(x, other, None)  # what supports_args spares the kernel


# ----------------------------------------------------------------------------
# 4. supports_args
# ----------------------------------------------------------------------------
def test_supports_args_refuses_what_the_kernels_cannot_take(seed):
    fmt = fp8.FN
    x = torch.randn(4, 256).to(torch.bfloat16)
    buf = torch.randn(4 * 256 + 8).to(torch.bfloat16)
    cases = {
        "float16/bfloat16": torch.randn(4, 256),
        "not contiguous": torch.randn(4, 512).to(torch.bfloat16)[:, :256],
        "multiple of 4": torch.randn(4, 130).to(torch.float16),
        "aligned": buf[1:1 + 1024].view(4, 256),
        "32-bit": torch.empty(2**31, dtype=torch.bfloat16, device="meta"),
    }
    for reason, t in cases.items():
        for why in (aiter_quant.supports_args_per_tensor(t, None, fmt),
                    aiter_quant.supports_args_per_token(t, fmt, None)):
            assert why is not None and reason in why, (reason, why)
    assert "scale_ub" in aiter_quant.supports_args_per_token(x, fmt, torch.ones(()))
    wide = torch.randn(2, 1024).to(torch.bfloat16)
    for g in (16, 256, 127):
        assert "group sizes" in aiter_quant.supports_args_per_token_group(wide, g, False, fmt)
    assert "not contiguous" in aiter_quant.supports_args_per_token_group(cases["not contiguous"], 128, False, fmt)
    assert "float16/bfloat16" in aiter_quant.supports_args_per_token_group(cases["float16/bfloat16"], 128, True, fmt)
    assert "multiple of group_size" in aiter_quant.supports_args_per_token_group(x[:, :192].clone(), 128, True, fmt)
    assert aiter_quant.supports_args_per_tensor(x, torch.ones(()), fmt) is None
    assert aiter_quant.supports_args_per_tensor(buf[8:8 + 1024].view(4, 256), None, fmt) is None  # 16-byte offset
    empty = torch.empty(0, 3, dtype=torch.bfloat16)
    assert aiter_quant.supports_args_per_token(empty, fmt, None) is None  # never launched: no hidden % 4 rule


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: quant_inputs((2, 3, 1), 64, torch.bfloat16), id="4d_group_kernel_hidden"),
        pytest.param(lambda: quant_inputs((1,), 4, torch.float16), id="hidden_4"),
        pytest.param(lambda: quant_inputs((3,), 8192 + 128, torch.bfloat16), id="looped_rows"),
        pytest.param(lambda: quant_inputs((5,), 14336, torch.float16, zero_rows=(3,)), id="llama3_ffn"),
        pytest.param(lambda: quant_inputs((1,), 128, torch.bfloat16, zero_rows=(0,)), id="one_zero_token"),
    ],
)
@pytest.mark.parametrize("fmt", FORMATS, ids=str)
def test_supports_args_admits_only_what_the_kernel_contract_allows(fake_aiter, seed, make, fmt):
    x = make()
    assert aiter_quant.supports_args_per_tensor(x, None, fmt) is None
    assert aiter_quant.supports_args_per_token(x, fmt, None) is None
    for ours, ref in ((aiter_quant.per_tensor_quant, torch_quant.per_tensor_quant),
                      (aiter_quant.per_token_quant, torch_quant.per_token_quant)):
        args = (x, None, fmt) if ours is aiter_quant.per_tensor_quant else (x, fmt, None)
        assert_matches_reference(ours(*args), ref(*args), fmt, ours.__name__)
    for g in aiter_quant.GROUP_SIZES:
        if aiter_quant.supports_args_per_token_group(x, g, True, fmt) is None:
            q, s = aiter_quant.per_token_group_quant(x, g, True, fmt)
            q_ref, s_ref = torch_quant.per_token_group_quant(x, g, True, fmt)
            assert_dequant_within_ulp(q, s.repeat_interleave(g, -1), q_ref, s_ref.repeat_interleave(g, -1), fmt)


@pytest.mark.parametrize("op", ["per_tensor_quant", "per_token_quant", "per_token_group_quant"])
def test_a_cached_choice_is_not_reused_past_aiters_32_bit_limit(fake_aiter, seed, monkeypatch, op):
    """The facade caches its backend choice per call signature, the token count bracketed; with
    aiter's element limit lowered to exactly 6 x 256 (inclusive), 6 tokens go to aiter and 7 tokens (same
    bracket) must be refused, not sent to aiter from the cache. Tensors stay on the CPU; the
    platform reads as gfx942 with AMD's aiter and vLLM's flags on."""
    simulate_rocm(monkeypatch, "gfx942", VLLM_ROCM_USE_AITER="1")
    gate = ops_quant._aiter_gate
    monkeypatch.setattr(ops_quant, "_aiter_gate", lambda device: gate(torch.device("cuda", 0)))
    monkeypatch.setattr(aiter_quant, "_device_arch", lambda device: "gfx942")
    monkeypatch.setattr(model_quant, "TORCH_FP8", fp8.FNUZ)
    settings.refresh()
    try:
        small, large = quant_inputs((6,), 256, torch.bfloat16), quant_inputs((7,), 256, torch.bfloat16)
        disp = ops_quant.DISPATCHERS[op]
        assert disp.row_bracket(6) == disp.row_bracket(7)
        monkeypatch.setattr(aiter_quant, "MAX_NUMEL", small.numel())
        call = getattr(rocm_accel_ops, op)
        q, s = call(small, dtype=fp8.FNUZ, backend="aiter")
        assert len(fake_aiter.CALLS) == 1
        fake_aiter.CALLS.clear()
        ref_args = {"per_tensor_quant": (None, fp8.FNUZ), "per_token_quant": (fp8.FNUZ, None),
                    "per_token_group_quant": (128, False, fp8.FNUZ)}[op]
        q_ref, s_ref = getattr(torch_quant, op)(small, *ref_args)
        if op == "per_token_group_quant":
            s, s_ref = s.repeat_interleave(128, -1), s_ref.repeat_interleave(128, -1)
        assert_dequant_within_ulp(q, s, q_ref, s_ref, fp8.FNUZ, op)
        with pytest.raises(ValueError, match="32-bit ints"):
            call(large, dtype=fp8.FNUZ, backend="aiter")
        assert fake_aiter.CALLS == []
    finally:
        monkeypatch.undo()
        settings.refresh()


# ----------------------------------------------------------------------------
# 5. The arch guard; aiter imported only when called
# ----------------------------------------------------------------------------
def test_arch_unsupported_reason(monkeypatch):
    cuda = torch.device("cuda", 0)
    for arch, ok in (("gfx942", True), ("gfx950", True), ("gfx90a", False), ("gfx1100", False)):
        monkeypatch.setattr(platform, "device_arch", lambda index=0, _a=arch: _a)
        reason = aiter_quant.arch_unsupported_reason(cuda)
        assert (reason is None) == ok, (arch, reason)
        if not ok:
            assert arch in reason
    assert aiter_quant.arch_unsupported_reason(torch.device("cpu")) is None  # the platform gate refuses it
    assert aiter_quant.kernel_fp8_dtype("gfx942") == fp8.FNUZ and aiter_quant.kernel_fp8_dtype("gfx950") == fp8.FN


IMPORT_CHECK = """
import json, sys, torch
from vllm_rocm_accel.backends.aiter import quant
x = torch.randn(4, 256).to(torch.bfloat16)
reasons = [quant.supports_args_per_tensor(x, None, torch.float8_e4m3fn),
           quant.supports_args_per_token(x, torch.float8_e4m3fn, None),
           quant.supports_args_per_token_group(x, 128, True, torch.float8_e4m3fn),
           quant.arch_unsupported_reason(torch.device("cpu"))]
quant.floor_scale(torch.float8_e4m3fnuz)
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
    assert result == {"aiter_imported": False, "reasons": [None, None, None, None]}
    assert wheel.scan_adapter_module(MODULE).problems == ()  # no `import aiter` outside `_aiter()`
