"""Launch a Triton kernel again without paying Triton's per-call binding cost.

``kernel[grid](...)`` binds and specializes every argument on each call before its C
launcher runs: 20-60 us of host time on the H100 host for our kernels (the RoPE kernel,
with 22 runtime arguments, costs ~60 us), which is most of a small call. Triton's NVIDIA
backend specializes a compiled kernel only on

* each tensor argument's dtype and whether its data pointer is 16-byte aligned,
* each int argument's width class (int32 / int64 / uint64), whether it equals 1, and
  whether it is divisible by 16,
* the type of every other argument (bool, float, None), the constexprs and the launch
  options.

:class:`FastLauncher` keys a call on exactly those properties (plus the device) and
launches the ``CompiledKernel`` Triton returned for the first call with that key
directly; any other call takes Triton's ordinary path. A key never says less than Triton
looks at, so a reused kernel is one Triton itself would have picked.

Off: under ``TRITON_INTERPRET=1``, on Tritons without ``CompiledKernel.__getitem__``,
and on ROCm, where Triton also specializes tensors on whether their storage lies within
2 GB (buffer ops) -- a property this key does not track, so ROCm always takes the
ordinary path (correct, not measured there).
"""

from __future__ import annotations

from typing import Sequence

import torch

from .config_data import interpreting

try:
    from triton.compiler import CompiledKernel as _CompiledKernel
except ImportError:  # pragma: no cover - old Triton
    _CompiledKernel = None

_INT32 = 2**31
_INT64 = 2**63


def enabled() -> bool:
    """Whether cached CompiledKernels may be launched directly in this process."""
    return (
        _CompiledKernel is not None
        and hasattr(_CompiledKernel, "__getitem__")
        and torch.version.hip is None
        and not interpreting()
    )


def spec_key(args: Sequence) -> tuple:
    """The properties of ``args`` that Triton's NVIDIA backend specializes a kernel on, flat:
    a tensor gives (dtype, aligned), an int one code (width class, == 1, divisible by 16),
    anything else its type. A dtype starts only a tensor's pair, so keys never alias."""
    key = []
    add = key.append
    for a in args:
        t = type(a)
        if t is int:
            add((0 if -_INT32 <= a < _INT32 else 4 if -_INT64 <= a < _INT64 else 8) + (a == 1) * 2 + (not a & 15))
        elif t is bool or a is None or t is float:
            add(t)
        elif isinstance(a, torch.Tensor):
            add(a.dtype)
            add(not a.data_ptr() & 15)
        elif isinstance(a, int):  # an int subclass (IntEnum, numpy ints are not ints): as Triton, by value
            add((0 if -_INT32 <= a < _INT32 else 4 if -_INT64 <= a < _INT64 else 8) + (a == 1) * 2 + (not a & 15))
        else:
            add(t)
    return tuple(key)


class FastLauncher:
    """``launch(grid, args, constexprs, num_warps, num_stages=None, maxnreg=None)`` ==
    ``kernel[grid](*args, *constexprs, num_warps=..., num_stages=..., maxnreg=...)`` (num_stages and
    maxnreg, the per-thread register cap: Triton's defaults when None).

    ``args`` are the runtime arguments in the kernel's order and ``constexprs`` the values of
    the trailing ``tl.constexpr`` parameters, in order.
    """

    def __init__(self, kernel):
        self.kernel = kernel
        self._compiled: dict[tuple, object] = {}
        self._on = enabled()

    def launch(self, grid: tuple, args: tuple, constexprs: tuple, num_warps: int, num_stages=None,
               maxnreg=None) -> None:
        options = {"num_warps": num_warps}
        if num_stages is not None:
            options["num_stages"] = num_stages
        if maxnreg is not None:
            options["maxnreg"] = maxnreg
        if not self._on:
            self.kernel[grid](*args, *constexprs, **options)
            return
        key = (torch.cuda.current_device(), constexprs, num_warps, num_stages, maxnreg, spec_key(args))
        compiled = self._compiled.get(key)
        if compiled is not None:
            compiled[grid + (1,) * (3 - len(grid))](*args, *constexprs)
            return
        compiled = self.kernel[grid](*args, *constexprs, **options)
        if isinstance(compiled, _CompiledKernel):
            self._compiled[key] = compiled

    def cached(self) -> int:
        """How many compiled kernels are held (for tests)."""
        return len(self._compiled)

    def clear(self) -> None:
        self._compiled.clear()
        self._on = enabled()
