"""The AITER FP8 GEMM adapter (``backends/aiter/gemm.py``), checked without AMD hardware.

1. Every ``_aiter().NAME(...)`` call of the adapter binds to the real amd-aiter wheel's signature,
   the torch model has the wheel's signatures, and the kernel facts the adapter rests on are
   still in the wheel's C++ / CK sources and tuned configs.
2. The torch model enforces the kernels' contract and computes as they do (including the
   split-K epilogue that adds the bias once per slice).
3. With the model installed as ``aiter`` and the platform simulated as ROCm gfx942 / gfx950
   (each with its own FP8 format), ``rocm_accel_ops.gemm_a8w8(..., backend="aiter")`` and
   ``gemm_a8w8_blockscale`` agree with a float64 matmul of the dequantized operands, over
   per-tensor / per-token A scales, per-tensor / per-channel W scales, biases of every dtype,
   M = 1, 7, 33, row- and column-major block scales; the adapter passes a and w themselves and
   the scale vectors the kernel reads.
4. What the kernels cannot take is declined with a reason: an explicit ``backend="aiter"``
   raises ``ValueError`` saying it, ``auto`` serves the call elsewhere, and aiter is never called.
5. The arch guard, and that the adapter imports aiter only when it calls it.
"""

from __future__ import annotations

import ast
import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from aiter_model import model, model_gemm, wheel
from aiter_model.simulated_rocm import simulate_rocm
from vllm_rocm_accel import fp8, platform, policy, rocm_accel_ops, settings
from vllm_rocm_accel.backends.aiter import gemm as aiter_gemm
from vllm_rocm_accel.backends.torch import gemm as torch_gemm
from vllm_rocm_accel.checks.gemm import blocks
from vllm_rocm_accel.ops import gemm as ops_gemm

MODULE = "vllm_rocm_accel.backends.aiter.gemm"
ARCH_FORMATS = [("gfx942", fp8.FNUZ), ("gfx950", fp8.FN)]
OUT_DTYPES = [torch.bfloat16, torch.float16]
SCALINGS = [("tensor", "tensor"), ("token", "tensor"), ("tensor", "channel"), ("token", "channel")]
ROWS = [1, 7, 33]
U = {torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11, torch.float32: 2.0**-24}  # one rounding, relative
ATOL = 2.0**-24  # float16's subnormal spacing (results that cancel to below its normals)


# ----------------------------------------------------------------------------
# Inputs, the float64 reference and the comparison
# ----------------------------------------------------------------------------
def operands(m: int, n: int, k: int, fmt: torch.dtype):
    """Fresh FP8 a (M, K) and w (N, K), spread over the format's range."""
    a = (torch.randn(m, k) * 2).to(fmt)
    w = torch.randn(n, k).to(fmt)
    return a, w


def scale(kind: str, count: int, variant: int = 0) -> torch.Tensor:
    """A per-tensor scale (shapes (), (1,), (1, 1) by ``variant``) or ``count`` scales as (count, 1)."""
    if kind in ("token", "channel"):
        return torch.rand(count, 1) + 0.25
    return (torch.rand(()) + 0.25).reshape([(), (1,), (1, 1)][variant % 3])


def reference(a, w, sa_full, sw_full, bias=None):
    """float64 ``(a * sa) @ (w * sw).T + bias`` and the bound ``|a * sa| @ |w * sw|.T``."""
    ad, wd = a.double() * sa_full, w.double() * sw_full
    ref = ad @ wd.t()
    if bias is not None:
        ref = ref + bias.double()
    return ref, ad.abs() @ wd.abs().t()


def assert_matches(out, ref, bound, k, msg, bias_rounded=None):
    """``out`` within one rounding to its dtype of ``ref``, plus float32 accumulation over K
    (``K * 2^-24`` of ``bound``) and, when the kernel read a bias rounded to ``out``'s dtype, that
    rounding. On failure, says where, with both values and the tolerance."""
    u = U[out.dtype]
    tol = u * ref.abs() + k * 2.0**-24 * bound + ATOL
    if bias_rounded is not None:
        tol = tol + u * bias_rounded.double().abs()
    err = (out.double() - ref).abs()
    bad = ~(err <= tol)
    if bad.any():
        i = int(torch.argmax(torch.where(bad, err / tol, torch.zeros_like(err))))
        r, c = divmod(i, out.shape[1])
        raise AssertionError(
            f"{msg}: {int(bad.sum())} of {out.numel()} beyond tolerance; worst at ({r}, {c}): "
            f"got {out[r, c].item()!r}, ref {ref[r, c].item()!r}, tol {tol[r, c].item():.3g}; "
            f"NaN in out: {int(torch.isnan(out.double()).sum())}"
        )


def full_scales(sa, sw, a_kind, w_kind, m, n):
    sa_full = sa.double().reshape(m, 1) if a_kind == "token" else sa.double().reshape(())
    sw_full = sw.double().reshape(n, 1) if w_kind == "channel" else sw.double().reshape(())
    return sa_full, sw_full


# ----------------------------------------------------------------------------
# The simulated platform
# ----------------------------------------------------------------------------
REAL_GATE = ops_gemm._aiter_gate


def _triton_off(device):
    return "triton is switched off in this test (its interpreter is slow on GEMMs)"


