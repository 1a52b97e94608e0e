"""A torch model of amd-aiter 0.1.7's FP8 quant entry points, installed as ``aiter`` in tests only.

``static_per_tensor_quant(out, input, scale)`` and ``dynamic_per_token_scaled_quant(out, input,
scales, scale_ub=None, shuffle_scale=False, num_rows=None, num_rows_factor=1)`` mirror the
wheel's signatures (``aiter/ops/quant.py``; a test compares them) and the HIP kernels behind
them (``aiter_meta/csrc/kernels/quant_kernels.cu`` in the wheel), raising
:class:`~aiter_model.model.AiterContractError` where the real code fails a ``TORCH_CHECK`` or
would silently read or write the wrong memory:

* ``input`` float16/bfloat16 (``AITER_DISPATCH_FLOATING16_TYPES``), at least one element,
  fewer than 2**31, 16-byte aligned (the adapter's conservative reading of the vector loads);
  rows are ``numel // size(-1)`` dense rows, so ``input`` must be contiguous (checked by
  ``dynamic_per_token_scaled_quant``, silently misread by ``static_per_tensor_quant``);
* ``out`` contiguous, as many elements as ``input``, of the host's ``torch_fp8``: see
  :data:`TORCH_FP8` (int8 out is real but not modelled: NotImplementedError); with an FP8
  ``out`` the per-row kernels need ``cols % 4 == 0`` (row stores rounded up to 4 bytes);
* ``scale`` (static) float32 with at least one element; ``scales`` (dynamic) float32 with room
  in its storage, from its data pointer on, for one float per row (group kernel: per group),
  written through that pointer whatever the tensor's strides;
* the group kernel (``cols`` 32, 64 or 128): ``out.size(-1)`` a multiple of ``cols``, the
  groups of token x written at ``scales[x * scaleN + y]``, or ``scales[y * tokens + x]`` with
  ``shuffle_scale``; the per-row kernel ignores ``shuffle_scale``;
* outputs share no memory with the inputs or each other (``__restrict__``); one device.

``scale_ub`` is recorded and, like the kernels, ignored; ``num_rows`` is not modelled.

Numerics, as the kernels compute them in float32: ``scale = absMax * float(1 / fp8_max)``
with ``absMax`` starting at ``1e-10f`` in the group kernel and at 0 in the per-row kernel;
``q = cvt_rne(clamp(x * (1.0f / scale), -fp8_max, fp8_max))`` with fp8_max 240 (e4m3fnuz) or
448 (e4m3fn). For an all-zero row of the per-row kernel that is ``0 * inf = NaN``: on the
GPU ``v_med3_f32`` then yields NaN or a clamp bound depending on its NaN rule; the model
yields NaN (either way not the 0 that the rule in ``vllm_rocm_accel/fp8.py`` asks for).
Every call is recorded in ``model.CALLS`` before it is checked.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .model import DTYPES, AiterContractError, _check_no_overlap, _record, _require  # noqa: F401

__all__ = ["static_per_tensor_quant", "dynamic_per_token_scaled_quant", "MODELLED_QUANT"]
MODELLED_QUANT = ("static_per_tensor_quant", "dynamic_per_token_scaled_quant")

FNUZ, FN = torch.float8_e4m3fnuz, torch.float8_e4m3fn
FP8_MAX = {FNUZ: 240.0, FN: 448.0}  # ck_tile numeric<fp8_t>::max() and the v_med3_f32 bounds (vec_convert.h)
GROUP_COLS = (32, 64, 128)  # quant_kernels.cu: cols that select the group kernel
GROUP_ABSMAX_INIT = 1e-10  # quant_kernels.cu: `float absMax = 1e-10f;` in the group kernel
MAX_NUMEL = 2**31 - 1
ALIGN_BYTES = 16

# The FP8 format the AITER build writes (py_itfs_common.h: float8_e4m3fnuz when GPU 0 is gfx94x,
# float8_e4m3fn otherwise). None: the model runs without a GPU and takes either format; tests
# simulating one arch set it (monkeypatch).
TORCH_FP8: Optional[torch.dtype] = None


def _check_input(fn: str, input) -> None:
    _require(isinstance(input, Tensor), fn, f"input must be a Tensor, got {type(input).__name__}")
    _require(input.dtype in DTYPES, fn,
             f"input has dtype {input.dtype}; the kernels dispatch float16 and bfloat16 only")
    _require(input.dim() >= 1 and input.numel() > 0, fn,
             f"input of shape {tuple(input.shape)}: cols == 0 divides by zero, rows == 0 launches no blocks")
    _require(input.numel() <= MAX_NUMEL, fn, f"input has {input.numel()} elements; the kernels index with 32-bit ints")
    _require(input.data_ptr() % ALIGN_BYTES == 0, fn, f"input is not {ALIGN_BYTES}-byte aligned for the vector loads")


def _check_out(fn: str, out, input: Tensor) -> torch.dtype:
    _require(isinstance(out, Tensor), fn, f"out must be a Tensor, got {type(out).__name__}")
    if out.dtype == torch.int8:
        raise NotImplementedError("the model covers FP8 out only (int8 out is real but not modelled)")
    allowed = (TORCH_FP8,) if TORCH_FP8 is not None else (FN, FNUZ)
    _require(out.dtype in allowed, fn,
             f"not support output type: {out.dtype} (this build writes {' or '.join(map(str, allowed))})")
    _require(out.device == input.device, fn, f"out is on {out.device}, input on {input.device}")
    _require(out.numel() == input.numel(), fn,
             f"out has {out.numel()} elements, input {input.numel()}; the kernels write out densely, row for row")
    return out.dtype


def _check_scales(fn: str, name: str, t, count: int, input: Tensor) -> None:
    _require(isinstance(t, Tensor), fn, f"{name} must be a Tensor, got {type(t).__name__}")
    _require(t.dtype == torch.float32, fn, f"{name} has dtype {t.dtype}; data_ptr<float>() needs float32")
    _require(t.device == input.device, fn, f"{name} is on {t.device}, input on {input.device}")
    room = t.untyped_storage().nbytes() // 4 - t.storage_offset()
    _require(room >= count, fn, f"{name} has room for {room} floats from its data pointer, the kernel writes {count}")


def _flat(t: Tensor, count: int) -> Tensor:
    """``count`` floats from ``t``'s data pointer on, as the kernel addresses them (strides ignored)."""
    return t.as_strided((count,), (1,), t.storage_offset())


