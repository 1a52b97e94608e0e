"""FastLauncher's key: everything Triton's NVIDIA backend specializes on, and its off switches (CPU)."""

import pytest
import torch

from vllm_rocm_accel.backends.triton import fast_launch


def test_key_separates_what_triton_specializes_on():
    buf = torch.zeros(64, dtype=torch.float16)
    key = fast_launch.spec_key
    assert key((buf,)) != key((buf[1:],))  # 16-byte alignment
    assert key((buf,)) != key((buf.float(),))  # dtype
    assert key((buf[8:],)) == key((buf,))  # both aligned
    assert key((1,)) != key((2,)) != key((16,))  # == 1, divisibility by 16
    assert key((3,)) == key((5,)) and key((16,)) == key((32,))
    assert key((2**31 - 16,)) != key((2**31,)) != key((2**63,))  # int32 / int64 / uint64
    assert key((-16,)) == key((16,))
    assert key((True,)) == key((False,)) != key((1,))  # bools are i1, not ints
    assert key((0.5,)) == key((2.0,)) != key((None,))


def test_off_under_the_interpreter_and_on_rocm(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert not fast_launch.enabled()
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    monkeypatch.setattr(torch.version, "hip", "6.4.0")
    assert not fast_launch.enabled(), "ROCm specializes on storage size too: never cache there"


def test_disabled_launcher_calls_the_kernel_each_time():
    calls = []

    class Kernel:
        def __getitem__(self, grid):
            return lambda *args, num_warps: calls.append((grid, args, num_warps))

    launcher = fast_launch.FastLauncher(Kernel())
    launcher._on = False
    launcher.launch((3, 2), (1, 2), (True, 64), 4)
    launcher.launch((3, 2), (1, 2), (True, 64), 4)
    assert calls == [((3, 2), (1, 2, True, 64), 4)] * 2 and launcher.cached() == 0


def test_launch_options_reach_the_kernel_only_when_given():
    """num_stages and maxnreg go to the kernel call only when set (Triton's defaults otherwise)."""
    calls = []

    class Kernel:
        def __getitem__(self, grid):
            return lambda *args, **options: calls.append(options)

    launcher = fast_launch.FastLauncher(Kernel())
    launcher._on = False
    launcher.launch((1,), (), (), 4)
    launcher.launch((1,), (), (), 8, num_stages=2)
    launcher.launch((1,), (), (), 4, maxnreg=56)
    assert calls == [{"num_warps": 4}, {"num_warps": 8, "num_stages": 2}, {"num_warps": 4, "maxnreg": 56}]
