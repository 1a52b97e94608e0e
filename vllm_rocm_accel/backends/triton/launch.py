"""Launch ``@triton.jit`` kernels with less host time than ``kernel[grid](...)``.

``JITFunction.run`` binds and specializes every argument on every call (about
20 us of host time for a 16-argument kernel on an H100 host; see
docs/performance.md). After the first call of a given specialization we keep
the ``CompiledKernel`` it returned and launch that directly. The cache key holds
a superset of what Triton specializes on (each tensor's dtype and 16-byte
alignment; each int's equality to 1, divisibility by 16 and 32-bit range; the
constexprs and num_warps; the device), so a cached kernel is only reused for
arguments Triton itself would have sent to that same compiled kernel.

Under ``TRITON_INTERPRET=1``, or on a Triton without ``CompiledKernel.__getitem__``,
every launch takes the ordinary path.
"""

from __future__ import annotations

import os

import torch

try:
    from triton.compiler import CompiledKernel
except ImportError:  # pragma: no cover - very old Triton
    CompiledKernel = None

_INT32 = (-(2**31), 2**31)
_cache: dict[tuple, object] = {}


def fast_path_enabled() -> bool:
    return (
        CompiledKernel is not None
        and hasattr(CompiledKernel, "__getitem__")
        and os.environ.get("TRITON_INTERPRET", "0").lower() not in ("1", "true", "on", "yes")
        and os.environ.get("VLLM_ROCM_ACCEL_TRITON_FAST_LAUNCH", "1") != "0"
    )


_FAST = fast_path_enabled()


def _spec(a):
    if isinstance(a, torch.Tensor):
        return a.dtype, a.data_ptr() % 16 == 0
    if type(a) is int:
        return a == 1, a % 16 == 0, _INT32[0] <= a < _INT32[1]
    return type(a)


def launch(kernel, grid: tuple, args: tuple, constexprs: tuple, num_warps: int) -> None:
    """``kernel[grid](*args, *constexprs, num_warps=num_warps)``, from a cache when possible.

    ``args`` are the runtime arguments in signature order, ``constexprs`` the values of
    the remaining (constexpr) parameters in order.
    """
    if not _FAST:
        kernel[grid](*args, *constexprs, num_warps=num_warps)
        return
    key = (kernel, args[0].device.index, num_warps, constexprs, *[_spec(a) for a in args])
    compiled = _cache.get(key)
    if compiled is not None:
        compiled[grid + (1,) * (3 - len(grid))](*args, *constexprs)  # the runner reads grid[0..2]
        return
    compiled = kernel[grid](*args, *constexprs, num_warps=num_warps)
    if CompiledKernel is not None and isinstance(compiled, CompiledKernel):
        _cache[key] = compiled


def clear_cache() -> None:
    _cache.clear()