def _quantize(xf: Tensor, scale: Tensor, dtype: torch.dtype) -> Tensor:
    """``cvt_rne(med3(x * (1.0f / scale), -max, max))`` in float32; NaN stays NaN."""
    m = FP8_MAX[dtype]
    inverted = torch.reciprocal(scale)
    return (xf * inverted).clamp(-m, m).to(dtype)


def static_per_tensor_quant(out: Tensor, input: Tensor, scale: Tensor) -> None:
    fn = "static_per_tensor_quant"
    _record(fn, out=out, input=input, scale=scale)
    _check_input(fn, input)
    dtype = _check_out(fn, out, input)
    _require(input.is_contiguous(), fn,
             f"input (shape {tuple(input.shape)}, stride {input.stride()}) is not contiguous; the kernel reads "
             "row r at input + r * cols (no check: it would read the wrong rows)")
    _require(out.is_contiguous(), fn, f"out (stride {out.stride()}) is not contiguous; the kernel writes dense rows")
    _require(input.shape[-1] % 4 == 0, fn,
             f"cols = {input.shape[-1]} is not a multiple of 4: FP8 row stores rounded up to 4 bytes "
             "write into the next row")
    _require(isinstance(scale, Tensor) and scale.dtype == torch.float32 and scale.numel() >= 1, fn,
             "scale must be a float32 tensor of at least one element (the kernel reads *scale)")
    _require(scale.device == input.device, fn, f"scale is on {scale.device}, input on {input.device}")
    _check_no_overlap(fn, {"out": out}, {"input": input, "scale": scale})
    s = _flat(scale, 1).reshape(())
    out.copy_(_quantize(input.float(), s, dtype).reshape(out.shape))


def dynamic_per_token_scaled_quant(
    out: Tensor,
    input: Tensor,
    scales: Tensor,
    scale_ub: Optional[Tensor] = None,
    shuffle_scale: bool = False,
    num_rows: Optional[Tensor] = None,
    num_rows_factor: int = 1,
) -> None:
    fn = "dynamic_per_token_scaled_quant"
    _record(fn, out=out, input=input, scales=scales, scale_ub=scale_ub, shuffle_scale=shuffle_scale,
            num_rows=num_rows, num_rows_factor=num_rows_factor)
    _require(isinstance(input, Tensor) and input.is_contiguous(), fn, "TORCH_CHECK(input.is_contiguous()) failed")
    _require(isinstance(out, Tensor) and out.is_contiguous(), fn, "TORCH_CHECK(out.is_contiguous()) failed")
    _check_input(fn, input)
    dtype = _check_out(fn, out, input)
    if num_rows is not None or num_rows_factor != 1:
        raise NotImplementedError("the model covers num_rows=None, num_rows_factor=1 only")
    _require(isinstance(shuffle_scale, bool), fn, f"shuffle_scale must be a bool, got {shuffle_scale!r}")
    cols = input.shape[-1]
    rows = input.numel() // cols
    xf = input.float().reshape(rows, cols)

    if cols in GROUP_COLS:  # the group kernel: input holds groups of out's rows
        ori_cols = out.shape[-1] if out.dim() else 1
        _require(ori_cols % cols == 0, fn, f"out's last dim {ori_cols} is not a multiple of the group size {cols}")
        scale_n = ori_cols // cols
        tokens = rows // scale_n
        _check_scales(fn, "scales", scales, rows, input)
        _check_no_overlap(fn, {"out": out, "scales": scales}, {"input": input})
        absmax = xf.abs().amax(dim=-1, keepdim=True).clamp(min=GROUP_ABSMAX_INIT)
        scale = absmax * torch.tensor(1.0 / FP8_MAX[dtype], dtype=torch.float32)
        flat = _flat(scales, rows)
        if shuffle_scale:  # group g = x * scale_n + y goes to y * tokens + x
            flat.copy_(scale.reshape(tokens, scale_n).t().reshape(-1))
        else:
            flat.copy_(scale.reshape(-1))
    else:  # the per-row kernel: one scale per row, no floor, shuffle_scale unused
        _require(cols % 4 == 0, fn,
                 f"cols = {cols} is not a multiple of 4: FP8 row stores rounded up to 4 bytes write into the next row")
        _check_scales(fn, "scales", scales, rows, input)
        _check_no_overlap(fn, {"out": out, "scales": scales}, {"input": input})
        absmax = xf.abs().amax(dim=-1, keepdim=True)
        scale = absmax * torch.tensor(1.0 / FP8_MAX[dtype], dtype=torch.float32)
        _flat(scales, rows).copy_(scale.reshape(-1))
    out.copy_(_quantize(xf, scale, dtype).reshape(out.shape))
