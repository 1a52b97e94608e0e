"""Adapters to AMD's AITER. Thin: layout conversion only, aiter imported lazily.

Never imported unless an aiter backend was selected, which needs ROCm gfx9,
AMD's aiter and the feature's ``VLLM_ROCM_USE_AITER*`` flags. Not run on AMD
hardware by us: checked against the amd-aiter wheel's signatures and a torch
model of the functions' contracts (tests/aiter_model).
"""
from __future__ import annotations

from typing import Optional

import torch

from ... import platform


def device_arch(device: torch.device) -> Optional[str]:
    """The gfx arch of ``device``; None off CUDA/HIP (no GPU to ask: the platform gate refuses
    such devices). Each adapter binds it as ``_device_arch``, the name tests replace."""
    if device.type != "cuda":
        return None
    return platform.device_arch(platform.device_index(device))


def arch_reason(arch: Optional[str], archs: tuple[str, ...], need: str) -> Optional[str]:
    """None when ``arch`` is unknown (None) or one of ``archs``, else ``need`` (with ``{archs}``
    standing for them, slash-joined) followed by the device's arch."""
    if arch is not None and arch not in archs:
        return f"{need.format(archs='/'.join(archs))}, device is {arch}"
    return None
