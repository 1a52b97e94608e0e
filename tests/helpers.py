"""Small shared test helpers."""

from __future__ import annotations

import os

import pytest
import torch


def assert_close_verbose(actual: torch.Tensor, expected: torch.Tensor, atol: float, rtol: float, msg: str = "") -> None:
    """``|actual - expected| <= atol + rtol * |expected|`` elementwise (compared in float64).

    On mismatch, reports the number of bad elements, the max abs error, its
    index, the actual/expected values there, and NaN/inf counts of both sides.
    """
    assert actual.shape == expected.shape, f"{msg} shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    a = actual.detach().to("cpu", torch.float64)
    e = expected.detach().to("cpu", torch.float64)
    err = (a - e).abs()
    finite = torch.isfinite(a) & torch.isfinite(e)
    bad = finite & (err > atol + rtol * e.abs())
    # inf == inf of the same sign is a match; any other non-finite pairing is not.
    nonfinite_bad = ~finite & ~((a == e) | (torch.isnan(a) & torch.isnan(e)))
    if not bool(bad.any()) and not bool(nonfinite_bad.any()):
        return
    err_f = torch.where(finite, err, torch.zeros_like(err))
    if a.numel():
        flat = int(err_f.argmax())
        idx = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), a.shape)) if a.dim() else ()
        where = f"max abs err {err_f.reshape(-1)[flat].item():.6g} at {idx}: actual {a[idx].item()!r}, expected {e[idx].item()!r}"
    else:
        where = "empty tensors"
    raise AssertionError(
        f"{msg} mismatch (atol={atol}, rtol={rtol}): {int(bad.sum())} of {a.numel()} finite elements out of tolerance, "
        f"{int(nonfinite_bad.sum())} non-finite mismatches; {where}; "
        f"actual nan={int(torch.isnan(a).sum())} inf={int(torch.isinf(a).sum())}, "
        f"expected nan={int(torch.isnan(e).sum())} inf={int(torch.isinf(e).sum())}"
    )


def eps_tol(dtype: torch.dtype, ref: torch.Tensor, factor: float) -> tuple[float, float]:
    """``(atol, rtol) = (factor * eps * max(1, max|ref|), 2 * eps)`` with ``eps`` of ``dtype``: the
    AITER adapter tests' tolerance against a float64 reference."""
    eps = torch.finfo(dtype).eps
    return factor * eps * max(1.0, float(ref.abs().max())), 2 * eps


def cuda_like(*shape, dtype=torch.bfloat16) -> torch.Tensor:
    """A tensor that says it lives on cuda:0, with no GPU: for predicate tests only."""
    from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode

    return FakeTensor(FakeTensorMode(), torch.empty(*shape, dtype=dtype, device="meta"), torch.device("cuda", 0))


def interpreter_only():
    """The ``pytestmark`` of a module that runs Triton kernels on CPU tensors: skip unless
    ``TRITON_INTERPRET=1`` (read when the module calls this, after setting its default)."""
    return pytest.mark.skipif(
        os.environ.get("TRITON_INTERPRET") != "1", reason="runs the Triton kernels on CPU tensors under TRITON_INTERPRET=1"
    )


def poison_torch_empty(monkeypatch, module, names=("empty",)) -> None:
    """For the test, ``module.torch.<name>`` for each of ``names`` (``empty``, ``empty_like``) returns
    NaN-filled (float) or -7-filled (integer) tensors, so an output or workspace element the code
    under test leaves unwritten, or reads before writing, fails."""
    def poison(t):
        return t.fill_(float("nan")) if t.is_floating_point() else t.fill_(-7)

    for name in names:
        real = getattr(module.torch, name)
        monkeypatch.setattr(module.torch, name, lambda *a, _real=real, **kw: poison(_real(*a, **kw)))


