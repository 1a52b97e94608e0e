"""The FP8 GEMM family: scaled matmuls of FP8 activations with FP8 weights.

Custom ops (``torch.ops.rocm_accel.*``), each returning a new (M, N) tensor in ``out_dtype``:

* ``gemm_a8w8(a, w, a_scale, w_scale, bias=None, out_dtype=bfloat16, backend="auto")``:
  ``(a * a_scale) @ (w * w_scale).T + bias`` with ``a_scale`` per tensor (one element) or per
  token ((M, 1) / (M,)) and ``w_scale`` per tensor or per channel ((N, 1) / (N,));
* ``gemm_a8w8_blockscale(a, w, a_scale, w_scale, out_dtype=bfloat16, backend="auto")``:
  1 x 128 groups of a (``a_scale`` (M, ceil(K/128)), row- or column-major) and 128 x 128
  blocks of w (``w_scale`` (ceil(N/128), ceil(K/128))), the DeepSeek-V3 layout.

``a`` is (M, K) and ``w`` (N, K) as vLLM stores linear weights, both in one FP8 format (the
device's: :func:`vllm_rocm_accel.fp8.fp8_dtype`), K contiguous. Arguments are checked
(:mod:`vllm_rocm_accel.checks.gemm`) before any backend runs; M = 0 and K = 0 are answered
here (an empty result, or the bias / zeros) without a kernel.
"""

from __future__ import annotations

from typing import Optional

import torch

from .. import dispatch
from ..backends.aiter import gemm as aiter_gemm
from ..backends.torch import gemm as torch_gemm
from ..checks.gemm import check_gemm_a8w8_args, check_gemm_a8w8_blockscale_args, scale_kind
from ..fake_impls import gemm as fake
from ..registry import register_op
from .stats import count

# --- backends ---------------------------------------------------------------
_triton_mod = None


def _triton():
    global _triton_mod
    if _triton_mod is None:
        from ..backends.triton import gemm as triton_gemm  # imports triton: only on first use

        _triton_mod = triton_gemm
    return _triton_mod


def _out(a, w, out_dtype):
    return torch.empty((a.shape[0], w.shape[0]), dtype=out_dtype, device=a.device)


def _triton_gemm_a8w8(a, w, a_scale, w_scale, a_kind, w_kind, bias, out_dtype):
    out = _out(a, w, out_dtype)
    _triton().gemm_a8w8(out, a, w, a_scale, w_scale, a_kind, w_kind, bias)
    return out


def _triton_blockscale(a, w, a_scale, w_scale, out_dtype):
    out = _out(a, w, out_dtype)
    _triton().gemm_a8w8_blockscale(out, a, w, a_scale, w_scale)
    return out


def _triton_supports_gemm_a8w8(*args):
    return _triton().supports_args_gemm_a8w8(*args)


def _triton_supports_blockscale(*args):
    return _triton().supports_args_blockscale(*args)


def _call_shape(a, w, *rest) -> dispatch.CallShape:
    """Policy rows are M, columns K; the dtype is the output's (the last argument)."""
    return dispatch.CallShape(a.device, rest[-1], a.shape[0], a.shape[1])


_aiter_gate = dispatch.aiter_supported_for("linear")  # vLLM gates AITER's FP8 GEMMs with ..._LINEAR


def _aiter_supported(device: torch.device):
    return _aiter_gate(device) or aiter_gemm.arch_unsupported_reason(device)


def _dispatch(name, aiter_fn, aiter_ok, triton_fn, triton_ok, torch_fn, torch_fast=None):
    return dispatch.OpDispatch(
        name,
        [
            dispatch.Backend("aiter", aiter_fn, _aiter_supported, aiter_ok),
            dispatch.Backend("triton", triton_fn, dispatch.triton_supported, triton_ok),
            dispatch.Backend("torch", torch_fn, dispatch.torch_supported, torch_gemm.supports_args,
                             fast_path=torch_fast),
        ],
        _call_shape,
    )


# the choice key below holds the scale kinds, so the per-tensor fast path may be cached with it
GEMM_A8W8 = _dispatch("gemm_a8w8", aiter_gemm.gemm_a8w8, aiter_gemm.supports_args_gemm_a8w8, _triton_gemm_a8w8,
                      _triton_supports_gemm_a8w8, torch_gemm.gemm_a8w8, torch_gemm.per_tensor_fast_path)
BLOCKSCALE = _dispatch("gemm_a8w8_blockscale", aiter_gemm.gemm_a8w8_blockscale, aiter_gemm.supports_args_blockscale,
                       _triton_blockscale, _triton_supports_blockscale, torch_gemm.gemm_a8w8_blockscale,
                       torch_gemm.blockwise_fast_path)


