"""FP8 GEMMs through AITER's CK kernels (``aiter.gemm_a8w8_CK``, ``aiter.gemm_a8w8_blockscale``).

Contract of amd-aiter 0.1.7.post2.dev18. Python in ``aiter/ops/gemm_op_a8w8.py`` (``py:N``
below, star-imported into ``aiter`` by ``aiter/__init__.py:55``)::

    gemm_a8w8_CK(XQ, WQ, x_scale, w_scale, bias=None, dtype=dtypes.bf16, splitK=None) -> Tensor  # py:353
    gemm_a8w8_blockscale(XQ, WQ, x_scale, w_scale, dtype=dtypes.bf16, isBpreshuffled=False)      # py:442

Both allocate ``Y = torch.empty(m, n, dtype=dtype)`` (py:375, py:457) and hand it to the
compiled op (``gemm_a8w8_ck`` py:40-51, ``gemm_a8w8_blockscale_ck`` py:120-131). vLLM 0.32
calls the same two for its ROCm FP8 linear layers: ``gemm_a8w8_CK(A, B, As, Bs, bias,
output_dtype)`` (``vllm/_aiter_ops.py:821-835``, per-token x per-channel only:
``model_executor/kernels/linear/scaled_mm/aiter.py:324-384``) and ``gemm_a8w8_blockscale(A, B,
As, Bs, dtype=output_dtype)`` (``_aiter_ops.py:943-952``, ``aiter.py:451-474``) with 1 x 128
activation groups quantized by ``QuantFP8`` in its default row-major scale layout
(``BlockScaledMMLinearKernel.py:68-73``) and the bias added after the GEMM (``:137-139``).

Sources in the wheel's ``aiter_meta/csrc`` (``cu:N`` = ``ck_gemm_a8w8/gemm_a8w8.cu``, ``cuh:N`` =
``ck_gemm_a8w8/include/gemm_a8w8_common.cuh``, ``bcu:N`` / ``bcuh:N`` = the same two of
``ck_gemm_a8w8_blockscale/``) and its composable_kernel (``aiter_meta/3rdparty/composable_kernel/
include/ck/tensor_operation/gpu/``: ``dev:N`` = ``device/impl/device_gemm_multiple_d_xdl_cshuffle_v3.hpp``,
``grid:N`` = ``grid/gridwise_gemm_xdl_cshuffle_v3_multi_d.hpp``, ``abgrid:N`` =
``grid/gridwise_gemm_xdl_cshuffle_v3_multi_d_ab_scale.hpp``).

``gemm_a8w8_CK`` (CK ``DeviceGemmMultiD_Xdl_CShuffle_V3``, A row-major, B = WQ (N, K) "column-major"):

* ``XQ``/``WQ`` int8 or the host's ``torch_fp8``, one dtype (``TORCH_CHECK`` cu:156-158;
  ``torch_fp8`` is float8_e4m3fnuz when GPU 0 is gfx94x, float8_e4m3fn otherwise,
  ``include/py_itfs_common.h:32-37``); ``M, N, K`` are ``int`` (cu:165-167);
* scales one dtype (cu:159-160); with float32 scales ``Y`` must be float16 or bfloat16, anything
  else is ``TORCH_CHECK(false, "Unsupported scales/output dtype!")`` (cu:195-214): **no float32 out**;
* **strides are ignored**: ``StrideA = K, StrideB = K, StrideE = N`` (cuh:217-219): XQ and WQ
  must be dense (N, K) rows;
* the scales and the bias are CK "D" tensors passed as raw pointers in the order ``w_scale,
  x_scale, bias`` with D strides 0 (cuh:235-244, 261-269) and layouts Row, Col, Row (cuh:57-61):
  element (m, n) reads ``w_scale[n]``, ``x_scale[m]``, ``bias[n]``. So both scales must be
  **vectors** of N and M floats; a one-element per-tensor scale would be read past its end.
  The tuner feeds ``x_scale [m, 1]``, ``w_scale [1, n]`` (``ck_gemm_a8w8/gemm_a8w8_tune.py:61-62``);
* epilogue in float32, one conversion to ``Y``: ``c * w_scale * x_scale`` (cuh:80-83) or
  ``c * w_scale * x_scale + float(bias)`` (cuh:98-101); bias must have ``Y``'s dtype
  (cu:161-163); bf16 conversion rounds to nearest even (CK ``ck/ck.hpp:159``);
* instances: padded shapes use ``MNKPadding`` (``ck_gemm_a8w8/gen_instances.py:43, 150-154``),
  so any M; ``IsSupportedArgument`` (``TORCH_CHECK`` cuh:250, 275) still needs K a multiple of
  the A/B K-vectors (16 for every instance: ``BK1 = 16`` cuh:174, 190; grid:1264, 1307) and N a
  multiple of the C-shuffle store vector (2, 4 or 8 by instance, ``CBLOCK_SPV`` in
  ``gemm_a8w8_common.py``; grid:1322), and ``M*K``, ``N*K``, ``M*N*sizeof(Y)`` <= 2**31 bytes
  (grid:1362-1365);
* ``splitK=None`` takes the split from the tuned CSV (py:369-374), ``KBatch = 2**splitK``
  (cu:168). With ``KBatch > 1`` each K slice runs the whole epilogue and atomically adds its
  rounded result into the zeroed ``Y`` (dev:231-235, 263-268; every slice gets the same
  ``p_ds_grid``, grid:47-57): **the bias is added KBatch times** (the tuner's README says to
  pass ``bias / 2**k``, ``ck_gemm_a8w8/README.md:16``). The shipped ``a8w8_tuned_gemm.csv`` has
  splitK 0 everywhere, but ``AITER_CONFIG_GEMM_A8W8`` can point to another.

``gemm_a8w8_blockscale`` (CK ``DeviceGemmMultiD_ABScale_Xdl_CShuffle_V3``):

* ``dtype`` bfloat16 or float16 (``assert`` py:450-453; ``TORCH_CHECK`` bcu:107-118); scales
  float32 (the only scale dtype dispatched, bcu:107-113), one dtype (bcu:101); XQ/WQ one dtype
  (bcu:100, no FP8-format check: the bytes go to the arch's FP8 MFMA);
* **row strides are honoured**: ``StrideA = XQ.stride(-2), StrideB = WQ.stride(-2), StrideE = N``
  (bcuh:130-132), unit K stride assumed;
* scale blocks 1 x 128 (A) and 128 x 128 (B) in every instance
  (``ck_gemm_a8w8_blockscale/gemm_a8w8_blockscale_common.py:74-110``); the scales are raw
  pointers (bcuh:154-155) read as **dense row-major** ``(M, ceil(K/128))`` and
  ``(ceil(N/128), ceil(K/128))`` (abgrid:408-434, A row-major / B column-major);
* per 128-wide K block, ``partial * (a_scale * w_scale)`` accumulated in float32
  (``block/blockwise_gemm_pipeline_xdlops_v1_ab_scale.hpp:419-421``), one conversion to ``Y``;
* ``MNKPadding`` for padded shapes (``ck_gemm_a8w8_blockscale/gen_instances.py:52, 99-104``);
  ``IsSupportedArgument`` (bcuh:160) needs K a multiple of the K-vectors (8/16; abgrid:1067,
  1110) and N of the C-shuffle vector (4 or 8; abgrid:1125; 8 for the heuristic default
  instance, bcu:89-91). Every shape AITER tuned (``aiter/configs/a8w8_blockscale_tuned_gemm.csv``,
  ``model_configs/a8w8_blockscale_tuned_gemm_ds_v3.csv``) has K a multiple of 128 (N need not
  be: 200, 576, 2112 are there); with a short last K group the padded K block would read
  scale columns past ``ceil(K/128)`` (the default instance's K block is 256): not exercised by
  AITER, so not taken here.

FP8 format: the arch's own (float8_e4m3fnuz on gfx942, float8_e4m3fn on gfx950; vLLM feeds
``current_platform.fp8_dtype()`` to both), as :func:`vllm_rocm_accel.backends.aiter.quant.kernel_fp8_dtype`.

What this adapter does with our layouts (:mod:`vllm_rocm_accel.checks.gemm`):

* per-tensor scales are expanded to the vectors the kernel reads: ``a_scale`` to a dense (M, 1),
  ``w_scale`` to a dense (1, N) (per-token / per-channel ones are viewed so, copied only when
  not dense);
* a bias of another dtype than ``out_dtype`` is converted to it (one extra rounding of the
  bias, as the kernel reads the bias in ``Y``'s dtype); with a bias, ``splitK=0`` is passed so
  that it is added once; without one, ``splitK=None`` keeps AITER's tuned split (which rounds
  each slice's partial sum to ``out_dtype`` before the atomic add);
* block scales are passed ``.contiguous()`` (column-major ``a_scale`` from
  ``per_token_group_quant(column_major_scales=True)`` is copied to row-major: M * K/128 floats).

Guards (:func:`supports_args_gemm_a8w8`, :func:`supports_args_blockscale`,
:func:`arch_unsupported_reason`): gfx942/gfx950; the arch's FP8 format; out bfloat16/float16;
``gemm_a8w8``: dense a and w, K % 16, N % 8, the 2 GB bounds; ``gemm_a8w8_blockscale``: K % 128,
N % 8, row strides multiples of 16 bytes, fewer than 2**31 elements per operand; operands
16-byte aligned (conservative: the kernels load 16-byte vectors). Not used: the hipBLASLt
(``hipb_mm``), ``gemm_a8w8_bpreshuffle`` and assembly paths, which need the weight pre-shuffled
(``aiter/ops/shuffle.py:7``) at load time; this op takes w as vLLM stores it.
"""

