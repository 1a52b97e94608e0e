"""Sweep the Triton FP8 GEMM tile configs on a GPU and print the best per shape.

    python benchmarks/tune_gemm.py [--ms 1,16,128,1024,4096,8192] [--kernels a8w8,blockscale]

For each (M, N, K) with N, K from the issue-4 targets it times every candidate config of
``backends/triton/gemm.py`` (device time inside a CUDA graph, median) and prints the best,
the runner-up and the default (``configs/gemm.json``) config, so the json can be edited
from measurements. The a8w8 kernel is timed with per-token A and per-channel W scales.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys

import torch
from triton.testing import do_bench_cudagraph

from vllm_rocm_accel import fp8
from vllm_rocm_accel.backends.triton import gemm as tg
from vllm_rocm_accel.checks.gemm import blocks

NK = [(4096, 4096), (14336, 4096), (4096, 14336)]


def a8w8_candidates(m: int):
    """(BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M, num_warps, num_stages, SPLIT_K) to try at M."""
    if m <= 16:
        return list(itertools.product([16], [64, 128], [128, 256], [1], [4], [4], [1, 2, 4, 8]))
    if m <= 128:
        return list(itertools.product([32, 64], [64, 128], [128], [8], [4], [3, 4], [1, 2, 4]))
    if m <= 1024:
        return (list(itertools.product([128], [128, 256], [128], [8], [8], [3, 4], [1, 2]))
                + [(64, 128, 128, 8, 4, 4, 1), (64, 128, 128, 8, 4, 4, 2)])
    return list(itertools.product([128], [128, 256], [64, 128], [8], [8], [3, 4], [1]))


def blockscale_candidates(m: int):
    """(BLOCK_M, BLOCK_N, 128, GROUP_M, num_warps, num_stages) to try at M."""
    if m <= 16:
        return list(itertools.product([16], [64, 128], [128], [1], [4], [3, 4]))
    if m <= 128:
        return list(itertools.product([32, 64], [64, 128], [128], [8], [4], [3, 4]))
    return list(itertools.product([128], [128, 256], [128], [8], [8], [3, 4])) + [(64, 128, 128, 8, 4, 4)]


def _time(fn) -> float:
    try:
        fn()
        torch.cuda.synchronize()
        return do_bench_cudagraph(fn, rep=20, return_mode="median") * 1e3
    except Exception as e:  # out of shared memory / registers: not a candidate
        print(f"    skipped: {type(e).__name__}: {str(e).splitlines()[0][:120]}")
        return float("inf")


def tune(kernel: str, ms, nks):
    fmt = fp8.fp8_dtype(torch.device("cuda"))
    for n, k in nks:
        for m in ms:
            a = torch.randn(m, k, device="cuda").to(fmt)
            w = torch.randn(n, k, device="cuda").to(fmt)
            out = torch.empty(m, n, dtype=torch.bfloat16, device="cuda")
            if kernel == "a8w8":
                sa = torch.rand(m, 1, device="cuda") + 0.5
                sw = torch.rand(n, 1, device="cuda") + 0.5
                cands = a8w8_candidates(m)
                default = tg.gemm_params(a.device, m, n, k)
                run = lambda p: tg.gemm_a8w8(out, a, w, sa, sw, "token", "channel", None, params=p)  # noqa: E731
            else:
                sa = torch.rand(m, blocks(k), device="cuda") + 0.5
                sw = torch.rand(blocks(n), blocks(k), device="cuda") + 0.5
                cands = blockscale_candidates(m)
                default = tg.blockscale_params(a.device, m, n, k)
                run = lambda p: tg.gemm_a8w8_blockscale(out, a, w, sa, sw, params=p)  # noqa: E731
            results = sorted((_time(lambda: run(c)), c) for c in cands)
            d = _time(lambda: run(default))
            flops = 2 * m * n * k
            best_us, best = results[0]
            print(f"{kernel} M={m} N={n} K={k}: best {best_us:.1f} us ({flops / best_us / 1e6:.0f} TFLOP/s) {best}; "
                  f"2nd {results[1][0]:.1f} {results[1][1]}; default {d:.1f} us {default}", flush=True)
            del a, w, out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ms", default="1,16,128,1024,4096,8192")
    p.add_argument("--kernels", default="a8w8,blockscale")
    p.add_argument("--nk", default=";".join(f"{n},{k}" for n, k in NK))
    args = p.parse_args(argv)
    print("command:", " ".join([os.path.basename(sys.executable)] + sys.argv), torch.cuda.get_device_name())
    nks = [tuple(int(v) for v in s.split(",")) for s in args.nk.split(";")]
    for kernel in args.kernels.split(","):
        tune(kernel, [int(m) for m in args.ms.split(",")], nks)
    return 0


if __name__ == "__main__":
    sys.exit(main())
