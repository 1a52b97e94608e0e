"""The activation family: gated activations over the last dim, ``d = x.shape[-1] // 2``.

Custom ops (``torch.ops.rocm_accel.*``):

* ``silu_and_mul(x, backend="auto") -> Tensor``: ``silu(x[..., :d]) * x[..., d:]``
* ``silu_and_mul_out(out!, x, backend="auto")``: the same into ``out``
* ``gelu_and_mul(x, approximate="none", backend="auto") -> Tensor``: ``gelu(x[..., :d]) * x[..., d:]``,
  ``approximate`` ``"none"`` (erf) or ``"tanh"``
* ``gelu_and_mul_out(out!, x, approximate="none", backend="auto")``

``x`` is (..., 2d) in float32/float16/bfloat16, rows may be strided (last-dim stride 1);
``out`` is (..., d) of x's dtype and device, may be a row-strided view, and must not share
memory with ``x``. Semantics are vLLM 0.32's ``SiluAndMul``/``GeluAndMul.forward_native``.
Zero rows give empty outputs. Arguments are validated before any backend runs, so a bad
call leaves ``out`` untouched. The ``out=`` ops share their op's dispatcher: the backends
see ``(x, out)`` (silu) or ``(x, approximate, out)`` (gelu), ``out`` None for the
out-of-place form.
"""

from __future__ import annotations

from typing import Optional

import torch

from .. import dispatch
from ..backends.aiter import activation as aiter_act
from ..backends.torch import activation as torch_act
from ..checks.activation import check_act_and_mul_args, check_out_disjoint
from ..fake_impls import activation as fake
from ..registry import register_op
from .stats import count


# --- backends ---------------------------------------------------------------
_triton_mod = None


def _triton():
    global _triton_mod
    if _triton_mod is None:
        from ..backends.triton import activation as triton_act  # imports triton: only on first use

        _triton_mod = triton_act
    return _triton_mod


def _new_out(x: torch.Tensor) -> torch.Tensor:
    return torch.empty(tuple(x.shape[:-1]) + (x.shape[-1] // 2,), dtype=x.dtype, device=x.device)


def _triton_silu(x, out=None):
    out = _new_out(x) if out is None else out
    _triton().act_and_mul(out, x, "silu")
    return out


def _triton_gelu(x, approximate, out=None):
    out = _new_out(x) if out is None else out
    _triton().act_and_mul(out, x, "gelu_tanh" if approximate == "tanh" else "gelu")
    return out


def _triton_supports(x, out=None):
    return _triton().supports_args(x, out)


def _triton_supports_gelu(x, approximate, out=None):
    return _triton().supports_args(x, out)


def _aiter_supports_gelu(x, approximate, out=None):
    return aiter_act.supports_args(x, out)


def _torch_supports_gelu(x, approximate, out=None):
    return None


def _call_shape(x, *rest) -> dispatch.CallShape:
    d = x.shape[-1] // 2
    return dispatch.CallShape(x.device, x.dtype, x.numel() // x.shape[-1], d)


_aiter_ok = dispatch.aiter_supported_for(None)  # vLLM has no per-feature activation flag: master flag only

SILU_AND_MUL = dispatch.OpDispatch(
    "silu_and_mul",
    [
        dispatch.Backend("aiter", aiter_act.silu_and_mul, _aiter_ok, aiter_act.supports_args),
        dispatch.Backend("triton", _triton_silu, dispatch.triton_supported, _triton_supports),
        dispatch.Backend("torch", torch_act.silu_and_mul, dispatch.torch_supported, torch_act.supports_args),
    ],
    _call_shape,
)
GELU_AND_MUL = dispatch.OpDispatch(
    "gelu_and_mul",
    [
        dispatch.Backend("aiter", aiter_act.gelu_and_mul, _aiter_ok, _aiter_supports_gelu),
        dispatch.Backend("triton", _triton_gelu, dispatch.triton_supported, _triton_supports_gelu),
        dispatch.Backend("torch", torch_act.gelu_and_mul, dispatch.torch_supported, _torch_supports_gelu),
    ],
    _call_shape,
)


# --- op implementations -----------------------------------------------------
def _choice_key(disp: dispatch.OpDispatch, backend: str, x, out=None) -> Optional[tuple]:
    """Cache key for the backend choice, for dense calls (strided ones take the full path).

    x's address modulo 16 is part of it: aiter's vector loads need 2 to 16 bytes of alignment,
    by the width (a power of two, so the residue decides every case).
    """
    if not x.is_contiguous() or (out is not None and not out.is_contiguous()):
        return None
    width = x.shape[-1]
    return (backend, x.dtype, x.device, width, out is None, x.data_ptr() % 16,
            disp.row_bracket(x.numel() // width))


def silu_and_mul_impl(x: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    check_act_and_mul_args(x)
    impl = SILU_AND_MUL.select(backend, (x, None), _choice_key(SILU_AND_MUL, backend, x))
    count("silu_and_mul", impl.name)
    return impl.run(x)


def silu_and_mul_out_impl(out: torch.Tensor, x: torch.Tensor, backend: str = "auto") -> None:
    check_act_and_mul_args(x, out)
    check_out_disjoint(x, out)
    impl = SILU_AND_MUL.select(backend, (x, out), _choice_key(SILU_AND_MUL, backend, x, out))
    count("silu_and_mul", impl.name)
    impl.run(x, out)


def gelu_and_mul_impl(x: torch.Tensor, approximate: str = "none", backend: str = "auto") -> torch.Tensor:
    check_act_and_mul_args(x, None, approximate)
    impl = GELU_AND_MUL.select(backend, (x, approximate, None), _choice_key(GELU_AND_MUL, backend, x))
    count("gelu_and_mul", impl.name)
    return impl.run(x, approximate)


def gelu_and_mul_out_impl(out: torch.Tensor, x: torch.Tensor, approximate: str = "none", backend: str = "auto") -> None:
    check_act_and_mul_args(x, out, approximate)
    check_out_disjoint(x, out)
    impl = GELU_AND_MUL.select(backend, (x, approximate, out), _choice_key(GELU_AND_MUL, backend, x, out))
    count("gelu_and_mul", impl.name)
    impl.run(x, approximate, out)


def example_args(op: str, rows: int, hidden: int, dtype: torch.dtype, device: torch.device) -> tuple:
    """Dispatcher arguments of a typical call (``hidden`` is the output width d), for doctor."""
    x = torch.empty(rows, 2 * hidden, dtype=dtype, device=device)
    if op == "silu_and_mul":
        return (x, None)
    return (x, "none", None)


DISPATCHERS = {"silu_and_mul": SILU_AND_MUL, "gelu_and_mul": GELU_AND_MUL}


def register() -> dict[str, torch._ops.OpOverload]:
    return {
        "silu_and_mul": register_op("silu_and_mul", silu_and_mul_impl, fake.silu_and_mul),
        "silu_and_mul_out": register_op(
            "silu_and_mul_out", silu_and_mul_out_impl, fake.silu_and_mul_out, mutates_args=("out",)
        ),
        "gelu_and_mul": register_op("gelu_and_mul", gelu_and_mul_impl, fake.gelu_and_mul),
        "gelu_and_mul_out": register_op(
            "gelu_and_mul_out", gelu_and_mul_out_impl, fake.gelu_and_mul_out, mutates_args=("out",)
        ),
    }