from __future__ import annotations

from typing import Optional

import torch

from ...checks.gemm import BLOCK
from . import arch_reason, device_arch as _device_arch
from .quant import kernel_fp8_dtype

ARCHS = ("gfx942", "gfx950")  # FP8 matrix cores (gfx90a has none)
OUT_DTYPES = (torch.bfloat16, torch.float16)  # gemm_a8w8.cu:195-214, gemm_op_a8w8.py:450-453
K_MULTIPLE = 16  # the CK instances' A/B K-vectors (BK1 = 16)
N_MULTIPLE = 8  # the widest C-shuffle store vector of the instances
ALIGN_BYTES = 16
TWO_GB = 2**31  # CK CheckValidity: M*K, N*K, M*N*sizeof(Y) bytes
MAX_NUMEL = 2**31 - 1  # int M, N, K and 32-bit offsets


def _aiter():
    import aiter  # lazy: importing aiter starts JIT builds

    return aiter


# --- the calls ------------------------------------------------------------------
def _vector(scale: torch.Tensor, per_element: bool, shape: tuple) -> torch.Tensor:
    """The dense float32 scale vector of ``shape`` the kernel reads: a per-tensor scale repeated."""
    if per_element:
        return scale.reshape(shape).contiguous()  # a view when it is dense already
    return scale.reshape(1, 1).expand(shape).contiguous()


