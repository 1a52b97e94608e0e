"""The Triton FP8 quant launchers against the torch reference (``backends/torch/quant.py``).

On the CPU the kernels run under TRITON_INTERPRET (tests/conftest.py), with the kernel's own
integer FP8 encoder (the interpreter's cast is not round-to-nearest-even); on a GPU, natively.
Either way the launchers are built to agree with the reference on the same device bit for bit,
so after the explanatory checks (scales within rtol 1e-6, dequantized values within one FP8
ulp) the quantized bytes must be identical.
"""

from __future__ import annotations

import functools
import os

import pytest
import torch

from helpers import assert_close_verbose, edited_config
from vllm_rocm_accel import fp8
from vllm_rocm_accel.backends.torch import quant as ref
from vllm_rocm_accel.backends.triton import quant as tq

DEVICE = "cuda" if torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1" else "cpu"
FN, FNUZ = torch.float8_e4m3fn, torch.float8_e4m3fnuz
FORMATS = [FN, FNUZ]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
MIN_NORMAL_EXP = {FN: -6, FNUZ: -7}


# --- inputs and checks ------------------------------------------------------------------------
def make_x(lead: tuple, hidden: int, dtype, *, row_pad: int = 0) -> torch.Tensor:
    """Random rows whose magnitudes span ~6 binades (so small values land on FP8 subnormals),
    as a row-strided view ``full[..., :hidden]`` when ``row_pad``."""
    full = torch.randn(lead + (hidden + row_pad,), device=DEVICE) * 3
    full *= torch.exp2(torch.empty(lead + (1,), device=DEVICE).uniform_(-3, 3))
    full = full.to(dtype)
    return full[..., :hidden] if row_pad else full


def fp8_ulp(v: torch.Tensor, fmt) -> torch.Tensor:
    """Spacing of ``fmt`` (3 mantissa bits) at |v| (float64), subnormal spacing below the normals."""
    e = torch.floor(torch.log2(v.abs().clamp(min=1e-300))).clamp(min=MIN_NORMAL_EXP[fmt])
    return torch.pow(2.0, e - 3)


def dequant(q: torch.Tensor, scales: torch.Tensor, group: int = 0) -> torch.Tensor:
    s = scales.double()
    if group:
        s = s.repeat_interleave(group, dim=-1)
    return q.double() * s


def check(q, s, qr, sr, fmt, msg, group: int = 0) -> None:
    """Scales, dequantized values, then bytes, each failure saying where and by how much."""
    assert q.dtype == fmt and q.shape == qr.shape, f"{msg}: q {q.dtype} {tuple(q.shape)}"
    assert s.dtype == torch.float32 and s.shape == sr.shape, f"{msg}: scales {s.dtype} {tuple(s.shape)}"
    assert torch.isfinite(s).all() and (s > 0).all(), f"{msg}: non-finite or non-positive scales"
    assert_close_verbose(s, sr, atol=0, rtol=1e-6, msg=f"{msg} scales")
    want = dequant(qr, sr, group)
    got = dequant(q, s, group)
    ulp = dequant(fp8_ulp(qr.double(), fmt), sr, group)  # one FP8 step at the reference value, dequantized
    bad = (got - want).abs() > ulp * (1 + 1e-6)
    assert not bad.any(), (f"{msg}: {int(bad.sum())} of {q.numel()} dequantized values off by more than one FP8 ulp; "
                           f"first at {[int(i) for i in bad.nonzero()[0]]}: got {got[bad][0].item()} "
                           f"want {want[bad][0].item()}")
    diff = q.view(torch.uint8) != qr.view(torch.uint8)
    assert not diff.any(), (f"{msg}: {int(diff.sum())} of {q.numel()} FP8 bytes differ from the reference (all within "
                            f"one ulp); first at {[int(i) for i in diff.nonzero()[0]]}: got "
                            f"{q.view(torch.uint8)[diff][0].item():#04x} want {qr.view(torch.uint8)[diff][0].item():#04x}")


def run_per_tensor(x, fmt, static=None):
    q = torch.full(x.shape, float("nan"), device=DEVICE).to(fmt)  # poisoned: every byte must be written
    s = torch.full((1,), -1.0, device=DEVICE)
    tq.per_tensor_quant(q, s, x, static)
    return q, s


def run_per_token(x, fmt, ub=None):
    q = torch.full(x.shape, float("nan"), device=DEVICE).to(fmt)
    s = torch.full(tuple(x.shape[:-1]) + (1,), -1.0, device=DEVICE)
    tq.per_token_quant(q, s, x, ub)
    return q, s


