"""Sweep the Triton RMSNorm launch parameters on this GPU (times inside CUDA graphs, so host
noise stays out) and print the best (rows_per_program, num_warps) per hidden size.

    python benchmarks/tune_norm.py [--hidden 2048,4096,5120,8192] [--tokens 64,1024,16384]

The winners go into vllm_rocm_accel/backends/triton/configs/norm.json by hand, with the
command and the GPU in docs/performance.md.
"""

from __future__ import annotations

import argparse
import itertools

import torch
from triton.testing import do_bench_cudagraph

from vllm_rocm_accel.backends.triton import norm as tn
from vllm_rocm_accel.inputs import norm_inputs


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--hidden", default="2048,4096,5120,8192,16384")
    p.add_argument("--tokens", default="64,1024,16384")
    p.add_argument("--rows", default="1,2,4")
    p.add_argument("--warps", default="2,4,8,16,32")
    a = p.parse_args(argv)
    print(torch.cuda.get_device_name())
    original = tn._launch_params
    for hidden in map(int, a.hidden.split(",")):
        totals = {}
        for tokens in map(int, a.tokens.split(",")):
            x, r, w = norm_inputs((tokens, hidden), torch.bfloat16, "cuda")
            out, rout = torch.empty_like(x), torch.empty_like(x)
            base = original("cuda", hidden, torch.bfloat16)
            for rows, warps in itertools.product(map(int, a.rows.split(",")), map(int, a.warps.split(","))):
                tn._launch_params = lambda *args, _r=rows, _w=warps: (False, base[1], _r, _w)
                try:
                    tn.rms_norm(out, x, w, 1e-6)  # compile outside graph capture
                    tn.fused_add_rms_norm(out, rout, x, r, w, 1e-6)
                    torch.cuda.synchronize()
                    t1 = do_bench_cudagraph(lambda: tn.rms_norm(out, x, w, 1e-6), rep=50, return_mode="median")
                    t2 = do_bench_cudagraph(lambda: tn.fused_add_rms_norm(out, rout, x, r, w, 1e-6), rep=50,
                                            return_mode="median")
                except Exception as e:  # e.g. out of registers/shared memory
                    print(f"  H={hidden} rows={rows} warps={warps}: {type(e).__name__}")
                    continue
                finally:
                    tn._launch_params = original
                totals.setdefault((rows, warps), []).append((tokens, t1 * 1e3, t2 * 1e3))
        cur = original("cuda", hidden, torch.bfloat16)
        print(f"\nH={hidden} (current: rows={cur[2]} warps={cur[3]}); us for rms / fused at tokens {a.tokens}")
        ranked = sorted(totals.items(), key=lambda kv: sum(v[1] / kv0[1] + v[2] / kv0[2]
                        for v, kv0 in zip(kv[1], totals.get((cur[2], cur[3]), kv[1]))))
        for (rows, warps), vals in ranked[:6]:
            cells = "  ".join(f"{t}: {a1:7.2f}/{a2:7.2f}" for t, a1, a2 in vals)
            print(f"  rows={rows} warps={warps:2d}  {cells}")


if __name__ == "__main__":
    main()
