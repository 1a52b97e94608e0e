"""Benchmark paged-attention decode (the Triton backend) on a GPU: KV-read bandwidth, split-K on/off (GPU time).

On the device, from the repository root (as for the other benchmarks, docs/performance.md)::

    python3 benchmarks/bench_decode.py [--block-size 16] [--batches 1,4,16,64,256]
        [--contexts 1024,8192,32768,131072] [--splits 2,4,8,16] [--max-cache-gb 40]
        [--no-sdpa] [--eager] [--fit] [--csv benchmarks/results/decode.csv]

Shape: decode (one query per sequence), Hq 32, Hk 8, D 128, bf16 q and cache, every sequence of
the batch at the same context length, block table a random permutation of the cache's blocks
(non-contiguous, as after a while of serving). Combinations whose K+V cache exceeds
``--max-cache-gb`` (default 40 GB: 256 x 128K is 137 GB) are skipped and listed.

Timing: every candidate of ours is **GPU time** of one CUDA-graph replay
(``benchmarks/timing.py``'s ``graph_time_ms``: median of 20 replays between CUDA events, a 256 MB
buffer zeroed before each, outside the timed events, so L2 starts cold). The host's launch cost
is not in it: vLLM replays decode steps from CUDA graphs, and eager timing would add the host's
gaps between launches (a split call launches two kernels) to steps of 20-40 us at small batches.
``--eager`` times them with ``triton.testing.do_bench`` instead (median of eager calls, L2
flushed the same way; host launch gaps included), the previous method. The ``sdpa`` and
``gather`` rows always use ``do_bench`` (eager), as the output's header says.

Candidates:

* ``G=1``: split-K off; ``G=2`` .. ``G=16``: each forced split count (``--splits``);
* ``heuristic``: ``vllm_rocm_accel.split_k.choose_num_splits(batch, Hk, 1, context, device)``
  -- its time is the forced run of the G it picks (the same launch; the choice itself is host
  arithmetic), so "heuristic vs best forced G" compares choices, not timing noise;
* ``sdpa``: ``F.scaled_dot_product_attention`` (``enable_gqa``) on a cache gathered into
  contiguous (B, Hk, context, D) tensors; the gather is timed separately (``gather`` row) and
  **not** included in ``sdpa``'s time (vLLM would have to pay it every step); skipped when the
  gathered copy does not fit next to the cache (``--max-cache-gb`` / 2) or with ``--no-sdpa``;
* ``copy``: one device-to-device copy of a 2 GB buffer (``dst.copy_(src)``), measured in the
  same run, always eagerly with ``do_bench`` (a 1 ms copy is GPU-bound either way; replayed from a
  graph it measured 2714 GB/s instead of eager 4273 GB/s on the H200 -- a graph's memcpy node,
  likely not the SM copy kernel eager calls run): its bandwidth counts bytes read + bytes written.

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
splits, ms, gbps, frac_copy, note); the note starts with the timer (``graph`` or ``eager``).

``--fit`` searches policy/split_k.json's constants for this device family against the measured
times: every (saturate_waves, target_waves, min_keys_per_split, saturated_min_keys_per_split) on
a grid (saturate_waves in {0.5, 1, 1.5, 2, 3, 4, 8}, target_waves in {0.5, 1, 1.5, 2, 3, 4},
min_keys_per_split in {64, 128, 256, 512, 1024}, saturated_min_keys_per_split in {1024, 2048,
4096, 8192, 2**40} where 2**40 means a saturated batch never splits) is scored by the regret of
its choices over all measured shapes, ``sum log(t(choice) / t(best forced G))`` (ties: the
smaller worst-shape regret, then the constants closest to the current file's); the best is
printed as the json entry to paste, with its worst regret and its choice per shape. q_block_rows
is kept (decode has one query block). A search, not least squares: the model's output is a step
function of its constants, and the grid is small (1050 points x shapes, instant). Fit on graph
times (the default): ``--eager`` times carry host gaps that favour fewer launches.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import math
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.append(ROOT)  # run from a checkout without an install (an installed copy still wins)
BENCH = os.path.join(ROOT, "benchmarks")
if BENCH not in sys.path:
    sys.path.insert(0, BENCH)  # timing.py (already first when run as a script)

HQ, HK, D = 32, 8, 128
BATCHES = [1, 4, 16, 64, 256]
CONTEXTS = [1024, 8192, 32768, 131072]
SPLITS = [2, 4, 8, 16]
FIELDS = ["date", "gpu", "torch", "triton", "batch", "context", "block_size", "candidate", "splits", "ms", "gbps",
          "frac_copy", "note"]
DEFAULT_CSV = os.path.join(ROOT, "benchmarks", "results", "decode.csv")
NEVER = 2**40  # saturated_min_keys_per_split no context reaches: saturated batches never split
FIT_GRID = {
    "saturate_waves": [0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 8.0],
    "target_waves": [0.5, 1.0, 1.5, 2.0, 3.0, 4.0],
    "min_keys_per_split": [64, 128, 256, 512, 1024],
    "saturated_min_keys_per_split": [1024, 2048, 4096, 8192, NEVER],
}
FLUSH_BYTES = 256 << 20  # zeroed before every graph replay (more than any GPU's L2)


def _ints(s: str) -> list[int]:
    return [int(x) for x in s.split(",") if x.strip()]


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description="Paged-attention decode benchmark (KV-read bandwidth, split-K; "
                                             "GPU time of CUDA-graph replays unless --eager).",
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--block-size", type=int, default=16, help="cache block size (default 16)")
    ap.add_argument("--batches", type=_ints, default=BATCHES, help="comma-separated batch sizes")
    ap.add_argument("--contexts", type=_ints, default=CONTEXTS, help="comma-separated context lengths")
    ap.add_argument("--splits", type=_ints, default=SPLITS, help="forced split counts besides G=1")
    ap.add_argument("--max-cache-gb", type=float, default=40.0, help="skip shapes whose K+V cache is larger")
    ap.add_argument("--no-sdpa", action="store_true", help="skip the gathered-cache SDPA comparison")
    ap.add_argument("--eager", action="store_true",
                    help="time our candidates with triton.testing.do_bench (eager calls: host launch gaps "
                         "included) instead of CUDA-graph replay (GPU time)")
    ap.add_argument("--fit", action="store_true", help="print fitted policy/split_k.json constants")
    ap.add_argument("--csv", default=DEFAULT_CSV, help="CSV to append rows to")
    return ap.parse_args(argv)


# --- measurement ------------------------------------------------------------------------
def _bench(fn) -> float:
    """Median milliseconds of eager calls of fn (triton.testing.do_bench: cold L2, host launch gaps included)."""
    import triton.testing

    return float(triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median"))


def make_timer(torch, eager: bool):
    """(timer, name): ``timer(fn)`` -> median ms. Graph replay (GPU time, cold L2) unless ``eager``."""
    if eager:
        return _bench, "eager"
    from timing import graph_time_ms

    flush = torch.empty(FLUSH_BYTES, dtype=torch.uint8, device="cuda")
    return (lambda fn: graph_time_ms(fn, flush)), "graph"


def copy_bandwidth() -> float:
    """GB/s of a 2 GB device-to-device copy, read + write bytes counted, timed eagerly (``_bench``)."""
    from timing import copy_gbps

    return copy_gbps(nbytes=2 << 30, timer=_bench)


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


def measure_shape(torch, batch, context, block_size, splits_list, sdpa, max_cache_bytes, timer=_bench):
    """{candidate: (G, ms)} for one (batch, context), plus the notes. Our candidates are timed with
    ``timer``; gather and sdpa with do_bench (eager)."""
    from vllm_rocm_accel.backends.triton import paged_attention as tpa
    from vllm_rocm_accel.checks.paged_attention import check_paged_args
    from vllm_rocm_accel import split_k

    gen = torch.Generator(device="cuda").manual_seed(batch * 1_000_003 + context)
    q, kc, vc, cu_q, seqused, table = _decode_inputs(torch, batch, context, block_size, gen)
    p = check_paged_args(q, kc, vc, cu_q, seqused, table, 1, context, D ** -0.5, True, -1, -1, 0.0, None,
                         None, None, 1)
    out = torch.empty(batch, HQ, D, dtype=torch.bfloat16, device="cuda")
    res, notes = {}, {}
    h = split_k.choose_num_splits(batch, HK, 1, context, q.device)
    for g in dict.fromkeys([1, *splits_list, h]):  # G=1, the forced splits, then the heuristic's G if new
        def call(g=g):
            tpa.forward(out, q, kc, vc, cu_q, seqused, table, None, None, None, p, None, g)
        call()  # compile outside the timed region
        res[f"G={g}"] = (g, timer(call))
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
            notes["gather"] = "block-table gather into contiguous K/V (not in sdpa's time); do_bench (eager)"
            res["sdpa"] = (0, _bench(lambda: F.scaled_dot_product_attention(qg, kg, vg, enable_gqa=True)))
            notes["sdpa"] = "on the pre-gathered cache; do_bench (eager)"
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


def regret(results, sms, c):
    """(sum, worst) over the measured shapes of log(t(choice of c) / t(best forced G)); inf if c
    picks a G that was not measured."""
    from vllm_rocm_accel import split_k

    total, worst = 0.0, 0.0
    for (batch, context), res in results.items():
        forced = {v[0]: v[1] for k, v in res.items() if k.startswith("G=")}
        g = split_k.splits_for(batch * HK, context, sms, c)
        if g not in forced:
            return math.inf, math.inf  # a choice we did not measure
        r = math.log(forced[g] / min(forced.values()))
        total, worst = total + r, max(worst, r)
    return total, worst


def fit_constants(results, sms, current):
    """The grid point of FIT_GRID with the least total log-regret over the measured shapes:
    (constants, (total, worst, distance to current), (current's total, current's worst))."""
    from vllm_rocm_accel import split_k

    names = list(FIT_GRID)
    best = None
    for point in itertools.product(*FIT_GRID.values()):
        values = dict(zip(names, point))
        if values["saturated_min_keys_per_split"] < values["min_keys_per_split"]:
            continue  # the loader's rule
        c = split_k.SplitConstants(**values, q_block_rows=current.q_block_rows)
        total, worst = regret(results, sms, c)
        dist = sum(abs(math.log(values[n] / getattr(current, n))) for n in names)
        key = (round(total, 9), round(worst, 9), dist)
        if best is None or key < best[0]:
            best = (key, c)
    return best[1], best[0], regret(results, sms, current)


def constants_json(c) -> str:
    """``c`` as policy/split_k.json's family entry (saturated_min_keys_per_split >= 2**40: never)."""
    return (f'{{"saturate_waves": {c.saturate_waves}, "target_waves": {c.target_waves}, '
            f'"min_keys_per_split": {c.min_keys_per_split}, '
            f'"saturated_min_keys_per_split": {c.saturated_min_keys_per_split}, "q_block_rows": {c.q_block_rows}}}')