def gemm_a8w8(a: torch.Tensor, w: torch.Tensor, a_scale: torch.Tensor, w_scale: torch.Tensor, a_kind: str,
              w_kind: str, bias: Optional[torch.Tensor], out_dtype: torch.dtype) -> torch.Tensor:
    """``(a * a_scale) @ (w * w_scale).T (+ bias)`` -> a new (M, N) tensor in ``out_dtype``."""
    m, n = a.shape[0], w.shape[0]
    x_scale = _vector(a_scale, a_kind == "token", (m, 1))
    w_vec = _vector(w_scale, w_kind == "channel", (1, n))
    if bias is not None:
        bias = bias.to(out_dtype).contiguous()  # the kernel reads bias[n] in Y's dtype
    # splitK=0 with a bias: every split-K slice would add it again
    return _aiter().gemm_a8w8_CK(a, w, x_scale, w_vec, bias=bias, dtype=out_dtype,
                                 splitK=0 if bias is not None else None)


def gemm_a8w8_blockscale(a: torch.Tensor, w: torch.Tensor, a_scale: torch.Tensor, w_scale: torch.Tensor,
                         out_dtype: torch.dtype) -> torch.Tensor:
    """1 x 128 / 128 x 128 block-scaled ``a @ w.T`` -> a new (M, N) tensor in ``out_dtype``."""
    # the kernel reads both scale grids dense row-major from their data pointers
    return _aiter().gemm_a8w8_blockscale(a, w, a_scale.contiguous(), w_scale.contiguous(), dtype=out_dtype)


# --- guards ---------------------------------------------------------------------
def arch_unsupported_reason(device: torch.device) -> Optional[str]:
    """AITER's FP8 GEMMs need the FP8 matrix cores of gfx942 / gfx950."""
    return arch_reason(_device_arch(device), ARCHS, "aiter FP8 GEMMs need {archs} (FP8 matrix cores)")


