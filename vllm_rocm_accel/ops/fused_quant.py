"""The fused FP8 quant family: a norm or an activation and the FP8 quant after it, in one pass.

Custom ops (``torch.ops.rocm_accel.*``), each returning new tensors ``(q, scales)``:

* ``rms_norm_dynamic_quant(x, weight, epsilon, dtype=None, backend="auto")``: ``rms_norm`` then
  ``per_token_quant``; scales of shape (..., 1);
* ``fused_add_rms_norm_dynamic_quant(x, residual!, weight, epsilon, dtype=None, backend="auto")``:
  ``residual <- x + residual`` in place (the norm family's fused add; ``x`` is only read), then
  ``rms_norm`` of that sum and ``per_token_quant``; the schema declares the mutation of ``residual``;
* ``silu_and_mul_group_quant(x, group_size=128, column_major_scales=False, dtype=None,
  backend="auto")``: ``silu_and_mul`` (``d = x.shape[-1] // 2``) then ``per_token_group_quant``;
  q of shape (..., d), scales (..., d // group_size), column-major when asked; d not a multiple of
  ``group_size`` raises ``ValueError``.

The arguments are those of the two ops they fuse, in the same order (x, residual and weight as
the norm and activation families take them; ``dtype`` an FP8 format or None for the device's;
group_size and column_major_scales as ``per_token_group_quant``). The result is the unfused
composition (``backends/torch/fused_quant.py``): the norm or activation output rounded to x's
dtype as those ops round it, then :mod:`vllm_rocm_accel.fp8`'s scale rule, clamp and all-zero
handling. Arguments are validated before any backend runs, so a bad call leaves ``residual``
untouched.

AITER gate: vLLM 0.32 enables its AITER RMSNorm + quant and SiLU-and-mul + group-quant fusion
passes on ``rocm_aiter_ops.is_enabled()`` alone (``compilation/passes/pass_manager.py``), not on
``VLLM_ROCM_USE_AITER_RMSNORM`` or ``..._LINEAR``; so here the master flag alone gates the aiter
backend (``OP_FEATURES`` None), plus the FP8 arch check of the quant family.
"""

from __future__ import annotations

from typing import Optional

import torch

from .. import dispatch, fp8
from ..backends.aiter import fused_quant as aiter_fq
from ..backends.aiter import quant as aiter_quant
from ..backends.torch import fused_quant as torch_fq
from ..backends.torch.quant import per_token_group_scales_layout
from ..checks.fused_quant import (check_residual_writable, check_rms_norm_quant_args,
                                  check_silu_and_mul_group_quant_args)
from ..fake_impls import fused_quant as fake
from ..registry import register_op
from .stats import count

# --- backends ---------------------------------------------------------------
_triton_mod = None


def _triton():
    global _triton_mod
    if _triton_mod is None:
        from ..backends.triton import fused_quant as triton_fq  # imports triton: only on first use

        _triton_mod = triton_fq
    return _triton_mod


