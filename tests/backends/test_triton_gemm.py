"""The Triton gemm_a8w8 backend's persistent TMA kernel (``kernel: "persistent"`` in a config rule),
run by Triton's interpreter on the CPU.

1. With the interpreter's config rules switched to the persistent kernel, ``rocm_accel_ops.gemm_a8w8(...,
   backend="triton")`` agrees with a float64 matmul of the dequantized operands at M = 1, 7, 33, K
   not a multiple of BLOCK_K (with and without padding after K in each row, filled with the
   format's largest value: the descriptors' zero fill, not the bytes past K, must reach the dot),
   per-token / per-tensor A scales, per-channel / per-tensor W scales, biases, every out dtype,
   and more tiles than programs (the persistent loop); the persistent kernel is what ran.
2. Where TMA cannot take the operands (a row stride or a data pointer not 16-byte aligned) the
   tiled kernel runs with the same config and the result is the same; :func:`tma_reason` says why.
3. The shipped configs select the persistent kernel on cuda only, from the rows the H200 sweeps
   put it first, and a rule or an override it cannot serve (split-K, tiles past the TMA box, an
   unknown kernel) is a ValueError that says so.
4. The same for gemm_a8w8_blockscale's persistent kernel: float64 agreement at M = 1, 7, 33 with
   row-major and column-major A scales, K tails and padded rows, both formats; more tiles than
   programs; the tiled fallback; BLOCK_N must divide 128 (one W block a tile).
"""

from __future__ import annotations

import json
import os

import pytest
import torch

from helpers import edited_config, interpreter_only
from vllm_rocm_accel import fp8, rocm_accel_ops
from vllm_rocm_accel.backends.torch import gemm as torch_gemm
from vllm_rocm_accel.backends.triton import config_data
from vllm_rocm_accel.backends.triton import gemm as tg

pytestmark = interpreter_only()

FORMATS = [torch.float8_e4m3fn, torch.float8_e4m3fnuz]
EPS = {torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11, torch.float32: 2.0**-24}
ACC = 2.0**-20  # float32 accumulation on the CPU (the interpreter) is exact to ~K ulps
SCALINGS = [("tensor", "tensor"), ("token", "channel"), ("token", "tensor"), ("tensor", "channel")]
# (M, N, K, padded) against the interpreter rules (M <= 16: 16x32x32 tiles, else 32x32x64) and its
# 4 "multiprocessors": 2, 2 and 6 output tiles (6 > 4 programs); K tails of 16 with contiguous rows
# (TMA wants row strides of 16 bytes), of 9, 4 and 9 in rows padded to a multiple of 16 and more.
CASES = [(1, 48, 80, False), (7, 40, 112, False), (33, 96, 208, False),
         (1, 48, 73, True), (7, 40, 100, True), (33, 96, 201, True)]


# --- inputs, reference, comparison --------------------------------------------------------------
def operand(rows: int, k: int, fmt: torch.dtype, padded: bool, scale: float = 1.0) -> torch.Tensor:
    """FP8 (rows, K), K contiguous; ``padded``: a view of rows padded to a multiple of 16 plus 16,
    the padding set to the format's largest value (a kernel whose K ran into it on both operands
    would be far off)."""
    width = (k + 15) // 16 * 16 + 16 if padded else k
    buf = (torch.randn(rows, width) * scale).to(fmt)
    buf[:, k:] = fp8.fp8_max(fmt)
    return buf[:, :k]


def scales(a_kind: str, w_kind: str, m: int, n: int, variant: int):
    """(a_scale, w_scale) as the op takes them and their float64 broadcasts; per-tensor scales
    cycle through the shapes (), (1,), (1, 1)."""
    shapes = [(), (1,), (1, 1)]
    sa = torch.rand(m, 1) + 0.25 if a_kind == "token" else (torch.rand(()) + 0.25).reshape(shapes[variant % 3])
    sw = torch.rand(n) + 0.25 if w_kind == "channel" else (torch.rand(()) + 0.25).reshape(shapes[(variant + 1) % 3])
    sa_full = sa.double().reshape(m, 1) if a_kind == "token" else sa.double().reshape(())
    sw_full = sw.double().reshape(n, 1) if w_kind == "channel" else sw.double().reshape(())
    return sa, sw, sa_full, sw_full


