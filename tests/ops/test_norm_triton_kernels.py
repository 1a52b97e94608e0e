"""Triton RMSNorm launchers under the Triton interpreter (CPU tensors), against a float64 reference.

Every test draws fresh ``torch.randn`` inputs from a new random seed, named in
any failure message (set ``NORM_TEST_SEED`` to replay one).
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton (or the backend) is imported

import copy
import random

import pytest
import torch

from helpers import assert_close_verbose, interpreter_only
from vllm_rocm_accel.backends.triton import norm as tn

pytestmark = interpreter_only()  # conftest's autouse fixture makes the interpreter's bf16 casts round like a GPU

EPS = 1e-6
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# A weight of another dtype than x (legal: e.g. fp32 weights with bf16 activations).
OTHER_WEIGHT_DTYPE = {torch.float32: torch.bfloat16, torch.float16: torch.float32, torch.bfloat16: torch.float32}
HIDDEN = [1, 123, 512, 4097]  # 4097: odd, > 4096, one row per program in a 8192-wide block
ROWS = [1, 7, 33]


# --- reference and tolerances -------------------------------------------------
def _generator():
    seed = int(os.environ.get("NORM_TEST_SEED", random.randrange(2**31)))
    return torch.Generator().manual_seed(seed), seed


def _randn(gen, *shape, dtype):
    return torch.randn(*shape, generator=gen, dtype=torch.float32).to(dtype)


def _weight(gen, h, dtype):
    return (1.0 + 0.5 * torch.randn(h, generator=gen, dtype=torch.float32)).to(dtype)


def ref_rms_norm(x, weight, eps, residual=None):
    """float64 evaluation of vLLM 0.32's semantics, rounded to x.dtype at the end.

    ``s`` is the fp32 sum x + residual (its only rounding, as in the spec); the
    rest is float64, with the spec's rounding of the normalized value to the
    weight dtype before the weight product.
    """
    s = x.to(torch.float32)
    if residual is not None:
        s = s + residual.to(torch.float32)
    s = s.to(torch.float64)
    var = s.pow(2).mean(-1, keepdim=True)
    y = s / torch.sqrt(var + eps)
    if weight is not None:
        y = (y.to(weight.dtype).to(torch.float64) * weight.to(torch.float64)).to(weight.dtype)
    return y.to(x.dtype)


# Tolerances in ulps of the coarsest dtype a value is rounded to (the output
# dtype, or the weight dtype when the normalized value is rounded to it first).
# The kernel and the float64 reference round (nearly) the same real number, so
# they differ by at most 1 ulp except for near-ties: rtol = finfo.eps is >= 1 ulp
# relative everywhere (fp16: 9.8e-4, bf16: 7.8e-3). With a weight there are two
# roundings (to the weight dtype, then of the product), where a 1-ulp difference
# in the first can become 2 ulps in the second: rtol = 2 * eps then.
# fp32: the sum of squares in fp32 (a different summation order than float64)
# and rsqrt leave a relative error of a few 1e-7; 1e-5 bounds it with margin.
# atol only covers values near zero (fp16 subnormals are spaced 6e-8).
def _tolerance(x_dtype, weight):
    coarse = x_dtype
    if weight is not None and torch.finfo(weight.dtype).eps > torch.finfo(coarse).eps:
        coarse = weight.dtype
    if coarse == torch.float32:
        return 1e-5, 1e-5
    ulps = 2 if weight is not None else 1
    return 1e-6, ulps * torch.finfo(coarse).eps


def _check(actual, x, weight, residual=None, msg=""):
    atol, rtol = _tolerance(x.dtype, weight)
    expected = ref_rms_norm(x, weight, EPS, residual)
    assert actual.dtype == x.dtype
    assert_close_verbose(actual, expected, atol=atol, rtol=rtol, msg=msg)


def _weights(gen, h, dtype):
    return [None, _weight(gen, h, dtype), _weight(gen, h, OTHER_WEIGHT_DTYPE[dtype])]


def _wname(w):
    return "none" if w is None else str(w.dtype)


# --- single-pass kernel: dtypes x hidden sizes x row counts x weights ---------
@pytest.mark.parametrize("rows", ROWS)
@pytest.mark.parametrize("hidden", HIDDEN)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_rms_norm_matches_reference(dtype, hidden, rows):
    gen, seed = _generator()
    x = _randn(gen, rows, hidden, dtype=dtype)
    for w in _weights(gen, hidden, dtype):
        assert tn.supports_args(x, w, EPS) is None
        out = torch.empty_like(x)
        tn.rms_norm(out, x, w, EPS)
        _check(out, x, w, msg=f"seed={seed} weight={_wname(w)}")


@pytest.mark.parametrize("rows", ROWS)
@pytest.mark.parametrize("hidden", HIDDEN)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_fused_add_rms_norm_matches_reference(dtype, hidden, rows):
    gen, seed = _generator()
    x = _randn(gen, rows, hidden, dtype=dtype)
    residual = _randn(gen, rows, hidden, dtype=dtype)
    for w in _weights(gen, hidden, dtype):
        assert tn.supports_args_add(x, residual, w, EPS) is None
        out = torch.empty_like(x)
        residual_out = torch.empty_like(x)
        tn.fused_add_rms_norm(out, residual_out, x, residual, w, EPS)
        # A single rounding of the fp32 sum: must match bit for bit.
        assert torch.equal(residual_out, (x.float() + residual.float()).to(dtype)), f"seed={seed}"
        _check(out, x, w, residual, msg=f"seed={seed} weight={_wname(w)}")


def test_weight_fp16_with_bf16_input():
    gen, seed = _generator()
    x = _randn(gen, 5, 123, dtype=torch.bfloat16)
    residual = _randn(gen, 5, 123, dtype=torch.bfloat16)
    w = _weight(gen, 123, torch.float16)
    out = torch.empty_like(x)
    tn.rms_norm(out, x, w, EPS)
    _check(out, x, w, msg=f"seed={seed}")
    residual_out = torch.empty_like(x)
    tn.fused_add_rms_norm(out, residual_out, x, residual, w, EPS)
    _check(out, x, w, residual, msg=f"seed={seed}")


# --- geometry: N-D and strided rows, no copies --------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_nd_input(dtype):
    gen, seed = _generator()
    h = 123
    x = _randn(gen, 2, 3, h, dtype=dtype)
    residual = _randn(gen, 2, 3, h, dtype=dtype)
    w = _weight(gen, h, dtype)
    out = torch.empty_like(x)
    tn.rms_norm(out, x, w, EPS)
    _check(out, x, w, msg=f"seed={seed}")
    residual_out = torch.empty_like(x)
    tn.fused_add_rms_norm(out, residual_out, x, residual, w, EPS)
    assert torch.equal(residual_out, (x.float() + residual.float()).to(dtype))
    _check(out, x, w, residual, msg=f"seed={seed}")


@pytest.mark.parametrize("hidden", [123, 512])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_strided_rows_without_copy(dtype, hidden):
    gen, seed = _generator()
    t = 9
    big_x = _randn(gen, t, 3 * hidden, dtype=dtype)
    big_r = _randn(gen, t, 3 * hidden, dtype=dtype)
    x = big_x[:, :hidden]  # row stride 3H
    residual = big_r[:, hidden : 2 * hidden]
    w = _weight(gen, hidden, torch.float32)
    assert tn.supports_args(x, w, EPS) is None
    assert tn.supports_args_add(x, residual, w, EPS) is None

    view, row_stride = tn._rows_view(x)
    assert row_stride == 3 * hidden and view.data_ptr() == x.data_ptr() and view.shape == (t, hidden)

    # Out of place, into a strided output as well.
    big_out = _randn(gen, t, 2 * hidden, dtype=dtype)
    before = big_out.clone()
    out = big_out[:, hidden:]
    tn.rms_norm(out, x, w, EPS)
    _check(out, x, w, msg=f"seed={seed}")
    assert torch.equal(big_out[:, :hidden], before[:, :hidden]), "wrote outside the output rows"

    residual_out = torch.empty(t, hidden, dtype=dtype)
    tn.fused_add_rms_norm(out, residual_out, x, residual, w, EPS)
    assert torch.equal(residual_out, (x.float() + residual.float()).to(dtype))
    _check(out, x, w, residual, msg=f"seed={seed}")

    # In place on the strided views: results must land in the big buffers
    # (a hidden copy would leave them untouched), other columns unchanged.
    x0, r0 = x.clone(), residual.clone()
    bx0, br0 = big_x.clone(), big_r.clone()
    tn.fused_add_rms_norm(x, residual, x, residual, w, EPS)
    assert torch.equal(big_r[:, hidden : 2 * hidden], (x0.float() + r0.float()).to(dtype))
    _check(big_x[:, :hidden], x0, w, r0, msg=f"seed={seed}")
    assert torch.equal(big_x[:, hidden:], bx0[:, hidden:]) and torch.equal(big_r[:, :hidden], br0[:, :hidden])

    x1 = x.clone()
    tn.rms_norm(x, x, w, EPS)
    _check(big_x[:, :hidden], x1, w, msg=f"seed={seed}")


def test_nd_strided_rows_collapse():
    gen, seed = _generator()
    h = 64
    big = _randn(gen, 2, 3, 2 * h, dtype=torch.bfloat16)
    x = big[..., :h]  # strides (6h, 2h, 1): leading dims collapse to row stride 2h
    assert tn._row_stride(x) == 2 * h
    assert tn.supports_args(x, None, EPS) is None
    out = torch.empty_like(x)
    tn.rms_norm(out, x, None, EPS)
    _check(out, x, None, msg=f"seed={seed}")


def test_supports_args_reasons():
    x = torch.randn(4, 256)
    w = torch.randn(128)
    strided = x[:, ::2]  # last-dim stride 2
    assert strided.stride(-1) == 2
    assert isinstance(tn.supports_args(strided, w, EPS), str)
    assert isinstance(tn.supports_args_add(torch.randn(4, 128), strided, w, EPS), str)
    assert isinstance(tn.supports_args_add(strided, torch.randn(4, 128), w, EPS), str)
    assert isinstance(tn.supports_args(torch.randn(4, 128), torch.randn(256)[::2], EPS), str)
    # Leading dims that do not collapse into one row stride.
    gappy = torch.randn(2, 4, 128)[:, :3, :]
    assert tn._row_stride(gappy) is None and tn._rows_view(gappy) is None
    assert isinstance(tn.supports_args(gappy, None, EPS), str)
    assert isinstance(tn.supports_args(torch.randn(4, 128, dtype=torch.float64), None, EPS), str)
    # Launching anyway is an error, not a silent wrong answer.
    with pytest.raises(ValueError):
        tn.rms_norm(torch.empty(4, 128), strided, w, EPS)


# --- looped (two-pass) kernel ---------------------------------------------------
@pytest.fixture
def looped_config(monkeypatch):
    """Single-pass limit 64 and 64-column chunks, so H=200 takes 4 chunks (the last partial)."""
    cfg = copy.deepcopy(tn._config())
    for fam in cfg.values():
        if isinstance(fam, dict):
            fam["single_pass_max_cols"] = 64
            fam["looped_block"] = 64
    tn._launch_params.cache_clear()
    monkeypatch.setattr(tn, "_config", lambda: cfg)
    yield
    tn._launch_params.cache_clear()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_looped_path(looped_config, dtype):
    gen, seed = _generator()
    rows, h = 7, 200
    assert tn._launch_params("cpu", h, dtype)[0], "the looped kernel was not selected"
    x = _randn(gen, rows, h, dtype=dtype)
    residual = _randn(gen, rows, h, dtype=dtype)
    for w in _weights(gen, h, dtype):
        msg = f"seed={seed} weight={_wname(w)}"
        out = torch.empty_like(x)
        tn.rms_norm(out, x, w, EPS)
        _check(out, x, w, msg=msg)

        residual_out = torch.empty_like(x)
        tn.fused_add_rms_norm(out, residual_out, x, residual, w, EPS)
        assert torch.equal(residual_out, (x.float() + residual.float()).to(dtype)), msg
        _check(out, x, w, residual, msg=msg)

        # In place (aliased), both ops.
        xi, ri = x.clone(), residual.clone()
        tn.fused_add_rms_norm(xi, ri, xi, ri, w, EPS)
        assert torch.equal(ri, (x.float() + residual.float()).to(dtype)), msg
        _check(xi, x, w, residual, msg=msg)
        xi = x.clone()
        tn.rms_norm(xi, xi, w, EPS)
        _check(xi, x, w, msg=msg)


# --- in-place aliasing (single pass) -------------------------------------------
@pytest.mark.parametrize("hidden", [123, 4097])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_inplace_aliasing(dtype, hidden):
    gen, seed = _generator()
    x = _randn(gen, 7, hidden, dtype=dtype)
    residual = _randn(gen, 7, hidden, dtype=dtype)
    w = _weight(gen, hidden, dtype)
    x0, r0 = x.clone(), residual.clone()
    tn.fused_add_rms_norm(x, residual, x, residual, w, EPS)
    assert torch.equal(residual, (x0.float() + r0.float()).to(dtype)), f"seed={seed}"
    _check(x, x0, w, r0, msg=f"seed={seed}")

    x = x0.clone()
    tn.rms_norm(x, x, w, EPS)
    _check(x, x0, w, msg=f"seed={seed}")


# --- zero rows -------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(0, 128), (2, 0, 4097)])
def test_zero_rows_launch_nothing(monkeypatch, shape):
    monkeypatch.setattr(tn, "_k", None)  # any kernel launch would raise AttributeError
    x = torch.empty(shape, dtype=torch.bfloat16)
    w = torch.ones(shape[-1], dtype=torch.bfloat16)
    assert tn.supports_args(x, w, EPS) is None
    tn.rms_norm(torch.empty_like(x), x, w, EPS)
    tn.fused_add_rms_norm(torch.empty_like(x), torch.empty_like(x), x, torch.empty_like(x), w, EPS)


def test_int64_offsets_chosen_only_when_needed():
    assert not tn._needs_int64(32768 + 1, 8192, 8192)
    assert tn._needs_int64(2**17, 16384, 16384)
    assert tn._needs_int64(3, 1024, 2**31)  # a huge row stride alone forces int64
