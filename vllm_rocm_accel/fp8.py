"""FP8 formats: which one each arch uses, and the one set of constants every backend shares.

* ``float8_e4m3fnuz`` on gfx94x (MI300: gfx942): largest finite value 240.
* ``float8_e4m3fn`` everywhere else (gfx950 = MI350, CUDA, CPU; gfx90a, which has no FP8
  hardware, follows vLLM and emulates ``e4m3fn``): largest finite value 448.

Every quantizing op clamps to the format's own largest finite value (``fp8_max``): 240 for
``e4m3fnuz`` as AITER does, not the 224 that vLLM's native ROCm path uses. Keeping one value
per format in every backend means switching backend changes quantized values by rounding
at most.

Scales are float32 and follow one rule in every backend and every granularity::

    scale = max(amax, AMAX_FLOOR) / fp8_max        # amax: max |x| over the tensor/row/group
    q     = clamp(x / scale, -fp8_max, fp8_max)    # in float32, then rounded to the format

``AMAX_FLOOR`` keeps an all-zero tensor, row or group finite: its scale is
``AMAX_FLOOR / fp8_max`` and its values quantize to 0, never NaN.
"""

from __future__ import annotations

from typing import Optional, Union

import torch

FNUZ = torch.float8_e4m3fnuz
FN = torch.float8_e4m3fn
FP8_DTYPES = (FN, FNUZ)
AMAX_FLOOR = 1e-10
_MAX = {FN: 448.0, FNUZ: 240.0}


def fp8_max(dtype: torch.dtype) -> float:
    """The largest finite value of an FP8 format we quantize to."""
    try:
        return _MAX[dtype]
    except KeyError:
        raise ValueError(f"dtype {dtype} is not an FP8 format we support (float8_e4m3fn, float8_e4m3fnuz)") from None


def arch_uses_fnuz(arch: str) -> bool:
    """gfx94x (MI300 family) use the fnuz encoding; gfx950 and everything else the OCP one."""
    return arch.startswith("gfx94")


def fp8_dtype(device: Optional[Union[torch.device, str, int]] = None) -> torch.dtype:
    """The FP8 format of ``device`` (default: the current GPU, or the CPU without one)."""
    from . import platform

    if isinstance(device, (str, int)):
        device = torch.device(device) if isinstance(device, str) else torch.device("cuda", device)
    if device is not None and device.type == "cpu":
        return FN
    if platform.platform_kind() != "rocm":
        return FN
    return FNUZ if arch_uses_fnuz(platform.device_arch(platform.device_index(device))) else FN


def resolve(dtype: Optional[torch.dtype], device: torch.device) -> torch.dtype:
    """``dtype`` checked to be an FP8 format, or the device's own when None."""
    if dtype is None:
        return fp8_dtype(device)
    if dtype not in FP8_DTYPES:
        raise ValueError(f"dtype must be float8_e4m3fn or float8_e4m3fnuz (or None for the device's), got {dtype}")
    return dtype
