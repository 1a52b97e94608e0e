"""A torch model of amd-aiter 0.1.7's CK FP8 GEMM entry points, installed as ``aiter`` in tests only.

``gemm_a8w8_CK(XQ, WQ, x_scale, w_scale, bias=None, dtype=torch.bfloat16, splitK=None)`` and
``gemm_a8w8_blockscale(XQ, WQ, x_scale, w_scale, dtype=torch.bfloat16, isBpreshuffled=False)``
mirror the wheel's signatures (``aiter/ops/gemm_op_a8w8.py``; a test compares them, the wheel's
default ``dtypes.bf16`` being ``torch.bfloat16``) and the CK kernels behind them
(``aiter_meta/csrc/ck_gemm_a8w8/`` and ``ck_gemm_a8w8_blockscale/`` in the wheel; file:line in
``vllm_rocm_accel/backends/aiter/gemm.py``), raising :class:`~aiter_model.model.AiterContractError`
where the real code fails a ``TORCH_CHECK`` / ``assert`` or would silently read the wrong memory:

``gemm_a8w8_CK``:

* ``XQ`` (M, K) and ``WQ`` (N, K) of one dtype, the host's ``torch_fp8`` (:data:`TORCH_FP8`; int8 is
  real but not modelled: NotImplementedError), **dense**: the kernel takes ``StrideA = StrideB = K``
  whatever the strides;
* ``x_scale``/``w_scale`` float32 (other scale dtypes are real but not modelled), read through
  their data pointers as ``x_scale[m]`` (M floats) and ``w_scale[n]`` (N floats), strides ignored:
  a one-element scale is refused (the kernel would read past it);
* ``dtype`` float16/bfloat16 ("Unsupported scales/output dtype!"); ``bias`` of ``dtype``, read as
  ``bias[n]`` (N values);
* ``IsSupportedArgument``: K % 16, N % 8 (the instances' vectors), M*K, N*K, M*N*2 <= 2 GB;
* ``splitK``: None (the tuned CSV's value; 0 for every shape the wheel ships) or ``k >= 0``: K is
  cut into ``2**k`` slices, each runs the whole epilogue ``c * w_scale * x_scale (+ bias)``,
  rounds it to ``dtype`` and adds it atomically into a zeroed ``Y`` (in ``dtype``): the bias is
  added ``2**k`` times, as on the GPU.

``gemm_a8w8_blockscale`` (``isBpreshuffled=True``, the gfx950 assembly path, is not modelled):

* ``dtype`` float16/bfloat16 (the Python ``assert``); scales float32, one dtype;
* ``XQ``/``WQ`` one FP8 dtype (:data:`TORCH_FP8` when set: the MFMA reads the arch's format),
  unit K stride, rows at ``stride(-2)`` (honoured);
* ``x_scale`` read dense row-major ``(M, K/128)`` and ``w_scale`` ``(ceil(N/128), K/128)`` from
  their data pointers, strides ignored;
* K % 128 (outside it: not a shape AITER ever ran, see the adapter), N % 8.

Both: every tensor on ``XQ``'s device, operands 16-byte aligned (the adapter's conservative
reading of the 16-byte vector loads), at least one row, column and K element. Numerics as the
kernels compute them in float32: ``acc = sum_k a*w`` (per 128-wide K block for the block-scaled
one, each block times ``a_scale * w_scale`` before it is added), one rounding to ``dtype``
(round-to-nearest-even). Every call is recorded in ``model.CALLS`` before it is checked.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .model import AiterContractError, _record, _require  # noqa: F401

__all__ = ["gemm_a8w8_CK", "gemm_a8w8_blockscale", "MODELLED_GEMM"]
MODELLED_GEMM = ("gemm_a8w8_CK", "gemm_a8w8_blockscale")

FNUZ, FN = torch.float8_e4m3fnuz, torch.float8_e4m3fn
OUT_DTYPES = (torch.bfloat16, torch.float16)
K_VECTOR = 16  # BK1 = 16 in every gemm_a8w8 instance
N_VECTOR = 8  # the widest C-shuffle store vector
BLOCK = 128  # ScaleBlockN = ScaleBlockK = 128, ScaleBlockM = 1 in every blockscale instance
TWO_GB = 2**31
MAX_NUMEL = 2**31 - 1
ALIGN_BYTES = 16

# The FP8 format the AITER build takes (py_itfs_common.h: float8_e4m3fnuz when GPU 0 is gfx94x,
# float8_e4m3fn otherwise). None: either format; tests simulating one arch set it (monkeypatch).
TORCH_FP8: Optional[torch.dtype] = None


def _check_operands(fn: str, XQ, WQ, dense: bool) -> tuple[int, int, int]:
    _require(isinstance(XQ, Tensor) and isinstance(WQ, Tensor), fn, "XQ and WQ must be Tensors")
    _require(XQ.dtype == WQ.dtype, fn, f"Weights and activations should have the same dtype! ({XQ.dtype}, {WQ.dtype})")
    if XQ.dtype == torch.int8:
        raise NotImplementedError("the model covers FP8 operands only (int8 is real but not modelled)")
    allowed = (TORCH_FP8,) if TORCH_FP8 is not None else (FN, FNUZ)
    _require(XQ.dtype in allowed, fn,
             f"XQ/WQ have dtype {XQ.dtype}; this build's FP8 is {' or '.join(map(str, allowed))}")
    _require(XQ.dim() == 2 and WQ.dim() == 2, fn, f"XQ {tuple(XQ.shape)} and WQ {tuple(WQ.shape)} must be 2-D")
    m, k = XQ.shape
    n = WQ.shape[0]
    _require(WQ.shape[1] == k, fn, f"WQ {tuple(WQ.shape)} must be (N, K) with K = {k}")
    _require(m > 0 and n > 0 and k > 0, fn, f"M, N, K = {m}, {n}, {k}: an empty GEMM is not modelled")
    _require(WQ.device == XQ.device, fn, f"WQ is on {WQ.device}, XQ on {XQ.device}")
    for name, t in (("XQ", XQ), ("WQ", WQ)):
        if dense:
            _require(t.is_contiguous(), fn,
                     f"{name} (shape {tuple(t.shape)}, stride {t.stride()}) is not dense; the kernel takes "
                     "StrideA = StrideB = K and would read the wrong rows")
        else:
            _require(t.stride(-1) == 1, fn, f"{name} has K stride {t.stride(-1)}; the kernel assumes unit K stride")
            _require(t.stride(0) % ALIGN_BYTES == 0 or t.shape[0] == 1, fn,
                     f"{name} row stride {t.stride(0)} is not a multiple of {ALIGN_BYTES} bytes")
        _require(t.data_ptr() % ALIGN_BYTES == 0, fn, f"{name} is not {ALIGN_BYTES}-byte aligned for the vector loads")
    return m, n, k


def _check_scales(fn: str, x_scale, w_scale, XQ: Tensor) -> None:
    for name, t in (("x_scale", x_scale), ("w_scale", w_scale)):
        _require(isinstance(t, Tensor), fn, f"{name} must be a Tensor, got {type(t).__name__}")
        _require(t.device == XQ.device, fn, f"{name} is on {t.device}, XQ on {XQ.device}")
    _require(x_scale.dtype == w_scale.dtype, fn,
             f"Scales should have the same dtype! ({x_scale.dtype}, {w_scale.dtype})")
    if x_scale.dtype != torch.float32:
        raise NotImplementedError("the model covers float32 scales only")


def _room(fn: str, name: str, t: Tensor, count: int) -> None:
    room = t.untyped_storage().nbytes() // t.element_size() - t.storage_offset()
    _require(room >= count, fn,
             f"{name} has room for {room} values from its data pointer, the kernel reads {count} (strides ignored)")


def _dense(t: Tensor, shape: tuple) -> Tensor:
    """``t``'s memory from its data pointer on, read dense row-major as ``shape`` (as the kernel does)."""
    strides, step = [], 1
    for size in reversed(shape):
        strides.insert(0, step)
        step *= size
    return t.as_strided(shape, tuple(strides), t.storage_offset())