def assert_matches(out, a, w, sa_full, sw_full, bias, msg):
    """``out`` within one rounding to its dtype of the float64 ``(a * sa) @ (w * sw).T + bias``,
    plus float32 accumulation (``ACC`` of ``|a * sa| @ |w * sw|.T``); says where on failure."""
    ad, wd = a.double() * sa_full, w.double() * sw_full
    ref = ad @ wd.t() + (bias.double() if bias is not None else 0)
    tol = EPS[out.dtype] * ref.abs() + ACC * (ad.abs() @ wd.abs().t()) + 1e-30
    err = (out.double() - ref).abs()
    bad = ~(err <= tol)
    if bad.any():
        i = int(torch.argmax(torch.where(bad, err / tol, torch.zeros_like(err))))
        r, c = divmod(i, out.shape[1])
        raise AssertionError(f"{msg}: {int(bad.sum())} of {out.numel()} beyond tolerance; worst at ({r}, {c}): "
                             f"got {out[r, c].item()!r}, ref {ref[r, c].item()!r}, tol {tol[r, c].item():.3g}; "
                             f"NaN in out: {int(torch.isnan(out.double()).sum())}")


# --- config and launch spies ----------------------------------------------------------------------
@pytest.fixture
def config(monkeypatch):
    """Edit the launch config for one test: ``config["interpret"]["gemm_a8w8"]["rules"][...]``."""
    yield from edited_config(monkeypatch, tg)


def use_persistent(cfg: dict) -> None:
    """Every interpreter gemm_a8w8 rule: the persistent kernel, same tiles, no split-K."""
    for rule in cfg["interpret"]["gemm_a8w8"]["rules"]:
        rule["kernel"] = "persistent"
        rule.pop("split_k", None)
        rule.pop("min_k_per_split", None)


@pytest.fixture
def launches(monkeypatch):
    """The grids the persistent ('persistent') and tiled ('tiled') gemm_a8w8 launchers got."""
    seen = {"persistent": [], "tiled": []}

    def spy(launcher, name):
        real = launcher.launch

        def launch(grid, *args, **kwargs):
            seen[name].append(grid)
            return real(grid, *args, **kwargs)

        monkeypatch.setattr(launcher, "launch", launch)

    for launcher in tg._PERSISTENT.values():
        spy(launcher, "persistent")
    spy(tg._GEMM, "tiled")
    seen.update(bs_persistent=[], bs_tiled=[])
    for launcher in tg._BLOCKSCALE_PERSISTENT.values():
        spy(launcher, "bs_persistent")
    spy(tg._BLOCKSCALE, "bs_tiled")
    return seen


