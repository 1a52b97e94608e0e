"""Benchmark paged-attention decode (the Triton backend) on a GPU: KV-read bandwidth, split-K on/off.

On the device, from the repository root (as for the other benchmarks, docs/performance.md)::

    python3 benchmarks/bench_decode.py [--block-size 16] [--batches 1,4,16,64,256]
        [--contexts 1024,8192,32768,131072] [--splits 2,4,8,16] [--max-cache-gb 40]
        [--no-sdpa] [--fit] [--csv benchmarks/results/decode.csv]

Shape: decode (one query per sequence), Hq 32, Hk 8, D 128, bf16 q and cache, every sequence of
the batch at the same context length, block table a random permutation of the cache's blocks
(non-contiguous, as after a while of serving). Combinations whose K+V cache exceeds
``--max-cache-gb`` (default 40 GB: 256 x 128K is 137 GB) are skipped and listed.

Candidates, each timed with ``triton.testing.do_bench`` (median; it zeroes a 256 MB buffer
before every call, so L2 starts cold):

* ``G=1``: split-K off; ``G=2`` .. ``G=16``: each forced split count (``--splits``);
* ``heuristic``: ``vllm_rocm_accel.split_k.choose_num_splits(batch, Hk, 1, context, device)``
  -- its time is the forced run of the G it picks (the same launch; the choice itself is host
  arithmetic), so "heuristic vs best forced G" compares choices, not timing noise;
* ``sdpa``: ``F.scaled_dot_product_attention`` (``enable_gqa``) on a cache gathered into
  contiguous (B, Hk, context, D) tensors; the gather is timed separately (``gather`` row) and
  **not** included in ``sdpa``'s time (vLLM would have to pay it every step); skipped when the
  gathered copy does not fit next to the cache (``--max-cache-gb`` / 2) or with ``--no-sdpa``;
* ``copy``: one device-to-device copy of a 2 GB buffer (``dst.copy_(src)``), measured in the
  same run: its bandwidth counts bytes read + bytes written.

Our calls go straight to ``vllm_rocm_accel.backends.triton.paged_attention.forward`` with
preallocated out and no lse (what vLLM's decode does), so no argument checks or host reads are
timed. Bandwidth = bytes of K and V the kernel reads (batch x context x Hk x (D + Dv) x 2 bytes;
q, out, the block table and the split workspace are not counted) / time.

Targets (issue 6), printed with PASS / FAIL / n/a:

1. >= 80% of the measured copy bandwidth from 8K context wherever batch x Hk >= the device's
   multiprocessor count (the heuristic's choice);
2. batch 1 and context >= 32K: heuristic >= 3x faster than G=1;
3. on every measured shape the heuristic is at most 5% slower than the best forced G (G=1 included).

Rows are appended to ``--csv`` (date, gpu, torch, triton, batch, context, block_size, candidate,
splits, ms, gbps, frac_copy, note).

``--fit`` searches policy/split_k.json's constants for this device family against the measured
times: every (saturate_waves, target_waves, min_keys_per_split) on a grid (saturate_waves in
{0.25, 0.5, 0.75, 1, 1.5, 2, 3, 4}, target_waves in {0.5, 1, 1.5, 2, 3, 4, 6, 8} with
target >= saturate, min_keys_per_split in {64, 128, 256, 512, 1024, 2048, 4096}) is scored by
the regret of its choices over all measured shapes, ``sum log(t(choice) / t(best forced G))``
(ties: the smaller worst-shape regret, then the constants closest to the current file's); the
best is printed as the json entry to paste, with its worst regret. q_block_rows is kept (decode
has one query block). A search, not least squares: the model's output is a step function of its
constants, and the grid is small (448 points x shapes, instant).
"""

from __future__ import annotations

import argparse
import csv
import datetime
import itertools
import math
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.append(ROOT)  # run from a checkout without an install (an installed copy still wins)

HQ, HK, D = 32, 8, 128
BATCHES = [1, 4, 16, 64, 256]
CONTEXTS = [1024, 8192, 32768, 131072]
SPLITS = [2, 4, 8, 16]
FIELDS = ["date", "gpu", "torch", "triton", "batch", "context", "block_size", "candidate", "splits", "ms", "gbps",
          "frac_copy", "note"]
