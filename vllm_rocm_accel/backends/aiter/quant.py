"""FP8 quantization through AITER's HIP kernels (``aiter.static_per_tensor_quant``,
``aiter.dynamic_per_token_scaled_quant``).

Contract of amd-aiter 0.1.7.post2.dev18. Python stubs in ``aiter/ops/quant.py`` (both
``@compile_ops("module_quant")``, star-imported into ``aiter``)::

    static_per_tensor_quant(out, input, scale) -> None                          # :363
    dynamic_per_token_scaled_quant(out, input, scales, scale_ub=None, shuffle_scale=False,
                                   num_rows=None, num_rows_factor=1) -> None    # :371

kernels in the wheel's ``aiter_meta/csrc/kernels/quant_kernels.cu`` (``cu:N`` below), the FP8
conversion in ``aiter_meta/csrc/include/ck_tile/vec_convert.h`` (``vec:N``):

* ``input`` float16/bfloat16 only (``AITER_DISPATCH_FLOATING16_TYPES``, cu:570, 597);
  ``out`` must be the host's ``torch_fp8`` (``py_itfs_common.h:32-37``: float8_e4m3fnuz when
  GPU 0 is gfx94x, float8_e4m3fn otherwise) or int8, anything else fails a ``TORCH_CHECK``
  (cu:568-593, 697-779, 785-800);
* rows are ``numel // size(-1)`` dense rows read at ``input + row * cols``, strides
  ignored (cu:274-275, 347, 178): ``dynamic_per_token_scaled_quant`` checks that input and out
  are contiguous (cu:681-682), ``static_per_tensor_quant`` does not check and would read the
  wrong rows;
* the per-row kernels size each row's buffer to the next 4-byte boundary (cu:281-284,
  354-357), so with an FP8 ``out`` and ``cols % 4 != 0`` the last store of a row writes into
  the next row (past the tensor for the last one);
* ``cols`` is an ``int`` and row offsets are ``blockIdx.x * cols`` in 32 bits (cu:178, 274);
  an empty input divides by ``cols == 0`` or launches zero blocks;
* ``dynamic_per_token_scaled_quant`` picks its kernel by ``cols`` (cu:691): for 32, 64 or 128
  the **group kernel**, where ``input`` is ``[rows * H / g, g]`` groups of ``out``'s rows
  (``ori_cols = out.size(-1)``, cu:699-716), each group's scale written at ``scales + x *
  H / g + y`` (token x, group y), or at ``scales + y * tokens + x`` with ``shuffle_scale``
  (cu:125-129), through the raw pointer whatever its strides; otherwise the **per-row
  kernel** (one scale per row at ``scales + row``, cu:429; ``shuffle_scale`` unused). This is
  how the wheel's own ``per_group_quant_hip`` (``aiter/ops/quant.py:216-247``) calls it:
  ``x.view(-1, group_size)``, a fresh ``(..., H // g)`` float32 scales tensor, group sizes
  32/64/128 only;
* ``scale_ub`` is accepted and passed to both kernels (cu:603, 712) but **never read** by
  either (cu:19-162, 400-441): no upper bound is applied.

Numerics (both FP8 formats): ``scale = absMax * float(1 / fp8_max)`` (cu:72-75, 105-107,
239-241), values multiplied by ``1.0f / scale`` (cu:132-133, 264-265, 337-338), clamped with
``v_med3_f32`` to +-240 for e4m3fnuz and +-448 for e4m3fn (vec:46-58) and converted with
``v_cvt_pk_fp8_f32`` (round to nearest even). The clamp values are :mod:`vllm_rocm_accel.fp8`'s.
Multiplying by a reciprocal instead of dividing may move a value by one FP8 ulp.

Where AITER departs from :mod:`vllm_rocm_accel.fp8`'s rule, this adapter decides:

* **dynamic per-tensor**: ``aiter.dynamic_per_tensor_quant`` starts its scale at 0.0
  (cu:641-642) and atomic-maxes each row's ``absMax * (1 / fp8_max)`` into it (cu:245-255),
  so an all-zero tensor gets
  scale 0 and codes ``0 * inf = NaN`` clamped by ``v_med3_f32`` (not 0 under either of its
  NaN rules). It is not used: the scale is taken here, in torch and without a host sync, as
  ``max(max|x|, AMAX_FLOOR) / fp8_max`` (bit-identical to the torch backend's), and the
  codes come from ``static_per_tensor_quant``: the same two passes over ``x`` that AITER's
  dynamic form makes;
* **per-token, group kernel** (hidden 32/64/128) and **per-token-group**: the group kernel
  starts ``absMax`` at ``1e-10f`` (cu:87), which is ``AMAX_FLOOR``: all-zero rows and groups
  get scale ``AMAX_FLOOR / fp8_max`` (to a float32 ulp, like every scale here) and codes 0, as
  the rule says; nothing to fix;
* **per-token, per-row kernel** (any other hidden): ``absMax`` starts at 0 (cu:198), so an
  all-zero row (padding tokens) gets scale 0 and non-zero codes (NaN, or a clamp bound).
  Fixed after the call, without a host sync: rows whose scale is 0 get scale
  ``AMAX_FLOOR / fp8_max`` and their codes are zeroed through a ``uint8`` view (one extra
  pass over ``q``, 2 bytes per element);
* **known deviation**: a row whose every ``|x|`` is below ``AMAX_FLOOR`` = 1e-10 but not all
  zero (possible in bfloat16 only: float16's smallest subnormal is 6e-8) keeps AITER's own
  scale ``amax / fp8_max`` and its codes: a faithful FP8 encoding of the row (``q * scale``
  within half an FP8 ulp of ``x``, as the rule's is), but with a scale below
  ``AMAX_FLOOR / fp8_max`` and other codes than the rule's. Fixing that exactly needs ``x``
  again (a full requantization on every call, without a host sync), not worth it for rows
  that real activations never have;
* ``scale_ub`` is refused (AITER ignores it); static per-tensor takes its scale as given,
  copied, as the torch backend does (a zero scale is outside every backend's contract).

Layout: no copies. ``x`` is passed as it is (per-token-group: ``x.view(-1, group_size)``),
``q`` is a fresh contiguous tensor of ``x``'s shape, scales are fresh float32 tensors; for
column-major group scales the ``(groups, tokens)`` storage of
:func:`~vllm_rocm_accel.backends.torch.quant.per_token_group_scales_layout` is exactly the
kernel's ``shuffle_scale`` order. Empty inputs never reach AITER.

Guards (:func:`supports_args_per_tensor`, :func:`supports_args_per_token`,
:func:`supports_args_per_token_group`, :func:`arch_unsupported_reason`): gfx942/gfx950; x
float16/bfloat16, contiguous, 16-byte aligned (conservative: the kernels load x in vectors
and do not document their alignment needs), fewer than 2**31 elements, hidden a multiple of
4; the FP8 format the AITER build writes on that arch; group sizes 32/64/128; no scale_ub.
"""

