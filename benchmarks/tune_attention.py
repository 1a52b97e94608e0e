"""Sweep the Triton attention launch configs on one GPU and print the best as configs/attention.json rows.

    python benchmarks/tune_attention.py [--shapes "8,32,4096,128;1,32,16384,128;16,16,1024,64"]
                                        [--passes fwd,bwd_kv,bwd_q] [--rep 40]
    python benchmarks/tune_attention.py --fwd-tma [--quick] [--rescale 8] [--no-prune]

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

``--fwd-tma`` sweeps the TMA forward (``attn_fwd_tma_kernel``, ``"kernel": "tma"`` rules) instead:
BLOCK_M 128, BLOCK_N 64 / 128, num_warps 4 / 8, num_stages 2 / 3 / 4 (``--quick``: 4 configs) on
the same shapes, causal and not, bf16, timed as above (do_bench, its L2 flush, median), the
forward with lse. Each candidate's out and lse are first compared with the shipped kernel's
(max abs error); one off by more than 2e-2 relative is flagged and not timed. Configs the Triton
3.6 sm_90a compile check showed unusable are skipped unless ``--no-prune``: head dim 128 with
4 warps (300-2300 B of register spills) and (128, 128, 8, 4) at head dim 128 (256 KB of shared
memory, the H200 has 227 KB). ``--rescale T`` (default 8; 0: off) also times each shape's best
config with the conditional rescale (``rescale_threshold`` T). Per shape it prints the best TMA
config against the shipped kernel and SDPA's cuDNN backend (contiguous (B, H, S, D) inputs,
layout copies not timed) in TFLOP/s, then per (head-dim bucket, causal) the TMA config fastest
summed over that bucket's shapes as rules to paste before that bucket's shipped fwd rules
(they win only where they beat the shipped kernel: the speedup is printed). About 2-3 minutes
of GPU time on an H200 (mostly compiles).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
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


# --- the TMA forward ---------------------------------------------------------------------------
TMA_SWEEP = [(128, bn, w, st) for bn, w, st in itertools.product((64, 128), (4, 8), (2, 3, 4))]
TMA_QUICK = [(128, 128, 8, 2), (128, 128, 8, 3), (128, 64, 8, 3), (128, 64, 4, 3)]


def _tma_pruned(cand, d) -> str:
    """Why the sm_90a compile check (Triton 3.6) rules ``cand`` out at head dim ``d`` ('' if not)."""
    bm, bn, warps, stages = cand
    if d == 128 and warps == 4:
        return "compile check: 300-2300 B register spills (d128, 4 warps)"
    if d == 128 and bn == 128 and stages >= 4:
        return "compile check: 256 KB shared memory (> 227 KB)"
    return ""


def _max_err(a, b) -> float:
    return float((a.float() - b.float()).abs().max())


def _rel_ok(a, b) -> tuple[bool, float]:
    err = _max_err(a, b)
    return err <= 2e-2 * max(float(b.float().abs().max()), 1.0), err


def _cudnn(q, k, v, causal):
    """SDPA through the cuDNN backend on contiguous (B, H, S, D) copies (bench_attention's call)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from bench_attention import _sdpa_call

    qt, kt, vt = (t.transpose(1, 2).contiguous() for t in (q, k, v))
    return _sdpa_call(torch.nn.functional, sdpa_kernel, SDPBackend.CUDNN_ATTENTION, qt, kt, vt, causal)


def tune_fwd_tma(shapes, rep, cands, rescale, prune):
    dtype = torch.bfloat16
    t0 = time.time()
    totals = defaultdict(lambda: defaultdict(float))  # (bucket, causal) -> (cand, threshold) -> ms summed
    counts = defaultdict(lambda: defaultdict(int))  # ... -> how many of the bucket's shapes timed it
    shapes_of = defaultdict(int)
    shipped_totals = defaultdict(float)
    summary = []
    for b, h, s, d in shapes:
        bucket = ta.head_bucket(d, d)
        q, k, v = dense_qkv(b, s, s, h, h, d, dtype=dtype, device="cuda")
        for causal in (False, True):
            p = check_dense(q, k, v, None, causal, (-1, -1), 0.0, None, 0.0)
            reason = ta.tma_reason(q, k, v, p)
            if reason is not None:
                print(f"B={b} H={h} S={s} D={d} causal={causal}: the TMA kernel cannot run: {reason}")
                continue
            flops = attention_flops(b, h, s, s, d, causal=causal, mode="fwd")
            tf = lambda ms: flops / (ms * 1e-3) / 1e12  # noqa: E731
            ref_out, ref_lse = ta.forward(q, k, v, None, None, None, p, True)  # the shipped kernel and config
            shipped_ms = _time(lambda: ta.forward(q, k, v, None, None, None, p, True), rep)
            shipped_cfg = ta._params(p, "fwd", "cuda")
            print(f"B={b} H={h} S={s} D={d} causal={causal} fwd: shipped {shipped_cfg} {shipped_ms:.3f} ms "
                  f"({tf(shipped_ms):.0f} TFLOP/s)", flush=True)
            shipped_totals[(bucket, causal)] += shipped_ms
            shapes_of[(bucket, causal)] += 1
            cudnn = _cudnn(q, k, v, causal)
            try:
                ok, err = _rel_ok(cudnn().transpose(1, 2), ref_out)
                cudnn_ms = _time(cudnn, rep)
                print(f"      SDPA cuDNN: {cudnn_ms:.3f} ms ({tf(cudnn_ms):.0f} TFLOP/s), max|out - shipped| {err:.2e}"
                      f"{'' if ok else ' MISMATCH'}", flush=True)
            except Exception as e:  # no cuDNN attention in this torch build / for this shape
                cudnn_ms = None
                print(f"      SDPA cuDNN: unavailable ({type(e).__name__}: {str(e).splitlines()[0][:100]})")
            key = (bucket, causal)

            def trial(cand, th):
                """ms of the TMA forward with ``cand`` (None: pruned, failed or mismatched)."""
                counts[key][(cand, th)] += 1
                tag = f"{cand}" + (f" rescale_threshold={th:g}" if th else "")
                if prune and _tma_pruned(cand, d):
                    print(f"      {tag}: skipped ({_tma_pruned(cand, d)})", flush=True)
                    totals[key][(cand, th)] = float("inf")
                    return None
                params = {"fwd": cand, "fwd_kernel": "tma", "fwd_rescale_threshold": th}
                fn = lambda: ta.forward(q, k, v, None, None, None, p, True, params=params)  # noqa: E731
                try:
                    out, lse = fn()
                    torch.cuda.synchronize()
                except Exception as e:  # out of shared memory / registers: not a candidate
                    print(f"      {tag}: skipped: {type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}",
                          flush=True)
                    totals[key][(cand, th)] = float("inf")
                    return None
                ok_o, err_o = _rel_ok(out, ref_out)
                ok_l, err_l = _rel_ok(lse, ref_lse)
                if not (ok_o and ok_l):
                    print(f"      {tag}: MISMATCH vs shipped (max|out err| {err_o:.2e}, max|lse err| {err_l:.2e}), "
                          "not timed", flush=True)
                    totals[key][(cand, th)] = float("inf")
                    return None
                ms = do_bench(fn, warmup=10, rep=rep, return_mode="median")
                print(f"      {tag}: {ms:.3f} ms ({tf(ms):.0f} TFLOP/s, {shipped_ms / ms:.3f}x shipped), "
                      f"max|out err| {err_o:.2e}, max|lse err| {err_l:.2e}", flush=True)
                totals[key][(cand, th)] += ms
                return ms

            best = None
            for cand in cands:
                ms = trial(cand, 0.0)
                if ms is not None and (best is None or ms < best[1]):
                    best = ((cand, 0.0), ms)
            if rescale and best is not None:  # the best config again, with the conditional rescale
                ms = trial(best[0][0], float(rescale))
                if ms is not None and ms < best[1]:
                    best = ((best[0][0], float(rescale)), ms)
            summary.append(((b, h, s, d), causal, shipped_cfg, shipped_ms, best, cudnn_ms, flops))
        del q, k, v
        torch.cuda.empty_cache()

    print("\nper shape, TFLOP/s (bf16, forward with lse):")
    print("| (B, H, S, D) | causal | shipped | best tma (config) | tma/shipped | cuDNN | tma/cuDNN |")
    print("|---|---|---:|---|---:|---:|---:|")
    for shape, causal, cfg, sms, best, cms, flops in summary:
        tf = lambda ms: flops / (ms * 1e-3) / 1e12  # noqa: E731
        bt = f"{tf(best[1]):.1f} {best[0][0]}" + (f" th={best[0][1]:g}" if best and best[0][1] else "") if best else "-"
        ratio = f"{sms / best[1]:.3f}" if best else "-"
        ctf = f"{tf(cms):.1f}" if cms else "-"
        cr = f"{cms / best[1]:.3f}" if best and cms else "-"
        print(f"| {', '.join(map(str, shape))} | {'yes' if causal else 'no'} | {tf(sms):.1f} {cfg} | {bt} | {ratio} | "
              f"{ctf} | {cr} |")

    print("\nbest TMA config per (head-dim bucket, causal), summed over the bucket's shapes; rules for the cuda "
          "fwd list of configs/attention.json, before that bucket's shipped rules (after the float32 ones):")
    rules = []
    for (bucket, causal), cands_ms in sorted(totals.items()):
        everywhere = {c: ms for c, ms in cands_ms.items() if counts[(bucket, causal)][c] == shapes_of[(bucket, causal)]}
        (cand, th) = min(everywhere, key=everywhere.get)
        cands_ms = everywhere
        if cands_ms[(cand, th)] == float("inf"):
            print(f"  no working TMA config for bucket {bucket} causal={causal}")
            continue
        speedup = shipped_totals[(bucket, causal)] / cands_ms[(cand, th)]
        rule = {"max_d": bucket, "causal": causal, "dtypes": ["float16", "bfloat16"], "kernel": "tma",
                "BLOCK_M": cand[0], "BLOCK_N": cand[1], "num_warps": cand[2], "num_stages": cand[3]}
        if th:
            rule["rescale_threshold"] = th
        print(f"  bucket {bucket} causal={causal}: {speedup:.3f}x the shipped kernel"
              f"{'' if speedup > 1 else ' (slower: do not paste)'}")
        if speedup > 1:
            rules.append(rule)
    print('"fwd": [')
    print(",\n".join("  " + json.dumps(r) for r in rules))
    print("]")
    print(f"elapsed {time.time() - t0:.0f} s (compiles included)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default=";".join(",".join(map(str, s)) for s in SHAPES))
    ap.add_argument("--passes", default="fwd,bwd_kv,bwd_q")
    ap.add_argument("--rep", type=int, default=40, help="do_bench rep (ms per candidate)")
    ap.add_argument("--fwd-tma", action="store_true", help="sweep the TMA forward kernel instead of --passes")
    ap.add_argument("--quick", action="store_true", help="--fwd-tma: 4 configs only")
    ap.add_argument("--rescale", type=float, default=8.0,
                    help="--fwd-tma: also time each shape's best config with this rescale_threshold (0: off)")
    ap.add_argument("--no-prune", action="store_true",
                    help="--fwd-tma: also try the configs the compile check ruled out")
    args = ap.parse_args(argv)
    print("command:", " ".join([os.path.basename(sys.executable)] + sys.argv), torch.cuda.get_device_name(),
          "triton", triton.__version__, "torch", torch.__version__, flush=True)
    shapes = [tuple(int(x) for x in s.split(",")) for s in args.shapes.split(";")]
    if args.fwd_tma:
        tune_fwd_tma(shapes, args.rep, TMA_QUICK if args.quick else TMA_SWEEP, args.rescale, not args.no_prune)
        return 0
    passes = args.passes.split(",")
    for pass_ in passes:
        if pass_ not in CANDIDATES:
            ap.error(f"unknown pass {pass_!r}")
    tune(shapes, passes, args.rep)
    return 0


if __name__ == "__main__":
    sys.exit(main())