def _common_reason(a: torch.Tensor, w: torch.Tensor, out_dtype: torch.dtype) -> Optional[str]:
    """What both kernels need: output dtype, the arch's FP8 format, aligned operands."""
    if out_dtype not in OUT_DTYPES:
        return f"aiter's CK FP8 GEMMs write bfloat16/float16 only, not {out_dtype}"
    arch = _device_arch(a.device)
    if arch is not None and a.dtype != kernel_fp8_dtype(arch):
        return f"aiter's FP8 GEMMs take {kernel_fp8_dtype(arch)} on {arch}, not {a.dtype}"
    for name, t in (("a", a), ("w", w)):
        if t.data_ptr() % ALIGN_BYTES:
            return f"{name} is not {ALIGN_BYTES}-byte aligned; aiter's CK GEMMs load it in 16-byte vectors"
    return None


def _n_reason(n: int, what: str) -> Optional[str]:
    if n % N_MULTIPLE:
        return (f"N = {n} is not a multiple of {N_MULTIPLE}; {what}'s CK instances store the output in "
                f"vectors of up to {N_MULTIPLE} (IsSupportedArgument would fail)")
    return None


def supports_args_gemm_a8w8(a, w, a_scale, w_scale, a_kind, w_kind, bias, out_dtype) -> Optional[str]:
    m, k = a.shape
    n = w.shape[0]
    reason = _common_reason(a, w, out_dtype)
    if reason is not None:
        return reason
    for name, t in (("a", a), ("w", w)):
        if not t.is_contiguous():
            return (f"{name} (shape {tuple(t.shape)}, stride {t.stride()}) is not dense; aiter's gemm_a8w8 "
                    "ignores strides (StrideA = StrideB = K)")
    if k % K_MULTIPLE:
        return (f"K = {k} is not a multiple of {K_MULTIPLE}; aiter's gemm_a8w8 loads K in vectors of "
                f"{K_MULTIPLE} (IsSupportedArgument would fail)")
    reason = _n_reason(n, "gemm_a8w8")
    if reason is not None:
        return reason
    return size_reason_gemm_a8w8(a, w)


def size_reason_gemm_a8w8(a: torch.Tensor, w: torch.Tensor) -> Optional[str]:
    """The part of :func:`supports_args_gemm_a8w8` that M alone can change (the ops' choice
    cache keys on it: one row bracket can straddle the limit)."""
    m, k = a.shape
    n = w.shape[0]
    if max(m * k, n * k, m * n * 2) > TWO_GB:  # FP8 operands, a 16-bit output
        return f"M, N, K = {m}, {n}, {k}: an operand or the output exceeds the 2 GB CK's gemm_a8w8 addresses"
    return None


def supports_args_blockscale(a, w, a_scale, w_scale, out_dtype) -> Optional[str]:
    m, k = a.shape
    n = w.shape[0]
    reason = _common_reason(a, w, out_dtype)
    if reason is not None:
        return reason
    if k % BLOCK:
        return (f"K = {k} is not a multiple of {BLOCK}; aiter's gemm_a8w8_blockscale was only ever run with "
                f"whole 128-wide K groups (a short last group's padded K block reads scales past the grid)")
    reason = _n_reason(n, "gemm_a8w8_blockscale")
    if reason is not None:
        return reason
    for name, t in (("a", a), ("w", w)):
        if (t.stride(0) * t.element_size()) % ALIGN_BYTES and t.shape[0] > 1:
            return (f"{name} has row stride {t.stride(0)}, not a multiple of {ALIGN_BYTES} bytes "
                    "(unaligned vector loads)")
    return size_reason_blockscale(a, w)


def size_reason_blockscale(a: torch.Tensor, w: torch.Tensor) -> Optional[str]:
    """The part of :func:`supports_args_blockscale` that M alone can change (see
    :func:`size_reason_gemm_a8w8`)."""
    m, k = a.shape
    n = w.shape[0]
    if max(a.numel(), w.numel(), m * n, m * a.stride(0), n * w.stride(0)) > MAX_NUMEL:
        return (f"M, N, K = {m}, {n}, {k}: more than 2**31 elements; aiter's gemm_a8w8_blockscale indexes "
                "with 32-bit ints")
    return None
