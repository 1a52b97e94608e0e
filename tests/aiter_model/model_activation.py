"""A torch model of amd-aiter 0.1.7's gated activations, installed as ``aiter`` in tests only.

``silu_and_mul(out, input)``, ``gelu_and_mul(out, input)``, ``gelu_tanh_and_mul(out, input)``
mirror the wheel's signatures (``aiter/ops/activation.py``) and enforce the contract of the
HIP kernel behind them (``csrc/kernels/activation_kernels.cu``, ``act_and_mul_kernel`` and
``LAUNCH_ACTIVATION_GATE_KERNEL``), raising :class:`~aiter_model.model.AiterContractError`
where the real kernel would fail or silently touch the wrong memory:

* ``input`` is float16/bfloat16 (``AITER_DISPATCH_FLOATING16_TYPES``), any rank, with an
  even last dim 2d, and **contiguous**: the kernel reads row ``t`` at ``input + t * 2d`` and
  never looks at strides;
* ``out`` is contiguous, of ``input``'s dtype (cast to the input's element type), shaped
  ``input.shape[:-1] + (d,)``, on ``input``'s device, and shares no memory with ``input``
  (both are ``__restrict__``);
* with ``vec = min(8, next_pow2(d // 64))`` elements a thread, ``d % vec == 0``: each
  thread stores ``vec`` outputs with no bound check, so any other d writes past the row;
  ``input`` is aligned to ``vec * element_size`` bytes for the vector loads;
* at least one row (``dim3 grid(num_tokens)`` of 0 is an invalid launch).

Numerics: the activation in float32 (``silu = x / (1 + exp(-x))``, ``gelu`` with erf, the
tanh form as PyTorch's), times ``float(up)``, rounded **once** to the dtype.
Every call is recorded in ``model.CALLS`` before it is checked.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .model import DTYPES, _check_no_overlap, _record, _require

__all__ = ["silu_and_mul", "gelu_and_mul", "gelu_tanh_and_mul"]
MODELLED = tuple(__all__)
MAX_VEC = 8  # activation_kernels.cu: max_vec_size


def kernel_vec_size(d: int) -> int:
    """``LAUNCH_ACTIVATION_GATE_KERNEL``: min(max_vec_size, nextPow2(d / 64)), nextPow2(0 or 1) = 1."""
    n = d // 64
    return min(MAX_VEC, 1 if n <= 1 else 1 << (n - 1).bit_length())


def _check(fn: str, out, input) -> int:
    _require(isinstance(input, Tensor), fn, f"input must be a Tensor, got {type(input).__name__}")
    _require(isinstance(out, Tensor), fn, f"out must be a Tensor, got {type(out).__name__}")
    _require(input.dtype in DTYPES, fn, f"input has dtype {input.dtype}; the kernel dispatches float16 and bfloat16 only")
    _require(input.dim() >= 1 and input.shape[-1] % 2 == 0 and input.shape[-1] > 0, fn,
             f"input must be (..., 2 * d) with d > 0, got shape {tuple(input.shape)}")
    _require(input.is_contiguous(), fn,
             f"input (shape {tuple(input.shape)}, stride {input.stride()}) is not contiguous; the kernel reads row t "
             "at input + t * 2d")
    d = input.shape[-1] // 2
    want = tuple(input.shape[:-1]) + (d,)
    _require(tuple(out.shape) == want, fn, f"out has shape {tuple(out.shape)}, expected {want}")
    _require(out.dtype == input.dtype, fn, f"out has dtype {out.dtype}, input has {input.dtype} (written as the input type)")
    _require(out.device == input.device, fn, f"out is on {out.device}, input on {input.device}")
    _require(out.is_contiguous(), fn,
             f"out (shape {tuple(out.shape)}, stride {out.stride()}) is not contiguous; the kernel writes out + t * d")
    _require(input.numel() > 0, fn, "no rows: a launch of zero blocks is an invalid configuration")
    vec = kernel_vec_size(d)
    _require(d % vec == 0, fn, f"d = {d} is not a multiple of the kernel's vector width {vec}; "
             "its unguarded stores would write past the row")
    _require(input.data_ptr() % (vec * input.element_size()) == 0, fn,
             f"input is not aligned to the {vec * input.element_size()}-byte vector loads")
    _check_no_overlap(fn, {"out": out}, {"input": input})
    return d


def _act_and_mul(out: Tensor, input: Tensor, d: int, act) -> None:
    g = input[..., :d].float()
    u = input[..., d:].float()
    out.copy_((act(g) * u).to(out.dtype))


def _silu(g: Tensor) -> Tensor:
    return g / (1.0 + torch.exp(-g))


def _gelu(g: Tensor) -> Tensor:
    return g * 0.5 * (1.0 + torch.erf(g * math.sqrt(0.5)))


def _gelu_tanh(g: Tensor) -> Tensor:
    beta = math.sqrt(2.0) * (2.0 / math.sqrt(math.pi)) * 0.5
    return 0.5 * g * (1.0 + torch.tanh(beta * (g + 0.044715 * g * g * g)))


def silu_and_mul(out: Tensor, input: Tensor) -> None:
    _record("silu_and_mul", out=out, input=input)
    _act_and_mul(out, input, _check("silu_and_mul", out, input), _silu)


def gelu_and_mul(out: Tensor, input: Tensor) -> None:
    _record("gelu_and_mul", out=out, input=input)
    _act_and_mul(out, input, _check("gelu_and_mul", out, input), _gelu)


def gelu_tanh_and_mul(out: Tensor, input: Tensor) -> None:
    _record("gelu_tanh_and_mul", out=out, input=input)
    _act_and_mul(out, input, _check("gelu_tanh_and_mul", out, input), _gelu_tanh)
