"""Test-wide setup. Triton runs on the CPU through its interpreter here (no GPU in CI)."""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before anything imports triton

import pytest  # noqa: E402
import torch  # noqa: E402

from vllm_rocm_accel import settings  # noqa: E402
from aiter_model.fixtures import fake_aiter  # noqa: E402,F401  (the aiter model as sys.modules['aiter'])


@pytest.fixture
def fresh_settings(monkeypatch):
    """Lets a test set env vars with monkeypatch, then re-read them; restores after."""

    def apply(**env):
        for name, value in env.items():
            if value is None:
                monkeypatch.delenv(name, raising=False)
            else:
                monkeypatch.setenv(name, value)
        return settings.refresh()

    yield apply
    monkeypatch.undo()
    settings.refresh()


@pytest.fixture
def seed():
    """A fresh seed per test, printed so a failure can be replayed."""
    s = int.from_bytes(os.urandom(4), "little")
    torch.manual_seed(s)
    print(f"seed={s}")
    return s