def print_fit(results, sms, family, current) -> None:
    from vllm_rocm_accel import split_k

    c, (total, worst, _), (cur_total, cur_worst) = fit_constants(results, sms, current)
    print(f"\nfit for family {family!r} over {len(results)} shapes (sum of log regret {total:.4f}, worst "
          f"{math.exp(worst) - 1:+.1%}; current constants: {cur_total:.4f}, worst {math.exp(cur_worst) - 1:+.1%}):")
    never = "  (saturated batches never split)" if c.saturated_min_keys_per_split >= NEVER else ""
    print(f'  "{family}": {constants_json(c)}{never}')
    print("  per shape: chosen G (its time) vs best forced G (its time), regret")
    for (batch, context), res in sorted(results.items()):
        forced = {v[0]: v[1] for k, v in res.items() if k.startswith("G=")}
        g = split_k.splits_for(batch * HK, context, sms, c)
        bg = min(forced, key=forced.get)
        print(f"    B={batch:4d} ctx={context:6d}  G={g:2d} ({forced[g] * 1e3:.1f} us)  best G={bg:2d} "
              f"({forced[bg] * 1e3:.1f} us)  {forced[g] / forced[bg] - 1:+.1%}")


def _note(timer_name: str, note: str) -> str:
    return f"{timer_name}; {note}" if note else timer_name