def gemm_a8w8_CK(
    XQ: Tensor,
    WQ: Tensor,
    x_scale: Tensor,
    w_scale: Tensor,
    bias: Optional[Tensor] = None,
    dtype: torch.dtype = torch.bfloat16,
    splitK: Optional[int] = None,
) -> Tensor:
    fn = "gemm_a8w8_CK"
    _record(fn, XQ=XQ, WQ=WQ, x_scale=x_scale, w_scale=w_scale, bias=bias, dtype=dtype, splitK=splitK)
    m, n, k = _check_operands(fn, XQ, WQ, dense=True)
    _check_scales(fn, x_scale, w_scale, XQ)
    _require(dtype in OUT_DTYPES, fn, f"Unsupported scales/output dtype! (float32 scales, {dtype} out)")
    _room(fn, "x_scale", x_scale, m)
    _room(fn, "w_scale", w_scale, n)
    if bias is not None:
        _require(isinstance(bias, Tensor) and bias.dtype == dtype, fn,
                 f"Out amd bias should have the same dtype! (bias {getattr(bias, 'dtype', bias)}, out {dtype})")
        _require(bias.device == XQ.device, fn, f"bias is on {bias.device}, XQ on {XQ.device}")
        _room(fn, "bias", bias, n)
    _require(k % K_VECTOR == 0 and n % N_VECTOR == 0, fn,
             f"This GEMM is not supported! (K = {k} % {K_VECTOR}, N = {n} % {N_VECTOR})")
    _require(max(m * k, n * k, m * n * 2) <= TWO_GB, fn, "This GEMM is not supported! (over 2 GB)")
    _require(splitK is None or (isinstance(splitK, int) and not isinstance(splitK, bool) and splitK >= 0), fn,
             f"splitK must be None or an int >= 0, got {splitK!r}")
    kbatch = 2 ** (splitK or 0)

    xs = _dense(x_scale, (m, 1))
    ws = _dense(w_scale, (1, n))
    b = None if bias is None else _dense(bias, (1, n)).float()
    a, w = XQ.float(), WQ.float()
    y = torch.zeros(m, n, dtype=dtype, device=XQ.device)  # hipMemsetAsync(Y, 0) before a split-K launch
    k_read = -(-k // (kbatch * K_VECTOR)) * K_VECTOR  # CK's KRead: K per slice, in whole vectors
    for start in range(0, k, k_read):
        part = a[:, start:start + k_read] @ w[:, start:start + k_read].t()
        part = part * ws * xs  # c * d0 (w_scale) * d1 (x_scale)
        if b is not None:
            part = part + b  # every slice adds d2
        y = part.to(dtype) if kbatch == 1 else (y.float() + part.to(dtype).float()).to(dtype)
    return y


def gemm_a8w8_blockscale(
    XQ: Tensor,
    WQ: Tensor,
    x_scale: Tensor,
    w_scale: Tensor,
    dtype: torch.dtype = torch.bfloat16,
    isBpreshuffled: bool = False,
) -> Tensor:
    fn = "gemm_a8w8_blockscale"
    _record(fn, XQ=XQ, WQ=WQ, x_scale=x_scale, w_scale=w_scale, dtype=dtype, isBpreshuffled=isBpreshuffled)
    _require(dtype in OUT_DTYPES, fn, f"Output dtype={dtype} is currently not supported in gemm_a8w8")
    if isBpreshuffled:
        raise NotImplementedError("the model covers the CK path (isBpreshuffled=False) only")
    m, n, k = _check_operands(fn, XQ, WQ, dense=False)
    _check_scales(fn, x_scale, w_scale, XQ)
    _require(k % BLOCK == 0, fn,
             f"K = {k} is not a multiple of {BLOCK}: outside the modelled contract (no shape AITER tuned has it)")
    _require(n % N_VECTOR == 0, fn, f"This GEMM is not supported! (N = {n} % {N_VECTOR})")
    _require(max(XQ.numel(), WQ.numel(), m * n, m * XQ.stride(0), n * WQ.stride(0)) <= MAX_NUMEL, fn,
             "more than 2**31 elements: 32-bit indices")
    kb, nb = k // BLOCK, -(-n // BLOCK)
    _room(fn, "x_scale", x_scale, m * kb)
    _room(fn, "w_scale", w_scale, nb * kb)

    xs = _dense(x_scale, (m, kb))
    ws = _dense(w_scale, (nb, kb)).repeat_interleave(BLOCK, dim=0)[:n]  # (N, K/128): w_scale of row n
    a, w = XQ.float(), WQ.float()
    acc = torch.zeros(m, n, dtype=torch.float32, device=XQ.device)
    for j in range(kb):
        cols = slice(j * BLOCK, (j + 1) * BLOCK)
        acc += (a[:, cols] @ w[:, cols].t()) * (xs[:, j:j + 1] * ws[:, j].reshape(1, n))
    return acc.to(dtype)