def run_per_token_group(x, fmt, group, column_major):
    q = torch.full(x.shape, float("nan"), device=DEVICE).to(fmt)
    s = ref.per_token_group_scales_layout(tuple(x.shape[:-1]), x.shape[-1] // group, column_major, DEVICE)
    s.fill_(-1.0)
    tq.per_token_group_quant(q, s, x, group)
    return q, s


@pytest.fixture
def config(monkeypatch):
    """Edit the launch config for one test: ``config()["interpret"]["per_token"][...] = ...``."""
    for edited in edited_config(monkeypatch, tq):
        yield lambda: edited


# --- the FP8 encoding ---------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", FORMATS)
def test_every_fp8_value_midpoint_and_neighbour_rounds_like_torch(fmt):
    """scale 1: q must be torch's own RNE cast of clamp(x) for every FP8 value, every midpoint
    between neighbours (ties to even), the floats just either side of it, subnormals, zero, and
    values past the max (clamped)."""
    m = fp8.fp8_max(fmt)
    vals = torch.arange(256, dtype=torch.uint8).view(fmt).float()
    vals = vals[torch.isfinite(vals) & (vals >= 0)].unique()  # sorted, 0 .. max
    mids = (vals[1:].double() + vals[:-1].double()).div(2).float()  # exact in float32
    up = torch.nextafter(mids, torch.full_like(mids, float("inf")))
    down = torch.nextafter(mids, torch.zeros_like(mids))
    extra = torch.tensor([m * 1.01, m * 4, 1e30, 1e-30, float(vals[1]) / 2, float(vals[1]) / 3])
    pos = torch.cat([vals, mids, up, down, extra])
    x = torch.cat([pos, -pos])
    x = torch.nn.functional.pad(x, (0, (-x.numel()) % 128)).reshape(-1, 128).to(DEVICE)
    one = torch.ones(1, device=DEVICE)
    q, s = run_per_tensor(x, fmt, one)
    want = x.clamp(-m, m).to(fmt)
    assert torch.equal(s, one)
    check(q, s, want, one, fmt, f"encoding {fmt}")


# --- per tensor ---------------------------------------------------------------------------------
SHAPES = [((1,), 64), ((7,), 200), ((2, 3), 96)]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("lead,hidden", SHAPES)
def test_per_tensor_dynamic(seed, fmt, dtype, lead, hidden):
    x = make_x(lead, hidden, dtype)
    q, s = run_per_tensor(x, fmt)
    qr, sr = ref.per_tensor_quant(x, None, fmt)
    check(q, s, qr, sr, fmt, f"per_tensor {lead} {hidden} {dtype}")
    assert (q.view(torch.uint8) & 0x7F == 0x7E + (fmt == FNUZ)).any(), "the amax element must quantize to the max"


@pytest.mark.parametrize("fmt", FORMATS)
def test_per_tensor_static_and_strided_rows(seed, fmt):
    x = make_x((5,), 96, torch.bfloat16, row_pad=32)
    assert not x.is_contiguous()
    # half the dynamic scale: the values above max |x| / 2 (the amax element at least) must clamp
    static = (x.abs().max().float() / (2 * fp8.fp8_max(fmt))).reshape(1)
    keep = static.clone()
    q, s = run_per_tensor(x, fmt, static)
    qr, sr = ref.per_tensor_quant(x.contiguous(), static, fmt)
    assert torch.equal(static, keep) and s.data_ptr() != static.data_ptr()
    assert torch.equal(s, static)
    check(q, s, qr, sr, fmt, "static")
    assert (q.float().abs() == fp8.fp8_max(fmt)).any(), "nothing clamped: the test lost its point"
    q, s = run_per_tensor(x, fmt)
    qr, sr = ref.per_tensor_quant(x.contiguous(), None, fmt)
    check(q, s, qr, sr, fmt, "dynamic, strided rows")


@pytest.mark.parametrize("fmt", FORMATS)
def test_per_tensor_all_zero(fmt):
    x = torch.zeros(3, 40, dtype=torch.bfloat16, device=DEVICE)
    q, s = run_per_tensor(x, fmt)
    assert s.item() == pytest.approx(fp8.AMAX_FLOOR / fp8.fp8_max(fmt), rel=1e-6)
    assert not q.view(torch.uint8).any(), "zeros must quantize to +0"
    check(q, s, *ref.per_tensor_quant(x, None, fmt), fmt, "zeros")


# --- per token ----------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("lead,hidden,row_pad", [((5,), 64, 0), ((7,), 200, 0), ((2, 3), 96, 16), ((3,), 130, 6)])
def test_per_token(seed, fmt, dtype, lead, hidden, row_pad):
    """On the interpreter's config 64/96 take whole rows per program, 200/130 the looped kernel."""
    x = make_x(lead, hidden, dtype, row_pad=row_pad)
    x.view(-1, hidden)[1] = 0  # an all-zero row (view(-1) of the strided ones fails loudly if it would copy)
    q, s = run_per_token(x, fmt)
    qr, sr = ref.per_token_quant(x, fmt, None)
    check(q, s, qr, sr, fmt, f"per_token {lead} {hidden} {dtype} pad {row_pad}")
    zero_q, zero_s = q.reshape(-1, hidden)[1], s.reshape(-1)[1]
    assert not zero_q.view(torch.uint8).any() and zero_s.item() == pytest.approx(fp8.AMAX_FLOOR / fp8.fp8_max(fmt))


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("hidden", [64, 200])
def test_per_token_scale_ub_caps_rows(seed, fmt, hidden):
    x = make_x((6,), hidden, torch.float16)
    x[0] = 0
    amax = x.float().abs().amax(-1)
    ub = amax[1:].median().reshape(1).clone()  # caps about half of the rows
    q, s = run_per_token(x, fmt, ub)
    qr, sr = ref.per_token_quant(x, fmt, ub)
    check(q, s, qr, sr, fmt, f"scale_ub {hidden}")
    capped = amax > ub
    assert capped.any() and (~capped).any(), "the cap must bind on some rows and not on others"
    torch.testing.assert_close(s[capped, 0], (ub / fp8.fp8_max(fmt)).expand(int(capped.sum())), rtol=1e-6, atol=0)
    assert (q[capped].float().abs() == fp8.fp8_max(fmt)).any(), "capped rows clamp"


def test_per_token_single_pass_and_looped_agree(seed, config):
    x = make_x((4,), 200, torch.bfloat16)
    qr, sr = ref.per_token_quant(x, FN, None)
    section = config()[tq._family(x.device.type)]["per_token"]
    section["single_pass_max_idle"] = 1.0
    for single_max in (128, 256):  # looped, then whole rows (BLOCK_N 256)
        section["single_pass_max_cols"] = single_max
        tq.clear_caches()
        assert (tq.per_token_params(x.device.type, 200, x.dtype)[0] <= 4) == (single_max < 200)
        q, s = run_per_token(x, FN)
        check(q, s, qr, sr, FN, f"single_pass_max_cols {single_max}")


# --- per token group -----------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("column_major", [False, True])
@pytest.mark.parametrize("lead,hidden,group,row_pad", [
    ((3,), 256, 128, 0),     # one program's tiles span rows
    ((2, 3), 96, 32, 16),    # leading dims, strided rows, H not a power of two
    ((5,), 48, 16, 0),
    ((4,), 96, 96, 8),       # a group that is not a power of two: padded, masked block
    ((3,), 120, 24, 0),
])
def test_per_token_group(seed, fmt, dtype, column_major, lead, hidden, group, row_pad):
    x = make_x(lead, hidden, dtype, row_pad=row_pad)
    x[(0,) * len(lead)][:group] = 0  # an all-zero group
    q, s = run_per_token_group(x, fmt, group, column_major)
    qr, sr = ref.per_token_group_quant(x, group, column_major, fmt)
    assert s.stride() == sr.stride(), "the scales keep the layout they were given"
    check(q, s, qr, sr, fmt, f"group {group} {lead} {hidden} {dtype} cm={column_major}", group)
    first = (0,) * len(lead)
    assert not q[first][:group].view(torch.uint8).any()
    assert s[first][0].item() == pytest.approx(fp8.AMAX_FLOOR / fp8.fp8_max(fmt))


def test_per_token_group_column_major_scale_positions(seed):
    """Each scale lands at its (token, group): compare with amax / max computed directly."""
    x = make_x((6,), 128, torch.float32)
    q, s = run_per_token_group(x, FN, 32, True)
    assert s.stride() == (1, 6)
    want = x.abs().reshape(6, 4, 32).amax(-1).clamp(min=fp8.AMAX_FLOOR) / fp8.fp8_max(FN)
    torch.testing.assert_close(s, want, rtol=1e-6, atol=0)


# --- edges -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", FORMATS)
def test_empty_inputs(fmt):
    floor = torch.tensor([fp8.AMAX_FLOOR], device=DEVICE) / fp8.fp8_max(fmt)
    x = torch.empty(0, 64, device=DEVICE)
    q, s = run_per_tensor(x, fmt)
    assert q.shape == (0, 64) and torch.equal(s, floor)
    static = torch.tensor([0.5], device=DEVICE)
    assert torch.equal(run_per_tensor(x, fmt, static)[1], static)
    q, s = run_per_token(x, fmt)
    assert s.shape == (0, 1)
    q, s = run_per_token(torch.empty(3, 0, device=DEVICE), fmt)  # rows of width 0: amax 0
    assert torch.equal(s, floor.expand(3, 1))
    q, s = run_per_token_group(x, fmt, 32, True)
    assert s.shape == (0, 2)


def test_supports_args():
    x = torch.zeros(4, 64, dtype=torch.bfloat16)
    one = torch.ones(1)
    assert tq.supports_args_per_tensor(x, None, FN) is None
    assert tq.supports_args_per_tensor(x[:, :32], one, FNUZ) is None  # row-strided view: served in place
    assert tq.supports_args_per_token(x.reshape(2, 2, 64), FN, one) is None
    assert tq.supports_args_per_token_group(x, 16, True, FN) is None
    assert "dtype" in tq.supports_args_per_tensor(x.to(torch.int32), None, FN)
    assert "rows" in tq.supports_args_per_token(x.t(), FN, None)
    assert "rows" in tq.supports_args_per_token(torch.zeros(4, 6, 64)[:, ::2].transpose(0, 1), FN, None)
    assert "float8" in tq.supports_args_per_token(x, torch.float16, None)
    assert "scale_ub" in tq.supports_args_per_token(x, FN, torch.ones(2))
    assert "scale" in tq.supports_args_per_tensor(x, torch.ones(1, dtype=torch.float16), FN)
    assert "group_size" in tq.supports_args_per_token_group(x, 48, False, FN)


def test_config_families_are_complete(config, monkeypatch):
    """Every family's sections load, with power-of-two sizes, and choose the FP8 encoding path
    expected: native e4m3fn on NVIDIA, in-kernel encoding for fnuz there and under the interpreter."""
    families = [k for k in config() if not k.startswith("_")]
    assert set(families) >= {"cuda", "rocm", "interpret"}
    sw = {}
    for family in families:
        tq.clear_caches()
        monkeypatch.setattr(tq, "_family", functools.lru_cache(lambda device_type, _f=family: _f))
        for h in (1, 64, 96, 4096, 7168, 20000):
            block, rows, warps, progs = tq.per_tensor_params("cuda", h, torch.bfloat16)
            assert block <= 2 * h and rows >= 1 and warps >= 1 and progs >= 1
            looped_from, block, rows, warps, lblock, lwarps = tq.per_token_params("cuda", h, torch.float32)
            assert block >= h and rows >= 1 and lblock >= 1 and warps >= 1 and lwarps >= 1
        for g in (16, 96, 128):
            block_g, brackets = tq.per_token_group_params("cuda", g, torch.float16)
            assert block_g >= g and all(t >= 1 for _, t, _ in brackets)
        sw[family] = tuple(tq.format_params("cuda", fmt)[2] for fmt in FORMATS)
        if family == "cuda":  # rows padded far from a power of two take the looped kernel
            looped_from = [tq.per_token_params("cuda", h, torch.bfloat16)[0] for h in (4096, 5120, 8192, 20000)]
            assert looped_from[0] > 2**40 and 1 < looped_from[1] < 2**40 and looped_from[2] > 2**40
            assert looped_from[3] == 0
    assert sw["cuda"] == (False, True) and sw["interpret"] == (True, True) and sw["rocm"] == (False, False)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("rcp_div", [False, True])
@pytest.mark.parametrize("hidden,chunk,rows,hints,row_pad", [
    (192, 64, 1, False, 0),   # 3 whole chunks, no idle lanes
    (200, 64, 2, True, 8),    # a masked last chunk, 2 rows a program (odd row count), strided rows
    (48, 64, 1, False, 0),    # one chunk capped at next_power_of_2(H)
])
def test_per_token_chunked_kernel_and_rcp_div(seed, config, fmt, rcp_div, hidden, chunk, rows, hints, row_pad):
    """The ``chunked`` per-token kernel (rows as unrolled power-of-two chunks) and the reciprocal
    division give the reference's bytes, also with scale_ub binding on some rows."""
    x = make_x((5,), hidden, torch.bfloat16, row_pad=row_pad)
    section = config()[tq._family(x.device.type)]["per_token"]
    section["chunked"] = [{"max_cols": 10**9, "min_rows": 1, "chunk": chunk, "rows_per_program": rows,
                           "num_warps": 4, "hints": hints}]
    section["rcp_div"] = rcp_div
    tq.clear_caches()
    assert tq.per_token_variant_params(x.device.type, hidden, x.dtype)[1][0] == 1  # the chunked kernel runs
    qr, sr = ref.per_token_quant(x, fmt, None)
    check(*run_per_token(x, fmt), qr, sr, fmt, f"chunked {hidden}/{chunk}")
    ub = x.float().abs().amax(-1).median().reshape(1)
    qr, sr = ref.per_token_quant(x, fmt, ub)
    check(*run_per_token(x, fmt, ub), qr, sr, fmt, f"chunked {hidden}/{chunk} scale_ub")


def test_rcp_div_whole_row_kernel(seed, config):
    x = make_x((4,), 96, torch.float16)
    section = config()[tq._family(x.device.type)]["per_token"]
    section["rcp_div"] = True
    section["single_pass_max_cols"], section["single_pass_max_idle"] = 1024, 1.0
    tq.clear_caches()
    qr, sr = ref.per_token_quant(x, FN, None)
    check(*run_per_token(x, FN), qr, sr, FN, "whole row rcp_div")


# --- the faster per-token variants (issue 4 follow-up) ------------------------------------------------
def special_rows(x: torch.Tensor) -> torch.Tensor:
    """``make_x`` rows plus the edges of the reciprocal divisions: an all-zero row, a row of signed
    zeros among values, one value four binades above its row (the rest of it lands on FP8
    subnormals or zero) and values that quantize to FP8 subnormal steps."""
    x = x.clone()
    x[1] = 0
    x[2, ::3] = -0.0
    x[3, 5] = 1e4
    x[3, 6:9] = 2.0 ** -9 * x[3].float().abs().amax().to(x.dtype)
    return x


def chunked_bracket(chunk: int, rows: int, regs: bool, hints: bool = False) -> list:
    return [{"max_cols": 10**9, "min_rows": 1, "chunk": chunk, "rows_per_program": rows, "num_warps": 4,
             "hints": hints, "regs": regs}]


# kernel: whole (the whole-row kernel, BLOCK_N = next_power_of_2(H)), chunked, regs
PER_TOKEN_VARIANTS = {
    "whole split": dict(kernel="whole", rcp_div="split"),
    "whole split sat": dict(kernel="whole", rcp_div="split", sat_cvt=True),
    "chunked split": dict(kernel="chunked", rcp_div="split", hints=True),
    "regs ieee": dict(kernel="regs", rcp_div=False),
    "regs rcp": dict(kernel="regs", rcp_div=True),
    "regs split sat": dict(kernel="regs", rcp_div="split", sat_cvt=True),
}


PLAIN_PER_TOKEN = dict(rcp_div=False, sat_cvt=False, chunked=[])  # the per-element division, clamp, row kernels


def use_per_token_variant(section: dict, variant: str, chunk: int, rows: int) -> None:
    v = PER_TOKEN_VARIANTS[variant]
    section["rcp_div"] = v["rcp_div"]
    section["sat_cvt"] = v.get("sat_cvt", False)
    if v["kernel"] == "whole":
        section["chunked"] = []
        section["single_pass_max_cols"], section["single_pass_max_idle"] = 1024, 1.0
        section["tables"] = {"default": [{"max_cols": 10**9, "rows_per_program": rows, "num_warps": 4}]}
    else:
        section["chunked"] = chunked_bracket(chunk, rows, v["kernel"] == "regs", v.get("hints", False))
    tq.clear_caches()


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("variant", list(PER_TOKEN_VARIANTS))
@pytest.mark.parametrize("hidden,chunk,rows,row_pad", [
    (192, 64, 1, 0),     # 3 whole chunks (no masked lanes), one row a program
    (123, 32, 2, 5),     # odd H: a masked last chunk, 2 rows a program over 5 rows, strided rows
    (500, 64, 2, 0),     # 8 chunks: every slot of the regs kernel
])
def test_per_token_fast_variants(seed, config, fmt, variant, hidden, chunk, rows, row_pad):
    """The split division, the unclamped saturating conversion and the regs kernel give the
    reference's bytes (with scale_ub too: the launcher takes the reciprocal division and the clamp
    there), on rows with zeros, signed zeros, FP8 subnormal steps and one huge value."""
    x = special_rows(make_x((5,), hidden + row_pad, torch.bfloat16))[:, :hidden]
    use_per_token_variant(config()[tq._family(x.device.type)]["per_token"], variant, chunk, rows)
    rcp_div, chunked, (sat, _, _) = tq.per_token_variant_params(x.device.type, hidden, x.dtype)
    kernel = PER_TOKEN_VARIANTS[variant]["kernel"]
    assert rcp_div == {False: 0, True: 1, "split": 2}[PER_TOKEN_VARIANTS[variant]["rcp_div"]]
    assert (chunked[0] == 1) == (kernel != "whole") and chunked[7] == (kernel == "regs")
    qr, sr = ref.per_token_quant(x, fmt, None)
    q, s = run_per_token(x, fmt)
    check(q, s, qr, sr, fmt, f"{variant} {hidden}/{chunk} rows {rows}")
    assert not q[1].view(torch.uint8).any() and s[1].item() == pytest.approx(fp8.AMAX_FLOOR / fp8.fp8_max(fmt))
    ub = x.float().abs().amax(-1)[2:].median().reshape(1)  # binds on some rows
    qr, sr = ref.per_token_quant(x, fmt, ub)
    check(*run_per_token(x, fmt, ub), qr, sr, fmt, f"{variant} {hidden}/{chunk} scale_ub")


def assert_within_a_step_at_midpoints(got, want, x, fmt, msg, max_fraction: float = 0.01) -> int:
    """rcp_div "mul"'s contract against the IEEE-division kernel's ``want``: the same scales; every FP8
    code equal, except codes one step apart (same sign) where the exact quotient x / scale (float64)
    lies within 2**-21 (relative) of the midpoint of the two codes' values, on at most
    ``max_fraction`` of them; returns how many differ."""
    (q, s), (qw, sw) = got, want
    assert torch.equal(s, sw), f"{msg}: scales differ from the division's"
    qb, wb = q.view(torch.uint8), qw.view(torch.uint8)
    diff = qb != wb
    n = int(diff.sum())
    assert n <= max_fraction * q.numel(), f"{msg}: {n} of {q.numel()} codes differ from the division's"
    if n:
        steps = (qb.to(torch.int16) & 0x7F) - (wb.to(torch.int16) & 0x7F)
        assert (steps[diff].abs() == 1).all() and ((qb ^ wb)[diff] & 0x80 == 0).all(), \
            f"{msg}: a code differs by more than one FP8 step"
        quotient = (x.double() / s.double())[diff]
        mid = (q.double()[diff] + qw.double()[diff]) / 2
        off = (quotient - mid).abs() / mid.abs()
        assert (off <= 2.0 ** -21).all(), (f"{msg}: a code moved where x / scale is {off.max().item():.2e} "
                                           "from a midpoint")
    return n


MUL_KERNELS = {"whole": dict(kernel="whole", rcp_div="mul"), "regs": dict(kernel="regs", rcp_div="mul", sat_cvt=True),
               "chunked": dict(kernel="chunked", rcp_div="mul")}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("kernel", list(MUL_KERNELS))
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_per_token_mul_division_moves_codes_only_at_midpoints(seed, config, monkeypatch, fmt, kernel, dtype):
    """rcp_div "mul" (x times the row's reciprocal, as vLLM's and AITER's kernels take it; not bit for
    bit): the division's scales, and its codes save one FP8 step where x / scale is within float32
    rounding of a midpoint; zeros (signed too) and the scale_ub path (the launcher's exact division)
    unchanged. Rows of 500 (8 chunks of 64) over 64 rows. bf16 rows put their quotients either at a
    midpoint (within rounding) or far from one, so some codes move; float32 rows spread them, so a
    product less accurate than float32 rounding (a kernel bug) would move codes away from midpoints."""
    x = special_rows(make_x((64,), 500, dtype))
    monkeypatch.setitem(PER_TOKEN_VARIANTS, "mul", MUL_KERNELS[kernel])
    monkeypatch.setitem(PER_TOKEN_VARIANTS, "ieee", dict(MUL_KERNELS[kernel], rcp_div=False, sat_cvt=False))
    section = config()[tq._family(x.device.type)]["per_token"]
    use_per_token_variant(section, "ieee", 64, 2)
    want = run_per_token(x, fmt)
    ub = x.float().abs().amax(-1)[2:].median().reshape(1)
    want_ub = run_per_token(x, fmt, ub)
    use_per_token_variant(section, "mul", 64, 2)
    assert tq.per_token_variant_params(x.device.type, 500, x.dtype)[0] == 3
    got = run_per_token(x, fmt)
    assert_within_a_step_at_midpoints(got, want, x, fmt, f"mul {kernel}")
    zeros = x == 0
    assert torch.equal(got[0].view(torch.uint8)[zeros], want[0].view(torch.uint8)[zeros]), "signed zeros"
    got_ub = run_per_token(x, fmt, ub)
    assert torch.equal(got_ub[0].view(torch.uint8), want_ub[0].view(torch.uint8))
    assert torch.equal(got_ub[1], want_ub[1])
    qr, sr = ref.per_token_quant(x, fmt, None)
    assert_close_verbose(got[1], sr, atol=0, rtol=1e-6, msg="mul scales")
    ulp = dequant(fp8_ulp(qr.double(), fmt), sr)
    assert ((dequant(got[0], got[1]) - dequant(qr, sr)).abs() <= ulp * (1 + 1e-6)).all(), "more than one FP8 ulp"


# row amaxes (times 2**-3, 1, 2**4) for which a float32 search over every bf16 of the four binades below
# found quotients x / (amax / FP8_MAX) within rounding of a midpoint (4-12 of the 511 values a row)
NEAR_MIDPOINT_AMAX = {FN: (1.078125, 1.1875, 1.53125, 1.9375), FNUZ: (1.1015625, 1.453125, 1.640625, 1.6875)}


def near_midpoint_rows(fmt) -> torch.Tensor:
    """Rows whose codes "mul" moves under divided scales (the CPU's: scale = amax / FP8_MAX): each a
    NEAR_MIDPOINT_AMAX amax followed by every bf16 of the four binades below it, alternating in sign."""
    mags = torch.arange(0x3D80, 0x3F80, dtype=torch.int32).to(torch.int16).view(torch.bfloat16)[1:]  # [1/16, 1)
    sign = torch.tensor([1.0, -1.0]).repeat(256)[:511]
    rows = []
    for amax in NEAR_MIDPOINT_AMAX[fmt]:
        for e in (-3, 0, 4):
            a = amax * 2.0 ** e
            rows.append(torch.cat([torch.tensor([a]), (mags.float() * a).to(torch.bfloat16).float() * sign]))
    return torch.stack(rows).to(torch.bfloat16).to(DEVICE)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("kernel", list(MUL_KERNELS))
def test_mul_division_moves_crafted_near_midpoint_codes(config, monkeypatch, fmt, kernel):
    """The contract check on rows built to meet it: under the CPU's divided scales "mul" does move
    some codes, by one step, where x / scale is at a midpoint (a GPU's scales, amax * fp32(1 /
    FP8_MAX), make such quotients rarer: there any count passes)."""
    x = near_midpoint_rows(fmt)
    monkeypatch.setitem(PER_TOKEN_VARIANTS, "mul", MUL_KERNELS[kernel])
    monkeypatch.setitem(PER_TOKEN_VARIANTS, "ieee", dict(MUL_KERNELS[kernel], rcp_div=False, sat_cvt=False))
    section = config()[tq._family(x.device.type)]["per_token"]
    use_per_token_variant(section, "ieee", 64, 2)
    want = run_per_token(x, fmt)
    use_per_token_variant(section, "mul", 64, 2)
    moved = assert_within_a_step_at_midpoints(run_per_token(x, fmt), want, x, fmt, f"crafted {kernel}",
                                              max_fraction=0.05)
    if x.device.type == "cpu":
        assert moved > 0, "the crafted rows moved no code: the search's premise no longer holds"


@pytest.mark.parametrize("variant", [v for v in PER_TOKEN_VARIANTS if not PER_TOKEN_VARIANTS[v].get("sat_cvt")])
def test_per_token_variants_match_the_default_path_on_inf_and_nan(seed, config, variant):
    """Rows holding inf (amax inf: the split division's stand-in scale) or NaN give the default path's
    bytes and scales (the reference's NaN handling is not the kernels': compared kernel to kernel)."""
    x = make_x((4,), 96, torch.float32)
    x[0, 3], x[1, 7], x[2, 0], x[2, 9] = float("inf"), float("-inf"), float("nan"), float("inf")
    section = config()[tq._family(x.device.type)]["per_token"]
    section.update(PLAIN_PER_TOKEN)  # the plain kernel (a GPU family ships fast variants)
    tq.clear_caches()
    want = run_per_token(x, FN)
    use_per_token_variant(section, variant, 32, 2)
    got = run_per_token(x, FN)
    assert torch.equal(got[0].view(torch.uint8), want[0].view(torch.uint8)), variant
    assert torch.equal(got[1], want[1]) or torch.allclose(got[1], want[1], equal_nan=True), variant


def test_per_token_config_options_parse(config):
    section = config()[tq._family("cpu")]["per_token"]
    section["chunked"] = chunked_bracket(64, 1, regs=True)
    tq.clear_caches()
    assert tq.per_token_variant_params("cpu", 512, torch.bfloat16)[1][7] is True  # 8 chunks: the regs kernel
    assert tq.per_token_variant_params("cpu", 513, torch.bfloat16)[1][7] is False  # 9: the chunked kernel
    assert tq.per_token_variant_params("cpu", 64, torch.bfloat16)[0] == 0  # rcp_div absent: per element
    section["rcp_div"] = "fast"
    tq.clear_caches()
    with pytest.raises(ValueError, match="rcp_div"):
        tq.per_token_variant_params("cpu", 64, torch.bfloat16)
    tq.clear_caches()


@pytest.mark.parametrize("variant", ["whole split sat", "regs split sat", "chunked split"])
def test_per_token_fast_variants_int64_offsets(seed, config, monkeypatch, variant):
    """IDX64 (set only when an offset can reach 2**31) computes the same: forced by lowering the bound."""
    x = make_x((5,), 123, torch.bfloat16)
    use_per_token_variant(config()[tq._family(x.device.type)]["per_token"], variant, 32, 2)
    monkeypatch.setattr(tq, "_I32", 1)
    qr, sr = ref.per_token_quant(x, FN, None)
    check(*run_per_token(x, FN), qr, sr, FN, f"{variant} idx64")


# --- the dynamic per-tensor quantize kernel's variants (issue 4: rcp_div / sat_cvt / reverse) -----------
PER_TENSOR_VARIANTS = {
    "split": dict(rcp_div="split"),
    "split sat": dict(rcp_div="split", sat_cvt=True),
    "rcp": dict(rcp_div=True),
    "reverse": dict(reverse=True),
    "split sat reverse": dict(rcp_div="split", sat_cvt=True, reverse=True),
}


PLAIN_PER_TENSOR = dict(rcp_div=False, sat_cvt=False, reverse=False)  # a GPU family ships fast variants


def use_per_tensor_variant(section: dict, variant: str) -> None:
    """The section's dynamic variant flags: ``variant``'s, the others off."""
    section.update(PLAIN_PER_TENSOR, **PER_TENSOR_VARIANTS[variant])
    tq.clear_caches()


def use_plain_per_tensor(section: dict) -> None:
    section.update(PLAIN_PER_TENSOR)
    tq.clear_caches()


def assert_same_codes(got, want, x, msg) -> None:
    """q bytes and scales equal the default path's; where x is -0.0 the values only (the split division
    may give +0 there on a GPU: kernels/triton/quant.py)."""
    (q, s), (qw, sw) = got, want
    assert torch.equal(s, sw), f"{msg}: scales {s.flatten()[:4].tolist()} != {sw.flatten()[:4].tolist()}"
    neg0 = ((x == 0) & torch.signbit(x)).reshape(q.shape)
    qb, wb = q.view(torch.uint8), qw.view(torch.uint8)
    diff = (qb != wb) & ~neg0
    assert not diff.any(), (f"{msg}: {int(diff.sum())} of {q.numel()} FP8 bytes differ from the default path; "
                            f"first at {[int(i) for i in diff.nonzero()[0]]}: {qb[diff][0].item():#04x} want "
                            f"{wb[diff][0].item():#04x}")
    assert torch.equal(q.float()[neg0], qw.float()[neg0]), f"{msg}: -0.0 inputs quantize to a nonzero value"


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("variant", list(PER_TENSOR_VARIANTS))
@pytest.mark.parametrize("rows,hidden,row_pad", [
    (9, 300, 0),   # odd H (3 column blocks, the last masked), 9 rows over 2-row tiles, the amax loop
    (5, 123, 5),   # strided rows, one masked column block
    (1, 64, 0),    # one tile: one program each
])
def test_per_tensor_dynamic_variants_match_the_default_path(seed, config, fmt, variant, rows, hidden, row_pad):
    """The split / reciprocal division, the unclamped conversion and the reversed tile order give the
    shipped path's bytes and scale, on rows with zeros, -0.0, one huge value and FP8 subnormal steps."""
    x = make_x((max(rows, 4),), hidden + row_pad, torch.bfloat16)
    x = special_rows(x)[:rows, :hidden]
    use_plain_per_tensor(config()[tq._family(x.device.type)]["per_tensor"])
    want = run_per_tensor(x, fmt)
    use_per_tensor_variant(config()[tq._family(x.device.type)]["per_tensor"], variant)
    v = PER_TENSOR_VARIANTS[variant]
    assert tq.per_tensor_variant_params(x.device.type) == (
        {False: 0, True: 1, "split": 2}[v.get("rcp_div", False)], v.get("sat_cvt", False), v.get("reverse", False))
    got = run_per_tensor(x, fmt)
    assert_same_codes(got, want, x, f"per_tensor {variant} {rows}x{hidden}")
    check(*got, *ref.per_tensor_quant(x.contiguous(), None, fmt), fmt, f"per_tensor {variant} vs reference")
    static = torch.tensor([0.01], device=DEVICE)  # static scales: their own path (static_split / _sat_cvt)
    check(*run_per_tensor(x, fmt, static), *ref.per_tensor_quant(x.contiguous(), static, fmt), fmt,
          f"per_tensor {variant} static")


@pytest.mark.parametrize("variant", [v for v in PER_TENSOR_VARIANTS if not PER_TENSOR_VARIANTS[v].get("sat_cvt")])
def test_per_tensor_variants_match_the_default_path_on_inf_and_nan(seed, config, variant):
    """An inf (an infinite scale: the split division's stand-in) or a NaN gives the default path's bytes."""
    for poison in (float("inf"), float("nan")):
        x = make_x((5,), 96, torch.float32)
        x[2, 7] = poison
        use_plain_per_tensor(config()[tq._family(x.device.type)]["per_tensor"])
        want = run_per_tensor(x, FN)
        use_per_tensor_variant(config()[tq._family(x.device.type)]["per_tensor"], variant)
        got = run_per_tensor(x, FN)
        assert torch.equal(got[0].view(torch.uint8), want[0].view(torch.uint8)), (variant, poison)
        assert torch.equal(got[1], want[1]) or torch.allclose(got[1], want[1], equal_nan=True), (variant, poison)
        config()[tq._family(x.device.type)]["per_tensor"].update(rcp_div=False, sat_cvt=False, reverse=False)
        tq.clear_caches()


@pytest.mark.parametrize("variant", ["split sat reverse", "rcp"])
def test_per_tensor_variants_int64_offsets(seed, config, monkeypatch, variant):
    """IDX64 (set only when an offset can reach 2**31) computes the same: forced by lowering the bound."""
    x = special_rows(make_x((7,), 123, torch.bfloat16))
    use_plain_per_tensor(config()[tq._family(x.device.type)]["per_tensor"])
    want = run_per_tensor(x, FNUZ)
    use_per_tensor_variant(config()[tq._family(x.device.type)]["per_tensor"], variant)
    monkeypatch.setattr(tq, "_I32", 1)
    assert_same_codes(run_per_tensor(x, FNUZ), want, x, f"per_tensor {variant} idx64")


def static_scale_cases(x: torch.Tensor) -> list:
    """Static scales across the whole float range: log-uniform over 2**-125..2**125 (the fast path
    takes 2**-60..2**60: above 2**60 the split's constants lose bits and this test fails; below
    2**-91 the remainder of a quotient with a nonzero code can underflow, wrong only rarely, which
    random x does not find), the range's edges and their neighbours, and the ones the kernel sends
    to the per-element division (0, negative, inf, NaN, subnormal)."""
    edge = [2.0**-60, 2.0**60, 2.0**-60 * (1 - 2**-24), 2.0**60 * (1 + 2**-23), 2.0**-61, 2.0**61,
            2.0**-100 * 1.3, 2.0**-120 * 1.7, 2.0**100 * 1.1, 2.0**125]
    rand = torch.exp2(torch.empty(32).uniform_(-125, 125)).tolist()
    typical = (x[x.isfinite()].float().abs().amax() / 448).item()
    return edge + rand + [typical, typical * 3.3, 0.0, -0.5, float("inf"), float("nan"), 1e-40]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_per_tensor_static_split_gives_the_division_bits_for_any_scale(seed, config, fmt, dtype):
    """static_split (the split division with a saturating select, for static scales in 2**-60..2**60):
    the same FP8 bytes and scale as the per-element IEEE division, for any scale (outside that range
    the kernel divides per element) and x over ~30 binades with zeros of both signs, FP8 subnormal
    steps, huge values, inf and (float32) NaN and float32 subnormals."""
    x = special_rows(make_x((6,), 200, dtype))
    xf = x.float()
    xf[4, ::3] *= torch.exp2(torch.empty(67, device=DEVICE).uniform_(-40, 40))
    xf[3, 100:] *= torch.exp2(torch.empty(100, device=DEVICE).uniform_(-120, -100))  # tiny (float32 only)
    xf[5, :4] = torch.tensor([float("inf"), float("-inf"), 3e38 if dtype != torch.float16 else 6e4, -0.0])
    if dtype == torch.float32:
        xf[5, 4:8] = torch.tensor([float("nan"), 1e-40, -3e-39, 2.0**-126])
    x = xf.to(dtype)
    section = config()[tq._family(x.device.type)]["per_tensor"]
    for scale in static_scale_cases(x):
        static = torch.tensor([scale], dtype=torch.float32, device=DEVICE)
        section["static_split"] = False
        tq.clear_caches()
        want = run_per_tensor(x, fmt, static)
        section["static_split"] = True
        tq.clear_caches()
        assert tq.per_tensor_static_variant(x.device.type)[0]
        got = run_per_tensor(x, fmt, static)
        assert torch.equal(got[1], want[1]) or (got[1].isnan().all() and want[1].isnan().all()), scale
        qb, wb = got[0].view(torch.uint8), want[0].view(torch.uint8)
        assert torch.equal(qb, wb), (f"scale {scale!r} {dtype}: {int((qb != wb).sum())} bytes differ; first at "
                                     f"{[int(i) for i in (qb != wb).nonzero()[0]]}: {qb[qb != wb][0].item():#04x} "
                                     f"want {wb[qb != wb][0].item():#04x}")
    finite = torch.isfinite(x).all(-1)
    static = (x[finite].float().abs().amax() / 448).reshape(1)  # a calibration's scale
    check(*run_per_tensor(x[finite], fmt, static), *ref.per_tensor_quant(x[finite].contiguous(), static, fmt), fmt,
          "static split vs reference")


def test_per_tensor_config_options_parse(config):
    assert tq.per_tensor_variant_params("cpu") == (0, False, False)  # absent: the shipped kernel
    config()[tq._family("cpu")]["per_tensor"]["rcp_div"] = "fast"
    tq.clear_caches()
    with pytest.raises(ValueError, match="rcp_div"):
        tq.per_tensor_variant_params("cpu")
    config()[tq._family("cpu")]["per_tensor"].pop("static_split", None)
    tq.clear_caches()
    assert tq.per_tensor_static_variant("cpu")[0] is False  # absent: the per-element division
    config()[tq._family("cpu")]["per_tensor"]["static_split"] = "yes"
    tq.clear_caches()
    with pytest.raises(ValueError, match="static_split"):
        tq.per_tensor_static_variant("cpu")
    tq.clear_caches()


def test_sweep_per_tensor_candidates_reach_the_launcher(seed, config):
    """benchmarks/tune_quant_hidden.py's per_tensor candidates (its config edits) set the launcher's
    choices they are named after, and give the shipped path's bytes on a small tensor."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    try:
        import tune_quant_hidden as sweep
    finally:
        sys.path.pop(0)
    import copy

    section = config()[tq._family("cpu")]["per_tensor"]
    shipped = copy.deepcopy(section)
    x = special_rows(make_x((7,), 300, torch.bfloat16))
    want = run_per_tensor(x, FN)
    specs = sweep.candidates("per_tensor_quant", 4096, quick=False)[1:]
    assert len({sweep.name(s) for s in specs}) == len(specs) and all(s["kind"] == "tensor" for s in specs)
    for s in specs:
        section.clear()
        section.update(copy.deepcopy(shipped))
        sweep.apply(section, s)
        tq.clear_caches()
        block, rows, warps, progs = tq.per_tensor_params("cpu", 4096, torch.bfloat16)
        assert (block, rows, warps) == tuple(v if v is not None else d for v, d in zip(
            (s["block"], s["rows"], s["warps"]), (128, 2, 4)))  # the interpreter bracket's shipped tiles
        assert progs == (s["amax"] or shipped["amax_programs"])
        assert tq.per_tensor_variant_params("cpu") == ({False: 0, True: 1, "split": 2}[s["rcp"]], s["sat"], s["rev"])
        if s["block"] is None and s["amax"] is None:  # the big tiles / grids are slow under the interpreter
            assert_same_codes(run_per_tensor(x, FN), want, x, sweep.name(s))
    static = (x.float().abs().amax() / 448).reshape(1)
    section.clear()
    section.update(copy.deepcopy(shipped))
    tq.clear_caches()
    want_static = run_per_tensor(x, FN, static)
    for s in sweep.candidates("per_tensor_quant_static", 4096, quick=False)[1:]:
        section.clear()
        section.update(copy.deepcopy(shipped))
        sweep.apply(section, s)
        tq.clear_caches()
        assert tq.per_tensor_static_variant("cpu") == (s["ssplit"], s["ssat"]), sweep.name(s)
        if s["block"] is None:
            assert_same_codes(run_per_tensor(x, FN, static), want_static, x, sweep.name(s) + " static")


# --- the group kernels' division variants (rcp_div / sat_cvt, each group's scale as a row's) ----------
GROUP_VARIANTS = {"split": dict(rcp_div="split"), "split sat": dict(rcp_div="split", sat_cvt=True),
                  "rcp": dict(rcp_div=True), "sat": dict(sat_cvt=True)}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("variant", list(GROUP_VARIANTS))
@pytest.mark.parametrize("column_major", [False, True])
@pytest.mark.parametrize("rows,hidden,group", [(9, 256, 64), (5, 288, 96), (1, 128, 128)])
def test_per_token_group_variants_match_the_default_path(seed, config, fmt, variant, column_major, rows, hidden,
                                                         group):
    """The split / reciprocal division and the unclamped conversion give the shipped path's bytes and
    scales (-0.0 aside: value-equal), on groups with zeros, -0.0, one huge value and FP8 subnormal steps;
    a non-power-of-two group (96: a padded, masked block) included."""
    x = special_rows(make_x((max(rows, 4),), hidden, torch.bfloat16))[:rows]
    section = config()[tq._family(x.device.type)]["per_token_group"]
    section.update(rcp_div=False, sat_cvt=False)  # the plain kernel (a GPU family ships fast variants)
    tq.clear_caches()
    want = run_per_token_group(x, fmt, group, column_major)
    section.update(GROUP_VARIANTS[variant])
    tq.clear_caches()
    v = GROUP_VARIANTS[variant]
    assert tq.per_token_group_variant(x.device.type) == ({False: 0, True: 1, "split": 2}[v.get("rcp_div", False)],
                                                         v.get("sat_cvt", False))
    got = run_per_token_group(x, fmt, group, column_major)
    assert_same_codes(got, want, x, f"group {group} {variant} cm={column_major}")
    check(*got, *ref.per_token_group_quant(x, group, column_major, fmt), fmt, f"group {variant} vs reference", group)


def test_group_variant_config_parses(config):
    assert tq.per_token_group_variant("cpu") == (0, False)  # absent: the shipped kernel
    config()[tq._family("cpu")]["per_token_group"]["rcp_div"] = "fast"
    tq.clear_caches()
    with pytest.raises(ValueError, match="rcp_div"):
        tq.per_token_group_variant("cpu")
    tq.clear_caches()


# --- flat tiles (per_tensor flat) -------------------------------------------------------------
def use_flat(section: dict, block: int, warps: int = 4) -> None:
    section["flat"] = [{"max_numel": 10**18, "block": block, "num_warps": warps}]
    tq.clear_caches()


def quantize_launches(monkeypatch) -> list:
    """Record the quantize kernel's (grid, runtime args, constexprs) per call."""
    seen = []
    launch = tq._QUANT.launch

    def spy(grid, args, constexprs, *rest, **kw):
        seen.append((grid, args, constexprs))
        return launch(grid, args, constexprs, *rest, **kw)

    monkeypatch.setattr(tq._QUANT, "launch", spy)
    return seen


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("lead,hidden,row_pad,block,dense", [
    ((9,), 300, 0, 256, True),     # 2700 elements: 11 flat tiles, the last masked; tiles span rows
    ((4,), 128, 0, 128, True),     # EVEN: 4 whole tiles, no masks
    ((2, 3), 96, 0, 64, True),     # N-D leading dims, EVEN (576 = 9 x 64)
    ((1,), 700, 0, 4096, True),    # one row; the block capped at next_power_of_2(700) = 1024
    ((5,), 123, 5, 128, False),    # strided rows: not dense, the row tiles serve it
])
def test_per_tensor_flat_tiles_give_the_row_tiles_bytes(seed, config, monkeypatch, fmt, lead, hidden, row_pad, block,
                                                         dense):
    """Dense x as one row of numel elements (the flat tiles): the row tiles' bytes and scale, dynamic
    and static (IEEE and split division), on rows with zeros, -0.0, one huge value and FP8 subnormal
    steps; strided x keeps the row tiles."""
    rows = int(torch.tensor(lead).prod())
    x = special_rows(make_x((max(rows, 4),), hidden + row_pad, torch.bfloat16))[:rows, :hidden].view(*lead, hidden)
    static = (x.float().abs().amax() / fp8.fp8_max(fmt)).reshape(1) * 0.75  # some quotients saturate
    section = config()[tq._family(x.device.type)]["per_tensor"]
    section.pop("flat", None)  # the row tiles first
    tq.clear_caches()
    want = {(split, st): run_per_tensor(x, fmt, static if st else None) for split in (False, True)
            for st in (False, True) if st or not split}
    use_flat(section, block)
    seen = quantize_launches(monkeypatch)
    for (split, st), w in want.items():
        section["static_split"] = split
        tq.clear_caches()
        got = run_per_tensor(x, fmt, static if st else None)
        assert_same_codes(got, w, x, f"flat {block} {'static' if st else 'dynamic'} split={split}")
        check(*got, *ref.per_tensor_quant(x.contiguous(), static if st else None, fmt), fmt, "flat vs reference")
    numel = x.numel()
    for grid, args, constexprs in seen:
        n_rows, n_cols = args[-2:]
        if dense:
            cap = min(block, tq.pow2_ceil(numel))
            assert (n_rows, n_cols, grid[0]) == (1, numel, -(-numel // cap)), (grid, n_rows, n_cols)
            assert constexprs[2] == cap and constexprs[-1] == (numel % cap == 0)  # BLOCK_N, EVEN
        else:
            assert (n_rows, n_cols) == (rows, hidden)


def test_per_tensor_flat_tiles_int64_offsets(seed, config, monkeypatch):
    """IDX64 with flat tiles (int64 columns up to numel, in both kernels): the same bytes, forced by
    lowering the bound."""
    x = special_rows(make_x((7,), 123, torch.bfloat16))
    static = (x.float().abs().amax() / 448).reshape(1)
    want = [run_per_tensor(x, FN), run_per_tensor(x, FN, static)]
    use_flat(config()[tq._family(x.device.type)]["per_tensor"], 128)
    monkeypatch.setattr(tq, "_I32", 1)
    assert_same_codes(run_per_tensor(x, FN), want[0], x, "flat idx64 dynamic")
    assert_same_codes(run_per_tensor(x, FN, static), want[1], x, "flat idx64 static")


def test_per_tensor_flat_and_static_sat_options_parse(config):
    section = config()[tq._family("cpu")]["per_tensor"]
    section.pop("flat", None)
    tq.clear_caches()
    assert tq.per_tensor_flat_params("cpu", 1000) is None  # absent: the row tiles
    section["flat"] = [{"max_numel": 2048, "block": 256, "num_warps": 2}, {"max_numel": 10**18, "block": 1024,
                                                                           "num_warps": 8}]
    tq.clear_caches()
    assert tq.per_tensor_flat_params("cpu", 2048) == (256, 2)
    assert tq.per_tensor_flat_params("cpu", 2049) == (1024, 8)
    assert tq.per_tensor_flat_params("cpu", 100) == (128, 2)  # capped at next_power_of_2(numel)
    section["flat"] = [{"max_numel": 10**18, "block": 300, "num_warps": 4}]
    tq.clear_caches()
    with pytest.raises(ValueError, match="flat block"):
        tq.per_tensor_flat_params("cpu", 10**6)
    section.pop("static_split", None)
    tq.clear_caches()
    assert tq.per_tensor_static_variant("cpu") == (False, False)  # absent: off
    section["static_sat_cvt"] = 1
    tq.clear_caches()
    with pytest.raises(ValueError, match="static_sat_cvt"):
        tq.per_tensor_static_variant("cpu")
    tq.clear_caches()
