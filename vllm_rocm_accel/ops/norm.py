"""The norm family: ``rms_norm``, ``fused_add_rms_norm`` and its in-place form.

Custom ops (``torch.ops.rocm_accel.*``):

* ``rms_norm(x, weight, epsilon, backend="auto") -> Tensor``
* ``fused_add_rms_norm(x, residual, weight, epsilon, backend="auto") -> (out, residual_out)``
* ``fused_add_rms_norm_(x!, residual!, weight, epsilon, backend="auto")``: vLLM's
  in-place semantics, ``residual <- x + residual``, ``x <- rms_norm(x + residual)``.

``x`` is (..., H) in float32/float16/bfloat16; ``weight`` is (H,) or None (no
scaling, as vLLM's ``has_weight=False``). Zero rows are allowed and give empty
outputs. Arguments are validated before any backend runs, so a bad call leaves
in-place inputs untouched.
"""

from __future__ import annotations

from typing import Optional

import torch

from .. import dispatch
from ..backends.aiter import norm as aiter_norm
from ..backends.torch import norm as torch_norm
from ..fake_impls import norm as fake
from ..checks.norm import check_rms_norm_args
from ..registry import register_op
from .stats import count


# --- backends ---------------------------------------------------------------
_triton_mod = None


def _triton():
    global _triton_mod
    if _triton_mod is None:
        from ..backends.triton import norm as triton_norm  # imports triton: only on first use

        _triton_mod = triton_norm
    return _triton_mod


def _triton_rms_norm(x, weight, eps):
    out = torch.empty_like(x, memory_format=torch.contiguous_format)  # cheaper on the host than torch.empty(shape, ...): profile_host.py
    _triton().rms_norm(out, x, weight, eps)
    return out


def _triton_fused_add(x, residual, weight, eps, inplace):
    if inplace:
        _triton().fused_add_rms_norm(x, residual, x, residual, weight, eps)
        return x, residual
    out = torch.empty_like(x, memory_format=torch.contiguous_format)  # cheaper on the host than torch.empty(shape, ...): profile_host.py
    residual_out = torch.empty_like(x, memory_format=torch.contiguous_format)
    _triton().fused_add_rms_norm(out, residual_out, x, residual, weight, eps)
    return out, residual_out


def _triton_supports(x, weight, eps):
    return _triton().supports_args(x, weight, eps)


def _triton_supports_add(x, residual, weight, eps):
    return _triton().supports_args_add(x, residual, weight, eps)


def _call_shape(x, *rest) -> dispatch.CallShape:
    hidden = x.shape[-1]
    return dispatch.CallShape(x.device, x.dtype, x.numel() // hidden, hidden)


_aiter_ok = dispatch.aiter_supported_for("rmsnorm")

RMS_NORM = dispatch.OpDispatch(
    "rms_norm",
    [
        dispatch.Backend("aiter", aiter_norm.rms_norm, _aiter_ok, aiter_norm.supports_args),
        dispatch.Backend("triton", _triton_rms_norm, dispatch.triton_supported, _triton_supports),
        dispatch.Backend("torch", torch_norm.rms_norm, dispatch.torch_supported, torch_norm.supports_args),
    ],
    _call_shape,
)
FUSED_ADD_RMS_NORM = dispatch.OpDispatch(
    "fused_add_rms_norm",
    [
        dispatch.Backend("aiter", aiter_norm.fused_add_rms_norm, _aiter_ok, aiter_norm.supports_args_add),
        dispatch.Backend("triton", _triton_fused_add, dispatch.triton_supported, _triton_supports_add),
        dispatch.Backend("torch", torch_norm.fused_add_rms_norm, dispatch.torch_supported, torch_norm.supports_args_add),
    ],
    _call_shape,
)


# --- op implementations -----------------------------------------------------
def _choice_key(disp: dispatch.OpDispatch, backend: str, x, weight, residual=None) -> Optional[tuple]:
    """Cache key for the backend choice, for dense calls (strided ones take the full path)."""
    if not x.is_contiguous() or (residual is not None and not residual.is_contiguous()):
        return None
    if weight is not None and not weight.is_contiguous():
        return None
    hidden = x.shape[-1]
    return (backend, x.dtype, x.device, hidden, None if weight is None else weight.dtype,
            disp.row_bracket(x.numel() // hidden))


def rms_norm_impl(x: torch.Tensor, weight: Optional[torch.Tensor], epsilon: float, backend: str = "auto") -> torch.Tensor:
    check_rms_norm_args(x, weight, epsilon)
    impl = RMS_NORM.select(backend, (x, weight, epsilon), _choice_key(RMS_NORM, backend, x, weight))
    count("rms_norm", impl.name)
    return impl.run(x, weight, epsilon)


def fused_add_rms_norm_impl(
    x: torch.Tensor, residual: torch.Tensor, weight: Optional[torch.Tensor], epsilon: float, backend: str = "auto"
) -> tuple[torch.Tensor, torch.Tensor]:
    check_rms_norm_args(x, weight, epsilon, residual)
    impl = FUSED_ADD_RMS_NORM.select(
        backend, (x, residual, weight, epsilon), _choice_key(FUSED_ADD_RMS_NORM, backend, x, weight, residual)
    )
    count("fused_add_rms_norm", impl.name)
    return impl.run(x, residual, weight, epsilon, False)


def fused_add_rms_norm_inplace_impl(
    x: torch.Tensor, residual: torch.Tensor, weight: Optional[torch.Tensor], epsilon: float, backend: str = "auto"
) -> None:
    check_rms_norm_args(x, weight, epsilon, residual)
    impl = FUSED_ADD_RMS_NORM.select(
        backend, (x, residual, weight, epsilon), _choice_key(FUSED_ADD_RMS_NORM, backend, x, weight, residual)
    )
    count("fused_add_rms_norm", impl.name)
    impl.run(x, residual, weight, epsilon, True)


def example_args(op: str, rows: int, hidden: int, dtype: torch.dtype, device: torch.device) -> tuple:
    """Arguments of a typical call, for doctor's "what would auto pick" table."""
    x = torch.empty(rows, hidden, dtype=dtype, device=device)
    weight = torch.empty(hidden, dtype=dtype, device=device)
    if op == "rms_norm":
        return (x, weight, 1e-6)
    return (x, torch.empty_like(x), weight, 1e-6)


DISPATCHERS = {"rms_norm": RMS_NORM, "fused_add_rms_norm": FUSED_ADD_RMS_NORM}


def register() -> dict[str, torch._ops.OpOverload]:
    return {
        "rms_norm": register_op("rms_norm", rms_norm_impl, fake.rms_norm),
        "fused_add_rms_norm": register_op("fused_add_rms_norm", fused_add_rms_norm_impl, fake.fused_add_rms_norm),
        "fused_add_rms_norm_": register_op(
            "fused_add_rms_norm_", fused_add_rms_norm_inplace_impl, fake.fused_add_rms_norm_,
            mutates_args=("x", "residual"),
        ),
    }
