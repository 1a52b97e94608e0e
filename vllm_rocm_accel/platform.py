"""Where we run: platform (rocm / cuda / cpu), per-device arch, and AMD's aiter.

Nothing here runs a subprocess (no rocminfo) and nothing imports aiter: importing
AMD's aiter starts JIT builds that take minutes. Results are cached; tests that
simulate other hardware call :func:`clear_caches` (``settings.refresh`` does too).
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import os
from dataclasses import dataclass
from typing import Optional

import torch

from . import settings

GFX9_ARCHS = frozenset({"gfx90a", "gfx942", "gfx950"})


@functools.lru_cache(maxsize=None)
def platform_kind() -> str:
    """``rocm``, ``cuda`` or ``cpu``: what ``torch.cuda`` drives, if any."""
    if getattr(torch.version, "hip", None) and torch.cuda.is_available():
        return "rocm"
    if getattr(torch.version, "cuda", None) and torch.cuda.is_available():
        return "cuda"
    return "cpu"


def normalize_gcn_arch(name: str) -> str:
    """``gfx942:sramecc+:xnack-`` -> ``gfx942``."""
    return name.split(":", 1)[0].strip().lower()


@functools.lru_cache(maxsize=None)
def device_arch(index: int = 0) -> str:
    """The arch of one GPU: ``gfx942`` on ROCm, ``sm_90`` on CUDA, ``cpu`` without one."""
    kind = platform_kind()
    if kind == "cpu":
        return "cpu"
    props = torch.cuda.get_device_properties(index)
    if kind == "rocm":
        return normalize_gcn_arch(props.gcnArchName)
    return f"sm_{props.major}{props.minor}"


def device_index(device: Optional[torch.device]) -> int:
    if device is None or device.index is None:
        return torch.cuda.current_device() if platform_kind() != "cpu" else 0
    return device.index


def is_gfx9(index: int = 0) -> bool:
    return platform_kind() == "rocm" and device_arch(index) in GFX9_ARCHS


@dataclass(frozen=True)
class AiterInstall:
    """What ``import aiter`` would load, found without importing it."""

    found: bool  # some top-level ``aiter`` package is importable
    is_amd: bool  # and it is AMD's AITER
    location: Optional[str]
    distribution: Optional[str]
    version: Optional[str]
    why: str


@functools.lru_cache(maxsize=None)
def aiter_install() -> AiterInstall:
    """Find ``aiter`` and tell AMD's AITER from PyPI's unrelated ``aiter``.

    ``find_spec`` on a top-level name does not execute the package. AMD's is
    recognised by its distribution name (``amd-aiter``, or ``aiter`` when built
    from source) together with its layout (``jit/core.py`` and ``ops/``), which
    the async-iterator package on PyPI does not have.
    """
    spec = importlib.util.find_spec("aiter")
    if spec is None or not spec.submodule_search_locations:
        where = spec.origin if spec is not None else None
        why = "no package named aiter is installed" if spec is None else f"aiter at {where} is a module, not AMD's package"
        return AiterInstall(spec is not None, False, where, None, None, why)
    location = list(spec.submodule_search_locations)[0]
    dists = importlib.metadata.packages_distributions().get("aiter", [])
    dist = dists[0] if dists else None
    version = None
    if dist is not None:
        try:
            version = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            version = None
    amd_layout = os.path.isfile(os.path.join(location, "jit", "core.py")) and os.path.isdir(
        os.path.join(location, "ops")
    )
    if amd_layout:
        return AiterInstall(True, True, location, dist, version, f"AMD aiter ({dist or 'source build'}) at {location}")
    return AiterInstall(
        True, False, location, dist, version,
        f"the aiter at {location} ({dist or 'unknown distribution'}) is not AMD's AITER "
        "(PyPI's 'aiter' is an async-iterator library; install amd-aiter)",
    )


def aiter_unavailable_reason(index: int = 0) -> Optional[str]:
    """None when AMD aiter can run on this device, else why not."""
    kind = platform_kind()
    if kind != "rocm":
        return f"platform is {kind}, aiter needs ROCm"
    arch = device_arch(index)
    if arch not in GFX9_ARCHS:
        return f"arch {arch} is not gfx9 (aiter needs one of {', '.join(sorted(GFX9_ARCHS))})"
    install = aiter_install()
    if not install.is_amd:
        return install.why
    return None


def aiter_supported(index: int = 0) -> bool:
    """ROCm + gfx9 + AMD's aiter installed (flags not considered)."""
    return aiter_unavailable_reason(index) is None


def if_aiter_supported(func):
    """Run ``func`` only on ROCm + gfx9 + AMD aiter; otherwise return None (as vLLM's)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        if aiter_supported():
            return func(*args, **kwargs)
        return None

    return wrapper


def triton_unavailable_reason(device: torch.device) -> Optional[str]:
    """None when our Triton kernels can run on ``device``, else why not."""
    if importlib.util.find_spec("triton") is None:
        return "triton is not installed"
    if device.type == "cuda":
        return None
    if device.type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1":
        return None
    return f"device {device.type} has no Triton target (set TRITON_INTERPRET=1 to interpret on CPU)"


_CACHED = (platform_kind, device_arch, aiter_install)  # the originals, even if a test patches the names


def clear_caches() -> None:
    for fn in _CACHED:
        fn.cache_clear()


settings.on_refresh(clear_caches)
