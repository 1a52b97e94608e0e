"""The FP8 quant family: per-tensor, per-token and per-token-group (1 x group_size) quantization.

Custom ops (``torch.ops.rocm_accel.*``), each returning new tensors ``(q, scale)``:

* ``per_tensor_quant(x, scale=None, dtype=None, backend="auto")``: dynamic (scale from
  max |x|) when ``scale`` is None, static otherwise; the scale comes back as a float32 (1,)
  tensor (a copy for the static form: outputs never alias inputs);
* ``per_token_quant(x, dtype=None, scale_ub=None, backend="auto")``: one scale per row,
  shape (..., 1); ``scale_ub`` (one float32 element) caps each row's max |x|;
* ``per_token_group_quant(x, group_size=128, column_major_scales=False, dtype=None,
  backend="auto")``: one scale per ``group_size`` consecutive elements of a row, shape
  (..., H // group_size); column-major scales keep each group's scales contiguous over the
  tokens (storage (groups, tokens)), as DeepGEMM-style block-scaled GEMMs read them.

``x`` is float32/float16/bfloat16 of any leading dims (rows may be strided); ``dtype`` is an
FP8 format or None for the device's (:func:`vllm_rocm_accel.fp8.fp8_dtype`). The scale
rule, the clamp values and the all-zero case are :mod:`vllm_rocm_accel.fp8`'s, shared by
every backend. Arguments are validated before any backend runs: types, shapes, dtypes and
devices, not the values of ``scale`` or ``scale_ub`` (reading them would synchronize the
device on every call); those must be positive and finite, or the backends' codes differ.
"""

from __future__ import annotations

from typing import Optional

import torch

from .. import dispatch, fp8
from ..backends.aiter import quant as aiter_quant
from ..backends.torch import quant as torch_quant
from ..checks.quant import check_per_tensor_args, check_per_token_args, check_per_token_group_args
from ..fake_impls import quant as fake
from ..registry import register_op
from .stats import count

# --- backends ---------------------------------------------------------------
_triton_mod = None


def _triton():
    global _triton_mod
    if _triton_mod is None:
        from ..backends.triton import quant as triton_quant  # imports triton: only on first use

        _triton_mod = triton_quant
    return _triton_mod