# --- 1. the persistent kernel against float64 -----------------------------------------------------
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("m,n,k,padded", CASES)
def test_persistent_matches_float64(seed, config, launches, fmt, m, n, k, padded):
    use_persistent(config)
    a, w = operand(m, k, fmt, padded, scale=2.0), operand(n, k, fmt, padded)
    assert tg.tma_reason(a, w) is None
    calls = wide = 0
    for variant, kinds in enumerate(SCALINGS):
        sa, sw, sa_full, sw_full = scales(*kinds, m, n, variant)
        for out_dtype, bias in ((torch.bfloat16, None), (torch.float32, torch.randn(n)),
                                (torch.float16, torch.randn(n, dtype=torch.float16))):
            out = rocm_accel_ops.gemm_a8w8(a, w, sa, sw, bias=bias, out_dtype=out_dtype, backend="triton")
            calls += out_dtype != torch.float32
            wide += out_dtype == torch.float32  # a float32 out takes the tiled kernel (shared memory)
            assert out.shape == (m, n) and out.dtype == out_dtype and out.is_contiguous()
            assert_matches(out, a, w, sa_full, sw_full, bias, f"persistent {fmt} {kinds} {out_dtype} padded={padded}")
    assert len(launches["persistent"]) == calls and len(launches["tiled"]) == wide, launches
    bm, bn = tg.gemm_params(a.device, m, n, k)[:2]
    tiles = -(-m // bm) * -(-n // bn)
    assert launches["persistent"][0] == (min(tg._sm_count(a.device), tiles),)


def test_persistent_loops_over_more_tiles_than_programs(seed, config, launches):
    """33 x 96 in 32 x 32 tiles is 6 tiles for the interpreter's 4 programs: two programs take two
    tiles each, and every tile is written (the output starts as NaN)."""
    use_persistent(config)
    m, n, k = 33, 96, 208
    a, w = operand(m, k, torch.float8_e4m3fn, False, 2.0), operand(n, k, torch.float8_e4m3fn, False)
    sa, sw, sa_full, sw_full = scales("token", "channel", m, n, 0)
    out = torch.full((m, n), float("nan"), dtype=torch.bfloat16)
    tg.gemm_a8w8(out, a, w, sa, sw, "token", "channel", None)
    assert launches["persistent"] == [(4,)] and tg._sm_count(a.device) == 4
    assert_matches(out, a, w, sa_full, sw_full, None, "persistent, 6 tiles on 4 programs")


# --- 2. what TMA cannot take: the tiled kernel with the same config -----------------------------
def _misaligned(rows: int, k: int, fmt: torch.dtype) -> torch.Tensor:
    """(rows, K) FP8 whose data pointer is 1 byte past a 16-byte boundary."""
    buf = torch.randn(rows * k + 16).to(fmt)
    return buf[1:1 + rows * k].view(rows, k)


@pytest.mark.parametrize("case", ["row_stride", "a_pointer", "w_pointer"])
def test_falls_back_to_tiled_when_tma_cannot_take_it(seed, config, launches, case):
    use_persistent(config)
    fmt = torch.float8_e4m3fn
    m, n = 7, 40
    k = 100 if case == "row_stride" else 96  # 100 bytes per row: not a multiple of 16
    a, w = operand(m, k, fmt, False, 2.0), operand(n, k, fmt, False)
    if case == "a_pointer":
        a = _misaligned(m, k, fmt)
    elif case == "w_pointer":
        w = _misaligned(n, k, fmt)
    reason = tg.tma_reason(a, w)
    expected = {"row_stride": "a's row stride (100 elements) is not a multiple of 16 bytes",
                "a_pointer": "a's data pointer is not 16-byte aligned",
                "w_pointer": "w's data pointer is not 16-byte aligned"}[case]
    assert reason == expected
    sa, sw, sa_full, sw_full = scales("token", "channel", m, n, 0)
    bias = torch.randn(n)
    out = rocm_accel_ops.gemm_a8w8(a, w, sa, sw, bias=bias, out_dtype=torch.float32, backend="triton")
    assert_matches(out, a, w, sa_full, sw_full, bias, f"fallback ({case})")
    assert not launches["persistent"] and len(launches["tiled"]) == 1
    bm, bn = tg.gemm_params(a.device, m, n, k)[:2]
    assert launches["tiled"][0] == (-(-m // bm) * -(-n // bn), 1)  # the same tiles, no split-K


def test_tma_reason_accepts_aligned_views():
    fmt = torch.float8_e4m3fn
    assert tg.tma_reason(operand(5, 100, fmt, True), operand(8, 100, fmt, True)) is None
    t = torch.randn(64, 32).to(fmt)
    assert tg.tma_reason(t[:, :16], t[16:, :]) is None  # both start 16-byte aligned, row stride 32
    assert tg.tma_reason(t[:, 1:17], t) == "a's data pointer is not 16-byte aligned"


# --- 3. config selection --------------------------------------------------------------------------
def test_shipped_configs_select_the_persistent_kernel_from_1024_rows_on_cuda_only(monkeypatch):
    """The H200 sweeps (tune_gemm.py --kernels a8w8_persistent) put the persistent kernel first
    from M = 4096 on cuda, then from M = 1024; below that, and on rocm / the interpreter, the
    tiled kernel."""
    with open(os.path.join(config_data.CONFIG_DIR, "gemm.json")) as f:
        shipped = json.load(f)
    for family in ("rocm", "interpret"):
        for rule in shipped[family]["gemm_a8w8"]["rules"]:
            assert rule.get("kernel", "tiled") == "tiled", (family, rule)
    for m, n, k in [(1, 48, 64), (7, 40, 100), (33, 96, 512), (8192, 4096, 4096)]:
        assert tg.gemm_kernel(torch.device("cpu"), m, n, k) == "tiled"
    cuda = torch.device("cuda", 0)
    monkeypatch.setattr(tg, "_sm_count", lambda device: 132)  # the split-K rules ask; no GPU here
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)  # cuda's section, not the interpreter's
    tg.clear_caches()
    try:
        for m in (1, 16, 128, 1023):
            assert tg.gemm_kernel(cuda, m, 4096, 4096) == "tiled", m
        for m, n, k in [(1024, 4096, 4096), (2048, 14336, 4096), (4096, 4096, 4096), (8192, 14336, 4096),
                        (4096, 4096, 14336)]:
            assert tg.gemm_kernel(cuda, m, n, k) == "persistent", (m, n, k)
    finally:
        monkeypatch.undo()  # TRITON_INTERPRET back first: clear_caches re-reads it (the launchers' fast path)
        tg.clear_caches()  # no choice made with the stand-in multiprocessor count outlives the test


@pytest.mark.parametrize("edit,match", [
    (dict(kernel="persistent", split_k=4), "persistent gemm_a8w8 kernel takes no split_k"),
    (dict(kernel="persistent", split_k=1, BLOCK_N=512), "at most 256 per edge"),
    (dict(kernel="persistent", split_k=1, BLOCK_K=8), "BLOCK_K >= 16"),
    (dict(kernel="stream_k"), r"kernel must be one of \('tiled', 'persistent'\)"),
])
def test_rules_the_persistent_kernel_cannot_serve_are_refused(config, edit, match):
    config["interpret"]["gemm_a8w8"]["rules"][0].update(edit)
    with pytest.raises(ValueError, match=match):
        tg.gemm_kernel(torch.device("cpu"), 1, 48, 512)


def test_override_checks():
    a, w = operand(4, 64, torch.float8_e4m3fn, False), operand(32, 64, torch.float8_e4m3fn, False)
    out = torch.empty(4, 32)
    one = torch.ones(())
    with pytest.raises(ValueError, match="takes no split-K"):
        tg.gemm_a8w8(out, a, w, one, one, "tensor", "tensor", None, params=(16, 32, 32, 2, 4, 1, 2),
                     kernel="persistent")
    with pytest.raises(ValueError, match="kernel must be one of"):
        tg.gemm_a8w8(out, a, w, one, one, "tensor", "tensor", None, kernel="persistant")


# --- 4. the persistent blockscale kernel ----------------------------------------------------------
def use_persistent_blockscale(cfg: dict) -> None:
    """Every interpreter blockscale rule (16 x 64 x 128 tiles): the persistent kernel."""
    for rule in cfg["interpret"]["gemm_a8w8_blockscale"]["rules"]:
        rule["kernel"] = "persistent"


def block_scales(m: int, n: int, k: int, column_major: bool):
    """(a_scale (M, K/128), w_scale (N/128, K/128)) as the op takes them, and their float64
    per-element broadcasts."""
    kb, nb = -(-k // 128), -(-n // 128)
    sa = torch.rand(m, kb) + 0.25
    if column_major:
        sa = sa.t().contiguous().t()
    sw = torch.rand(nb, kb) + 0.25
    return (sa, sw, *torch_gemm.expand_block_scales(sa.double(), sw.double(), m, n, k))


# (M, N, K, padded, column-major A scales): 1, 4 and 9 tiles of 16 x 64 for 4 programs; K tails
# of 32 (contiguous rows of 16-byte multiples), 44 and 73 (padded rows)
BLOCKSCALE_CASES = [(1, 64, 288, False, False), (7, 200, 300, True, True), (33, 136, 201, True, False),
                    (33, 136, 384, False, True)]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("m,n,k,padded,column_major", BLOCKSCALE_CASES)
def test_persistent_blockscale_matches_float64(seed, config, launches, fmt, m, n, k, padded, column_major):
    use_persistent_blockscale(config)
    a, w = operand(m, k, fmt, padded, scale=2.0), operand(n, k, fmt, padded)
    assert tg.tma_reason(a, w) is None
    sa, sw, sa_full, sw_full = block_scales(m, n, k, column_major)
    for out_dtype in (torch.bfloat16, torch.float16, torch.float32):
        out = rocm_accel_ops.gemm_a8w8_blockscale(a, w, sa, sw, out_dtype=out_dtype, backend="triton")
        assert out.shape == (m, n) and out.dtype == out_dtype
        assert_matches(out, a, w, sa_full, sw_full, None, f"persistent blockscale {fmt} {out_dtype} "
                       f"padded={padded} cm={column_major}")
    # float32 out: the tiled kernel (as for gemm_a8w8)
    assert len(launches["bs_persistent"]) == 2 and len(launches["bs_tiled"]) == 1, launches
    tiles = -(-m // 16) * -(-n // 64)
    assert launches["bs_persistent"][0] == (min(tg._sm_count(a.device), tiles),)


def test_persistent_blockscale_loops_over_more_tiles_than_programs(seed, config, launches):
    """33 x 136 in 16 x 64 tiles is 9 tiles for 4 programs; the output starts as NaN."""
    use_persistent_blockscale(config)
    m, n, k = 33, 136, 256
    a, w = operand(m, k, torch.float8_e4m3fn, False, 2.0), operand(n, k, torch.float8_e4m3fn, False)
    sa, sw, sa_full, sw_full = block_scales(m, n, k, False)
    out = torch.full((m, n), float("nan"), dtype=torch.bfloat16)
    tg.gemm_a8w8_blockscale(out, a, w, sa, sw)
    assert launches["bs_persistent"] == [(4,)]
    assert_matches(out, a, w, sa_full, sw_full, None, "persistent blockscale, 9 tiles on 4 programs")


def test_persistent_blockscale_falls_back_to_tiled_when_tma_cannot_take_it(seed, config, launches):
    use_persistent_blockscale(config)
    m, n, k = 7, 64, 200  # 200-byte rows: not a multiple of 16
    a, w = operand(m, k, torch.float8_e4m3fn, False, 2.0), operand(n, k, torch.float8_e4m3fn, False)
    assert tg.tma_reason(a, w) == "a's row stride (200 elements) is not a multiple of 16 bytes"
    sa, sw, sa_full, sw_full = block_scales(m, n, k, True)
    out = rocm_accel_ops.gemm_a8w8_blockscale(a, w, sa, sw, backend="triton")
    assert_matches(out, a, w, sa_full, sw_full, None, "blockscale fallback")
    assert not launches["bs_persistent"] and launches["bs_tiled"] == [(1,)]  # the same 16 x 64 tiles


@pytest.mark.parametrize("edit,match", [
    (dict(kernel="persistent", BLOCK_N=256), "BLOCK_N must divide 128"),
    (dict(kernel="persistent", BLOCK_M=512), "at most 256 per edge"),
    (dict(kernel="stream_k"), r"kernel must be one of \('tiled', 'persistent'\)"),
    (dict(BLOCK_K=64), "BLOCK_K must be 128"),
])
def test_blockscale_rules_the_kernels_cannot_serve_are_refused(config, edit, match):
    config["interpret"]["gemm_a8w8_blockscale"]["rules"][0].update(edit)
    with pytest.raises(ValueError, match=match):
        tg.blockscale_kernel(torch.device("cpu"), 1, 48, 512)


def test_shipped_configs_select_the_persistent_blockscale_kernel_on_cuda_only(monkeypatch):
    """The H200 sweeps (tune_gemm.py --kernels blockscale_persistent): from 1024 rows, and from 129
    rows where K >= 8192; tiled below, and everywhere on rocm and the interpreter."""
    with open(os.path.join(config_data.CONFIG_DIR, "gemm.json")) as f:
        shipped = json.load(f)
    for family in ("rocm", "interpret"):
        for rule in shipped[family]["gemm_a8w8_blockscale"]["rules"]:
            assert rule.get("kernel", "tiled") == "tiled", (family, rule)
    assert tg.blockscale_kernel(torch.device("cpu"), 8192, 4096, 4096) == "tiled"
    cuda = torch.device("cuda", 0)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)  # cuda's section, not the interpreter's
    tg.clear_caches()
    try:
        for m, n, k in [(1, 4096, 4096), (16, 14336, 4096), (128, 4096, 14336), (256, 4096, 4096),
                        (1023, 14336, 4096)]:
            assert tg.blockscale_kernel(cuda, m, n, k) == "tiled", (m, n, k)
        for m, n, k in [(129, 4096, 14336), (512, 4096, 14336), (1024, 4096, 4096), (2048, 14336, 4096),
                        (8192, 4096, 14336)]:
            assert tg.blockscale_kernel(cuda, m, n, k) == "persistent", (m, n, k)
        assert tg.blockscale_params(cuda, 256, 4096, 14336)[:2] == (64, 128)
        assert tg.blockscale_params(cuda, 4096, 4096, 4096)[:2] == (128, 128)
    finally:
        monkeypatch.undo()  # TRITON_INTERPRET back first: clear_caches re-reads it (the launchers' fast path)
        tg.clear_caches()


def test_blockscale_override_checks():
    a, w = operand(4, 128, torch.float8_e4m3fn, False), operand(64, 128, torch.float8_e4m3fn, False)
    out = torch.empty(4, 64, dtype=torch.bfloat16)
    sa, sw = torch.ones(4, 1), torch.ones(1, 1)
    with pytest.raises(ValueError, match="BLOCK_N must divide 128"):
        tg.gemm_a8w8_blockscale(out, a, w, sa, sw, params=(16, 256, 128, 2, 4, 1), kernel="persistent")
    with pytest.raises(ValueError, match="kernel must be one of"):
        tg.gemm_a8w8_blockscale(out, a, w, sa, sw, kernel="persistant")
