"""Fused RMSNorm + per-token FP8 quant through AITER's CK kernels
(``aiter.rmsnorm2d_fwd_with_dynamicquant``, ``aiter.rmsnorm2d_fwd_with_add_dynamicquant``).

Contract of amd-aiter 0.1.7.post2.dev18. Python stubs in ``aiter/ops/rmsnorm.py`` (both
``@compile_ops("module_rmsnorm")``, star-imported into ``aiter``; vLLM 0.32 calls the same two
from ``vllm/_aiter_ops.py`` for its RMSNorm + quant fusion pass)::

    rmsnorm2d_fwd_with_dynamicquant(out, input, yscale, weight, epsilon,
                                    use_model_sensitive_rmsnorm=0) -> None
    rmsnorm2d_fwd_with_add_dynamicquant(out, input, residual_in, residual_out, yscale, weight,
                                        epsilon, use_model_sensitive_rmsnorm=0) -> None

The C++ side in the wheel (``aiter_meta/csrc/py_itfs_ck/rmsnorm_ck_kernels.cu``) and the CK
kernels it instantiates (``aiter_meta/3rdparty/composable_kernel``: ``example/ck_tile/10_rmsnorm2d``
for the generated instances, ``include/ck_tile/ops/rmsnorm2d`` for the pipelines,
``include/ck_tile/ops/epilogue/dynamic_quant_epilogue.hpp`` for the quant):

* ``input`` float16/bfloat16 (``TORCH_CHECK``); rows are ``numel // size(-1)`` at ``input.stride(0)``
  (so 2-D), ``out``/``residual_*`` rows at their own ``stride(0)``; ``int`` sizes and strides;
* the output precision is the string ``torchDTypeToStr(out.dtype())``, which maps **both**
  float8_e4m3fnuz and float8_e4m3fn to ``"fp8"`` (``py_itfs_common.h``): the kernel writes the
  arch's ``ck_tile::fp8_t`` (e4m3fnuz on gfx942, OCP e4m3fn on gfx950, ``ck_tile/core/config.hpp``)
  whatever format ``out`` claims, so the adapter must pass the arch's format itself;
* the fused-quant instances exist only up to hidden 8192: the generator skips the two-pass
  ``"big"`` bucket for fused quant, and the dispatch's last bucket has no upper bound on ``n``,
  so a wider row would run the 8192-column one-pass instance on part of the row;
* numerics, float32 throughout: ``acc = x (+ residual_in)`` (``residual_out <- acc`` rounded),
  ``y = acc * rsqrt(sum(acc^2) / n + eps) * gamma`` **not rounded** to the input dtype, then
  ``yscale = absmax(y) / fp8_max`` and ``out = cvt_rne(med3(y / yscale, +-fp8_max))`` with fp8_max
  240 (fnuz) / 448 (OCP). ``absmax`` starts at 0: an all-zero row gets scale 0 and codes ``0 / 0 =
  NaN``.

Where AITER departs from the unfused composition (``backends/torch/fused_quant.py``), this adapter
decides:

* **no rounding of the norm to x's dtype** before quantizing: AITER quantizes the float32 norm,
  the reference its bf16/fp16 rounding (as vLLM's own unfused path). Scales then differ by up to
  the 16-bit rounding of the row's amax (relative 2**-8 bf16, 2**-11 fp16) and codes by one FP8
  ulp; accepted (the tests check exactly that bound);
* **all-zero rows** (padding tokens): fixed after the call without a host sync, as the quant
  adapter's per-row kernel: rows whose scale is 0 get scale ``AMAX_FLOOR / fp8_max`` and their
  codes are zeroed through a ``uint8`` view. Known deviation: a row whose normalized values are all
  below ``AMAX_FLOOR`` but not all zero keeps AITER's scale (see ``backends/aiter/quant.py``);
* **in-place residual**: the kernel's aliasing rules are not documented, so ``residual_out`` is a
  fresh tensor copied back into ``residual`` (one extra pass, as the aiter norm adapter's in-place
  form);
* **no weight** (vLLM's ``has_weight=False``): a cached ones vector of x's dtype, as the norm adapter.

Guards (:func:`supports_args_norm`, with the quant adapter's
:func:`~vllm_rocm_accel.backends.aiter.quant.arch_unsupported_reason` as the platform gate): gfx942 /
gfx950; x (and residual) float16/bfloat16, contiguous, 16-byte aligned (conservative: CK loads in
vectors); weight of x's dtype, contiguous; hidden <= 8192; fewer than 2**31 elements; the FP8 format
the arch's CK build writes. Empty inputs never reach AITER.

``silu_and_mul_group_quant`` has no AITER backend: amd-aiter 0.1.7 has no HIP/CK SiLU-and-mul +
group-quant kernel. Its Triton ``act_mul_and_fp8_group_quant`` (``aiter/ops/triton/activation.py``,
which vLLM 0.32's ``RocmAiterSiluMulFp8GroupQuantFusionPass`` uses) is a Triton kernel like ours,
lives outside the ``aiter`` namespace our wheel-signature checks read, and rounds differently
(silu and product unrounded, scale by reciprocal multiply), so our Triton kernel serves ROCm.
"""

from __future__ import annotations

from typing import Optional

import torch

from .norm import _weight
from .quant import ALIGN_BYTES, MAX_NUMEL, _device_arch, floor_scale, kernel_fp8_dtype

