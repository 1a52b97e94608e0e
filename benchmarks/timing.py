"""Timing helpers shared by the benchmark scripts (GPU needed)."""

from __future__ import annotations

import time

import torch


def interleaved_per_call(fns: dict, n: int, trials: int, *, include_device: bool, warmup: int = 0) -> dict:
    """Seconds per call for each zero-arg callable: the median over ``trials`` runs of ``n``
    back-to-back calls, the candidates interleaved within each trial so host-clock drift hits
    all alike. ``include_device``: synchronize before stopping the clock (wall time of the work
    issued back to back); otherwise host time only."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples = {name: [] for name in fns}
    for _ in range(trials):
        for name, fn in fns.items():
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            if include_device:
                torch.cuda.synchronize()
            samples[name].append((time.perf_counter() - t0) / n)
    torch.cuda.synchronize()
    return {name: sorted(v)[len(v) // 2] for name, v in samples.items()}