@pytest.fixture
def on_rocm(fake_aiter):
    """on_rocm(arch, **env): tensors stay on the CPU, but the platform, the arch, AMD's aiter and
    vLLM's flags read as a ROCm GPU's, the aiter gate is asked about cuda:0, auto walks the
    rocm_gfx9 policy, and the model takes only the arch's FP8 format. Triton is off, so
    ``auto`` falls back to torch quickly. Yields the fake aiter module."""
    with pytest.MonkeyPatch.context() as mp:

        def apply(arch="gfx942", **env):
            simulate_rocm(mp, arch, **{"VLLM_ROCM_USE_AITER": "1", **env})
            mp.setattr(platform, "triton_unavailable_reason", _triton_off)
            mp.setattr(ops_gemm, "_aiter_gate", lambda device: REAL_GATE(torch.device("cuda", 0)))
            mp.setattr(aiter_gemm, "_device_arch", lambda device: arch)
            mp.setattr(policy, "family_of", lambda device: "rocm_gfx9")
            mp.setattr(model_gemm, "TORCH_FP8", aiter_gemm.kernel_fp8_dtype(arch))
            settings.refresh()
            rocm_accel_ops.reset_call_counts()
            fake_aiter.CALLS.clear()
            return fake_aiter

        yield apply
    settings.refresh()  # after the undo: the real platform and environment, every cache cleared


def served_by(op: str) -> list[str]:
    return sorted(b for (o, b), n in rocm_accel_ops.call_counts().items() if o == op and n)


# ----------------------------------------------------------------------------
# 1. The wheel: signatures, the calls, and the kernel facts the adapter relies on
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", model_gemm.MODELLED_GEMM)
def test_model_signatures_match_wheel(name):
    sig = wheel.resolve_public_function(name)
    assert (sig.module, sig.relpath) == ("aiter.ops.gemm_op_a8w8", "aiter/ops/gemm_op_a8w8.py")
    # the only difference: the wheel spells the default dtype `dtypes.bf16`, which is torch.bfloat16
    assert wheel.signature_mismatches(getattr(model_gemm, name), sig) == [
        "dtype: default torch.bfloat16 != wheel's dtypes.bf16"]
    assert "bf16 = torch.bfloat16" in (wheel.aiter_source_root() / "utility" / "dtypes.py").read_text()


def test_adapter_calls_bind_to_wheel():
    calls = wheel.check_adapter_module(MODULE)
    assert {c.name for c in calls} == set(model_gemm.MODELLED_GEMM)  # and nothing the model does not cover


def test_adapter_calls_land_on_the_right_parameters():
    got = []
    for c in wheel.scan_adapter_module(MODULE).calls:
        bound = wheel.check_call(c.name, c.args_count, c.kwarg_names)
        got.append((c.name, list(bound.arguments), c.source.split(f".{c.name}(")[1]))
    assert got == [
        ("gemm_a8w8_CK", ["XQ", "WQ", "x_scale", "w_scale", "bias", "dtype", "splitK"],
         "a, w, x_scale, w_vec, bias=bias, dtype=out_dtype, splitK=0 if bias is not None else None)"),
        ("gemm_a8w8_blockscale", ["XQ", "WQ", "x_scale", "w_scale", "dtype"],
         "a, w, a_scale.contiguous(), w_scale.contiguous(), dtype=out_dtype)"),
    ]


def _csrc(member: str) -> str:
    return wheel.squash(wheel.wheel_member(f"aiter_meta/csrc/{member}"))


def _ck(member: str) -> str:
    return wheel.squash(wheel.wheel_member(f"aiter_meta/3rdparty/composable_kernel/include/ck/tensor_operation/gpu/{member}"))


def _instances(member: str) -> list[list]:
    """The literal arguments of every ``kernelInstance(...)`` in an instance table (read with ast)."""
    tree = ast.parse(wheel.wheel_member(f"aiter_meta/csrc/{member}"))
    return [[ast.literal_eval(a) for a in node.args] for node in ast.walk(tree)
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "kernelInstance"]


def test_python_facts_the_adapter_relies_on():
    py = wheel.squash((wheel.aiter_source_root() / "ops" / "gemm_op_a8w8.py").read_text())
    ck_fn = py[py.index("def gemm_a8w8_CK("):py.index("def gemm_a8w8_bpreshuffle_fake(")]
    assert 'splitK = ck_config["splitK"]' in ck_fn  # splitK=None: the tuned CSV's split
    assert ("Y = torch.empty(m, n, dtype=dtype, device=XQ.device) "
            "return gemm_a8w8_ck(XQ, WQ, x_scale, w_scale, Y, bias, splitK)") in ck_fn
    bs = py[py.index("def gemm_a8w8_blockscale( XQ"):py.index("def flatmm_a8w8_blockscale_ASM(")]
    assert "assert dtype in [ dtypes.bf16, dtypes.fp16, ]" in bs  # no float32 out
    assert "return gemm_a8w8_blockscale_ck(XQ, WQ, x_scale, w_scale, Y)" in bs
    # the wheel's own tuned configs: every split is 0; every block-scaled K a multiple of 128
    def rows(name):
        return list(csv.DictReader(wheel.wheel_member(f"aiter/configs/{name}").splitlines()))

    assert {row["splitK"] for row in rows("a8w8_tuned_gemm.csv")} == {"0"}
    ks, ns = set(), set()
    for name in ("a8w8_blockscale_tuned_gemm.csv", "model_configs/a8w8_blockscale_tuned_gemm_ds_v3.csv"):
        for row in rows(name):
            ks.add(int(row["K"]))
            ns.add(int(row["N"]))
    assert all(k % 128 == 0 for k in ks)
    assert {200, 576, 2112} <= ns  # N need not be a multiple of 128