def _q_like(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return torch.empty(x.shape, dtype=dtype, device=x.device)


def _triton_per_tensor(x, scale, dtype):
    q, s = _q_like(x, dtype), torch.empty(1, dtype=torch.float32, device=x.device)
    _triton().per_tensor_quant(q, s, x, scale)
    return q, s


def _triton_per_token(x, dtype, scale_ub):
    q = _q_like(x, dtype)
    s = torch.empty(tuple(x.shape[:-1]) + (1,), dtype=torch.float32, device=x.device)
    _triton().per_token_quant(q, s, x, scale_ub)
    return q, s


def _triton_per_token_group(x, group_size, column_major, dtype):
    q = _q_like(x, dtype)
    s = torch_quant.per_token_group_scales_layout(tuple(x.shape[:-1]), x.shape[-1] // group_size, column_major,
                                                  x.device)
    _triton().per_token_group_quant(q, s, x, group_size)
    return q, s


def _triton_supports_per_tensor(x, scale, dtype):
    return _triton().supports_args_per_tensor(x, scale, dtype)


def _triton_supports_per_token(x, dtype, scale_ub):
    return _triton().supports_args_per_token(x, dtype, scale_ub)


def _triton_supports_per_token_group(x, group_size, column_major, dtype):
    return _triton().supports_args_per_token_group(x, group_size, column_major, dtype)


def _call_shape(x, *rest) -> dispatch.CallShape:
    hidden = x.shape[-1]
    return dispatch.CallShape(x.device, x.dtype, x.numel() // hidden if hidden else 0, hidden)


_aiter_gate = dispatch.aiter_supported_for("linear")  # vLLM gates its FP8 linear path with ..._LINEAR


def _aiter_supported(device: torch.device):
    return _aiter_gate(device) or aiter_quant.arch_unsupported_reason(device)


def _dispatch(name, aiter_fn, aiter_ok, triton_fn, triton_ok, torch_fn):
    return dispatch.OpDispatch(
        name,
        [
            dispatch.Backend("aiter", aiter_fn, _aiter_supported, aiter_ok),
            dispatch.Backend("triton", triton_fn, dispatch.triton_supported, triton_ok),
            dispatch.Backend("torch", torch_fn, dispatch.torch_supported, torch_quant.supports_args),
        ],
        _call_shape,
    )


PER_TENSOR = _dispatch("per_tensor_quant", aiter_quant.per_tensor_quant, aiter_quant.supports_args_per_tensor,
                       _triton_per_tensor, _triton_supports_per_tensor, torch_quant.per_tensor_quant)
PER_TOKEN = _dispatch("per_token_quant", aiter_quant.per_token_quant, aiter_quant.supports_args_per_token,
                      _triton_per_token, _triton_supports_per_token, torch_quant.per_token_quant)
PER_TOKEN_GROUP = _dispatch("per_token_group_quant", aiter_quant.per_token_group_quant,
                            aiter_quant.supports_args_per_token_group, _triton_per_token_group,
                            _triton_supports_per_token_group, torch_quant.per_token_group_quant)


# --- op implementations -----------------------------------------------------
def _choice_key(disp: dispatch.OpDispatch, backend: str, x: torch.Tensor, *extra) -> Optional[tuple]:
    """Cache key for the backend choice, for contiguous 16-byte-aligned x (others take the full path)."""
    if not x.is_contiguous() or x.data_ptr() % 16 or not x.numel():
        return None
    hidden = x.shape[-1]
    return (backend, x.dtype, x.device, hidden, extra, disp.row_bracket(x.numel() // hidden),
            x.numel() > aiter_quant.MAX_NUMEL)  # aiter's 32-bit sizes: a bracket can straddle that bound


def per_tensor_quant_impl(x: torch.Tensor, scale: Optional[torch.Tensor] = None,
                          dtype: Optional[torch.dtype] = None, backend: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    check_per_tensor_args(x, scale, dtype)
    dtype = fp8.resolve(dtype, x.device)
    args = (x, scale, dtype)
    impl = PER_TENSOR.select(backend, args, _choice_key(PER_TENSOR, backend, x, dtype, scale is None))
    count("per_tensor_quant", impl.name)
    return impl.run(*args)


def per_token_quant_impl(x: torch.Tensor, dtype: Optional[torch.dtype] = None,
                         scale_ub: Optional[torch.Tensor] = None, backend: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    check_per_token_args(x, dtype, scale_ub)
    dtype = fp8.resolve(dtype, x.device)
    args = (x, dtype, scale_ub)
    impl = PER_TOKEN.select(backend, args, _choice_key(PER_TOKEN, backend, x, dtype, scale_ub is None))
    count("per_token_quant", impl.name)
    return impl.run(*args)


def per_token_group_quant_impl(x: torch.Tensor, group_size: int = 128, column_major_scales: bool = False,
                               dtype: Optional[torch.dtype] = None, backend: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    check_per_token_group_args(x, group_size, column_major_scales, dtype)
    dtype = fp8.resolve(dtype, x.device)
    args = (x, group_size, column_major_scales, dtype)
    impl = PER_TOKEN_GROUP.select(
        backend, args, _choice_key(PER_TOKEN_GROUP, backend, x, dtype, group_size, column_major_scales))
    count("per_token_group_quant", impl.name)
    return impl.run(*args)


def example_args(op: str, rows: int, hidden: int, dtype: torch.dtype, device: torch.device) -> tuple:
    """Dispatcher arguments of a typical call, for doctor."""
    x = torch.empty(rows, hidden, dtype=dtype, device=device)
    fmt = fp8.fp8_dtype(device)
    if op == "per_tensor_quant":
        return (x, None, fmt)
    if op == "per_token_quant":
        return (x, fmt, None)
    return (x, 128, False, fmt)


DISPATCHERS = {"per_tensor_quant": PER_TENSOR, "per_token_quant": PER_TOKEN, "per_token_group_quant": PER_TOKEN_GROUP}


def register() -> dict[str, torch._ops.OpOverload]:
    return {
        "per_tensor_quant": register_op("per_tensor_quant", per_tensor_quant_impl, fake.per_tensor_quant),
        "per_token_quant": register_op("per_token_quant", per_token_quant_impl, fake.per_token_quant),
        "per_token_group_quant": register_op("per_token_group_quant", per_token_group_quant_impl,
                                             fake.per_token_group_quant),
    }