# --- main ----------------------------------------------------------------------------------------
def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("bench_decode.py needs a GPU (torch.cuda.is_available() is False)", file=sys.stderr)
        return 2
    import triton

    from timing import append_csv
    from vllm_rocm_accel import policy, split_k

    dev = torch.device("cuda")
    gpu = torch.cuda.get_device_name(dev)
    sms = split_k.multiprocessors(dev)
    max_bytes = args.max_cache_gb * 1e9
    timer, timer_name = make_timer(torch, args.eager)
    print(f"# {gpu}: {sms} multiprocessors; torch {torch.__version__}, triton {triton.__version__}")
    print("# reproduce: python3 " + " ".join([os.path.relpath(__file__, ROOT)] + (argv or sys.argv[1:])))
    if args.eager:
        print("# timing (--eager): triton.testing.do_bench, median of eager calls, L2 flushed before each; "
              "host launch gaps INCLUDED")
    else:
        print("# timing: GPU time of a CUDA-graph replay (median of 20, 256 MB L2 flush before each, untimed); "
              "host launch cost not included")
    if not args.no_sdpa:
        print("# sdpa and gather rows: triton.testing.do_bench (eager, host launch gaps included)")
    copy_gbps = copy_bandwidth()  # eager: see the docstring's copy row
    print(f"copy bandwidth (read + write): {copy_gbps:.0f} GB/s")

    results, all_notes, skipped = {}, {}, []
    for batch, context in itertools.product(args.batches, args.contexts):
        if kv_bytes(batch, context) > max_bytes:
            skipped.append(f"B={batch} ctx={context} ({kv_bytes(batch, context) / 1e9:.0f} GB)")
            continue
        res, notes = measure_shape(torch, batch, context, args.block_size, args.splits, not args.no_sdpa, max_bytes,
                                   timer)
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
    meta = dict(date=date, gpu=gpu, torch=torch.__version__, triton=triton.__version__)
    rows = [dict(meta, batch=0, context=0, block_size=args.block_size, candidate="copy", splits=0, ms="",
                 gbps=f"{copy_gbps:.1f}", frac_copy="1",
                 note="eager; 2 GB device-to-device copy, read + write bytes")]
    for (batch, context), res in sorted(results.items()):
        nbytes = kv_bytes(batch, context)
        for name, (g, ms) in res.items():
            gbps = nbytes / (ms * 1e-3) / 1e9
            kv = name != "gather"
            rows.append(dict(meta, batch=batch, context=context, block_size=args.block_size, candidate=name, splits=g,
                             ms=f"{ms:.5f}", gbps=f"{gbps:.1f}" if kv else "",
                             frac_copy=f"{gbps / copy_gbps:.3f}" if kv else "",
                             note=_note(timer_name if kv and name != "sdpa" else "eager",
                                        all_notes[(batch, context)].get(name, ""))))
    append_csv(args.csv, FIELDS, rows)
    print(f"\nrows appended to {args.csv}")

    if args.fit:
        if args.eager:
            print("\n(--fit on --eager times: host launch gaps favour fewer splits; prefer graph times)")
        print_fit(results, sms, policy.family_of(dev), split_k.constants_for(dev))
    return 0


if __name__ == "__main__":
    sys.exit(main())
