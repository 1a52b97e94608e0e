"""Timing helpers shared by the benchmark scripts (GPU needed).

* :func:`interleaved_per_call`: host-clock time of back-to-back eager calls (host launch cost
  included, or host time only);
* :func:`graph_time_ms`: GPU time of one CUDA-graph replay, cold L2 (no host launch cost: what a
  step replayed from a graph, as vLLM's decode is, pays);
* :func:`copy_gbps`: the device-to-device copy bandwidth the bandwidth-bound benchmarks compare to;
* :func:`append_csv`: append result rows to a CSV, the header only when the file is new.
"""

from __future__ import annotations

import csv
import os
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


def graph_time_ms(fn, flush, reps: int = 20) -> float:
    """Median milliseconds of one replay of a CUDA graph of the zero-arg ``fn``, between CUDA
    events (GPU time: the host's launch cost is not in it), with ``flush`` (a device buffer larger
    than L2, e.g. 256 MB of uint8) zeroed before each replay outside the timed events, so every
    replay starts with a cold L2. ``fn`` runs once eagerly (compiles, allocates) and once on a side
    stream before the capture; whatever it allocates during capture comes from the graph's pool."""
    fn()
    torch.cuda.synchronize()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        fn()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    for i in range(reps):
        flush.zero_()
        starts[i].record()
        g.replay()
        ends[i].record()
    torch.cuda.synchronize()
    times = sorted(a.elapsed_time(b) for a, b in zip(starts, ends))
    return times[len(times) // 2]


def copy_gbps(nbytes: int = 1 << 29, timer=None) -> float:
    """GB/s of one device-to-device copy (``dst.copy_(src)``) of an ``nbytes`` bf16 buffer, bytes
    read + bytes written counted (2 x ``nbytes``). ``timer(fn)`` -> milliseconds; by default
    ``triton.testing.do_bench``'s median (warmup 10 ms, rep 100 ms, L2 flushed before each run).
    The buffers are freed (and the allocator's cache emptied) before returning."""
    if timer is None:
        from triton.testing import do_bench

        def timer(fn):
            return do_bench(fn, warmup=10, rep=100, return_mode="median")
    src = torch.empty(nbytes // 2, dtype=torch.bfloat16, device="cuda").normal_()
    dst = torch.empty_like(src)
    moved = 2 * src.numel() * src.element_size()
    ms = timer(lambda: dst.copy_(src))
    del src, dst
    torch.cuda.empty_cache()
    return moved / (ms * 1e-3) / 1e9


def append_csv(path: str, fields, rows) -> None:
    """Append ``rows`` (dicts keyed by ``fields``) to the CSV at ``path``, creating its folder; the
    header row is written only when the file is new."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    new = not os.path.exists(path)
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        if new:
            writer.writeheader()
        for row in rows:
            writer.writerow(row)