from __future__ import annotations

from typing import Optional

import torch

from ... import fp8
from ...fp8 import AMAX_FLOOR, fp8_max
from ..torch.quant import per_token_group_scales_layout
from . import arch_reason, device_arch as _device_arch

ARCHS = ("gfx942", "gfx950")
_DTYPES = (torch.float16, torch.bfloat16)
GROUP_SIZES = (32, 64, 128)  # quant_kernels.cu: the group kernel's cols (and per_group_quant_hip's assert)
ROW_MULTIPLE = 4  # FP8 row buffers are rounded up to 4 bytes: hidden % 4 != 0 writes into the next row
ALIGN_BYTES = 16
MAX_NUMEL = 2**31 - 1  # int rows/cols and 32-bit blockIdx.x * cols offsets


def _aiter():
    import aiter  # lazy: importing aiter starts JIT builds

    return aiter


# --- the rule's constants -------------------------------------------------------
_FLOOR_SCALE: dict[torch.dtype, float] = {}


def floor_scale(dtype: torch.dtype) -> float:
    """``AMAX_FLOOR / fp8_max`` as the torch backend computes it (float32 division of float32 values)."""
    value = _FLOOR_SCALE.get(dtype)
    if value is None:
        value = float(torch.tensor(AMAX_FLOOR, dtype=torch.float32) / fp8_max(dtype))
        _FLOOR_SCALE[dtype] = value
    return value