_DTYPES = (torch.float16, torch.bfloat16)
MAX_HIDDEN = 8192  # the largest fused-quant instance (10_rmsnorm2d/generate.py skips "big" for fused quant)
SILU_GROUP_QUANT_UNSUPPORTED = (
    "amd-aiter 0.1.7 has no HIP/CK silu-and-mul + group-quant kernel (its Triton act_mul_and_fp8_group_quant "
    "is not in the aiter namespace we check against the wheel); the triton backend serves this op on ROCm"
)


def _aiter():
    import aiter  # lazy: importing aiter starts JIT builds

    return aiter


# --- the calls ------------------------------------------------------------------
def _outputs(x: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    q = torch.empty(x.shape, dtype=dtype, device=x.device)
    return q, torch.empty(tuple(x.shape[:-1]) + (1,), dtype=torch.float32, device=x.device)


def _fix_zero_rows(q: torch.Tensor, scales: torch.Tensor, dtype: torch.dtype) -> None:
    """All-zero rows: AITER's scale 0 and NaN codes -> the rule's floor scale and +0 codes (no host sync)."""
    zero = scales == 0
    q.view(torch.uint8).masked_fill_(zero, 0)  # 0x00 is +0 in both FP8 formats
    scales.masked_fill_(zero, floor_scale(dtype))


def rms_norm_dynamic_quant(x: torch.Tensor, weight: Optional[torch.Tensor], eps: float, dtype: torch.dtype):
    """-> (q, scales of shape (..., 1))."""
    q, scales = _outputs(x, dtype)
    if x.numel() == 0:
        return q, scales
    hidden = x.shape[-1]
    _aiter().rmsnorm2d_fwd_with_dynamicquant(q.view(-1, hidden), x.view(-1, hidden), scales.view(-1, 1),
                                             _weight(weight, x), float(eps))
    _fix_zero_rows(q, scales, dtype)
    return q, scales


def fused_add_rms_norm_dynamic_quant(x: torch.Tensor, residual: torch.Tensor, weight: Optional[torch.Tensor],
                                     eps: float, dtype: torch.dtype):
    """-> (q, scales of shape (..., 1)); ``residual <- x + residual`` (through a fresh residual_out)."""
    q, scales = _outputs(x, dtype)
    if x.numel() == 0:
        return q, scales
    hidden = x.shape[-1]
    residual_out = torch.empty(residual.shape, dtype=residual.dtype, device=residual.device)
    _aiter().rmsnorm2d_fwd_with_add_dynamicquant(q.view(-1, hidden), x.view(-1, hidden), residual.view(-1, hidden),
                                                 residual_out.view(-1, hidden), scales.view(-1, 1),
                                                 _weight(weight, x), float(eps))
    residual.copy_(residual_out)
    _fix_zero_rows(q, scales, dtype)
    return q, scales


def silu_and_mul_group_quant(x: torch.Tensor, group_size: int, column_major: bool, dtype: torch.dtype):
    raise ValueError(f"aiter: {SILU_GROUP_QUANT_UNSUPPORTED}")


# --- guards ---------------------------------------------------------------------
def _rows_reason(name: str, t: torch.Tensor) -> Optional[str]:
    if t.dtype not in _DTYPES:
        return f"aiter fused rmsnorm + quant takes float16/bfloat16 {name}, got {t.dtype}"
    if not t.is_contiguous():
        return (f"{name} (shape {tuple(t.shape)}, stride {t.stride()}) is not contiguous; the adapter passes "
                "dense 2-D rows to CK")
    if t.data_ptr() % ALIGN_BYTES:
        return f"{name} is not {ALIGN_BYTES}-byte aligned; CK loads it in vectors"
    return None


def supports_args_norm(x: torch.Tensor, weight: Optional[torch.Tensor], eps: float, dtype: torch.dtype,
                       residual: Optional[torch.Tensor] = None) -> Optional[str]:
    """None when the adapter can serve these arguments (residual given: the fused-add form)."""
    reason = _rows_reason("x", x) or (None if residual is None else _rows_reason("residual", residual))
    if reason:
        return reason
    if weight is not None:
        if weight.dtype != x.dtype:
            return f"aiter rmsnorm needs weight dtype == x dtype ({weight.dtype} != {x.dtype})"
        if weight.stride(0) != 1 and weight.shape[0] > 1:
            return "aiter rmsnorm reads weight as contiguous; got a strided weight"
    if x.shape[-1] > MAX_HIDDEN:
        return (f"hidden size {x.shape[-1]} > {MAX_HIDDEN}: amd-aiter 0.1.7 builds its fused rmsnorm + dynamic "
                "quant kernels for rows of at most 8192 (no two-pass instance)")
    if x.numel() > MAX_NUMEL:
        return f"x has {x.numel()} elements; the CK interface passes sizes and strides as 32-bit ints"
    arch = _device_arch(x.device)
    if arch is not None and dtype != kernel_fp8_dtype(arch):
        return f"aiter's CK kernels write {kernel_fp8_dtype(arch)} on {arch}, not {dtype}"
    return None


def supports_args_silu(x: torch.Tensor, group_size: int, column_major: bool, dtype: torch.dtype) -> Optional[str]:
    return SILU_GROUP_QUANT_UNSUPPORTED