# --- op implementations -----------------------------------------------------
def _aligned(*tensors) -> bool:
    return all(t.data_ptr() % 16 == 0 for t in tensors)


def _trivial(a, w, bias, out_dtype) -> Optional[torch.Tensor]:
    """The result without a kernel when M = 0 or K = 0 (an empty sum), else None."""
    m, k = a.shape
    n = w.shape[0]
    if m and k and n:
        return None
    if bias is not None and m:
        return bias.to(out_dtype).expand(m, n).clone()
    return torch.zeros((m, n), dtype=out_dtype, device=a.device)


def gemm_a8w8_impl(a: torch.Tensor, w: torch.Tensor, a_scale: torch.Tensor, w_scale: torch.Tensor,
                   bias: Optional[torch.Tensor] = None, out_dtype: torch.dtype = torch.bfloat16,
                   backend: str = "auto") -> torch.Tensor:
    check_gemm_a8w8_args(a, w, a_scale, w_scale, bias, out_dtype)
    trivial = _trivial(a, w, bias, out_dtype)
    if trivial is not None:
        return trivial
    a_kind = scale_kind("a_scale", a_scale, a.shape[0], "token")
    w_kind = scale_kind("w_scale", w_scale, w.shape[0], "channel")
    args = (a, w, a_scale, w_scale, a_kind, w_kind, bias, out_dtype)
    key = None
    if _aligned(a, w) and a.stride(0) % 16 == 0 and w.stride(0) % 16 == 0:
        # everything a backend's supports_args reads (aiter's kernel: dense operands, its size limits)
        key = (backend, a.dtype, a.device, w.shape, a_kind, w_kind, None if bias is None else bias.dtype, out_dtype,
               a_scale.is_contiguous() and w_scale.is_contiguous(), a.is_contiguous(), w.is_contiguous(),
               aiter_gemm.size_reason_gemm_a8w8(a, w) is None, GEMM_A8W8.row_bracket(a.shape[0]))
    impl = GEMM_A8W8.select(backend, args, key)
    count("gemm_a8w8", impl.name)
    return impl.run(*args)


def gemm_a8w8_blockscale_impl(a: torch.Tensor, w: torch.Tensor, a_scale: torch.Tensor, w_scale: torch.Tensor,
                              out_dtype: torch.dtype = torch.bfloat16, backend: str = "auto") -> torch.Tensor:
    check_gemm_a8w8_blockscale_args(a, w, a_scale, w_scale, out_dtype)
    trivial = _trivial(a, w, None, out_dtype)
    if trivial is not None:
        return trivial
    args = (a, w, a_scale, w_scale, out_dtype)
    key = None
    if _aligned(a, w) and a.stride(0) % 16 == 0 and w.stride(0) % 16 == 0:
        # a_scale's layout, not its strides: column-major strides hold M (no predicate reads them)
        key = (backend, a.dtype, a.device, w.shape, out_dtype, a_scale.stride(-1) == 1, w_scale.stride(),
               aiter_gemm.size_reason_blockscale(a, w) is None, BLOCKSCALE.row_bracket(a.shape[0]))
    impl = BLOCKSCALE.select(backend, args, key)
    count("gemm_a8w8_blockscale", impl.name)
    return impl.run(*args)


def example_args(op: str, rows: int, hidden: int, dtype: torch.dtype, device: torch.device) -> tuple:
    """Dispatcher arguments of a typical call (M = rows, N = K = hidden), for doctor."""
    from .. import fp8
    from ..checks.gemm import blocks

    fmt = fp8.fp8_dtype(device)
    a = torch.empty(rows, hidden, dtype=fmt, device=device)
    w = torch.empty(hidden, hidden, dtype=fmt, device=device)
    if op == "gemm_a8w8":
        a_scale = torch.empty(rows, 1, dtype=torch.float32, device=device)
        w_scale = torch.empty(hidden, 1, dtype=torch.float32, device=device)
        return (a, w, a_scale, w_scale, "token", "channel", None, dtype)
    a_scale = torch.empty(rows, blocks(hidden), dtype=torch.float32, device=device)
    w_scale = torch.empty(blocks(hidden), blocks(hidden), dtype=torch.float32, device=device)
    return (a, w, a_scale, w_scale, dtype)


DISPATCHERS = {"gemm_a8w8": GEMM_A8W8, "gemm_a8w8_blockscale": BLOCKSCALE}


def register() -> dict[str, torch._ops.OpOverload]:
    return {
        "gemm_a8w8": register_op("gemm_a8w8", gemm_a8w8_impl, fake.gemm_a8w8),
        "gemm_a8w8_blockscale": register_op("gemm_a8w8_blockscale", gemm_a8w8_blockscale_impl,
                                            fake.gemm_a8w8_blockscale),
    }
