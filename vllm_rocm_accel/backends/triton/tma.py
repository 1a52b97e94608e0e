"""What the TMA kernels (the persistent FP8 GEMM, the tma attention forward) share: Triton's
host-side tensor descriptors, the largest box edge, and the device rule.

Host-side descriptors (``triton.tools.tensor_descriptor.TensorDescriptor``, Triton >= 3.4) are
encoded on the CPU at each launch and passed as kernel parameters, which a CUDA graph captures
by value; in-kernel descriptors would need ``triton.set_allocator``, per-thread state this
library should not own. Triton's interpreter runs host descriptors too (CPU tests).
"""

from __future__ import annotations

import functools
from typing import Optional

import torch

from .config_data import interpreting

try:
    from triton.tools.tensor_descriptor import TensorDescriptor
except ImportError:  # pragma: no cover - Triton < 3.4: no host-side descriptors, the pointer kernels serve
    TensorDescriptor = None

BOX = 256  # the most elements a TMA box has along one dim


@functools.lru_cache(maxsize=None)
def _capability(device_index: int) -> tuple:
    return torch.cuda.get_device_capability(device_index)


def device_reason(device: torch.device, what: str) -> Optional[str]:
    """Why ``what`` (a TMA kernel) cannot run on ``device`` here, or None: NVIDIA with compute
    capability >= 9.0, or Triton's interpreter; and a Triton with host-side descriptors."""
    if TensorDescriptor is None:
        return "this Triton has no host-side tensor descriptors (triton.tools.tensor_descriptor)"
    if device.type == "cuda":
        if torch.version.hip:
            return f"{what} is written for NVIDIA's TMA (not run on ROCm)"
        index = device.index if device.index is not None else torch.cuda.current_device()
        if _capability(index) < (9, 0):
            return "TMA needs compute capability 9.0 or later"
        return None
    if not interpreting():
        return f"tensors are on {device.type}"
    return None
