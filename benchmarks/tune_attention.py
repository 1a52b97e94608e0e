"""Sweep the Triton attention launch configs on one GPU and print the best as configs/attention.json rows.

    python benchmarks/tune_attention.py [--shapes "8,32,4096,128;1,32,16384,128;16,16,1024,64"]
                                        [--passes fwd,bwd_kv,bwd_q] [--rep 40]

For each (B, H, S, D) shape, causal and not, bf16 (Hq = Hk = H), it times every candidate
(BLOCK_M, BLOCK_N, num_warps, num_stages) of each pass with ``triton.testing.do_bench`` (median
ms): the forward alone for ``fwd``; the whole backward (preprocess + dK/dV + dQ) with only the
tuned pass's config replaced for ``bwd_kv`` / ``bwd_q`` (the other keeps configs/attention.json's
choice). Each config's result is checked once against torch SDPA (forward output, or the
gradient the pass writes); a config that fails to compile or launch (out of shared memory or
registers) or that mismatches is skipped. At the end it prints, per (head-dim bucket, causal,
pass), the config that is fastest summed over the shapes of that bucket, as json rules ready to
paste into the ``cuda`` (or ``rocm``) section of ``configs/attention.json`` (keep the float32
rules and the order: the first matching rule wins). About 3-4 minutes on an H100/H200, most
of it compiling.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import defaultdict

import torch
import triton
from triton.testing import do_bench

from vllm_rocm_accel.backends.triton import attention as ta
from vllm_rocm_accel.checks.attention import check_dense
from vllm_rocm_accel.inputs_attention import attention_flops, dense_qkv

SHAPES = [(8, 32, 4096, 128), (1, 32, 16384, 128), (16, 16, 1024, 64)]

# (BLOCK_M, BLOCK_N, num_warps, num_stages): a short list per pass and head-dim bucket
CANDIDATES = {
    "fwd": {
        64: [(128, 64, 4, 3), (128, 64, 4, 4), (128, 64, 8, 3), (128, 128, 8, 3), (64, 64, 4, 3)],
        128: [(128, 32, 8, 3), (128, 64, 8, 3), (128, 128, 8, 3), (128, 64, 8, 2), (64, 64, 4, 3)],
        256: [(64, 64, 8, 2), (128, 32, 8, 2), (128, 64, 8, 2), (64, 32, 4, 2)],
    },
    "bwd_kv": {
        64: [(64, 128, 8, 2), (32, 128, 4, 2), (64, 64, 4, 2), (32, 64, 4, 3)],
        128: [(64, 128, 8, 2), (32, 128, 8, 2), (64, 64, 4, 2), (32, 64, 4, 2)],
        256: [(32, 64, 8, 1), (16, 64, 4, 1), (32, 32, 4, 1)],
    },
    "bwd_q": {
        64: [(128, 64, 8, 2), (64, 64, 4, 2), (128, 32, 4, 2), (64, 128, 8, 2)],
        128: [(128, 32, 8, 2), (128, 64, 8, 2), (64, 64, 4, 2), (64, 32, 8, 2)],
        256: [(64, 32, 8, 1), (32, 32, 4, 1), (64, 16, 4, 1)],
    },
}


def _sdpa(q, k, v, causal, dout):
    """Forward output and (dq, dk, dv) of torch SDPA, in our (B, S, H, D) layout."""
    qt, kt, vt = (t.detach().transpose(1, 2).requires_grad_() for t in (q, k, v))
    o = torch.nn.functional.scaled_dot_product_attention(qt, kt, vt, is_causal=causal)
    o.backward(dout.transpose(1, 2))
    return o.detach().transpose(1, 2), [t.grad.transpose(1, 2) for t in (qt, kt, vt)]


def _close(a, b) -> bool:
    scale = float(b.abs().max()) or 1.0
    return float((a.float() - b.float()).abs().max()) <= 2e-2 * max(scale, 1.0)


def _time(fn, rep):
    try:
        fn()
        torch.cuda.synchronize()
    except Exception as e:  # out of shared memory / registers, or no such config: not a candidate
        print(f"      skipped: {type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}", flush=True)
        return None
    return do_bench(fn, warmup=10, rep=rep, return_mode="median")


def tune(shapes, passes, rep):
    totals = defaultdict(lambda: defaultdict(float))  # (bucket, causal, pass) -> cand -> ms summed
    seen = defaultdict(int)
    dtype = torch.bfloat16
    for b, h, s, d in shapes:
        bucket = ta.head_bucket(d, d)
        q, k, v = dense_qkv(b, s, s, h, h, d, dtype=dtype, device="cuda")
        dout = torch.randn_like(q)
        for causal in (False, True):
            p = check_dense(q, k, v, None, causal, (-1, -1), 0.0, None, 0.0)
            ref_out, ref_grads = _sdpa(q, k, v, causal, dout)
            out, lse = ta.forward(q, k, v, None, None, None, p, True)
            flops = {m: attention_flops(b, h, s, s, d, causal=causal, mode=m) for m in ("fwd", "bwd")}
            for pass_ in passes:
                key = (bucket, causal, pass_)
                seen[key] += 1
                print(f"B={b} H={h} S={s} D={d} causal={causal} {pass_}:", flush=True)
                for cand in CANDIDATES[pass_][bucket]:
                    override = {pass_: cand}
                    if pass_ == "fwd":
                        fn = lambda: ta.forward(q, k, v, None, None, None, p, True, params=override)  # noqa: E731
                    else:
                        fn = lambda: ta.backward(dout, q, k, v, out, lse, None, None, None, p,  # noqa: E731
                                                 params=override)
                    ms = _time(fn, rep)
                    if ms is None:
                        totals[key][cand] = float("inf")
                        continue
                    res = fn()
                    ok = (_close(res[0], ref_out) if pass_ == "fwd" else
                          all(_close(g, r) for g, r in zip(res, ref_grads)))
                    if not ok:
                        print(f"      {cand}: MISMATCH vs SDPA, skipped", flush=True)
                        totals[key][cand] = float("inf")
                        continue
                    tflops = flops["fwd" if pass_ == "fwd" else "bwd"] / (ms * 1e-3) / 1e12
                    print(f"      {cand}: {ms:.3f} ms ({tflops:.0f} TFLOP/s)", flush=True)
                    totals[key][cand] += ms
        del q, k, v, dout, out, lse, ref_out, ref_grads
        torch.cuda.empty_cache()

    print("\nbest per (head-dim bucket, causal, pass), as configs/attention.json rules:")
    rows = defaultdict(list)
    for (bucket, causal, pass_), cands in sorted(totals.items()):
        best = min(cands, key=cands.get)
        if cands[best] == float("inf"):
            print(f"  no working config for bucket {bucket} causal={causal} {pass_}")
            continue
        bm, bn, warps, stages = best
        rows[pass_].append({"max_d": bucket, "causal": causal, "BLOCK_M": bm, "BLOCK_N": bn, "num_warps": warps,
                            "num_stages": stages})
    for pass_ in passes:
        print(f'"{pass_}": [')
        print(",\n".join("  " + json.dumps(r) for r in rows[pass_]))
        print("]")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default=";".join(",".join(map(str, s)) for s in SHAPES))
    ap.add_argument("--passes", default="fwd,bwd_kv,bwd_q")
    ap.add_argument("--rep", type=int, default=40, help="do_bench rep (ms per candidate)")
    args = ap.parse_args(argv)
    print("command:", " ".join([os.path.basename(sys.executable)] + sys.argv), torch.cuda.get_device_name(),
          "triton", triton.__version__, "torch", torch.__version__, flush=True)
    shapes = [tuple(int(x) for x in s.split(",")) for s in args.shapes.split(";")]
    passes = args.passes.split(",")
    for pass_ in passes:
        if pass_ not in CANDIDATES:
            ap.error(f"unknown pass {pass_!r}")
    tune(shapes, passes, args.rep)
    return 0


if __name__ == "__main__":
    sys.exit(main())
