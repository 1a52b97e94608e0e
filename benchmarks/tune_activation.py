"""Sweep the Triton gated-activation launch parameters on this GPU (times inside CUDA graphs, so
host noise stays out) and print the best (block_n, rows_per_program, num_warps) per width.

    python benchmarks/tune_activation.py [--d 14336,11008,4096] [--tokens 64,1024,8192,32768]

The winners go into vllm_rocm_accel/backends/triton/configs/activation.json by hand, with the
command and the GPU in docs/performance.md.
"""

from __future__ import annotations

import argparse
import itertools

import torch
from triton.testing import do_bench_cudagraph

from vllm_rocm_accel.backends.triton import activation as ta
from vllm_rocm_accel.inputs_activation import act_and_mul_inputs


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--d", default="14336,11008,4096")
    p.add_argument("--tokens", default="64,1024,8192,32768")
    p.add_argument("--block", default="512,1024,2048,4096")
    p.add_argument("--rows", default="1,2,4")
    p.add_argument("--warps", default="2,4,8,16")
    p.add_argument("--dtype", default="bfloat16")
    a = p.parse_args(argv)
    dtype = getattr(torch, a.dtype)
    print(torch.cuda.get_device_name(), a.dtype)
    original = ta.launch_params
    for d in map(int, a.d.split(",")):
        cur = original("cuda", d, dtype)
        totals = {}
        tokens = list(map(int, a.tokens.split(",")))
        for t in tokens:
            x = act_and_mul_inputs(t, d, dtype, "cuda")
            out = torch.empty(t, d, dtype=dtype, device="cuda")
            for block, rows, warps in itertools.product(
                    map(int, a.block.split(",")), map(int, a.rows.split(",")), map(int, a.warps.split(","))):
                if block * rows // (32 * warps) > 64 or block * rows < 32 * warps:
                    continue  # more than 64 or fewer than 1 element per thread and tensor
                ta.launch_params = lambda *args, _c=(block, rows, warps): _c
                try:
                    ta.act_and_mul(out, x, "silu")
                    torch.cuda.synchronize()
                    us = do_bench_cudagraph(lambda: ta.act_and_mul(out, x, "silu"), rep=40,
                                            return_mode="median") * 1e3
                except Exception as e:  # e.g. out of resources
                    print(f"  d={d} {block}/{rows}/{warps}: {type(e).__name__}")
                    continue
                finally:
                    ta.launch_params = original
                totals.setdefault((block, rows, warps), {})[t] = us
        base = totals.get(cur)
        full = {c: v for c, v in totals.items() if len(v) == len(tokens)}
        ranked = sorted(full, key=lambda c: sum(full[c][t] / (base or full[c])[t] for t in tokens))
        print(f"\nd={d} (current: block_n={cur[0]} rows={cur[1]} warps={cur[2]}); us at tokens {a.tokens}")
        for c in ([cur] if base else []) + ranked[:8]:
            cells = "  ".join(f"{t}: {full[c][t]:8.2f}" for t in tokens)
            print(f"  block_n={c[0]:5d} rows={c[1]} warps={c[2]:2d}  {cells}")


if __name__ == "__main__":
    main()
