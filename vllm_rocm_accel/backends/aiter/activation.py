"""Gated activations through AITER's HIP kernels (``aiter.silu_and_mul``, ``aiter.gelu_and_mul``,
``aiter.gelu_tanh_and_mul``).

Contract of amd-aiter 0.1.7 (``aiter/ops/activation.py``, kernel
``csrc/kernels/activation_kernels.cu``): ``fn(out, input) -> None`` with

* ``input`` float16/bfloat16, any rank, read as ``numel // size(-1)`` dense rows of 2d: the
  kernel indexes ``input + token * 2 * d`` and ignores strides, so ``input`` must be
  contiguous (a row-strided view would be read at the wrong addresses);
* ``out`` of ``input``'s dtype, written at ``out + token * d + col``: contiguous too, and
  distinct from ``input`` (both are ``__restrict__``);
* ``d`` a multiple of the kernel's vector width ``min(8, next_pow2(d // 64))``: each thread
  stores that many elements without a bound check, so any other ``d`` writes past the row
  (past the tensor, for the last row). Its vector loads also need ``input`` aligned to that
  width (buffer loads of ``vec * element_size`` bytes);
* at least one row (a launch of zero blocks is an error; the adapter never makes one).

Numerics: the activation in float32 and the product rounded **once** (vLLM rounds the
activation to the dtype first), so results differ from the torch backend by up to an ulp.
Whatever :func:`supports_args` refuses falls back to another backend; nothing is copied to
fit the kernel.
"""

from __future__ import annotations

from typing import Optional

import torch

_DTYPES = (torch.float16, torch.bfloat16)
_MAX_VEC = 8  # activation_kernels.cu: max_vec_size


def _aiter():
    import aiter  # lazy: importing aiter starts JIT builds

    return aiter


def vector_width(d: int) -> int:
    """The kernel's elements per thread for rows of ``d`` outputs: min(8, next_pow2(d // 64))."""
    n = d // 64
    p = 1 if n <= 1 else 1 << (n - 1).bit_length()
    return min(p, _MAX_VEC)


def _run(fn: str, out: torch.Tensor, x: torch.Tensor) -> None:
    if out.numel() == 0:
        return
    if fn == "silu":
        _aiter().silu_and_mul(out, x)
    elif fn == "gelu":
        _aiter().gelu_and_mul(out, x)
    else:
        _aiter().gelu_tanh_and_mul(out, x)


def _fn(approximate: str) -> str:
    return "gelu_tanh" if approximate == "tanh" else "gelu"


def _new_out(x: torch.Tensor) -> torch.Tensor:
    return torch.empty(tuple(x.shape[:-1]) + (x.shape[-1] // 2,), dtype=x.dtype, device=x.device)


def silu_and_mul(x: torch.Tensor, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    out = _new_out(x) if out is None else out
    _run("silu", out, x)
    return out


def gelu_and_mul(x: torch.Tensor, approximate: str, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    out = _new_out(x) if out is None else out
    _run(_fn(approximate), out, x)
    return out


def supports_args(x: torch.Tensor, out: Optional[torch.Tensor] = None) -> Optional[str]:
    """None when AITER's kernel can take ``x`` (and ``out``, when given) as they are."""
    if x.dtype not in _DTYPES:
        return f"aiter act_and_mul takes float16/bfloat16, got {x.dtype}"
    if not x.is_contiguous():
        return (f"x (shape {tuple(x.shape)}, stride {x.stride()}) is not contiguous; aiter's kernel "
                "ignores strides and would read the wrong rows")
    if out is not None and not out.is_contiguous():
        return (f"out (shape {tuple(out.shape)}, stride {out.stride()}) is not contiguous; aiter's kernel "
                "writes dense rows")
    d = x.shape[-1] // 2
    vec = vector_width(d)
    if d % vec:
        return f"d = {d} is not a multiple of aiter's vector width {vec}; its unguarded stores would overrun the rows"
    if x.data_ptr() % (vec * x.element_size()):
        return f"x is not aligned to aiter's {vec * x.element_size()}-byte vector loads"
    return None