DEFAULT_CSV = os.path.join(ROOT, "benchmarks", "results", "decode.csv")
FIT_GRID = {
    "saturate_waves": [0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0],
    "target_waves": [0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0],
    "min_keys_per_split": [64, 128, 256, 512, 1024, 2048, 4096],
}


def _ints(s: str) -> list[int]:
    return [int(x) for x in s.split(",") if x.strip()]


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description="Paged-attention decode benchmark (KV-read bandwidth, split-K).",
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--block-size", type=int, default=16, help="cache block size (default 16)")
    ap.add_argument("--batches", type=_ints, default=BATCHES, help="comma-separated batch sizes")
    ap.add_argument("--contexts", type=_ints, default=CONTEXTS, help="comma-separated context lengths")
    ap.add_argument("--splits", type=_ints, default=SPLITS, help="forced split counts besides G=1")
    ap.add_argument("--max-cache-gb", type=float, default=40.0, help="skip shapes whose K+V cache is larger")
    ap.add_argument("--no-sdpa", action="store_true", help="skip the gathered-cache SDPA comparison")
    ap.add_argument("--fit", action="store_true", help="print fitted policy/split_k.json constants")
    ap.add_argument("--csv", default=DEFAULT_CSV, help="CSV to append rows to")
    return ap.parse_args(argv)


