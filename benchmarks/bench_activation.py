"""Benchmark the activation family on a GPU: every available backend, and torch.compile of the reference.

    python benchmarks/bench_activation.py [--tokens 1,16,...] [--d 14336,11008] [--ops silu_and_mul,gelu_and_mul] [--csv PATH]

For each (op, tokens, d) in bf16 (d = the MLP's intermediate size, the output width; x is
(tokens, 2d)) it times the triton, torch (eager reference, vLLM's forward_native) and, where it
can run, aiter backends, plus ``torch.compile`` of the reference, three ways (as
``bench_norm.py``):

* ``eager``: ``triton.testing.do_bench`` (median, L2 flushed before each run);
* ``back2back`` (shapes up to ``--b2b-max-tokens``): wall-clock per call over calls issued
  back to back, candidates interleaved; host overhead shows here;
* ``graph`` (shapes up to ``--graph-max-tokens``, all by default): inside a CUDA graph
  (``do_bench_cudagraph``): device time only. Replays do not flush L2: below ~512 tokens at
  d = 14336 the working set (tokens * 3d * 2 B) fits the H100's 50 MB L2.

Bytes per call: read 2d + write d elements per row. The target (issue 3): silu_and_mul
>= 90% of copy bandwidth from 512 tokens (d = 14336), judged on the graph column; the summary
at the end prints it. Rows are appended to a CSV keyed by GPU, versions and date.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import os
import sys

import torch
import triton
from triton.testing import do_bench, do_bench_cudagraph

from timing import copy_gbps, interleaved_per_call
from vllm_rocm_accel import rocm_accel_ops
from vllm_rocm_accel.backends.torch import activation as torch_act
from vllm_rocm_accel.inputs_activation import act_and_mul_inputs
from vllm_rocm_accel.ops import activation as act_ops

TOKENS = [1, 16, 64, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768]
D = [14336, 11008]
OPS = ["silu_and_mul", "gelu_and_mul"]
TARGET = dict(op="silu_and_mul", d=14336, min_tokens=512, pct_of_copy=90.0)
# One compiled reference per shape (dynamic=False): allow every recompile, or dynamo
# silently falls back to eager after the default 8 and the baseline is no longer compiled.
torch._dynamo.config.recompile_limit = 4096
torch._dynamo.config.accumulated_recompile_limit = 1 << 20
FIELDS = ["date", "gpu", "torch", "triton", "op", "tokens", "hidden", "dtype", "backend", "mode", "us", "gbps",
          "vs_compile"]


def _bytes(rows: int, d: int, elem: int) -> int:
    return rows * 3 * d * elem  # gate + up read, out written


def _candidates(op: str, x):
    """name -> zero-arg callable, for every backend that can serve this call, plus compile."""
    disp = act_ops.DISPATCHERS[op]
    args = (x, None) if op == "silu_and_mul" else (x, "tanh", None)
    fns = {}
    for name in ("triton", "aiter", "torch"):
        if disp.refusal(name, args) is not None:
            continue
        if op == "silu_and_mul":
            fns[name] = lambda b=name: rocm_accel_ops.silu_and_mul(x, backend=b)
        else:
            fns[name] = lambda b=name: rocm_accel_ops.gelu_and_mul(x, "tanh", backend=b)
    if op == "silu_and_mul":
        compiled = torch.compile(torch_act.silu_and_mul, dynamic=False)
        fns["compile"] = lambda: compiled(x)
        out = torch.empty(x.shape[0], x.shape[1] // 2, dtype=x.dtype, device=x.device)
        fns["triton_out"] = lambda: rocm_accel_ops.silu_and_mul(x, out=out, backend="triton")
    else:
        compiled = torch.compile(lambda t: torch_act.gelu_and_mul(t, "tanh"), dynamic=False)
        fns["compile"] = lambda: compiled(x)
    return fns


def bench_shapes(ops, tokens, ds, graph_max_tokens, b2b_max_tokens, dtype=torch.bfloat16):
    rows = []
    for op in ops:
        for d in ds:
            for t in tokens:
                x = act_and_mul_inputs(t, d, dtype, "cuda")
                nbytes = _bytes(t, d, x.element_size())
                fns = _candidates(op, x)
                for fn in fns.values():
                    fn()  # compile / JIT before timing
                torch.cuda.synchronize()
                modes = (["eager"] + (["back2back"] if t <= b2b_max_tokens else [])
                         + (["graph"] if t <= graph_max_tokens else []))
                for mode in modes:
                    if mode == "back2back":
                        times = {k: v * 1e3 for k, v in
                                 interleaved_per_call(fns, 300, 9, include_device=True).items()}
                    else:
                        bench = do_bench if mode == "eager" else do_bench_cudagraph
                        times = {name: bench(fn, rep=100, return_mode="median") for name, fn in fns.items()}
                    for name, ms in times.items():
                        rows.append(dict(op=op, tokens=t, hidden=d, dtype=str(dtype).removeprefix("torch."),
                                         backend=name, mode=mode, us=round(ms * 1e3, 2),
                                         gbps=round(nbytes / (ms * 1e-3) / 1e9, 1),
                                         vs_compile=round(times["compile"] / ms, 3)))
                del x, fns
                torch.cuda.empty_cache()
    return rows


def host_overhead():
    """Host time per call (1 x 2*14336 bf16, so the GPU never holds the loop back)."""
    from vllm_rocm_accel.backends.triton import activation as triton_act

    x = act_and_mul_inputs(1, 14336, torch.bfloat16, "cuda")
    out = torch.empty(1, 14336, dtype=torch.bfloat16, device="cuda")
    op = torch.ops.rocm_accel.silu_and_mul.default
    compiled = torch.compile(torch_act.silu_and_mul, dynamic=False)
    cases = {
        "triton launcher alone (writes into out)": lambda: triton_act.act_and_mul(out, x, "silu"),
        "torch.ops.rocm_accel.silu_and_mul(backend='triton')": lambda: op(x, "triton"),
        "rocm_accel_ops.silu_and_mul(backend='triton')": lambda: rocm_accel_ops.silu_and_mul(x, backend="triton"),
        "rocm_accel_ops.silu_and_mul() (auto)": lambda: rocm_accel_ops.silu_and_mul(x),
        "torch.compile(reference)": lambda: compiled(x),
        "torch reference, eager (2 kernels)": lambda: torch_act.silu_and_mul(x),
    }
    per_call = interleaved_per_call(cases, 2000, 7, include_device=False, warmup=200)
    return {name: round(sec * 1e6, 2) for name, sec in per_call.items()}


def target_summary(rows, copy) -> str:
    sel = [r for r in rows if r["op"] == TARGET["op"] and r["hidden"] == TARGET["d"] and r["backend"] == "triton"
           and r["mode"] == "graph" and r["tokens"] >= TARGET["min_tokens"]]
    if not sel:
        return "target: no graph rows for it in this run"
    worst = min(sel, key=lambda r: r["gbps"])
    pct = 100 * worst["gbps"] / copy
    met = "met" if pct >= TARGET["pct_of_copy"] else "NOT met"
    return (f"target {TARGET['op']} >= {TARGET['pct_of_copy']:.0f}% of copy from {TARGET['min_tokens']} tokens "
            f"(d={TARGET['d']}, graph): min {pct:.1f}% at {worst['tokens']} tokens ({worst['gbps']} GB/s): {met}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", default=",".join(map(str, TOKENS)))
    p.add_argument("--d", default=",".join(map(str, D)), help="intermediate sizes (output widths)")
    p.add_argument("--ops", default=",".join(OPS))
    p.add_argument("--graph-max-tokens", type=int, default=32768)
    p.add_argument("--b2b-max-tokens", type=int, default=256)
    p.add_argument("--no-host", action="store_true", help="skip the host-overhead table")
    p.add_argument("--csv", default=os.path.join(os.path.dirname(__file__), "results", "activation.csv"))
    args = p.parse_args(argv)
    print("command:", " ".join([os.path.basename(sys.executable)] + sys.argv))
    gpu = torch.cuda.get_device_name()
    meta = dict(date=datetime.date.today().isoformat(), gpu=gpu, torch=torch.__version__, triton=triton.__version__)
    print(meta)
    copy = copy_gbps()  # 512 MiB of bf16, do_bench median
    print(f"device-to-device copy: {copy:.0f} GB/s (bytes read + written)")
    if not args.no_host:
        print("\nhost time per call (us), 1 x 2*14336 bf16:")
        for name, us in host_overhead().items():
            print(f"  {us:8.2f}  {name}")
    rows = bench_shapes(args.ops.split(","), [int(t) for t in args.tokens.split(",")],
                        [int(d) for d in args.d.split(",")], args.graph_max_tokens, args.b2b_max_tokens)
    os.makedirs(os.path.dirname(args.csv), exist_ok=True)
    new = not os.path.exists(args.csv)
    with open(args.csv, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        if new:
            writer.writeheader()
        for row in rows:
            writer.writerow({**meta, **row})
    print("\n| op | tokens | d | mode | backend | us | GB/s | % of copy | x compile |")
    print("|---|---:|---:|---|---|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['op']} | {row['tokens']} | {row['hidden']} | {row['mode']} | {row['backend']} | {row['us']} "
              f"| {row['gbps']} | {100 * row['gbps'] / copy:.0f}% | {row['vs_compile']} |")
    print("\n" + target_summary(rows, copy))
    return 0


if __name__ == "__main__":
    sys.exit(main())
