"""Argument checks of the FP8 GEMM family (shared by the ops and their fakes).

Layouts (vLLM's): ``a`` (M, K) and ``w`` (N, K), both in one FP8 format; the product is
``a @ w.T`` -> (M, N).

* ``gemm_a8w8``: ``a_scale`` per tensor (one element) or per token ((M, 1) or (M,));
  ``w_scale`` per tensor (one element) or per channel ((N, 1) or (N,)).
* ``gemm_a8w8_blockscale``: ``a_scale`` (M, ceil(K / 128)), one scale per 1 x 128 group of a
  row (row- or column-major storage); ``w_scale`` (ceil(N / 128), ceil(K / 128)), one per
  128 x 128 block of ``w`` (the DeepSeek-V3 layout). K need not be a multiple of 128: the
  last group is short.

Scales are float32. Every check runs before any backend touches memory.
"""

from __future__ import annotations

import torch

from . import check_same_device
from .. import fp8

OUT_DTYPES = (torch.bfloat16, torch.float16, torch.float32)
BLOCK = 128
"""The block edge of ``gemm_a8w8_blockscale``'s scales: 1 x 128 for a, 128 x 128 for w."""


def _fp8_2d(name: str, t, what: str) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in fp8.FP8_DTYPES:
        raise TypeError(f"{name} has dtype {t.dtype}; expected an FP8 format (float8_e4m3fn or float8_e4m3fnuz)")
    if t.dim() != 2:
        raise ValueError(f"{name} has shape {tuple(t.shape)}; expected 2-D {what}")
    if t.stride(-1) != 1 and t.shape[-1] > 1:
        raise ValueError(f"{name} has strides {t.stride()}; its last dim (K) must be contiguous")


def _float32(name: str, t, a: torch.Tensor) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype != torch.float32:
        raise TypeError(f"{name} has dtype {t.dtype}; expected float32")
    check_same_device(name, t, "a", a)


def check_operands(a, w) -> None:
    _fp8_2d("a", a, "(M, K)")
    _fp8_2d("w", w, "(N, K)")
    if w.dtype != a.dtype:
        raise ValueError(f"w has dtype {w.dtype} but a has {a.dtype}; both must be the same FP8 format")
    check_same_device("w", w, "a", a)
    if w.shape[1] != a.shape[1]:
        raise ValueError(f"w has shape {tuple(w.shape)}; expected (N, K) with K = {a.shape[1]} (a is {tuple(a.shape)})")


def check_out_dtype(out_dtype) -> None:
    if out_dtype not in OUT_DTYPES:
        raise ValueError(f"out_dtype must be one of bfloat16, float16, float32, got {out_dtype}")


def scale_kind(name: str, t: torch.Tensor, n: int, per: str) -> str:
    """'tensor' for one element, ``per`` ('token'/'channel') for (n, 1) or (n,); else ValueError."""
    if t.numel() == 1 and t.dim() <= 2:
        return "tensor"
    if t.shape in ((n, 1), (n,)):
        return per
    raise ValueError(
        f"{name} has shape {tuple(t.shape)}; expected one element (per tensor) or ({n}, 1) / ({n},) (per {per})"
    )


def check_gemm_a8w8_args(a, w, a_scale, w_scale, bias, out_dtype) -> None:
    check_operands(a, w)
    _float32("a_scale", a_scale, a)
    _float32("w_scale", w_scale, a)
    scale_kind("a_scale", a_scale, a.shape[0], "token")
    scale_kind("w_scale", w_scale, w.shape[0], "channel")
    check_out_dtype(out_dtype)
    if bias is not None:
        if not isinstance(bias, torch.Tensor):
            raise TypeError(f"bias must be a torch.Tensor or None, got {type(bias).__name__}")
        if bias.dtype not in OUT_DTYPES:
            raise TypeError(f"bias has dtype {bias.dtype}; expected bfloat16, float16 or float32")
        if bias.shape != (w.shape[0],):
            raise ValueError(f"bias has shape {tuple(bias.shape)}; expected ({w.shape[0]},) (N)")
        check_same_device("bias", bias, "a", a)


def blocks(n: int) -> int:
    return -(-n // BLOCK)


def check_gemm_a8w8_blockscale_args(a, w, a_scale, w_scale, out_dtype) -> None:
    check_operands(a, w)
    _float32("a_scale", a_scale, a)
    _float32("w_scale", w_scale, a)
    m, k = a.shape
    n = w.shape[0]
    if a_scale.shape != (m, blocks(k)):
        raise ValueError(f"a_scale has shape {tuple(a_scale.shape)}; expected (M, ceil(K/128)) = ({m}, {blocks(k)})")
    if w_scale.shape != (blocks(n), blocks(k)):
        raise ValueError(
            f"w_scale has shape {tuple(w_scale.shape)}; expected (ceil(N/128), ceil(K/128)) = ({blocks(n)}, {blocks(k)})"
        )
    check_out_dtype(out_dtype)