def round_bf16_like_gpu_in_interpreter(monkeypatch) -> None:
    """Make the Triton interpreter's fp32 -> bf16 casts round to nearest even, as compiled kernels do.

    Triton's interpreter (seen in 3.9) converts fp32 to bf16 by truncating the
    mantissa (``_convert_float`` with no rounding mode), while compiled kernels
    round to nearest even (``cvt.rn.bf16.f32`` on NVIDIA; likewise on AMD). Without
    this, bit-exact checks of bf16 kernel outputs under TRITON_INTERPRET=1 test
    the interpreter rather than the kernel. Use from a fixture (undone with
    ``monkeypatch``); a no-op if the interpreter's internals differ.
    """
    import numpy as np
    import triton.language as tl
    from triton.runtime import interpreter

    original = getattr(interpreter, "_convert_float", None)
    if original is None or getattr(original, "_rounds_bf16_rtne", False):
        return

    def convert(data, input_dtype, output_dtype, rounding_mode):
        if input_dtype == tl.float32 and output_dtype == tl.bfloat16:
            f32 = torch.from_numpy(np.array(data, dtype=np.float32, copy=True))
            return f32.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16).reshape(np.shape(data))
        return original(data, input_dtype, output_dtype, rounding_mode)

    convert._rounds_bf16_rtne = True
    monkeypatch.setattr(interpreter, "_convert_float", convert)


def widen_bf16_dot_in_interpreter(monkeypatch) -> None:
    """Make the Triton interpreter's ``tl.dot`` on bf16 operands multiply their values.

    Triton 3.9's interpreter hands bf16 dot operands to numpy as their raw uint16 storage, so
    the products are garbage; widening them to float32 first is exact, and is what a GPU's bf16
    MMA computes with float32 accumulation. Use from a fixture; a no-op if the interpreter's
    internals differ.
    """
    import numpy as np
    import triton.language as tl
    from triton.runtime import interpreter

    builder = getattr(interpreter, "InterpreterBuilder", None)
    original = getattr(builder, "create_dot", None)
    if original is None or getattr(original, "_widens_bf16", False):
        return

    def widen(h):
        if h.dtype.scalar == tl.bfloat16:
            data = (np.asarray(h.data).astype(np.uint32) << 16).view(np.float32)
            return interpreter.TensorHandle(data, tl.float32)
        return h

    def create_dot(self, a, b, d, input_precision, max_num_imprecise_acc):
        return original(self, widen(a), widen(b), d, input_precision, max_num_imprecise_acc)

    create_dot._widens_bf16 = True
    monkeypatch.setattr(builder, "create_dot", create_dot)


def edited_config(monkeypatch, module):
    """Generator for a fixture: a deep copy of a Triton launcher module's loaded config (its
    ``_config``), installed in its place with the module's caches cleared, yielded for the test
    to edit; afterwards the shipped config is back and the caches cleared again."""
    import copy
    import functools

    edited = copy.deepcopy(module._config())
    module.clear_caches()
    monkeypatch.setattr(module, "_config", functools.lru_cache(maxsize=1)(lambda: edited))
    yield edited
    monkeypatch.undo()
    module.clear_caches()


def same_fp8_codes(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per element of two FP8 tensors: the same byte, or both zeros (the same value; the split
    division once encoded -0.0 as +0 on a GPU, kernels/triton/quant.py's RCP_DIV; the sign is now
    checked by tests/gpu/test_quant_gpu.py); e4m3fnuz has no -0 (its 0x80 is NaN, never counted
    as a zero)."""
    return (a.view(torch.uint8) == b.view(torch.uint8)) | ((a.float() == 0) & (b.float() == 0))


def fp8_steps(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per element of two FP8 tensors of one format: how many representable magnitudes apart their
    codes are (int16; e4m3's codes order magnitudes), or 99 where the signs differ on nonzero codes."""
    ab, bb = a.view(torch.uint8).to(torch.int16), b.view(torch.uint8).to(torch.int16)
    steps = ((ab & 0x7F) - (bb & 0x7F)).abs()
    flipped = ((ab ^ bb) & 0x80).bool() & (((ab | bb) & 0x7F) != 0)
    return torch.where(flipped, torch.full_like(steps, 99), steps)

