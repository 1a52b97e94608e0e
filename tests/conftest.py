"""Test-wide setup. Triton runs on the CPU through its interpreter here (no GPU in CI)."""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before anything imports triton

import pytest  # noqa: E402

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
    """A fresh seed per test, printed so a failure can be replayed (TEST_SEED=<seed> replays it)."""
    s = int(os.environ["TEST_SEED"]) if os.environ.get("TEST_SEED") else int.from_bytes(os.urandom(4), "little")
    torch.manual_seed(s)
    print(f"seed={s}")
    return s


@pytest.fixture(autouse=True)
def _interpreter_rounds_bf16_like_gpu(monkeypatch):
    """Under TRITON_INTERPRET the interpreter truncates fp32->bf16; GPUs round to nearest even."""
    if os.environ.get("TRITON_INTERPRET") == "1":
        from helpers import round_bf16_like_gpu_in_interpreter, widen_bf16_dot_in_interpreter

        round_bf16_like_gpu_in_interpreter(monkeypatch)
        widen_bf16_dot_in_interpreter(monkeypatch)
    yield