def _per_token_outputs(x: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    q = torch.empty(x.shape, dtype=dtype, device=x.device)
    return q, torch.empty(tuple(x.shape[:-1]) + (1,), dtype=torch.float32, device=x.device)


def _triton_norm(x, weight, eps, dtype):
    q, s = _per_token_outputs(x, dtype)
    _triton().rms_norm_dynamic_quant(q, s, x, None, weight, eps)
    return q, s


def _triton_add_norm(x, residual, weight, eps, dtype):
    q, s = _per_token_outputs(x, dtype)
    _triton().rms_norm_dynamic_quant(q, s, x, residual, weight, eps)
    return q, s


def _triton_silu(x, group_size, column_major, dtype):
    lead, d = tuple(x.shape[:-1]), x.shape[-1] // 2
    q = torch.empty(lead + (d,), dtype=dtype, device=x.device)
    s = per_token_group_scales_layout(lead, d // group_size, column_major, x.device)
    _triton().silu_and_mul_group_quant(q, s, x, group_size)
    return q, s


def _triton_supports_norm(x, weight, eps, dtype):
    return _triton().supports_args_norm(x, weight, eps, dtype)


def _triton_supports_add_norm(x, residual, weight, eps, dtype):
    return _triton().supports_args_norm(x, weight, eps, dtype, residual)


def _triton_supports_silu(x, group_size, column_major, dtype):
    return _triton().supports_args_silu(x, group_size, column_major, dtype)


def _aiter_supports_add_norm(x, residual, weight, eps, dtype):
    return aiter_fq.supports_args_norm(x, weight, eps, dtype, residual)


def _norm_call_shape(x, *rest) -> dispatch.CallShape:
    hidden = x.shape[-1]
    return dispatch.CallShape(x.device, x.dtype, x.numel() // hidden if hidden else 0, hidden)


def _silu_call_shape(x, *rest) -> dispatch.CallShape:
    width = x.shape[-1]
    return dispatch.CallShape(x.device, x.dtype, x.numel() // width if width else 0, width // 2)


_aiter_gate = dispatch.aiter_supported_for(None)  # vLLM gates its fused AITER passes on the master flag alone


def _aiter_supported(device: torch.device):
    return _aiter_gate(device) or aiter_quant.arch_unsupported_reason(device)


def _aiter_supported_silu(device: torch.device):
    return _aiter_gate(device) or aiter_fq.SILU_GROUP_QUANT_UNSUPPORTED


RMS_NORM_QUANT = dispatch.OpDispatch(
    "rms_norm_dynamic_quant",
    [
        dispatch.Backend("aiter", aiter_fq.rms_norm_dynamic_quant, _aiter_supported, aiter_fq.supports_args_norm),
        dispatch.Backend("triton", _triton_norm, dispatch.triton_supported, _triton_supports_norm),
        dispatch.Backend("torch", torch_fq.rms_norm_dynamic_quant, dispatch.torch_supported, torch_fq.supports_args),
    ],
    _norm_call_shape,
)
FUSED_ADD_RMS_NORM_QUANT = dispatch.OpDispatch(
    "fused_add_rms_norm_dynamic_quant",
    [
        dispatch.Backend("aiter", aiter_fq.fused_add_rms_norm_dynamic_quant, _aiter_supported,
                         _aiter_supports_add_norm),
        dispatch.Backend("triton", _triton_add_norm, dispatch.triton_supported, _triton_supports_add_norm),
        dispatch.Backend("torch", torch_fq.fused_add_rms_norm_dynamic_quant, dispatch.torch_supported,
                         torch_fq.supports_args),
    ],
    _norm_call_shape,
)
SILU_AND_MUL_GROUP_QUANT = dispatch.OpDispatch(
    "silu_and_mul_group_quant",
    [
        dispatch.Backend("aiter", aiter_fq.silu_and_mul_group_quant, _aiter_supported_silu, aiter_fq.supports_args_silu),
        dispatch.Backend("triton", _triton_silu, dispatch.triton_supported, _triton_supports_silu),
        dispatch.Backend("torch", torch_fq.silu_and_mul_group_quant, dispatch.torch_supported, torch_fq.supports_args),
    ],
    _silu_call_shape,
)


# --- op implementations -----------------------------------------------------
def _choice_key(disp: dispatch.OpDispatch, backend: str, x: torch.Tensor, *extra) -> Optional[tuple]:
    """Cache key for the backend choice, for contiguous 16-byte-aligned tensors (others take the full path).

    ``extra`` holds the other arguments the predicates look at (dtypes, flags, and the tensors,
    checked here for the same dense layout and reduced to their dtypes).
    """
    if not x.is_contiguous() or x.data_ptr() % 16 or not x.numel():
        return None
    parts = []
    for e in extra:
        if isinstance(e, torch.Tensor):
            if not e.is_contiguous() or e.data_ptr() % 16:
                return None
            parts.append(e.dtype)
        else:
            parts.append(e)
    width = x.shape[-1]
    return (backend, x.dtype, x.device, width, tuple(parts), disp.row_bracket(x.numel() // width),
            x.numel() >= 2**31)  # aiter's 32-bit sizes: a bracket can straddle that bound


def rms_norm_dynamic_quant_impl(x: torch.Tensor, weight: Optional[torch.Tensor], epsilon: float,
                                dtype: Optional[torch.dtype] = None,
                                backend: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    check_rms_norm_quant_args(x, weight, epsilon, dtype)
    dtype = fp8.resolve(dtype, x.device)
    args = (x, weight, epsilon, dtype)
    impl = RMS_NORM_QUANT.select(backend, args, _choice_key(RMS_NORM_QUANT, backend, x, dtype, weight is None,
                                                            *(() if weight is None else (weight,))))
    count("rms_norm_dynamic_quant", impl.name)
    return impl.run(*args)


def fused_add_rms_norm_dynamic_quant_impl(x: torch.Tensor, residual: torch.Tensor, weight: Optional[torch.Tensor],
                                          epsilon: float, dtype: Optional[torch.dtype] = None,
                                          backend: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    check_rms_norm_quant_args(x, weight, epsilon, dtype, residual)
    check_residual_writable(x, residual)
    dtype = fp8.resolve(dtype, x.device)
    args = (x, residual, weight, epsilon, dtype)
    impl = FUSED_ADD_RMS_NORM_QUANT.select(
        backend, args, _choice_key(FUSED_ADD_RMS_NORM_QUANT, backend, x, dtype, residual, weight is None,
                                   *(() if weight is None else (weight,))))
    count("fused_add_rms_norm_dynamic_quant", impl.name)
    return impl.run(*args)


def silu_and_mul_group_quant_impl(x: torch.Tensor, group_size: int = 128, column_major_scales: bool = False,
                                  dtype: Optional[torch.dtype] = None,
                                  backend: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    check_silu_and_mul_group_quant_args(x, group_size, column_major_scales, dtype)
    dtype = fp8.resolve(dtype, x.device)
    args = (x, group_size, column_major_scales, dtype)
    impl = SILU_AND_MUL_GROUP_QUANT.select(
        backend, args, _choice_key(SILU_AND_MUL_GROUP_QUANT, backend, x, dtype, group_size, column_major_scales))
    count("silu_and_mul_group_quant", impl.name)
    return impl.run(*args)


def example_args(op: str, rows: int, hidden: int, dtype: torch.dtype, device: torch.device) -> tuple:
    """Dispatcher arguments of a typical call, for doctor (``hidden``: the norm's H, the activation's d)."""
    fmt = fp8.fp8_dtype(device)
    if op == "silu_and_mul_group_quant":
        x = torch.empty(rows, 2 * hidden, dtype=dtype, device=device)
        return (x, 128 if hidden % 128 == 0 else hidden, False, fmt)
    x = torch.empty(rows, hidden, dtype=dtype, device=device)
    weight = torch.empty(hidden, dtype=dtype, device=device)
    if op == "rms_norm_dynamic_quant":
        return (x, weight, 1e-6, fmt)
    return (x, torch.empty_like(x), weight, 1e-6, fmt)


DISPATCHERS = {
    "rms_norm_dynamic_quant": RMS_NORM_QUANT,
    "fused_add_rms_norm_dynamic_quant": FUSED_ADD_RMS_NORM_QUANT,
    "silu_and_mul_group_quant": SILU_AND_MUL_GROUP_QUANT,
}


def register() -> dict[str, torch._ops.OpOverload]:
    return {
        "rms_norm_dynamic_quant": register_op("rms_norm_dynamic_quant", rms_norm_dynamic_quant_impl,
                                              fake.rms_norm_dynamic_quant),
        "fused_add_rms_norm_dynamic_quant": register_op(
            "fused_add_rms_norm_dynamic_quant", fused_add_rms_norm_dynamic_quant_impl,
            fake.fused_add_rms_norm_dynamic_quant, mutates_args=("residual",)),
        "silu_and_mul_group_quant": register_op("silu_and_mul_group_quant", silu_and_mul_group_quant_impl,
                                                fake.silu_and_mul_group_quant),
    }
