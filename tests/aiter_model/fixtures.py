"""The ``fake_aiter`` fixture: the torch models of aiter as ``sys.modules["aiter"]`` for one test.

The installed module gathers the public functions of every family model: :mod:`.model`
(norm, plus the shared call log ``CALLS``) and ``model_<family>`` modules beside it.
"""

from __future__ import annotations

import importlib
import sys
import types

import pytest

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