def test_kernel_facts_the_adapter_relies_on():
    cu = _csrc("ck_gemm_a8w8/gemm_a8w8.cu")
    assert ("TORCH_CHECK((XQ.dtype() == at::ScalarType::Char || XQ.dtype() == torch_fp8) && "
            "XQ.dtype() == WQ.dtype(),") in cu
    assert 'TORCH_CHECK(bias.value().dtype() == Y.dtype(), "Out amd bias should have the same dtype!");' in cu
    assert "int KBatch = std::pow(2, splitK);" in cu
    unsupported = 'TORCH_CHECK(false, "Unsupported scales/output dtype!");'
    fp8_branch = cu[cu.rindex("else { if (x_scale.dtype() == at::ScalarType::Float && "
                              "Y.dtype() == at::ScalarType::Half)"):]
    assert fp8_branch.count("rowwise_dispatch<F8,") == 4 and unsupported in fp8_branch
    assert "Y.dtype() == at::ScalarType::Float" not in cu  # no float32 Y
    cuh = _csrc("ck_gemm_a8w8/include/gemm_a8w8_common.cuh")
    assert "int StrideA = K; int StrideB = K; int StrideE = N;" in cuh  # strides ignored
    assert "using D0Layout = Row; using D1Layout = Col; using D2Layout = Row;" in cuh
    assert ("std::array<const void *, 3>{reinterpret_cast<DDataType *>(w_scale.data_ptr()), "
            "reinterpret_cast<DDataType *>(x_scale.data_ptr()), "
            "reinterpret_cast<EDataType *>(bias.value().data_ptr())}") in cuh
    assert "std::array<ck::index_t, 3>{0, 0, 0}" in cuh and "std::array<ck::index_t, 2>{0, 0}" in cuh
    assert ("ck::type_convert<float>(c) * ck::type_convert<F32>(d0) * ck::type_convert<F32>(d1) + "
            "ck::type_convert<F32>(d2); e = ck::type_convert<EDataType>(x0_f);") in cuh
    assert "16, // BK1" in cuh
    assert 'TORCH_CHECK(device_gemm.IsSupportedArgument(argument), "This GEMM is not supported!");' in cuh
    assert "`bias/(2^k)`" in wheel.wheel_member("aiter_meta/csrc/ck_gemm_a8w8/README.md")  # split-K adds the bias per slice
    assert 'GemmSpec="MNKPadding"' in _csrc("ck_gemm_a8w8/gen_instances.py")
    # instance tables: A/B K-vectors divide 16, C-shuffle store vectors at most 8
    rowwise = _instances("ck_gemm_a8w8/gemm_a8w8_common.py")
    assert rowwise and all(16 % (i[3] // i[8][0]) == 0 and i[11][0] <= 8 for i in rowwise)
    # CK: K/N vector checks, the 2 GB bound; split-K slices share the D pointers (bias added per slice)
    grid = _ck("grid/gridwise_gemm_xdl_cshuffle_v3_multi_d.hpp")
    for check in ("if(karg.K % BBlockTransferSrcScalarPerVector != 0)",
                  "if(karg.N % CShuffleBlockTransferScalarPerVector_NPerBlock != 0)",
                  "karg.M * karg.N * sizeof(CDataType) <= TwoGB"):
        assert check in grid, check
    assert ("GridwiseGemm::template Run<HasMainKBlockLoop, CGlobalMemoryDataOperation, TailNum>( "
            "karg.p_a_grid + splitk_batch_offset.a_k_split_offset, "
            "karg.p_b_grid + splitk_batch_offset.b_k_split_offset, "
            "karg.p_ds_grid,") in grid

    bcu = _csrc("ck_gemm_a8w8_blockscale/gemm_a8w8_blockscale.cu")
    assert 'TORCH_CHECK(XQ.dtype() == WQ.dtype(), "Weights and activations should have the same dtype!");' in bcu
    assert bcu.count("blockscale_dispatch<F32,") == 2 and unsupported in bcu
    default = "a8w8_blockscale_1x128x128_256x16x128x256_16x16_16x16_16x16x1_16x16x1_1x16x1x16_8_1x2_intrawave_v1<"
    assert f"return {default}" in bcu  # the heuristic default: K block 256, C store vector 8
    bcuh = _csrc("ck_gemm_a8w8_blockscale/include/gemm_a8w8_blockscale_common.cuh")
    assert "int StrideA = XQ.stride(-2); int StrideB = WQ.stride(-2); int StrideE = N;" in bcuh  # row strides honoured
    assert ("reinterpret_cast<DDataType *>(x_scale.data_ptr()), reinterpret_cast<DDataType *>(w_scale.data_ptr()),"
            in bcuh)
    assert "using A0Layout = Row; using B0Layout = Col;" in bcuh
    blockwise = _instances("ck_gemm_a8w8_blockscale/gemm_a8w8_blockscale_common.py")
    assert blockwise and all(i[1:4] == [1, 128, 128] and i[18][0] <= 8 for i in blockwise)  # 1x128x128, C vector <= 8
    ab = _ck("grid/gridwise_gemm_xdl_cshuffle_v3_multi_d_ab_scale.hpp")
    a_desc = ab[ab.index("MakeAScaleGridDesciptor_M_K(index_t M, index_t K)"):ab.index("MakeBScaleGridDesciptor_N_K(")]
    assert ("if constexpr(is_same<tensor_layout::gemm::RowMajor, ALayout>::value) { return "
            "make_naive_tensor_descriptor(make_tuple(BM, BK), make_tuple(BK, I1));") in a_desc  # dense row-major
    b_desc = ab[ab.index("MakeBScaleGridDesciptor_N_K(index_t N, index_t K)"):]
    assert ("if constexpr(is_same<tensor_layout::gemm::ColumnMajor, BLayout>::value) { return "
            "make_naive_tensor_descriptor(make_tuple(BN, BK), make_tuple(BK, I1));") in b_desc

    common = _csrc("include/py_itfs_common.h")
    assert 'isGPUArch({"gfx94"}) ? at::ScalarType::Float8_e4m3fnuz : at::ScalarType::Float8_e4m3fn' in common
    assert "#define CK_USE_RNE_BF16_CONVERSION 1" in wheel.squash(
        wheel.wheel_member("aiter_meta/3rdparty/composable_kernel/include/ck/ck.hpp"))


# ----------------------------------------------------------------------------
# 2. The model
# ----------------------------------------------------------------------------
def test_fake_aiter_exposes_the_gemm_models(fake_aiter):
    import aiter

    for name in model_gemm.MODELLED_GEMM:
        assert getattr(aiter, name) is getattr(model_gemm, name)
    assert aiter.rms_norm is model.rms_norm  # other families intact


def test_model_enforces_the_kernels_contract(fake_aiter, seed, monkeypatch):
    import aiter

    fmt = fp8.FNUZ
    m, n, k = 4, 32, 256
    a, w = operands(m, n, k, fmt)
    xs, ws = torch.rand(m, 1) + 0.25, torch.rand(1, n) + 0.25
    sa, sw = torch.rand(m, 2) + 0.25, torch.rand(1, 2) + 0.25
    bias = torch.randn(n).to(torch.bfloat16)
    ck, bs = aiter.gemm_a8w8_CK, aiter.gemm_a8w8_blockscale
    buf = torch.empty(m * k + 16, dtype=fmt)
    bad = [
        (lambda: ck(a, w.to(torch.float32).to(fp8.FN), xs, ws), "same dtype"),
        (lambda: ck(a, w, xs, ws.double()), "Scales should have the same dtype"),
        (lambda: ck(a, w, xs, ws, dtype=torch.float32), "Unsupported scales/output dtype"),
        (lambda: ck(a, w, torch.ones(1), ws), "x_scale has room for 1"),
        (lambda: ck(a, w, xs, torch.ones(1, 1)), "w_scale has room for 1"),
        (lambda: ck(a, w, xs, ws, bias=bias.float()), "bias should have the same dtype"),
        (lambda: ck(a, w, xs, ws, bias=bias[:8].clone()), "bias has room for 8"),
        (lambda: ck(a[:, :200], w[:, :200], xs, ws), "not dense"),
        (lambda: ck(*operands(m, n, 200, fmt), xs, ws), r"not supported! \(K = 200"),
        (lambda: ck(a, w[:28], xs, ws), r"not supported! \(K = 256 % 16, N = 28"),
        (lambda: ck(buf[1:1 + m * k].view(m, k), w, xs, ws), "aligned"),
        (lambda: ck(a, w, xs, ws, splitK=-1), "splitK"),
        (lambda: bs(a, w, sa, sw, dtype=torch.float32), "not supported in gemm_a8w8"),
        (lambda: bs(a, w, sa, torch.ones(1)), "w_scale has room for 1"),
        (lambda: bs(a, w, sa[:1].clone(), sw), "x_scale has room for 2"),
        (lambda: bs(*operands(m, n, 192, fmt), sa, sw), "K = 192 is not a multiple of 128"),
        (lambda: bs(a, w[:28], sa, sw), r"N = 28 % 8"),
        (lambda: bs(torch.empty(m, k + 8, dtype=fmt)[:, :k], w, sa, sw), "row stride 264"),
        (lambda: bs(a, w, sa, sw.half()), "Scales should have the same dtype"),
    ]
    for call, message in bad:
        with pytest.raises(model.AiterContractError, match=message):
            call()
    assert len(model.CALLS) == len(bad)  # recorded before being checked
    with pytest.raises(NotImplementedError):
        bs(a, w, sa, sw, isBpreshuffled=True)
    with pytest.raises(NotImplementedError):
        ck(a.view(torch.int8), w.view(torch.int8), xs, ws)
    monkeypatch.setattr(model_gemm, "TORCH_FP8", fp8.FN)  # a gfx950 build
    with pytest.raises(model.AiterContractError, match="this build's FP8 is torch.float8_e4m3fn"):
        ck(a, w, xs, ws)
    with pytest.raises(model.AiterContractError, match="this build's FP8 is torch.float8_e4m3fn"):
        bs(a, w, sa, sw)
    a, w = operands(m, n, k, fp8.FN)
    assert ck(a, w, xs, ws).shape == (m, n) and bs(a, w, sa, sw, dtype=torch.float16).dtype == torch.float16


@pytest.mark.parametrize("fmt", [fp8.FN, fp8.FNUZ], ids=str)
def test_model_computes_as_the_kernels(seed, fmt):
    m, n, k = 5, 24, 256
    a, w = operands(m, n, k, fmt)
    xs, ws = torch.rand(m, 1) + 0.25, torch.rand(1, n) + 0.25
    bias = torch.randn(n).to(torch.bfloat16)
    # the epilogue: float32 c * w_scale * x_scale (+ bias), one rounding
    acc = a.float() @ w.float().t()
    want = (acc * ws * xs + bias.float()).to(torch.bfloat16)
    assert torch.equal(model_gemm.gemm_a8w8_CK(a, w, xs, ws, bias, torch.bfloat16), want)
    assert torch.equal(model_gemm.gemm_a8w8_CK(a, w, xs, ws, None, torch.bfloat16, 0),
                       (acc * ws * xs).to(torch.bfloat16))
    # scales read through the data pointer: a (M,) or (1, M) x_scale is the same M floats
    assert torch.equal(model_gemm.gemm_a8w8_CK(a, w, xs.reshape(1, m), ws.reshape(n), bias, torch.bfloat16), want)
    # split K: each slice adds the bias again (what the adapter's splitK=0 avoids)
    split = model_gemm.gemm_a8w8_CK(a, w, xs, ws, bias, torch.bfloat16, 1)
    halves = [((a.float()[:, h] @ w.float()[:, h].t()) * ws * xs + bias.float()).to(torch.bfloat16)
              for h in (slice(0, 128), slice(128, 256))]  # KRead = 128: two slices, each rounded, then added
    assert torch.equal(split, (halves[0].float() + halves[1].float()).to(torch.bfloat16))
    # block scales: per 128-wide K block, partial * (a_scale * w_scale), summed in float32
    n2, k2 = 136, 384
    a2, w2 = operands(m, n2, k2, fmt)
    sa, sw = torch.rand(m, 3) + 0.25, torch.rand(2, 3) + 0.25
    acc = torch.zeros(m, n2)
    for j in range(3):
        part = a2.float()[:, j * 128:(j + 1) * 128] @ w2.float()[:, j * 128:(j + 1) * 128].t()
        acc += part * (sa[:, j:j + 1] * sw[:, j].repeat_interleave(128)[:n2].reshape(1, n2))
    assert torch.equal(model_gemm.gemm_a8w8_blockscale(a2, w2, sa, sw, torch.float16), acc.to(torch.float16))
    # a column-major x_scale is read as if dense row-major (the raw pointer), so it gives another result
    col = sa.t().contiguous().t()
    assert not torch.equal(model_gemm.gemm_a8w8_blockscale(a2, w2, col, sw, torch.float16), acc.to(torch.float16))


# ----------------------------------------------------------------------------
# 3. The adapter through the facade, on simulated gfx942 / gfx950
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("arch,fmt", ARCH_FORMATS, ids=lambda v: str(v))
@pytest.mark.parametrize("m", ROWS)
@pytest.mark.parametrize("a_kind,w_kind", SCALINGS)
def test_gemm_a8w8_matches_float64(on_rocm, seed, arch, fmt, m, a_kind, w_kind):
    fake = on_rocm(arch)
    n, k = 48, 160  # K a multiple of 16 but not of 128
    a, w = operands(m, n, k, fmt)
    a0, w0 = a.clone(), w.clone()
    for variant, out_dtype in enumerate(OUT_DTYPES):
        sa, sw = scale(a_kind, m, variant), scale(w_kind, n, variant + 1)
        sa_full, sw_full = full_scales(sa, sw, a_kind, w_kind, m, n)
        other16 = torch.float16 if out_dtype == torch.bfloat16 else torch.bfloat16
        for bias_dtype in (None, out_dtype, torch.float32, other16):
            bias = None if bias_dtype is None else (torch.randn(n) * 4).to(bias_dtype)
            fake.CALLS.clear()
            out = rocm_accel_ops.gemm_a8w8(a, w, sa, sw, bias=bias, out_dtype=out_dtype, backend="aiter")
            assert out.shape == (m, n) and out.dtype == out_dtype
            ref, bound = reference(a, w, sa_full, sw_full, bias)
            rounded = bias if bias is not None and bias.dtype != out_dtype else None
            assert_matches(out, ref, bound, k, f"{arch} {a_kind}/{w_kind} {out_dtype} bias={bias_dtype}",
                           bias_rounded=rounded)
            [call] = fake.CALLS
            assert call.name == "gemm_a8w8_CK"
            assert call.tensor("XQ").data_ptr == a.data_ptr()  # no copies
            assert call.tensor("WQ").data_ptr == w.data_ptr()
            xs, ws = call.tensor("x_scale"), call.tensor("w_scale")
            assert (xs.shape, xs.stride, ws.shape, ws.stride) == ((m, 1), (1, 1), (1, n), (n, 1))
            assert call.args["dtype"] == out_dtype
            if bias is None:
                assert call.args["bias"] is None and call.args["splitK"] is None  # AITER's tuned split
            else:
                assert call.tensor("bias").dtype == out_dtype and call.tensor("bias").shape == (n,)
                assert call.args["splitK"] == 0  # added once
    assert torch.equal(a.view(torch.uint8), a0.view(torch.uint8))  # inputs untouched
    assert torch.equal(w.view(torch.uint8), w0.view(torch.uint8))
    assert served_by("gemm_a8w8") == ["aiter"]


def test_gemm_a8w8_takes_strided_scale_vectors(on_rocm, seed):
    """(M, 1) / (N, 1) scales that are views with row strides are copied dense: the kernel ignores strides."""
    fake = on_rocm("gfx950")
    m, n, k = 7, 64, 96
    a, w = operands(m, n, k, fp8.FN)
    sa = (torch.rand(m, 3) + 0.25)[:, 1:2]
    sw = (torch.rand(n, 2) + 0.25)[:, :1]
    out = rocm_accel_ops.gemm_a8w8(a, w, sa, sw, backend="aiter")
    ref, bound = reference(a, w, sa.double(), sw.double())
    assert_matches(out, ref, bound, k, "strided scales")
    [call] = fake.CALLS
    assert call.tensor("x_scale").stride == (1, 1) and call.tensor("w_scale").stride == (n, 1)
    # a dense (M,) scale is passed as it is, viewed (M, 1)
    sa = torch.rand(m) + 0.25
    fake.CALLS.clear()
    rocm_accel_ops.gemm_a8w8(a, w, sa, sw.contiguous(), backend="aiter")
    assert fake.CALLS[0].tensor("x_scale").data_ptr == sa.data_ptr()


@pytest.mark.parametrize("arch,fmt", ARCH_FORMATS, ids=lambda v: str(v))
@pytest.mark.parametrize("m", ROWS)
@pytest.mark.parametrize("column_major", [False, True])
def test_blockscale_matches_float64(on_rocm, seed, arch, fmt, m, column_major):
    fake = on_rocm(arch)
    n, k = 200, 384  # N not a multiple of 128 (AITER tunes such), K three whole groups
    a, w = operands(m, n, k, fmt)
    sa = torch.rand(m, blocks(k)) + 0.25
    if column_major:
        sa = sa.t().contiguous().t()
    sw = torch.rand(blocks(n), blocks(k)) + 0.25
    sa_full, sw_full = torch_gemm.expand_block_scales(sa.double(), sw.double(), m, n, k)
    for out_dtype in OUT_DTYPES:
        fake.CALLS.clear()
        out = rocm_accel_ops.gemm_a8w8_blockscale(a, w, sa, sw, out_dtype=out_dtype, backend="aiter")
        assert out.shape == (m, n) and out.dtype == out_dtype
        ref, bound = reference(a, w, sa_full, sw_full)
        assert_matches(out, ref, bound, k, f"{arch} blockscale cm={column_major} {out_dtype}")
        [call] = fake.CALLS
        assert call.name == "gemm_a8w8_blockscale" and call.args["dtype"] == out_dtype
        assert call.tensor("XQ").data_ptr == a.data_ptr() and call.tensor("WQ").data_ptr == w.data_ptr()
        xs = call.tensor("x_scale")
        assert xs.shape == (m, blocks(k)) and (xs.stride == (blocks(k), 1) or m == 1)  # dense row-major
        assert (xs.data_ptr == sa.data_ptr()) == (not column_major or m == 1)  # copied only when column-major
    assert served_by("gemm_a8w8_blockscale") == ["aiter"]


def test_blockscale_takes_row_padded_operands(on_rocm, seed):
    """The block-scaled kernel honours row strides (StrideA = XQ.stride(-2)): no copy of a or w."""
    fake = on_rocm("gfx942")
    m, n, k = 7, 64, 256
    a_buf, w_buf = operands(m, n, k + 64, fp8.FNUZ)
    a, w = a_buf[:, :k], w_buf[:, :k]
    sa, sw = torch.rand(m, 2) + 0.25, torch.rand(1, 2) + 0.25
    out = rocm_accel_ops.gemm_a8w8_blockscale(a, w, sa, sw, backend="aiter")
    ref, bound = reference(a, w, *torch_gemm.expand_block_scales(sa.double(), sw.double(), m, n, k))
    assert_matches(out, ref, bound, k, "row-padded")
    [call] = fake.CALLS
    assert call.tensor("XQ").stride == (k + 64, 1) and call.tensor("XQ").data_ptr == a.data_ptr()


# ----------------------------------------------------------------------------
# 4. What the adapter declines: a reason, a ValueError for an explicit backend, a fallback for auto
# ----------------------------------------------------------------------------
def _gemm_case(m=7, n=48, k=160, fmt=fp8.FNUZ, out_dtype=torch.bfloat16, a_pad=0, w_pad=0, misalign=False):
    a_full, w_full = operands(m, n, k + a_pad, fmt)[0], operands(n, n, k + w_pad, fmt)[1]
    a, w = a_full[:, :k], w_full[:, :k]
    if misalign:
        buf = torch.empty(m * k + 16, dtype=fmt)
        buf[1:1 + m * k].view(m, k).copy_(a)
        a = buf[1:1 + m * k].view(m, k)
    sa, sw = torch.rand(m, 1) + 0.25, torch.rand(n, 1) + 0.25
    return dict(a=a, w=w, a_scale=sa, w_scale=sw, bias=torch.randn(n), out_dtype=out_dtype)


def _blockscale_case(m=7, n=48, k=256, fmt=fp8.FNUZ, out_dtype=torch.bfloat16, a_pad=0):
    a = operands(m, n, k + a_pad, fmt)[0][:, :k]
    w = operands(m, n, k, fmt)[1]
    return dict(a=a, w=w, a_scale=torch.rand(m, blocks(k)) + 0.25, w_scale=torch.rand(blocks(n), blocks(k)) + 0.25,
                out_dtype=out_dtype)


def _gemm_args(case):
    return (case["a"], case["w"], case["a_scale"], case["w_scale"], "token", "channel", case["bias"], case["out_dtype"])


DECLINED = [
    ("gemm_a8w8", dict(out_dtype=torch.float32), "write bfloat16/float16 only"),
    ("gemm_a8w8", dict(k=200), "K = 200 is not a multiple of 16"),
    ("gemm_a8w8", dict(n=36), "N = 36 is not a multiple of 8"),
    ("gemm_a8w8", dict(a_pad=32), "a (shape (7, 160), stride (192, 1)) is not dense"),
    ("gemm_a8w8", dict(w_pad=16), "w (shape (48, 160), stride (176, 1)) is not dense"),
    ("gemm_a8w8", dict(fmt=fp8.FN), "take torch.float8_e4m3fnuz on gfx942, not torch.float8_e4m3fn"),
    ("gemm_a8w8", dict(misalign=True), "a is not 16-byte aligned"),
    ("gemm_a8w8_blockscale", dict(k=200), "K = 200 is not a multiple of 128"),
    ("gemm_a8w8_blockscale", dict(k=320), "K = 320 is not a multiple of 128"),
    ("gemm_a8w8_blockscale", dict(n=100), "N = 100 is not a multiple of 8"),
    ("gemm_a8w8_blockscale", dict(out_dtype=torch.float32), "write bfloat16/float16 only"),
    ("gemm_a8w8_blockscale", dict(fmt=fp8.FN), "take torch.float8_e4m3fnuz on gfx942"),
    ("gemm_a8w8_blockscale", dict(a_pad=8), "row stride 264, not a multiple of 16 bytes"),
]


def _reference_of(op, case):
    a, w, sa, sw = case["a"], case["w"], case["a_scale"], case["w_scale"]
    m, k = a.shape
    n = w.shape[0]
    if op == "gemm_a8w8":
        return reference(a, w, sa.double(), sw.double(), case["bias"])
    return reference(a, w, *torch_gemm.expand_block_scales(sa.double(), sw.double(), m, n, k))


@pytest.mark.parametrize("op,params,reason", DECLINED, ids=[f"{o}-{r[:24]}" for o, _, r in DECLINED])
def test_declined_calls_say_why_and_auto_falls_back(on_rocm, seed, op, params, reason):
    fake = on_rocm("gfx942")
    case = _gemm_case(**params) if op == "gemm_a8w8" else _blockscale_case(**params)
    call = getattr(rocm_accel_ops, op)
    with pytest.raises(ValueError, match=f"{op}: backend 'aiter' cannot serve this call: .*{re.escape(reason)}"):
        call(**case, backend="aiter")
    out = call(**case)  # auto: the rocm_gfx9 policy puts aiter first; it declines, torch serves
    ref, bound = _reference_of(op, case)
    assert_matches(out, ref, bound, case["a"].shape[1], f"auto {op} {params}", bias_rounded=None)
    assert fake.CALLS == [] and served_by(op) == ["torch"]


def test_supports_args_gives_a_reason_for_every_refusal(on_rocm, seed):
    """Direct: every declined case is a non-empty reason; the accepted neighbours of each are None."""
    on_rocm("gfx942")
    for op, params, reason in DECLINED:
        if op == "gemm_a8w8":
            got = aiter_gemm.supports_args_gemm_a8w8(*_gemm_args(_gemm_case(**params)))
            ok = aiter_gemm.supports_args_gemm_a8w8(*_gemm_args(_gemm_case()))
        else:
            got = aiter_gemm.supports_args_blockscale(*_blockscale_case(**params).values())
            ok = aiter_gemm.supports_args_blockscale(*_blockscale_case().values())
        assert isinstance(got, str) and reason in got, (op, params, got)
        assert ok is None
    # sizes past what CK addresses (meta tensors: nothing allocated)
    big_a = torch.empty(2**20, 4096, dtype=fp8.FNUZ, device="meta")
    big_w = torch.empty(1024, 4096, dtype=fp8.FNUZ, device="meta")
    sa, sw = torch.empty(2**20, 1, device="meta"), torch.empty(1024, 1, device="meta")
    why = aiter_gemm.supports_args_gemm_a8w8(big_a, big_w, sa, sw, "token", "channel", None, torch.bfloat16)
    assert "2 GB" in why
    why = aiter_gemm.supports_args_blockscale(big_a, big_w, torch.empty(2**20, 32, device="meta"),
                                              torch.empty(8, 32, device="meta"), torch.bfloat16)
    assert "2**31" in why


def test_a_cached_choice_is_not_reused_for_a_padded_operand(on_rocm, seed):
    """auto caches its choice per call signature: a dense call goes to aiter; the same shapes
    with row-padded a or w (aiter's gemm_a8w8 ignores strides) must not reuse that choice."""
    fake = on_rocm("gfx942")
    for pad in (dict(a_pad=32), dict(w_pad=16)):
        dense = _gemm_case()
        rocm_accel_ops.gemm_a8w8(**dense)
        assert [c.name for c in fake.CALLS] == ["gemm_a8w8_CK"]
        fake.CALLS.clear()
        padded = _gemm_case(**pad)
        assert padded["a"].shape == dense["a"].shape and padded["w"].shape == dense["w"].shape
        out = rocm_accel_ops.gemm_a8w8(**padded)
        ref, bound = _reference_of("gemm_a8w8", padded)
        assert_matches(out, ref, bound, padded["a"].shape[1], f"padded {pad}", bias_rounded=None)
        assert fake.CALLS == [], pad
        rocm_accel_ops.gemm_a8w8(**dense)  # the dense signature still goes to aiter
        assert [c.name for c in fake.CALLS] == ["gemm_a8w8_CK"]
        fake.CALLS.clear()
    assert served_by("gemm_a8w8") == ["aiter", "torch"]


@pytest.mark.parametrize("op", ["gemm_a8w8", "gemm_a8w8_blockscale"])
def test_a_cached_choice_is_not_reused_past_aiters_32_bit_limit(on_rocm, seed, monkeypatch, op):
    """M in one policy row bracket can straddle aiter's 2**31 limits; with the limits lowered to
    exactly M = 33's extent (still allowed: the limits are inclusive), M = 33 goes to aiter and
    M = 34 (same bracket) must go to torch."""
    fake = on_rocm("gfx942")
    case_of = _gemm_case if op == "gemm_a8w8" else _blockscale_case
    small, large = case_of(m=33, n=16), case_of(m=34, n=16)
    assert ops_gemm.DISPATCHERS[op].row_bracket(33) == ops_gemm.DISPATCHERS[op].row_bracket(34)
    limit = small["a"].numel()  # a's extent is the largest of the call's (w is 16 x K)
    assert limit > max(small["w"].numel(), 2 * 33 * 16)
    monkeypatch.setattr(aiter_gemm, "MAX_NUMEL", limit)
    monkeypatch.setattr(aiter_gemm, "TWO_GB", limit)
    call = getattr(rocm_accel_ops, op)
    call(**small)
    assert len(fake.CALLS) == 1
    fake.CALLS.clear()
    with pytest.raises(ValueError, match=r"2 GB|2\*\*31"):
        call(**large, backend="aiter")
    out = call(**large)
    ref, bound = _reference_of(op, large)
    assert_matches(out, ref, bound, large["a"].shape[1], f"{op} M = 34", bias_rounded=None)
    assert fake.CALLS == [] and served_by(op) == ["aiter", "torch"]


def test_the_gate_follows_vllms_linear_flag(on_rocm, seed):
    case = _gemm_case(fmt=fp8.FN)
    on_rocm("gfx950", VLLM_ROCM_USE_AITER_LINEAR="0")
    with pytest.raises(ValueError, match="VLLM_ROCM_USE_AITER_LINEAR=0"):
        rocm_accel_ops.gemm_a8w8(**case, backend="aiter")
    on_rocm("gfx90a")
    with pytest.raises(ValueError, match="need gfx942/gfx950"):
        rocm_accel_ops.gemm_a8w8(**case, backend="aiter")
    fake = on_rocm("gfx950")
    rocm_accel_ops.gemm_a8w8(**case)  # auto takes aiter when it can
    assert served_by("gemm_a8w8") == ["aiter"] and [c.name for c in fake.CALLS] == ["gemm_a8w8_CK"]


# ----------------------------------------------------------------------------
# 5. The arch guard; aiter imported only when called
# ----------------------------------------------------------------------------
def test_arch_unsupported_reason(monkeypatch):
    cuda = torch.device("cuda", 0)
    for arch, ok in (("gfx942", True), ("gfx950", True), ("gfx90a", False), ("gfx1100", False)):
        monkeypatch.setattr(platform, "device_arch", lambda index=0, _a=arch: _a)
        reason = aiter_gemm.arch_unsupported_reason(cuda)
        assert (reason is None) == ok, (arch, reason)
        if not ok:
            assert arch in reason
    assert aiter_gemm.arch_unsupported_reason(torch.device("cpu")) is None  # the platform gate refuses it


IMPORT_CHECK = """
import json, sys, torch
from vllm_rocm_accel.backends.aiter import gemm
a = torch.zeros(4, 256, dtype=torch.float8_e4m3fn)
w = torch.zeros(64, 256, dtype=torch.float8_e4m3fn)
s = torch.ones(1)
reasons = [gemm.supports_args_gemm_a8w8(a, w, s, s, "tensor", "tensor", None, torch.bfloat16),
           gemm.supports_args_blockscale(a, w, torch.ones(4, 2), torch.ones(1, 2), torch.bfloat16),
           gemm.arch_unsupported_reason(torch.device("cpu"))]
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
    assert result == {"aiter_imported": False, "reasons": [None, None, None]}
    assert wheel.scan_adapter_module(MODULE).problems == ()  # no `import aiter` outside `_aiter()`
