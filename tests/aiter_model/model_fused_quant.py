"""A torch model of amd-aiter 0.1.7's fused RMSNorm + dynamic per-token quant, installed as ``aiter``
in tests only.

``rmsnorm2d_fwd_with_dynamicquant(out, input, yscale, weight, epsilon, use_model_sensitive_rmsnorm=0)``
and ``rmsnorm2d_fwd_with_add_dynamicquant(out, input, residual_in, residual_out, yscale, weight,
epsilon, use_model_sensitive_rmsnorm=0)`` mirror the wheel's signatures (``aiter/ops/rmsnorm.py``; a
test compares them) and the CK code behind them (``aiter_meta/csrc/py_itfs_ck/rmsnorm_ck_kernels.cu``,
``composable_kernel/example/ck_tile/10_rmsnorm2d/generate.py``, ``.../rmsnorm2d_fwd_pipeline_one_pass.hpp``,
``.../epilogue/dynamic_quant_epilogue.hpp``), raising :class:`~aiter_model.model.AiterContractError`
where the real code fails a ``TORCH_CHECK`` or would silently compute the wrong thing:

* ``input`` 2-D float16/bfloat16 rows with unit last-dim stride (the norm model's row rules),
  ``residual_in``/``residual_out`` of its shape and dtype, ``weight`` as the norm model's;
* ``out`` 2-D of ``input``'s shape with unit last-dim stride, FP8: the host maps both torch FP8
  dtypes to ``"fp8"`` and the kernel writes the arch's own format, so the model takes the build's
  format only (:data:`aiter_model.model_quant.TORCH_FP8`, either when unset), and int8 is real but
  not modelled;
* ``yscale`` float32 with room, from its data pointer on, for one float per row (written through
  that pointer, strides ignored);
* hidden <= 8192: no fused-quant instance is generated above that, and the dispatch's last
  bucket has no bound, so a wider row would run an instance that covers part of it; sizes and
  strides are ``int``: fewer than 2**31 elements;
* outputs share no memory with the inputs or each other; one device.

Numerics, as the one-pass pipeline and the dynamic-quant epilogue compute them in float32:
``acc = input (+ residual_in)`` (``residual_out <- acc`` rounded), ``y = acc * rsqrt(sum(acc^2) / n
+ eps) * weight`` (not rounded), ``yscale = absmax(y) / fp8_max`` with ``absmax`` starting at 0,
``out = cvt_rne(clamp(y / yscale))``: an all-zero row gets scale 0 and NaN codes. Every call is
recorded in ``model.CALLS`` before it is checked.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import model_quant
from .model import AiterContractError, _check_no_overlap, _check_rows, _check_scalars, _check_weight, _record, _require  # noqa: F401

__all__ = ["rmsnorm2d_fwd_with_dynamicquant", "rmsnorm2d_fwd_with_add_dynamicquant", "MODELLED_FUSED_QUANT"]
MODELLED_FUSED_QUANT = ("rmsnorm2d_fwd_with_dynamicquant", "rmsnorm2d_fwd_with_add_dynamicquant")

FP8_MAX = model_quant.FP8_MAX
MAX_FUSED_QUANT_HIDDEN = 8192  # generate.py: `if (fused_quant == 1 or fused_quant == 2) and hs_key == "big": continue`
MAX_NUMEL = 2**31 - 1


def _check_out(fn: str, out, input: Tensor) -> torch.dtype:
    _require(isinstance(out, Tensor), fn, f"out must be a Tensor, got {type(out).__name__}")
    if out.dtype == torch.int8:
        raise NotImplementedError("the model covers FP8 out only (int8 out is real but not modelled)")
    build = model_quant.TORCH_FP8
    allowed = (build,) if build is not None else tuple(FP8_MAX)
    _require(out.dtype in allowed, fn,
             f"out has dtype {out.dtype}; the kernel writes {' or '.join(map(str, allowed))} (torchDTypeToStr maps "
             "both FP8 dtypes to 'fp8' and CK writes the arch's fp8_t)")
    _require(out.dim() == 2 and tuple(out.shape) == tuple(input.shape), fn,
             f"out has shape {tuple(out.shape)}, input {tuple(input.shape)}")
    _require(out.stride(1) == 1 or out.shape[1] == 1, fn, f"out has last-dim stride {out.stride(1)}")
    _require(out.shape[0] <= 1 or out.stride(0) >= out.shape[1], fn, f"out rows overlap (row stride {out.stride(0)})")
    _require(out.device == input.device, fn, f"out is on {out.device}, input on {input.device}")
    return out.dtype


def _check_common(fn: str, out, input, yscale, weight, epsilon, use_model_sensitive_rmsnorm) -> torch.dtype:
    _check_rows(fn, "input", input)
    dtype = _check_out(fn, out, input)
    rows, hidden = input.shape
    _require(hidden <= MAX_FUSED_QUANT_HIDDEN, fn,
             f"hidden {hidden} > {MAX_FUSED_QUANT_HIDDEN}: no fused dynamic-quant instance covers the row "
             "(the 8192 one-pass instance would run on part of it)")
    _require(input.numel() <= MAX_NUMEL, fn, f"input has {input.numel()} elements; sizes and strides are 32-bit ints")
    _require(rows > 0, fn, "input has no rows (an empty launch)")
    _require(isinstance(yscale, Tensor) and yscale.dtype == torch.float32, fn,
             f"yscale must be a float32 tensor (yscale_dtype_str 'fp32' is the only generated y-scale type), got "
             f"{getattr(yscale, 'dtype', type(yscale).__name__)}")
    _require(yscale.device == input.device, fn, f"yscale is on {yscale.device}, input on {input.device}")
    room = yscale.untyped_storage().nbytes() // 4 - yscale.storage_offset()
    _require(room >= rows, fn, f"yscale has room for {room} floats from its data pointer, the kernel writes {rows}")
    _check_weight(fn, weight, input)
    _check_scalars(fn, epsilon, use_model_sensitive_rmsnorm)
    return dtype


def _norm_quant(acc: Tensor, weight: Tensor, epsilon: float, out: Tensor, yscale: Tensor, dtype: torch.dtype) -> None:
    """The one-pass pipeline's norm (float32, unrounded) and the dynamic-quant epilogue."""
    mean_square = (acc * acc).sum(dim=-1, keepdim=True) / acc.shape[-1]
    y = acc * torch.rsqrt(mean_square + float(epsilon)) * weight.float()
    absmax = y.abs().amax(dim=-1, keepdim=True)  # the epilogue's reduce starts at 0
    scale = absmax / FP8_MAX[dtype]
    yscale.as_strided((acc.shape[0],), (1,), yscale.storage_offset()).copy_(scale.reshape(-1))
    m = FP8_MAX[dtype]
    out.copy_((y / scale).clamp(-m, m).to(dtype))  # 0 / 0 = NaN stays NaN (med3 propagates it)