# --- the calls ------------------------------------------------------------------
def _q_like(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return torch.empty(x.shape, dtype=dtype, device=x.device)


def _amax(x: torch.Tensor) -> torch.Tensor:
    """max |x| as a float32 0-d tensor (exact: the max of 16-bit values is one of them); no sync."""
    if x.numel() == 0:
        return torch.zeros((), dtype=torch.float32, device=x.device)
    return torch.linalg.vector_norm(x, float("inf")).float()


def per_tensor_quant(x: torch.Tensor, scale: Optional[torch.Tensor], dtype: torch.dtype):
    """-> (q, scale of shape (1,)): dynamic (``max(max|x|, AMAX_FLOOR) / fp8_max``) when ``scale`` is None."""
    if scale is None:
        s = (_amax(x).clamp(min=AMAX_FLOOR) / fp8_max(dtype)).reshape(1)
    else:
        s = scale.reshape(1).float().clone()  # a copy: outputs never alias inputs
    q = _q_like(x, dtype)
    if x.numel():
        _aiter().static_per_tensor_quant(q, x, s)
    return q, s


def per_token_quant(x: torch.Tensor, dtype: torch.dtype, scale_ub: Optional[torch.Tensor]):
    """-> (q, scales of shape (..., 1)). ``scale_ub`` must be None (AITER's kernels ignore it)."""
    if scale_ub is not None:
        raise ValueError("aiter's dynamic_per_token_scaled_quant ignores scale_ub; supports_args_per_token refuses it")
    q = _q_like(x, dtype)
    scales = torch.empty(tuple(x.shape[:-1]) + (1,), dtype=torch.float32, device=x.device)
    if x.numel() == 0:
        scales.fill_(floor_scale(dtype))
        return q, scales
    _aiter().dynamic_per_token_scaled_quant(q, x, scales)
    if x.shape[-1] not in GROUP_SIZES:  # the per-row kernel has no floor: all-zero rows get scale 0
        zero = scales == 0
        q.view(torch.uint8).masked_fill_(zero, 0)  # 0x00 is +0 in both FP8 formats
        scales.masked_fill_(zero, floor_scale(dtype))
    return q, scales


def per_token_group_quant(x: torch.Tensor, group_size: int, column_major: bool, dtype: torch.dtype):
    """-> (q, scales of shape (..., H // group_size)), in the torch backend's (column-major) layout."""
    scales = per_token_group_scales_layout(tuple(x.shape[:-1]), x.shape[-1] // group_size, column_major, x.device)
    q = _q_like(x, dtype)
    if x.numel():
        _aiter().dynamic_per_token_scaled_quant(q, x.view(-1, group_size), scales, shuffle_scale=column_major)
    return q, scales


# --- guards ---------------------------------------------------------------------
def kernel_fp8_dtype(arch: str) -> torch.dtype:
    """The FP8 format AITER's quant kernels write on ``arch`` (its host-side ``torch_fp8``)."""
    return fp8.FNUZ if fp8.arch_uses_fnuz(arch) else fp8.FN


def arch_unsupported_reason(device: torch.device) -> Optional[str]:
    """AITER's FP8 quant kernels need the FP8 conversions of gfx942 / gfx950."""
    return arch_reason(_device_arch(device), ARCHS, "aiter FP8 quant kernels need {archs}")


def _x_reason(x: torch.Tensor, dtype: torch.dtype) -> Optional[str]:
    """What every one of the adapter's AITER calls needs of x and the FP8 format."""
    if x.dtype not in _DTYPES:
        return f"aiter FP8 quant takes float16/bfloat16 x, got {x.dtype}"
    if not x.is_contiguous():
        return (f"x (shape {tuple(x.shape)}, stride {x.stride()}) is not contiguous; aiter's quant kernels "
                "read dense rows and ignore strides")
    if x.numel() > MAX_NUMEL:
        return f"x has {x.numel()} elements; aiter's quant kernels index with 32-bit ints (at most {MAX_NUMEL})"
    if x.numel() and x.shape[-1] % ROW_MULTIPLE:
        return (f"hidden size {x.shape[-1]} is not a multiple of {ROW_MULTIPLE}; aiter's FP8 row stores are "
                "rounded up to 4 bytes and would write into the next row")
    if x.data_ptr() % ALIGN_BYTES:
        return f"x is not {ALIGN_BYTES}-byte aligned; aiter's quant kernels load it in vectors"
    arch = _device_arch(x.device)
    if arch is not None and dtype != kernel_fp8_dtype(arch):
        return f"aiter's quant kernels write {kernel_fp8_dtype(arch)} on {arch}, not {dtype}"
    return None


def supports_args_per_tensor(x: torch.Tensor, scale: Optional[torch.Tensor], dtype: torch.dtype) -> Optional[str]:
    return _x_reason(x, dtype)


def supports_args_per_token(x: torch.Tensor, dtype: torch.dtype, scale_ub: Optional[torch.Tensor]) -> Optional[str]:
    if scale_ub is not None:
        return "aiter's dynamic_per_token_scaled_quant takes scale_ub but its kernels never read it"
    return _x_reason(x, dtype)


def supports_args_per_token_group(x: torch.Tensor, group_size: int, column_major: bool,
                                  dtype: torch.dtype) -> Optional[str]:
    if group_size not in GROUP_SIZES:
        return f"aiter's group quant kernel takes group sizes {GROUP_SIZES}, got {group_size}"
    if x.shape[-1] % group_size:
        return f"hidden size {x.shape[-1]} is not a multiple of group_size {group_size}"
    return _x_reason(x, dtype)
