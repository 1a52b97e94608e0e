"""Sweep the Triton paged-attention *decode* launch configs on one GPU (GPU time, cold L2).

    python benchmarks/tune_decode.py [--shapes "B,ctx;..."] (default: batch {1,4,16,64,256} x context {1K,8K,32K,128K})
                                     [--block-size 16] [--json PATH]

Decode: one query per sequence, Hq 32, Hk 8, D 128, bf16 q and cache, a random block table
(as benchmarks/bench_decode.py). For every (BLOCK_N, num_warps, num_stages) candidate and every
split count G in {1, 2, 4, 8, 16} it times ``backends.triton.paged_attention.forward`` with
``params=`` replaced, replayed from a CUDA graph (``benchmarks/timing.py``'s ``graph_time_ms``:
GPU time, so the host's launch cost is not in the number: vLLM replays decode from graphs too)
after a 256 MB L2-flushing write that is outside the timed events. It prints, per shape, the best (config, G) and, per config, the sum over the
shapes of its best-G time, and the config that minimizes that sum (the decode rule to put into
configs/paged_attention.json), plus per shape the best G *for that config* (what
policy/split_k.json must reproduce).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))  # timing.py, as for the other benchmarks

from bench_decode import D, HQ, _decode_inputs, kv_bytes  # noqa: E402  (the same decode shape and inputs)

SPLITS = (1, 2, 4, 8, 16)
# bench_decode.py's grid less 256 x 128K (137 GB of cache)
DEFAULT_SHAPES = ";".join(f"{b},{c}" for b in (1, 4, 16, 64, 256) for c in (1024, 8192, 32768, 131072)
                           if b * c <= 256 * 32768)
# (BLOCK_N, num_warps, num_stages); BLOCK_M is the packed group (16 rows)
CANDIDATES = [
    (64, 4, 3), (128, 4, 2), (128, 4, 3), (128, 8, 2), (256, 8, 2), (256, 8, 1),
]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default=DEFAULT_SHAPES)
    ap.add_argument("--block-size", type=int, default=16)
    ap.add_argument("--json", default=None, help="write all timings here")
    args = ap.parse_args(argv)

    import torch
    from timing import graph_time_ms

    from vllm_rocm_accel.backends.triton import paged_attention as tpa
    from vllm_rocm_accel.checks.paged_attention import check_paged_args

    shapes = [tuple(int(x) for x in s.split(",")) for s in args.shapes.split(";")]
    flush = torch.empty(256 << 20, dtype=torch.uint8, device="cuda")
    bs = args.block_size
    rows = []
    for batch, ctx in shapes:
        gen = torch.Generator(device="cuda").manual_seed(batch * 7919 + ctx)
        q, kc, vc, cu_q, used, table = _decode_inputs(torch, batch, ctx, bs, gen)
        p = check_paged_args(q, kc, vc, cu_q, used, table, 1, ctx, D ** -0.5, True, -1, -1, 0.0, None,
                             None, None, 1)
        out = torch.empty(batch, HQ, D, dtype=torch.bfloat16, device="cuda")
        ref = torch.empty_like(out)
        tpa.forward(ref, q, kc, vc, cu_q, used, table, None, None, None, p, None, 1, params=(16, 64, 4, 2))
        gb = kv_bytes(batch, ctx) / 1e9
        for bn, warps, stages in CANDIDATES:
            for g in SPLITS:
                if g > 1 and ctx < g * bn:
                    continue
                params = (16, bn, warps, stages)
                try:
                    fn = lambda: tpa.forward(out, q, kc, vc, cu_q, used, table, None, None, None, p, None, g,  # noqa: E731
                                             params=params)
                    ms = graph_time_ms(fn, flush)
                    err = (out.float() - ref.float()).abs().max().item()
                except Exception as e:  # noqa: BLE001 - out of resources: skip the config
                    print(f"  B={batch} ctx={ctx} {params} G={g}: {type(e).__name__}: {str(e)[:100]}")
                    continue
                if err > 2e-2:
                    print(f"  B={batch} ctx={ctx} {params} G={g}: MISMATCH max|diff| {err:.3g}; skipped")
                    continue
                rows.append({"batch": batch, "ctx": ctx, "BLOCK_N": bn, "num_warps": warps, "num_stages": stages,
                             "G": g, "ms": ms, "gbps": gb / (ms * 1e-3)})
        best = min((r for r in rows if (r["batch"], r["ctx"]) == (batch, ctx)), key=lambda r: r["ms"])
        print(f"B={batch:4d} ctx={ctx:6d}: best {best['BLOCK_N']}/{best['num_warps']}w/{best['num_stages']}s "
              f"G={best['G']}: {best['ms'] * 1e3:.1f} us {best['gbps']:.0f} GB/s", flush=True)
        del q, kc, vc, table, out, ref
        torch.cuda.empty_cache()

    print("\nper config: sum over shapes of its best-G time (us), and its best G per shape")
    sums = []
    for bn, warps, stages in CANDIDATES:
        mine = [r for r in rows if (r["BLOCK_N"], r["num_warps"], r["num_stages"]) == (bn, warps, stages)]
        per = {}
        for r in mine:
            k = (r["batch"], r["ctx"])
            if k not in per or r["ms"] < per[k]["ms"]:
                per[k] = r
        if len(per) < len(shapes):
            continue
        total = sum(r["ms"] for r in per.values()) * 1e3
        sums.append((total, (bn, warps, stages)))
        detail = "  ".join(f"{b}x{c}:G{per[(b, c)]['G']}/{per[(b, c)]['ms'] * 1e3:.0f}" for b, c in shapes)
        print(f"  {bn:3d}/{warps}w/{stages}s  {total:9.1f}  {detail}")
    if sums:
        total, (bn, warps, stages) = min(sums)
        print(f"\nbest decode rule: {{\"decode\": true, \"max_d\": 128, \"BLOCK_M\": 16, \"BLOCK_N\": {bn}, "
              f"\"num_warps\": {warps}, \"num_stages\": {stages}}}  (sum {total:.1f} us)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"gpu": torch.cuda.get_device_name(), "rows": rows}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