def rmsnorm2d_fwd_with_dynamicquant(
    out: Tensor,
    input: Tensor,
    yscale: Tensor,
    weight: Tensor,
    epsilon: float,
    use_model_sensitive_rmsnorm: int = 0,
) -> None:
    fn = "rmsnorm2d_fwd_with_dynamicquant"
    _record(fn, out=out, input=input, yscale=yscale, weight=weight, epsilon=epsilon,
            use_model_sensitive_rmsnorm=use_model_sensitive_rmsnorm)
    dtype = _check_common(fn, out, input, yscale, weight, epsilon, use_model_sensitive_rmsnorm)
    _check_no_overlap(fn, {"out": out, "yscale": yscale}, {"input": input, "weight": weight})
    _norm_quant(input.float(), weight, epsilon, out, yscale, dtype)


def rmsnorm2d_fwd_with_add_dynamicquant(
    out: Tensor,
    input: Tensor,
    residual_in: Tensor,
    residual_out: Tensor,
    yscale: Tensor,
    weight: Tensor,
    epsilon: float,
    use_model_sensitive_rmsnorm: int = 0,
) -> None:
    fn = "rmsnorm2d_fwd_with_add_dynamicquant"
    _record(fn, out=out, input=input, residual_in=residual_in, residual_out=residual_out, yscale=yscale,
            weight=weight, epsilon=epsilon, use_model_sensitive_rmsnorm=use_model_sensitive_rmsnorm)
    dtype = _check_common(fn, out, input, yscale, weight, epsilon, use_model_sensitive_rmsnorm)
    for name, t, written in (("residual_in", residual_in, False), ("residual_out", residual_out, True)):
        _check_rows(fn, name, t, like=input, written=written)
    _check_no_overlap(fn, {"out": out, "residual_out": residual_out, "yscale": yscale},
                      {"input": input, "residual_in": residual_in, "weight": weight})
    acc = input.float() + residual_in.float()
    residual_out.copy_(acc.to(input.dtype))
    _norm_quant(acc, weight, epsilon, out, yscale, dtype)
