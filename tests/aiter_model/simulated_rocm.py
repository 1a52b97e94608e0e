"""A ROCm GPU with AMD's aiter, as far as our platform predicates can tell, for CPU tests: the
install record, the AITER flags, and :func:`simulate_rocm`, which fakes ``platform`` with them."""

from __future__ import annotations

from vllm_rocm_accel import platform, settings

from . import wheel

AMD_AITER = platform.AiterInstall(True, True, "/opt/venv/site-packages/aiter", "amd-aiter", wheel.AITER_VERSION,
                                  "AMD aiter (amd-aiter) at /opt/venv/site-packages/aiter")
AITER_FLAGS = [settings.MASTER_FLAG] + [f.flag for f in settings.FEATURES] + list(settings.RENAMED_FLAGS)


def const(value):
    """A stand-in for a cached platform function that returns ``value`` (with the ``cache_clear``
    that platform.clear_caches(), run by settings.refresh, calls)."""
    def fake(*args, **kwargs):
        return value

    fake.cache_clear = lambda: None
    return fake


def simulate_rocm(mp, arch: str = "gfx942", kind: str = "rocm", install=AMD_AITER, **env) -> None:
    """With MonkeyPatch ``mp``: the platform reads as ``kind`` / ``arch`` with ``install``, every
    AITER flag unset, then ``env`` set. The caller refreshes settings after its own patches."""
    mp.setattr(platform, "platform_kind", const(kind))
    mp.setattr(platform, "device_arch", const(arch))
    mp.setattr(platform, "aiter_install", const(install))
    for name in AITER_FLAGS:
        mp.delenv(name, raising=False)
    for name, value in env.items():
        mp.setenv(name, value)
