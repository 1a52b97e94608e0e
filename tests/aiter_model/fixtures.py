"""The ``fake_aiter`` fixture: the torch model of aiter as ``sys.modules["aiter"]`` for one test."""

from __future__ import annotations

import sys

import pytest

from . import model


@pytest.fixture
def fake_aiter(monkeypatch):
    """Install :mod:`aiter_model.model` as ``aiter`` (restored afterwards); yields it, calls cleared."""
    model.CALLS.clear()
    monkeypatch.setitem(sys.modules, "aiter", model)
    yield model
    model.CALLS.clear()
