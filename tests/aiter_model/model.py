"""A torch model of amd-aiter 0.1.7's RMSNorm entry points, installed as ``aiter`` in tests only.

The functions mirror the wheel's signatures (``aiter/ops/rmsnorm.py``; a test
compares them with :func:`aiter_model.wheel.resolve_public_function`) and
enforce the contract of the CK kernels behind them
(``csrc/py_itfs_ck/rmsnorm_ck_kernels.cu``), raising :class:`AiterContractError`
(a ``RuntimeError``, like the kernels' ``TORCH_CHECK``) where the real kernel
would fail or, worse, silently read or write the wrong memory:

* ``input`` is 2-D float16/bfloat16 rows with unit last-dim stride; the row
  stride may differ from the row length (the kernel takes ``input.stride(0)``,
  and assumes unit columns without checking them); written rows must not overlap;
* ``weight`` is 1-D, ``input.shape[1]`` long, contiguous, and of ``input``'s
  dtype (the kernel reads it as the input's precision);
* ``out``/``residual_in``/``residual_out`` have ``input``'s shape and dtype and
  unit last-dim stride; every tensor is on ``input``'s device;
* outputs share no memory with the inputs or each other. Whether the kernel
  tolerates aliasing is not documented, so the model refuses any overlap of the
  byte ranges (conservative: interleaved tensors are refused too).

Numerics follow AITER's documented CK behaviour (composable_kernel
``ck_tile/ops/rmsnorm2d`` pipelines and ``ck_tile/host/reference/reference_rmsnorm2d_fwd.hpp``):
everything in float32, ``y = x * rsqrt(mean(x^2) + eps) * weight`` rounded
**once** to the dtype. (vLLM's own kernel rounds twice, ``x * inv_rms`` to the
dtype and then ``* weight``; AITER does not, and this model follows AITER.)
The fused add (``fused_add`` = PRE_ADD_STORE) sums ``input + residual_in`` in
float32, stores it rounded as ``residual_out`` and takes the RMS of the float32
sum; CK's one-pass pipeline (hidden <= 8192) normalises that float32 sum, its
two-pass pipeline (the "big" bucket, hidden > 8192) reloads the stored, rounded
``residual_out`` for the second pass, and so does the model.
``use_model_sensitive_rmsnorm=1`` (T5-like rounding) is not modelled.

Every call is recorded in :data:`CALLS` (argument shapes, strides, dtypes and
data pointers) before it is checked, so tests can assert what an adapter passed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import Tensor

DTYPES = (torch.float16, torch.bfloat16)
CK_TWO_PASS_ABOVE_HIDDEN = 8192  # CK rmsnorm2d's "big" bucket (n > 8192) runs the two-pass pipeline
MODELLED = ("rms_norm", "rmsnorm2d_fwd_with_add")  # the aiter functions this module stands in for


class AiterContractError(RuntimeError):
    """A call the real AITER kernel would reject or execute incorrectly."""


@dataclass(frozen=True)
class TensorInfo:
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    dtype: torch.dtype
    device: torch.device
    data_ptr: int


@dataclass(frozen=True)
class Call:
    name: str
    args: dict[str, Any]  # parameter name -> TensorInfo for tensors, the value otherwise

    def tensor(self, param: str) -> TensorInfo:
        value = self.args[param]
        assert isinstance(value, TensorInfo), f"{self.name}: {param} was {value!r}, not a tensor"
        return value


CALLS: list[Call] = []


def _record(name: str, **args: Any) -> None:
    CALLS.append(Call(name, {
        k: TensorInfo(tuple(v.shape), tuple(v.stride()), v.dtype, v.device, v.data_ptr())
        if isinstance(v, torch.Tensor) else v
        for k, v in args.items()
    }))


def _require(ok: bool, fn: str, message: str) -> None:
    if not ok:
        raise AiterContractError(f"aiter.{fn}: {message}")


def _check_rows(fn: str, name: str, t: Any, like: Optional[Tensor] = None, written: bool = False) -> None:
    _require(isinstance(t, torch.Tensor), fn, f"{name} must be a Tensor, got {type(t).__name__}")
    _require(t.dim() == 2, fn, f"{name} must be 2-D [m, n] (the kernel takes stride(0) as the row stride), got shape {tuple(t.shape)}")
    _require(t.dtype in DTYPES, fn, f"{name} has dtype {t.dtype}; ck rmsnorm2d only supports float16 and bfloat16")
    rows, hidden = t.shape
    _require(t.stride(1) == 1 or hidden == 1, fn, f"{name} has last-dim stride {t.stride(1)}; the kernel reads unit-stride rows")
    if written:  # overlapping rows are harmless to read (e.g. expanded), not to write
        _require(rows <= 1 or t.stride(0) >= hidden, fn, f"{name} rows overlap (row stride {t.stride(0)} < {hidden})")
    if like is not None:
        _require(t.shape == like.shape, fn, f"{name} has shape {tuple(t.shape)}, input has {tuple(like.shape)}")
        _require(t.dtype == like.dtype, fn, f"{name} has dtype {t.dtype}, input has {like.dtype} (one precision for all)")
        _require(t.device == like.device, fn, f"{name} is on {t.device}, input on {like.device}")


def _check_weight(fn: str, weight: Any, input: Tensor) -> None:
    _require(isinstance(weight, torch.Tensor), fn, f"weight must be a Tensor, got {type(weight).__name__}")
    hidden = input.shape[1]
    _require(weight.dim() == 1 and weight.shape[0] == hidden, fn, f"weight must be ({hidden},), got {tuple(weight.shape)}")
    _require(weight.dtype == input.dtype, fn, f"weight dtype {weight.dtype} != input dtype {input.dtype} (read as the input's precision)")
    _require(weight.stride(0) == 1 or hidden == 1, fn, f"weight has stride {weight.stride(0)}; the kernel reads it contiguously")
    _require(weight.device == input.device, fn, f"weight is on {weight.device}, input on {input.device}")


def _check_scalars(fn: str, epsilon: Any, use_model_sensitive_rmsnorm: Any) -> None:
    _require(
        isinstance(epsilon, (float, int)) and not isinstance(epsilon, bool), fn,
        f"epsilon must be a Python float (bound to a C++ double), got {type(epsilon).__name__}",
    )
    _require(
        isinstance(use_model_sensitive_rmsnorm, int) and use_model_sensitive_rmsnorm in (0, 1), fn,
        f"use_model_sensitive_rmsnorm must be 0 or 1, got {use_model_sensitive_rmsnorm!r}",
    )
    if use_model_sensitive_rmsnorm != 0:
        raise NotImplementedError("the model covers use_model_sensitive_rmsnorm=0 only (T5-like rounding is not modelled)")


def _byte_range(t: Tensor) -> Optional[tuple[int, int]]:
    if t.numel() == 0:
        return None
    extent = 1 + sum((n - 1) * s for n, s in zip(t.shape, t.stride()))
    return t.data_ptr(), t.data_ptr() + extent * t.element_size()


def _check_no_overlap(fn: str, written: dict[str, Tensor], others: dict[str, Tensor]) -> None:
    names = list(written) + list(others)
    tensors = {**written, **others}
    for i, a in enumerate(written):
        for b in names[i + 1:]:
            ra, rb = _byte_range(tensors[a]), _byte_range(tensors[b])
            _require(
                ra is None or rb is None or not (ra[0] < rb[1] and rb[0] < ra[1]), fn,
                f"{a} shares memory with {b}; outputs must be distinct from inputs and from each other",
            )


def _normalize(acc: Tensor, source: Tensor, weight: Tensor, epsilon: float) -> Tensor:
    """float32 ``source * rsqrt(mean(acc^2) + eps) * weight`` (RMS taken over ``acc``)."""
    mean_square = (acc * acc).sum(dim=-1, keepdim=True) / acc.shape[-1]
    inv_rms = torch.rsqrt(mean_square + float(epsilon))
    return source * inv_rms * weight.float()


def rms_norm(
    input: Tensor,
    weight: Tensor,
    epsilon: float,
    use_model_sensitive_rmsnorm: int = 0,
) -> Tensor:
    """CK rmsnorm2d: returns ``empty_like(input)`` filled with the normalised rows."""
    fn = "rms_norm"
    _record(fn, input=input, weight=weight, epsilon=epsilon, use_model_sensitive_rmsnorm=use_model_sensitive_rmsnorm)
    _check_rows(fn, "input", input)
    _check_weight(fn, weight, input)
    _check_scalars(fn, epsilon, use_model_sensitive_rmsnorm)
    out = torch.empty_like(input)  # as the C++ wrapper: contiguous unless input is dense
    x = input.float()
    out.copy_(_normalize(x, x, weight, epsilon).to(input.dtype))
    return out


def rmsnorm2d_fwd_with_add(
    out: Tensor,
    input: Tensor,
    residual_in: Tensor,
    residual_out: Tensor,
    weight: Tensor,
    epsilon: float,
    use_model_sensitive_rmsnorm: int = 0,
) -> None:
    """CK rmsnorm2d with PRE_ADD_STORE: ``residual_out = input + residual_in``, ``out = rmsnorm(sum)``."""
    fn = "rmsnorm2d_fwd_with_add"
    _record(
        fn, out=out, input=input, residual_in=residual_in, residual_out=residual_out, weight=weight,
        epsilon=epsilon, use_model_sensitive_rmsnorm=use_model_sensitive_rmsnorm,
    )
    _check_rows(fn, "input", input)
    for name, t, written in (("out", out, True), ("residual_in", residual_in, False), ("residual_out", residual_out, True)):
        _check_rows(fn, name, t, like=input, written=written)
    _check_weight(fn, weight, input)
    _check_scalars(fn, epsilon, use_model_sensitive_rmsnorm)
    _check_no_overlap(
        fn, {"out": out, "residual_out": residual_out},
        {"input": input, "residual_in": residual_in, "weight": weight},
    )
    acc = input.float() + residual_in.float()
    residual_out.copy_(acc.to(input.dtype))
    two_pass = input.shape[1] > CK_TWO_PASS_ABOVE_HIDDEN
    source = residual_out.float() if two_pass else acc
    out.copy_(_normalize(acc, source, weight, epsilon).to(input.dtype))
