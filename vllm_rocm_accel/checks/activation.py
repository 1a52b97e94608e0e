"""Checks for the activation family (``silu_and_mul``, ``gelu_and_mul``)."""

from __future__ import annotations

from . import check_same_device, check_tensor

APPROXIMATIONS = ("none", "tanh")


def _byte_span(t) -> tuple[int, int]:
    """[first, last) byte addresses any element of ``t`` can touch (``t`` non-empty)."""
    extent = 1 + sum((n - 1) * abs(s) for n, s in zip(t.shape, t.stride()))
    start = t.data_ptr() - sum((n - 1) * s for n, s in zip(t.shape, t.stride()) if s < 0) * t.element_size()
    return start, start + extent * t.element_size()


def check_act_and_mul_args(x, out=None, approximate="none") -> None:
    """``x`` is (..., 2 * d) float; ``out``, when given, is (..., d) of x's dtype and device,
    with no two elements at one address (not a broadcast/expanded tensor). The ops also
    call :func:`check_out_disjoint` (not the fakes: fake tensors have no addresses)."""
    check_tensor("x", x)
    if x.dim() == 0:
        raise ValueError("x is 0-d; expected shape (..., 2 * d)")
    width = x.shape[-1]
    if width == 0 or width % 2:
        raise ValueError(
            f"x has last dim {width} (shape {tuple(x.shape)}); expected an even, non-zero 2 * d "
            "(gate and up halves of equal width)"
        )
    if not isinstance(approximate, str):
        raise TypeError(f"approximate must be a str ('none' or 'tanh'), got {type(approximate).__name__}")
    if approximate not in APPROXIMATIONS:
        raise ValueError(f"approximate must be 'none' or 'tanh', got {approximate!r}")
    if out is None:
        return
    check_tensor("out", out)
    expected = tuple(x.shape[:-1]) + (width // 2,)
    if tuple(out.shape) != expected:
        raise ValueError(f"out has shape {tuple(out.shape)}; expected {expected} (x's shape with the last dim halved)")
    if out.dtype != x.dtype:
        raise ValueError(f"out has dtype {out.dtype}; expected x's dtype {x.dtype}")
    check_same_device("out", out, "x", x)
    if out.numel() == 0:
        return
    if any(s == 0 and n > 1 for n, s in zip(out.shape, out.stride())):
        raise ValueError(f"out (shape {tuple(out.shape)}, stride {out.stride()}) has several elements at one address")


def check_out_disjoint(x, out) -> None:
    """``out`` shares no memory with ``x`` (real tensors only: fakes have no addresses).

    Conservative: byte ranges that interleave without sharing an element (two column
    slices of one buffer) are refused too.
    """
    if out.numel() == 0 or x.numel() == 0:
        return
    a, b = _byte_span(out), _byte_span(x)
    if a[0] < b[1] and b[0] < a[1]:
        raise ValueError("out shares memory with x; the ops write out and only read x")
