"""The Triton fused FP8 quant launchers against the torch reference (``backends/torch/fused_quant.py``,
the unfused composition of the norm / activation and quant references).

On the CPU the kernels run under TRITON_INTERPRET (tests/conftest.py, which also makes the
interpreter round to bfloat16 as GPUs do), with the quant kernels' own integer FP8 encoder; there
they agree with the reference bit for bit, and after the explanatory checks (scales, dequantized
values within one FP8 ulp) the FP8 bytes must be identical. On a GPU, float32 sums and ``exp``
may differ from torch's in the last bit, which can move a 16-bit intermediate by one step: there
the scales are compared to that step and at most 0.5% of the bytes may differ (by one FP8 ulp).
"""

from __future__ import annotations

import functools
import os

import pytest
import torch

from helpers import assert_close_verbose, edited_config, fp8_steps, same_fp8_codes
from vllm_rocm_accel import fp8
from vllm_rocm_accel.backends.torch import fused_quant as ref
from vllm_rocm_accel.backends.torch.quant import per_token_group_scales_layout
from vllm_rocm_accel.backends.triton import fused_quant as tfq
from vllm_rocm_accel.inputs import norm_inputs
from vllm_rocm_accel.inputs_activation import act_and_mul_inputs

DEVICE = "cuda" if torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1" else "cpu"
EXACT = DEVICE == "cpu"
FN, FNUZ = torch.float8_e4m3fn, torch.float8_e4m3fnuz
FORMATS = [FN, FNUZ]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
MIN_NORMAL_EXP = {FN: -6, FNUZ: -7}
EPS = 1e-5


# --- inputs and checks ------------------------------------------------------------------------
def spread_rows(t: torch.Tensor) -> torch.Tensor:
    """Rows scaled over ~6 binades (distinct scales; small values on FP8 subnormals after the norm
    only through the weight and the activation's tails)."""
    return t * torch.exp2(torch.empty(t.shape[:-1] + (1,), device=t.device).uniform_(-3, 3)).to(t.dtype)


def fp8_ulp(v: torch.Tensor, fmt) -> torch.Tensor:
    e = torch.floor(torch.log2(v.abs().clamp(min=1e-300))).clamp(min=MIN_NORMAL_EXP[fmt])
    return torch.pow(2.0, e - 3)


def check(got, want, fmt, dtype, msg, group: int = 0, exact: bool = EXACT) -> None:
    """Scales, dequantized values, then bytes, each failure saying where and by how much.
    ``exact``: bit-exact scales and bytes (the default on the CPU); otherwise scales within two
    ulps of ``dtype`` and a few bytes one FP8 step off. Two, not one: both sides round the norm's
    output to ``dtype`` twice (vLLM's RMSNorm: ``x * rsqrt`` to the weight's dtype, then its
    product with the weight), and a last-bit difference in the row's rsqrt (another summation
    order) can flip the first rounding at a tie, a step of the intermediate that the weight
    carries into the output before its own rounding (SiluAndMul likewise: silu to ``dtype``,
    then the product); as in tests/gpu/test_fused_quant_gpu.py and
    tests/ops/test_norm_triton_kernels.py. Seen on the CPU with a forced 64-column loop: seed
    1902272970 of test_rms_norm_quant_mul_division, x * rsqrt = -3.0859375 (the midpoint of two
    bf16 values) times a weight of 1.195, 2 bf16 ulps apart."""
    (q, s), (qr, sr) = got, want
    assert q.dtype == fmt and q.shape == qr.shape, f"{msg}: q {q.dtype} {tuple(q.shape)}"
    assert s.dtype == torch.float32 and s.shape == sr.shape and s.stride() == sr.stride(), f"{msg}: scales layout"
    assert torch.isfinite(s).all() and (s > 0).all(), f"{msg}: non-finite or non-positive scales"
    rtol = 1e-6 if exact else 2 * torch.finfo(dtype).eps + 1e-6
    assert_close_verbose(s, sr, atol=0, rtol=rtol, msg=f"{msg} scales")
    rep = (lambda t: t.double().repeat_interleave(group, dim=-1)) if group else (lambda t: t.double().expand(q.shape))
    want_v, got_v = qr.double() * rep(sr), q.double() * rep(s)
    ulp = fp8_ulp(qr.double(), fmt) * rep(sr)
    bad = (got_v - want_v).abs() > ulp * (1 + 1e-6) + want_v.abs() * rtol
    assert not bad.any(), (f"{msg}: {int(bad.sum())} of {q.numel()} dequantized values off by more than one FP8 ulp; "
                           f"first at {[int(i) for i in bad.nonzero()[0]]}: got {got_v[bad][0].item()} "
                           f"want {want_v[bad][0].item()}")
    diff = q.view(torch.uint8) != qr.view(torch.uint8)
    allowed = 0 if exact else max(4, int(0.005 * q.numel()))
    assert int(diff.sum()) <= allowed, (
        f"{msg}: {int(diff.sum())} of {q.numel()} FP8 bytes differ from the reference (all within one ulp); first at "
        f"{[int(i) for i in diff.nonzero()[0]]}: got {q.view(torch.uint8)[diff][0].item():#04x} "
        f"want {qr.view(torch.uint8)[diff][0].item():#04x}")