# --- measurement ------------------------------------------------------------------------
def _bench(fn) -> float:
    """Median milliseconds of fn (cold L2)."""
    import triton.testing

    return float(triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median"))


def copy_bandwidth(torch) -> float:
    """GB/s of a 2 GB device-to-device copy, read + write bytes counted."""
    n = 1 << 30  # bf16 elements: 2 GB
    src = torch.empty(n, dtype=torch.bfloat16, device="cuda").normal_()
    dst = torch.empty_like(src)
    ms = _bench(lambda: dst.copy_(src))
    del src, dst
    torch.cuda.empty_cache()
    return 2 * n * 2 / (ms * 1e-3) / 1e9


def _decode_inputs(torch, batch, context, block_size, gen):
    blocks_per_seq = math.ceil(context / block_size)
    num_blocks = batch * blocks_per_seq
    q = torch.randn(batch, HQ, D, device="cuda", generator=gen).to(torch.bfloat16)
    kc = torch.empty(num_blocks, block_size, HK, D, dtype=torch.bfloat16, device="cuda").normal_(generator=gen)
    vc = torch.empty_like(kc).normal_(generator=gen)
    table = torch.randperm(num_blocks, device="cuda", generator=gen).to(torch.int32).view(batch, blocks_per_seq)
    cu_q = torch.arange(batch + 1, dtype=torch.int32, device="cuda")
    seqused = torch.full((batch,), context, dtype=torch.int32, device="cuda")
    return q, kc, vc, cu_q, seqused, table


def measure_shape(torch, batch, context, block_size, splits_list, sdpa, max_cache_bytes):
    """{candidate: (G, ms)} for one (batch, context), plus the notes."""
    from vllm_rocm_accel.backends.triton import paged_attention as tpa
    from vllm_rocm_accel.checks.paged_attention import check_paged_args
    from vllm_rocm_accel import split_k

    gen = torch.Generator(device="cuda").manual_seed(batch * 1_000_003 + context)
    q, kc, vc, cu_q, seqused, table = _decode_inputs(torch, batch, context, block_size, gen)
    p = check_paged_args(q, kc, vc, cu_q, seqused, table, 1, context, D ** -0.5, True, -1, -1, 0.0, None,
                         None, None, 1)
    out = torch.empty(batch, HQ, D, dtype=torch.bfloat16, device="cuda")
    res, notes = {}, {}
    for g in [1] + list(splits_list):
        def call(g=g):
            tpa.forward(out, q, kc, vc, cu_q, seqused, table, None, None, None, p, None, g)
        call()  # compile outside the timed region
        res[f"G={g}"] = (g, _bench(call))
    h = split_k.choose_num_splits(batch, HK, 1, context, q.device)
    if f"G={h}" not in res:
        def call_h():
            tpa.forward(out, q, kc, vc, cu_q, seqused, table, None, None, None, p, None, h)
        call_h()
        res[f"G={h}"] = (h, _bench(call_h))
    res["heuristic"] = (h, res[f"G={h}"][1])
    notes["heuristic"] = "time of the forced run of its G"
    cache_bytes = 2 * kc.numel() * kc.element_size()
    if sdpa and 2 * cache_bytes <= max_cache_bytes:
        import torch.nn.functional as F

        def gather():
            k = kc[table.long()].reshape(batch, -1, HK, D)[:, :context].transpose(1, 2)
            v = vc[table.long()].reshape(batch, -1, HK, D)[:, :context].transpose(1, 2)
            return k.contiguous(), v.contiguous()

        try:
            kg, vg = gather()
            qg = q.view(batch, HQ, 1, D)
            res["gather"] = (0, _bench(gather))
            notes["gather"] = "block-table gather into contiguous K/V (not in sdpa's time)"
            res["sdpa"] = (0, _bench(lambda: F.scaled_dot_product_attention(qg, kg, vg, enable_gqa=True)))
            notes["sdpa"] = "on the pre-gathered cache"
            del kg, vg
        except Exception as e:  # noqa: BLE001 - report and go on (no kernel, OOM)
            notes["sdpa"] = f"n/a: {type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"
    elif sdpa:
        notes["sdpa"] = "n/a: the gathered copy would not fit next to the cache"
    del q, kc, vc, table, out
    torch.cuda.empty_cache()
    return res, notes


# --- targets and fit -------------------------------------------------------------------------------
def kv_bytes(batch, context) -> int:
    return batch * context * HK * (D + D) * 2


def check_targets(results, copy_gbps, sms):
    """[(target, shape, value, PASS/FAIL)] for the three targets."""
    rows = []
    for (batch, context), res in sorted(results.items()):
        forced = {k: v for k, v in res.items() if k.startswith("G=")}
        h_g, h_ms = res["heuristic"]
        best_name, (best_g, best_ms) = min(forced.items(), key=lambda kv: kv[1][1])
        shape = f"B={batch} ctx={context}"
        if context >= 8192 and batch * HK >= sms:
            frac = kv_bytes(batch, context) / (h_ms * 1e-3) / 1e9 / copy_gbps
            rows.append(("1: >= 80% of copy bandwidth", shape, f"{frac:.1%} (G={h_g})",
                         "PASS" if frac >= 0.8 else "FAIL"))
        if batch == 1 and context >= 32768:
            speedup = forced["G=1"][1] / h_ms
            rows.append(("2: batch 1 heuristic >= 3x no-split", shape, f"{speedup:.2f}x (G={h_g})",
                         "PASS" if speedup >= 3 else "FAIL"))
        slow = h_ms / best_ms - 1
        rows.append(("3: heuristic within 5% of best G", shape, f"{slow:+.1%} (G={h_g} vs best {best_name})",
                     "PASS" if slow <= 0.05 else "FAIL"))
    return rows


def fit_constants(results, sms, current):
    """The grid point of FIT_GRID with the least total log-regret over the measured shapes."""
    from vllm_rocm_accel import split_k

    def regret(c):
        total, worst = 0.0, 0.0
        for (batch, context), res in results.items():
            forced = {v[0]: v[1] for k, v in res.items() if k.startswith("G=")}
            g = split_k.splits_for(batch * HK, context, sms, c)
            if g not in forced:
                return math.inf, math.inf  # a choice we did not measure
            r = math.log(forced[g] / min(forced.values()))
            total, worst = total + r, max(worst, r)
        return total, worst

    best = None
    for sat, tgt, mk in itertools.product(*FIT_GRID.values()):
        if tgt < sat:
            continue
        c = split_k.SplitConstants(saturate_waves=sat, target_waves=tgt, min_keys_per_split=mk,
                                   q_block_rows=current.q_block_rows)
        total, worst = regret(c)
        dist = (abs(math.log(sat / current.saturate_waves)) + abs(math.log(tgt / current.target_waves))
                + abs(math.log(mk / current.min_keys_per_split)))
        key = (round(total, 9), round(worst, 9), dist)
        if best is None or key < best[0]:
            best = (key, c)
    return best[1], best[0], regret(current)


# --- main ----------------------------------------------------------------------------------------
def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("bench_decode.py needs a GPU (torch.cuda.is_available() is False)", file=sys.stderr)
        return 2
    import triton

    from vllm_rocm_accel import policy, split_k

    dev = torch.device("cuda")
    gpu = torch.cuda.get_device_name(dev)
    sms = split_k.multiprocessors(dev)
    max_bytes = args.max_cache_gb * 1e9
    print(f"# {gpu}: {sms} multiprocessors; torch {torch.__version__}, triton {triton.__version__}")
    print("# reproduce: python3 " + " ".join([os.path.relpath(__file__, ROOT)] + (argv or sys.argv[1:])))
    copy_gbps = copy_bandwidth(torch)
    print(f"copy bandwidth (read + write): {copy_gbps:.0f} GB/s")

    results, all_notes, skipped = {}, {}, []
    for batch, context in itertools.product(args.batches, args.contexts):
        if kv_bytes(batch, context) > max_bytes:
            skipped.append(f"B={batch} ctx={context} ({kv_bytes(batch, context) / 1e9:.0f} GB)")
            continue
        res, notes = measure_shape(torch, batch, context, args.block_size, args.splits, not args.no_sdpa, max_bytes)
        results[(batch, context)] = res
        all_notes[(batch, context)] = notes
        nbytes = kv_bytes(batch, context)
        line = "  ".join(f"{name}:{ms * 1e3:.0f}us/{nbytes / (ms * 1e-3) / 1e9:.0f}GB/s"
                         for name, (_, ms) in res.items() if name != "gather")
        print(f"B={batch:4d} ctx={context:6d} heuristic G={res['heuristic'][0]:2d}  {line}", flush=True)
    if skipped:
        print("skipped (cache over --max-cache-gb): " + ", ".join(skipped))

    print("\ntargets:")
    for target, shape, value, verdict in check_targets(results, copy_gbps, sms):
        print(f"  {verdict:4s}  {target:40s} {shape:18s} {value}")
    if not any(b * HK >= sms and c >= 8192 for b, c in results):
        print("  n/a   1: no measured shape has batch x Hk >= the multiprocessor count and context >= 8K")

    date = datetime.datetime.now().isoformat(timespec="seconds")
    os.makedirs(os.path.dirname(os.path.abspath(args.csv)), exist_ok=True)
    new = not os.path.exists(args.csv)
    with open(args.csv, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        if new:
            w.writeheader()
        w.writerow(dict(date=date, gpu=gpu, torch=torch.__version__, triton=triton.__version__, batch=0, context=0,
                        block_size=args.block_size, candidate="copy", splits=0, ms="", gbps=f"{copy_gbps:.1f}",
                        frac_copy="1", note="2 GB device-to-device copy, read + write bytes"))
        for (batch, context), res in sorted(results.items()):
            nbytes = kv_bytes(batch, context)
            for name, (g, ms) in res.items():
                gbps = nbytes / (ms * 1e-3) / 1e9
                kv = name != "gather"
                w.writerow(dict(date=date, gpu=gpu, torch=torch.__version__, triton=triton.__version__, batch=batch,
                                context=context, block_size=args.block_size, candidate=name, splits=g,
                                ms=f"{ms:.5f}", gbps=f"{gbps:.1f}" if kv else "",
                                frac_copy=f"{gbps / copy_gbps:.3f}" if kv else "",
                                note=all_notes[(batch, context)].get(name, "")))
    print(f"\nrows appended to {args.csv}")

    if args.fit:
        family = policy.family_of(dev)
        current = split_k.constants_for(dev)
        c, (total, worst, _), (cur_total, cur_worst) = fit_constants(results, sms, current)
        print(f"\nfit for family {family!r} over {len(results)} shapes (sum of log regret {total:.4f}, worst "
              f"{math.exp(worst) - 1:+.1%}; current constants: {cur_total:.4f}, worst {math.exp(cur_worst) - 1:+.1%}):")
        print(f'  "{family}": {{"saturate_waves": {c.saturate_waves}, "target_waves": {c.target_waves}, '
              f'"min_keys_per_split": {c.min_keys_per_split}, "q_block_rows": {c.q_block_rows}}}')
    return 0


if __name__ == "__main__":
    sys.exit(main())
