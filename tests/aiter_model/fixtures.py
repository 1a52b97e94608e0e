"""The ``fake_aiter`` fixture: the torch models of aiter as ``sys.modules["aiter"]`` for one test.

The installed module gathers the public functions of every family model: :mod:`.model`
(norm, plus the shared call log ``CALLS``) and ``model_<family>`` modules beside it.
"""

from __future__ import annotations

import importlib
import sys
import types

import pytest
import torch

from . import model

FAMILY_MODELS = ("model_activation", "model_rope", "model_quant", "model_fused_quant", "model_gemm", "model_attention",
                 "model_paged_attention", "model_kv_cache")


def build_fake_aiter() -> types.ModuleType:
    fake = types.ModuleType("aiter")
    fake.__doc__ = "torch models of amd-aiter's functions (tests only)"
    for source in [model] + [importlib.import_module(f"{__package__}.{m}") for m in FAMILY_MODELS
                             if importlib.util.find_spec(f"{__package__}.{m}") is not None]:
        for name in getattr(source, "__all__", None) or [n for n in vars(source) if not n.startswith("_")]:
            setattr(fake, name, getattr(source, name))
    fake.CALLS = model.CALLS  # one call log for every family
    return fake


@pytest.fixture
def fake_aiter(monkeypatch):
    """Install the aiter models as ``aiter`` (restored afterwards); yields the module, calls cleared."""
    model.CALLS.clear()
    monkeypatch.setitem(sys.modules, "aiter", build_fake_aiter())
    yield sys.modules["aiter"]
    model.CALLS.clear()


def arch_setter(monkeypatch, fake_aiter, adapter):
    """For an ``on_arch`` fixture: ``apply(arch="gfx942")`` makes ``adapter`` (its ``_device_arch``) and
    the attention models (``model_attention.GFX``) see that gfx9 device, tensors staying on the CPU,
    and returns ``fake_aiter``. Applied once with gfx942 before it is returned."""
    from . import model_attention

    def apply(arch="gfx942"):
        monkeypatch.setattr(adapter, "_device_arch", lambda device: arch)
        monkeypatch.setitem(model_attention.GFX, "name", arch)
        return fake_aiter

    apply()
    return apply


def assert_gfx9_arch_guard(monkeypatch, adapter) -> None:
    """``adapter.arch_unsupported_reason`` accepts gfx90a/gfx942/gfx950, names them when it refuses
    gfx1100, and does not guard CPU tensors (the device's arch comes from a faked ``platform``)."""
    from vllm_rocm_accel import platform

    arch = {"name": "gfx942"}
    monkeypatch.setattr(platform, "device_arch", lambda index=0: arch["name"])
    monkeypatch.setattr(platform, "device_index", lambda device: 0)
    dev = torch.device("cuda", 0)
    for name in ("gfx90a", "gfx942", "gfx950"):
        arch["name"] = name
        assert adapter.arch_unsupported_reason(dev) is None
    arch["name"] = "gfx1100"
    assert "gfx90a/gfx942/gfx950" in adapter.arch_unsupported_reason(dev)
    assert adapter.arch_unsupported_reason(torch.device("cpu")) is None


def call_names() -> list[str]:
    """The names of the aiter functions the models were called through, in order."""
    return [c.name for c in model.CALLS]