def poisoned(shape, fmt):
    return torch.full(shape, float("nan"), device=DEVICE).to(fmt)  # every byte must be written


def run_norm(x, weight, fmt, residual=None, eps=EPS):
    q = poisoned(x.shape, fmt)
    s = torch.full(tuple(x.shape[:-1]) + (1,), -1.0, device=DEVICE)
    tfq.rms_norm_dynamic_quant(q, s, x, residual, weight, eps)
    return q, s


def run_silu(x, fmt, group, column_major):
    lead, d = tuple(x.shape[:-1]), x.shape[-1] // 2
    q = poisoned(lead + (d,), fmt)
    s = per_token_group_scales_layout(lead, d // group, column_major, DEVICE)
    s.fill_(-1.0)
    tfq.silu_and_mul_group_quant(q, s, x, group)
    return q, s


@pytest.fixture
def config(monkeypatch):
    """Edit the launch config for one test: ``config()[family]["rms_norm_quant"][...] = ...``."""
    for edited in edited_config(monkeypatch, tfq):
        yield lambda: edited


def norm_case(lead, hidden, dtype, row_pad=0, weight_dtype="same"):
    x, r, w = norm_inputs(lead + (hidden + row_pad,), dtype, DEVICE, weight_dtype=weight_dtype, scale=3.0)
    x, r = spread_rows(x), spread_rows(r)
    if w is not None:
        w = w[:hidden].contiguous()
    if row_pad:
        x, r = x[..., :hidden], r[..., :hidden]
    return x, r, w


# --- RMSNorm + per-token quant ------------------------------------------------------------------
NORM_SHAPES = [((5,), 64, 0), ((7,), 123, 0), ((2, 3), 96, 16), ((3,), 200, 6), ((1,), 130, 0), ((4,), 257, 3),
               ((4,), 64, 0), ((2, 3), 128, 8)]  # the last two unmasked (EVEN: whole blocks, whole programs)


@pytest.mark.parametrize("fmt", FORMATS, ids=str)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("lead,hidden,row_pad", NORM_SHAPES)
def test_rms_norm_quant(seed, fmt, dtype, lead, hidden, row_pad):
    """On the interpreter's config 64/96/123/128 take whole rows (two per program), 130/200/257 the looped
    kernel; 4 x 64 and 6 x 128 fill every block and program (the launcher's EVEN: no masks)."""
    x, _, w = norm_case(lead, hidden, dtype, row_pad)
    x[(-1,) * len(lead)] = 0  # an all-zero row
    x0 = x.clone()
    got = run_norm(x, w, fmt)
    check(got, ref.rms_norm_dynamic_quant(x, w, EPS, fmt), fmt, dtype, f"rms {lead} {hidden} {dtype} pad {row_pad}")
    assert torch.equal(x, x0)
    q, s = got
    last = (-1,) * len(lead)
    assert not q[last].view(torch.uint8).any() and s[last].item() == pytest.approx(fp8.AMAX_FLOOR / fp8.fp8_max(fmt))


@pytest.mark.parametrize("fmt", FORMATS, ids=str)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("lead,hidden,row_pad", NORM_SHAPES)
def test_fused_add_rms_norm_quant_updates_residual_in_place(seed, fmt, dtype, lead, hidden, row_pad):
    xf, rf, w = norm_inputs(lead + (hidden + row_pad,), dtype, DEVICE, scale=3.0)
    w = w[:hidden].contiguous()
    x, r = (xf[..., :hidden], rf[..., :hidden]) if row_pad else (xf, rf)
    first = (0,) * len(lead)
    r[first] = -x[first]  # a row whose sum is all zero
    x0, r0, rf0 = x.clone(), r.clone(), rf.clone()
    r_ref = r0.clone()
    want = ref.fused_add_rms_norm_dynamic_quant(x0, r_ref, w, EPS, fmt)
    got = run_norm(x, w, fmt, residual=r)
    check(got, want, fmt, dtype, f"add {lead} {hidden} {dtype} pad {row_pad}")
    assert torch.equal(x, x0), "x was modified"
    assert torch.equal(r, r_ref), "residual is not x + residual rounded as the norm family rounds it"
    if row_pad:
        assert torch.equal(rf[..., hidden:], rf0[..., hidden:]), "wrote past residual's rows"
    assert not got[0][first].view(torch.uint8).any()


@pytest.mark.parametrize("weight_dtype", [None, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("hidden", [96, 200])
def test_weightless_and_mixed_weight_dtypes(seed, weight_dtype, hidden):
    x, r, w = norm_case((4,), hidden, torch.float16, weight_dtype=weight_dtype)
    check(run_norm(x, w, FN), ref.rms_norm_dynamic_quant(x, w, EPS, FN), FN, torch.float16, f"w {weight_dtype}")
    r_ref = r.clone()
    want = ref.fused_add_rms_norm_dynamic_quant(x, r_ref, w, EPS, FN)
    check(run_norm(x, w, FN, residual=r), want, FN, torch.float16, f"add w {weight_dtype}")
    assert torch.equal(r, r_ref)


@pytest.mark.parametrize("residual", [False, True])
def test_single_pass_and_looped_agree(seed, config, residual):
    x, r, w = norm_case((5,), 200, torch.bfloat16)
    r_ref = r.clone()
    want = (ref.fused_add_rms_norm_dynamic_quant(x, r_ref, w, EPS, FN) if residual
            else ref.rms_norm_dynamic_quant(x, w, EPS, FN))
    section = config()[tfq._family(x.device.type)]["rms_norm_quant"]
    section["single_pass_max_idle"] = 1.0
    for single_max in (128, 256):  # looped, then whole rows (BLOCK_N 256)
        section["single_pass_max_cols"] = single_max
        tfq.clear_caches()
        assert (tfq.norm_quant_params(x.device.type, 200, x.dtype)[0] <= 5) == (single_max < 200)
        rr = r.clone()
        got = run_norm(x, w, FN, residual=rr if residual else None)
        check(got, want, FN, torch.bfloat16, f"single_pass_max_cols {single_max}")
        if residual:
            assert torch.equal(rr, r_ref)


def test_padded_rows_take_the_looped_kernel_from_the_configured_row_count(config):
    section = config()["cuda"]["rms_norm_quant"]
    params = functools.partial(tfq.norm_quant_params, "cuda")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tfq, "_family", lambda device_type: "cuda")
        tfq.clear_caches()
        assert params(4096, torch.bfloat16)[0] > 2**40  # a power of two: never looped
        assert params(7168, torch.bfloat16)[0] > 2**40  # 12.5% padding: single pass
        assert params(5120, torch.bfloat16)[0] == section["padded_looped_min_rows"]  # 37.5%: looped
        assert params(20000, torch.bfloat16)[0] == 0  # past single_pass_max_cols: always looped
    tfq.clear_caches()


def test_int64_offsets_path(seed, monkeypatch):
    """IDX64 (set only when an offset can reach 2**31) computes the same: forced by lowering the bound."""
    x, r, w = norm_case((3,), 96, torch.bfloat16)
    g = act_and_mul_inputs(3, 96, torch.bfloat16, DEVICE)
    want = ref.rms_norm_dynamic_quant(x, w, EPS, FN), ref.silu_and_mul_group_quant(g, 32, True, FN)
    tfq.clear_caches()
    monkeypatch.setattr(tfq, "_I32", 1)
    check(run_norm(x, w, FN), want[0], FN, torch.bfloat16, "rms idx64")
    check(run_silu(g, FN, 32, True), want[1], FN, torch.bfloat16, "silu idx64", 32)
    monkeypatch.undo()
    tfq.clear_caches()


# --- SiLU-and-mul + per-token-group quant ------------------------------------------------------------
@pytest.mark.parametrize("fmt", FORMATS, ids=str)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("column_major", [False, True])
@pytest.mark.parametrize("lead,d,group,row_pad", [
    ((3,), 256, 128, 0),     # one program's tiles span rows
    ((2, 3), 96, 32, 16),    # leading dims, strided rows, d not a power of two
    ((5,), 48, 16, 0),
    ((4,), 96, 96, 8),       # a group that is not a power of two: padded, masked block
    ((3,), 120, 24, 0),
    ((1,), 128, 128, 0),
])
def test_silu_and_mul_group_quant(seed, fmt, dtype, column_major, lead, d, group, row_pad):
    x = act_and_mul_inputs(lead, d, dtype, DEVICE, row_pad=row_pad)
    x = spread_rows(x)
    first = (0,) * len(lead)
    x[first][:group] = 0  # a zero gate group: an all-zero output group
    x0 = x.clone()
    got = run_silu(x, fmt, group, column_major)
    want = ref.silu_and_mul_group_quant(x, group, column_major, fmt)
    assert got[1].stride() == want[1].stride(), "the scales keep the layout they were given"
    # Not bit-exact even on the CPU: the kernel's float32 silu (the interpreter's numpy exp) and
    # torch's (its own vectorized exp) can differ by an ulp, which once in a while rounds a
    # 16-bit product, and so a group's amax and scale, one 16-bit ulp apart (seen: seed
    # 1306347185, fp16, group 24; float32 products can differ in their last bit the same way).
    # The quantization itself is checked bit-exactly by the per-token-group tests.
    check(got, want, fmt, dtype, f"silu g{group} {lead} d={d} {dtype} cm={column_major}", group, exact=False)
    assert torch.equal(x, x0)
    assert not got[0][first][:group].float().any()
    assert got[1][first][0].item() == pytest.approx(fp8.AMAX_FLOOR / fp8.fp8_max(fmt))


def test_silu_column_major_scale_positions(seed):
    """Each scale lands at its (token, group): compare with amax / max computed directly."""
    x = act_and_mul_inputs(6, 128, torch.float32, DEVICE)
    q, s = run_silu(x, FN, 32, True)
    assert s.stride() == (1, 6)
    y = torch.nn.functional.silu(x[:, :128]) * x[:, 128:]
    want = y.abs().reshape(6, 4, 32).amax(-1).clamp(min=fp8.AMAX_FLOOR) / fp8.fp8_max(FN)
    torch.testing.assert_close(s, want, rtol=1e-6, atol=0)


# --- edges ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", FORMATS, ids=str)
def test_empty_inputs(fmt):
    x = torch.empty(0, 64, device=DEVICE)
    q, s = run_norm(x, None, fmt)
    assert q.shape == (0, 64) and s.shape == (0, 1)
    q, s = run_norm(x, torch.ones(64, device=DEVICE), fmt, residual=torch.empty(0, 64, device=DEVICE))
    assert s.shape == (0, 1)
    q, s = run_silu(torch.empty(0, 128, device=DEVICE), fmt, 32, True)
    assert q.shape == (0, 64) and s.shape == (0, 2)


def test_supports_args():
    x = torch.zeros(4, 64, dtype=torch.bfloat16)
    w = torch.ones(64, dtype=torch.bfloat16)
    assert tfq.supports_args_norm(x, w, EPS, FN) is None
    assert tfq.supports_args_norm(x[:, :32], None, EPS, FNUZ, torch.zeros(4, 64, dtype=torch.bfloat16)[:, :32]) is None
    assert tfq.supports_args_norm(x.reshape(2, 2, 64), w, EPS, FN) is None
    assert "dtype" in tfq.supports_args_norm(x.to(torch.int32), None, EPS, FN)
    assert "rows" in tfq.supports_args_norm(x.t(), None, EPS, FN)
    assert "residual" in tfq.supports_args_norm(x, None, EPS, FN, torch.zeros(64, 4, dtype=torch.bfloat16).t())
    assert "weight" in tfq.supports_args_norm(x, torch.ones(128)[::2], EPS, FN)
    assert "float8" in tfq.supports_args_norm(x, w, EPS, torch.float16)
    assert tfq.supports_args_silu(x, 16, True, FN) is None
    assert "group_size" in tfq.supports_args_silu(x, 24, False, FN)
    assert "rows" in tfq.supports_args_silu(x.t(), 2, False, FN)


def test_config_families_are_complete(config, monkeypatch):
    """Every family's sections load with power-of-two sizes and sane brackets."""
    families = [k for k in config() if not k.startswith("_")]
    assert set(families) >= {"cuda", "rocm", "interpret"}
    for family in families:
        tfq.clear_caches()
        monkeypatch.setattr(tfq, "_family", lambda device_type, _f=family: _f)
        for h in (1, 64, 123, 4096, 5120, 7168, 8192, 20000):
            looped_from, block, rows, warps, lblock, lwarps = tfq.norm_quant_params("cuda", h, torch.bfloat16)
            assert block >= h and rows >= 1 and warps >= 1 and lblock >= 1 and lwarps >= 1 and looped_from >= 0
        for g in (16, 96, 128):
            block_g, brackets = tfq.silu_group_params("cuda", g, torch.float16)
            assert block_g >= g and all(t >= 1 for _, t, _ in brackets)
    tfq.clear_caches()


@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("rcp_div", [False, True])
@pytest.mark.parametrize("hidden,chunk,rows,hints,row_pad", [
    (192, 64, 1, False, 0),
    (200, 64, 2, True, 8),
])
def test_chunked_kernel_and_rcp_div(seed, config, residual, rcp_div, hidden, chunk, rows, hints, row_pad):
    """The ``chunked`` RMSNorm + quant kernel and the reciprocal division agree with the reference
    (the chunk-wise sum of squares may round rstd differently in the last bit: ``check``'s one-ulp
    rule covers that), and the fused add still updates the residual exactly."""
    x, r, w = norm_case((5,), hidden, torch.bfloat16, row_pad=row_pad)
    r_ref = r.clone()
    want = (ref.fused_add_rms_norm_dynamic_quant(x, r_ref, w, EPS, FN) if residual
            else ref.rms_norm_dynamic_quant(x, w, EPS, FN))
    section = config()[tfq._family(x.device.type)]["rms_norm_quant"]
    section["chunked"] = [{"max_cols": 10**9, "min_rows": 1, "chunk": chunk, "rows_per_program": rows,
                           "num_warps": 4, "hints": hints}]
    section["rcp_div"] = rcp_div
    tfq.clear_caches()
    assert tfq.norm_quant_variant_params(x.device.type, hidden, x.dtype)[1][0] == 1  # the chunked kernel runs
    rr = r.clone()
    got = run_norm(x, w, FN, residual=rr if residual else None)
    check(got, want, FN, torch.bfloat16, f"chunked {hidden}/{chunk}")
    if residual:
        assert torch.equal(rr, r_ref)


# --- the faster RMSNorm + quant variants (issue 4 follow-up) --------------------------------------
# kernel: whole (the whole-row kernel, two rows a program), regs (chunks held in registers)
NORM_VARIANTS = {
    "whole split": dict(kernel="whole", rcp_div="split"),
    "whole split weight_early": dict(kernel="whole", rcp_div="split", weight_early=True),
    "whole rcp weight_early lp_amax": dict(kernel="whole", rcp_div=True, weight_early=True, lp_amax=True),
    "whole split sat lp_amax": dict(kernel="whole", rcp_div="split", sat_cvt=True, lp_amax=True),
    "regs ieee": dict(kernel="regs", rcp_div=False),
    "regs split": dict(kernel="regs", rcp_div="split"),
    "regs split sat weight_early": dict(kernel="regs", rcp_div="split", sat_cvt=True, weight_early=True),
    "chunked split sat": dict(kernel="chunked", rcp_div="split", sat_cvt=True),
}


def use_norm_variant(section: dict, variant, chunk: int, rows: int) -> None:
    """Configure ``section`` for ``variant``: a NORM_VARIANTS name or such a dict."""
    v = NORM_VARIANTS[variant] if isinstance(variant, str) else variant
    for key in ("rcp_div", "sat_cvt", "weight_early", "lp_amax"):
        section[key] = v.get(key, False)
    if v["kernel"] == "whole":
        section["chunked"] = []
        section["single_pass_max_cols"], section["single_pass_max_idle"] = 1024, 1.0
        section["tables"] = {"default": [{"max_cols": 10**9, "rows_per_program": rows, "num_warps": 4}]}
    else:
        section["chunked"] = [{"max_cols": 10**9, "min_rows": 1, "chunk": chunk, "rows_per_program": rows,
                               "num_warps": 4, "regs": v["kernel"] == "regs"}]
    tfq.clear_caches()


@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("variant", list(NORM_VARIANTS))
@pytest.mark.parametrize("hidden,chunk,rows,row_pad", [
    (123, 32, 2, 5),    # odd H: a masked last chunk (and padded whole rows), 2 rows a program over 5, strided
    (500, 64, 1, 0),    # 8 chunks: every slot of the regs kernel
])
def test_rms_norm_quant_fast_variants(seed, config, residual, variant, hidden, chunk, rows, row_pad):
    """The split division, the saturating conversion, the early 2-D weight, the amax in x's dtype and
    the regs kernel: the same codes and scales, bit for bit, as the same kernel with the IEEE division
    and the clamp (-0.0 aside: value-equal), and within ``check``'s one-ulp rule of the reference (the
    kernels sum squares in their own order and torch in its own, so rstd may differ in its last bit
    and move a code, on the CPU too: seed 1855757637, whole rows of 500, one code in 2500); with an
    all-zero row (and, with a residual, a row whose sum is zero), and the residual updated exactly."""
    x, r, w = norm_case((5,), hidden, torch.bfloat16, row_pad=row_pad)
    x[3] = 0
    if residual:
        r[1] = -x[1]
    use_norm_variant(config()[tfq._family(x.device.type)]["rms_norm_quant"], variant, chunk, rows)
    rcp_div, chunked, opts = tfq.norm_quant_variant_params(x.device.type, hidden, x.dtype)
    v = NORM_VARIANTS[variant]
    assert (chunked[0] == 1) == (v["kernel"] != "whole") and chunked[7] == (v["kernel"] == "regs")
    assert opts == (v.get("sat_cvt", False), v.get("weight_early", False), v.get("lp_amax", False))
    r_ref = r.clone()
    want = (ref.fused_add_rms_norm_dynamic_quant(x, r_ref, w, EPS, FN) if residual
            else ref.rms_norm_dynamic_quant(x, w, EPS, FN))
    rr = r.clone()
    got = run_norm(x, w, FN, residual=rr if residual else None)
    msg = f"{variant} {hidden}/{chunk} rows {rows} residual {residual}"
    check(got, want, FN, torch.bfloat16, msg, exact=False)
    ieee = dict(v, rcp_div=False, sat_cvt=False, weight_early=False, lp_amax=False)
    use_norm_variant(config()[tfq._family(x.device.type)]["rms_norm_quant"], ieee, chunk, rows)
    rb = r.clone()
    base = run_norm(x, w, FN, residual=rb if residual else None)
    assert torch.equal(got[1], base[1]), f"{msg}: scales differ from the IEEE-division kernel"
    same = same_fp8_codes(got[0], base[0])
    assert same.all(), f"{msg}: {int((~same).sum())} codes differ from the IEEE-division kernel"
    zero = 1 if residual else 3
    assert not got[0][zero].view(torch.uint8).any()
    assert got[1][zero].item() == pytest.approx(fp8.AMAX_FLOOR / fp8.fp8_max(FN))
    if residual:
        assert torch.equal(rr, r_ref) and torch.equal(rb, r_ref)


MUL_VARIANTS = {
    "whole mul sat weight_early": dict(kernel="whole", rcp_div="mul", sat_cvt=True, weight_early=True),
    "whole mul lp_amax": dict(kernel="whole", rcp_div="mul", lp_amax=True),
    "regs mul sat": dict(kernel="regs", rcp_div="mul", sat_cvt=True),
    "chunked mul": dict(kernel="chunked", rcp_div="mul"),
}


@pytest.mark.parametrize("fmt", FORMATS, ids=str)
@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("variant", list(MUL_VARIANTS))
def test_rms_norm_quant_mul_division(seed, config, fmt, residual, variant):
    """rcp_div "mul" (the product with the row's reciprocal, not bit for bit; its midpoint contract is
    tested on per_token_quant, the same code): against the same kernel with the IEEE division, the
    same scales and residual, codes at most one FP8 step apart on <= 1% of them (zeros equal), and
    within ``check``'s one-ulp rule of the reference; all-zero rows give zeros and the floor scale."""
    x, r, w = norm_case((24,), 500, torch.bfloat16)
    x[3] = 0
    if residual:
        r[1] = -x[1]
    section = config()[tfq._family(x.device.type)]["rms_norm_quant"]
    v = MUL_VARIANTS[variant]
    use_norm_variant(section, v, 64, 2)
    assert tfq.norm_quant_variant_params(x.device.type, 500, x.dtype, residual)[0] == 3
    r_ref = r.clone()
    want = (ref.fused_add_rms_norm_dynamic_quant(x, r_ref, w, EPS, fmt) if residual
            else ref.rms_norm_dynamic_quant(x, w, EPS, fmt))
    rr = r.clone()
    got = run_norm(x, w, fmt, residual=rr if residual else None)
    check(got, want, fmt, torch.bfloat16, f"{variant} residual {residual}", exact=False)
    use_norm_variant(section, dict(v, rcp_div=False, sat_cvt=False), 64, 2)
    rb = r.clone()
    base = run_norm(x, w, fmt, residual=rb if residual else None)
    assert torch.equal(got[1], base[1]), f"{variant}: scales differ from the IEEE-division kernel's"
    steps = fp8_steps(got[0], base[0])
    assert steps.max().item() <= 1 and int((steps > 0).sum()) <= 0.01 * steps.numel(), (
        f"{variant}: {int((steps > 0).sum())} codes moved, at most {steps.max().item()} steps")
    zeros = base[0].float() == 0
    assert (got[0].float()[zeros] == 0).all() and torch.equal(torch.signbit(got[0].float()[zeros]),
                                                              torch.signbit(base[0].float()[zeros]))
    zero = 1 if residual else 3
    assert not got[0][zero].view(torch.uint8).any()
    assert got[1][zero].item() == pytest.approx(fp8.AMAX_FLOOR / fp8.fp8_max(fmt))
    if residual:
        assert torch.equal(rr, r_ref) and torch.equal(rb, r_ref)


@pytest.mark.parametrize("fmt", FORMATS, ids=str)
@pytest.mark.parametrize("variant", ["whole split weight_early", "regs split sat weight_early"])
def test_fast_variants_weightless_and_fnuz(seed, config, fmt, variant):
    x, r, _ = norm_case((4,), 96, torch.float16)
    use_norm_variant(config()[tfq._family(x.device.type)]["rms_norm_quant"], variant, 32, 2)
    check(run_norm(x, None, fmt), ref.rms_norm_dynamic_quant(x, None, EPS, fmt), fmt, torch.float16, f"{variant} no w")
    r_ref = r.clone()
    want = ref.fused_add_rms_norm_dynamic_quant(x, r_ref, None, EPS, fmt)
    check(run_norm(x, None, fmt, residual=r), want, fmt, torch.float16, f"{variant} add, no w")
    assert torch.equal(r, r_ref)


def test_regs_kernel_takes_at_most_8_chunks(config):
    section = config()[tfq._family("cpu")]["rms_norm_quant"]
    section["chunked"] = [{"max_cols": 10**9, "min_rows": 1, "chunk": 64, "num_warps": 4, "regs": True}]
    tfq.clear_caches()
    assert tfq.norm_quant_variant_params("cpu", 512, torch.bfloat16)[1][7] is True
    assert tfq.norm_quant_variant_params("cpu", 520, torch.bfloat16)[1][7] is False  # 9 chunks: the chunked kernel
    tfq.clear_caches()


@pytest.mark.parametrize("variant", ["whole split weight_early", "regs split sat weight_early"])
def test_fast_variants_int64_offsets(seed, config, monkeypatch, variant):
    """IDX64 (set only when an offset can reach 2**31) computes the same: forced by lowering the bound."""
    x, r, w = norm_case((5,), 123, torch.bfloat16)
    use_norm_variant(config()[tfq._family(x.device.type)]["rms_norm_quant"], variant, 32, 2)
    monkeypatch.setattr(tfq, "_I32", 1)
    r_ref = r.clone()
    want = ref.fused_add_rms_norm_dynamic_quant(x, r_ref, w, EPS, FN)
    check(run_norm(x, w, FN, residual=r), want, FN, torch.bfloat16, f"{variant} idx64")
    assert torch.equal(r, r_ref)


def test_whole_row_register_cap_parses_and_applies_without_a_residual_only(seed, config):
    """maxnreg_without_residual: the shipped cuda tables cap bf16 / fp16 rows of exactly 4096 at 56
    registers (calls without a residual only); a bad value is a ValueError naming the key; under the
    interpreter a capped launch computes what the uncapped one does."""
    shipped = functools.partial(tfq.maxnreg_of, tfq._config()["cuda"]["rms_norm_quant"])
    assert shipped(4096, torch.bfloat16, False) == 56 and shipped(4096, torch.float16, False) == 56
    assert shipped(4096, torch.bfloat16, True) is None  # the residual kernel would spill under a cap
    assert shipped(4095, torch.bfloat16, False) is None and shipped(4096, torch.float32, False) is None
    assert shipped(8192, torch.bfloat16, False) is None
    cap = tfq.norm_quant_maxnreg
    assert cap("cpu", 64, torch.bfloat16, False) is None
    x, _, w = norm_case((6,), 128, torch.bfloat16)
    want = run_norm(x, w, FN)
    table = config()[tfq._family(x.device.type)]["rms_norm_quant"]["tables"]["default"]
    table[-1]["maxnreg_without_residual"] = 56
    tfq.clear_caches()
    assert cap(x.device.type, 128, x.dtype, False) == 56
    got = run_norm(x, w, FN)
    assert torch.equal(got[1], want[1]) and torch.equal(got[0].view(torch.uint8), want[0].view(torch.uint8))
    for bad in (8, 300, 56.0, True, "56"):
        table[-1]["maxnreg_without_residual"] = bad
        tfq.clear_caches()
        with pytest.raises(ValueError, match="maxnreg_without_residual"):
            cap(x.device.type, 128, x.dtype, False)
        assert cap(x.device.type, 128, x.dtype, True) is None
    tfq.clear_caches()


def test_chunked_bracket_with_a_residual_key_applies_to_those_calls_only():
    """The shipped cuda rms_norm_quant section puts H = 7168 on the regs kernel for calls without a
    residual only (with one, whole rows measured faster on the H200)."""
    from vllm_rocm_accel.backends.triton.quant import row_variant_params

    section = {"chunked": [{"max_cols": 7168, "min_rows": 256, "chunk": 1024, "num_warps": 4, "regs": True,
                            "residual": False},
                           {"max_cols": 8192, "min_rows": 512, "chunk": 2048, "num_warps": 8}]}
    without = row_variant_params(section, 7168, torch.bfloat16, residual=False)[1]
    with_res = row_variant_params(section, 7168, torch.bfloat16, residual=True)[1]
    unfiltered = row_variant_params(section, 7168, torch.bfloat16)[1]
    assert without[0] == 256 and without[7] is True
    assert with_res[0] == 512 and with_res[1] == 2048 and with_res[7] is False  # the next bracket
    assert unfiltered == without
    shipped = tfq._config()["cuda"]["rms_norm_quant"]
    assert row_variant_params(shipped, 7168, torch.bfloat16, residual=False)[1][7] is True
    assert row_variant_params(shipped, 7168, torch.bfloat16, residual=True)[1][0] > 2**61  # whole rows


# --- the silu + group quant kernel's division variants (rcp_div / sat_cvt) ------------------------
SILU_VARIANTS = {"split": dict(rcp_div="split"), "split sat": dict(rcp_div="split", sat_cvt=True),
                 "rcp": dict(rcp_div=True)}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("variant", list(SILU_VARIANTS))
@pytest.mark.parametrize("column_major", [False, True])
@pytest.mark.parametrize("lead,d,group", [((3,), 256, 128), ((4,), 96, 96), ((5,), 120, 24)])
def test_silu_group_variants_match_the_default_path(seed, config, fmt, variant, column_major, lead, d, group):
    """The same kernel run twice on the same input, the shipped division and the variant: the same FP8
    bytes and scales (the same float32 silu both times, so this is exact), -0.0 products aside (the
    split division may give +0 on a GPU: value-equal); and within the reference's tolerance."""
    x = spread_rows(act_and_mul_inputs(lead, d, torch.bfloat16, DEVICE))
    x[(0,) * len(lead)][:group] = 0  # a zero gate group
    x[(0,) * len(lead)][d:d + 3] = -0.0
    want = run_silu(x, fmt, group, column_major)
    config()[tfq._family(x.device.type)]["silu_mul_group_quant"].update(SILU_VARIANTS[variant])
    tfq.clear_caches()
    v = SILU_VARIANTS[variant]
    assert tfq.silu_group_variant(x.device.type) == ({False: 0, True: 1, "split": 2}[v.get("rcp_div", False)],
                                                      v.get("sat_cvt", False), False)
    got = run_silu(x, fmt, group, column_major)
    assert torch.equal(got[1], want[1]), f"silu {variant}: scales differ"
    same = same_fp8_codes(got[0], want[0])
    assert same.all(), \
        f"silu {variant}: {int((~same).sum())} FP8 bytes differ (and not only in a zero's sign)"
    check(got, ref.silu_and_mul_group_quant(x, group, column_major, fmt), fmt, torch.bfloat16,
          f"silu {variant} vs reference", group, exact=False)


def test_ftz_silu_is_nvidia_only_and_checked(config):
    """``ftz_silu`` (PTX inline assembly) never reaches the interpreter or ROCm, and a non-bool is refused."""
    section = config()[tfq._family(DEVICE)]["silu_mul_group_quant"]
    section["ftz_silu"] = True
    tfq.clear_caches()
    assert tfq.silu_group_variant(DEVICE)[2] is False  # the interpreter family here
    section["ftz_silu"] = "yes"
    tfq.clear_caches()
    with pytest.raises(ValueError, match="ftz_silu must be true or false"):
        tfq.silu_group_variant(DEVICE)
