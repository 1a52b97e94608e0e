"""Benchmark the FP8 quant family on a GPU: every available backend, and torch.compile of the reference.

    python benchmarks/bench_quant.py [--tokens 1,16,...] [--hidden 4096,7168] [--ops ...] [--csv PATH]

For each (op, tokens, hidden) with bf16 input and the device's FP8 format it times the
triton, torch (eager reference) and, where it can run, aiter backends, plus
``torch.compile`` of the torch reference, two ways (as ``bench_norm.py``):

* ``eager``: ``triton.testing.do_bench`` (median, L2 flushed before each run);
* ``graph``: inside a CUDA graph (``do_bench_cudagraph``): device time only; replays do
  not flush L2, so small shapes read above HBM speed.

Ops: ``per_tensor_quant`` (dynamic: an amax pass and a quantize pass), ``per_tensor_quant_static``
(a given scale, one pass: vLLM's static activation scales), ``per_token_quant``,
``per_token_group_quant`` (group 128, row-major scales; ``_cm``: column-major scales).
Bytes per call: x read (2 B) + q written (1 B) per element, plus the scales; the dynamic
per-tensor form reads x twice by construction but is credited with one read, so its
figure is the useful bandwidth. Target (issue 4): every quant op >= 85% of copy bandwidth
from 4096 tokens at hidden 4096 and 7168, judged on the graph column; the summary at the
end prints it. Rows are appended to a CSV keyed by GPU, versions and date.
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

from timing import copy_gbps  # benchmarks/ is on sys.path when run as a script
from vllm_rocm_accel import fp8, rocm_accel_ops
from vllm_rocm_accel.backends.torch import quant as torch_quant
from vllm_rocm_accel.ops import quant as quant_ops

TOKENS = [1, 16, 64, 256, 1024, 4096, 8192, 16384, 32768]
HIDDEN = [4096, 7168]
OPS = ["per_tensor_quant", "per_tensor_quant_static", "per_token_quant", "per_token_group_quant",
       "per_token_group_quant_cm"]
TARGET = dict(min_tokens=4096, pct_of_copy=85.0)
torch._dynamo.config.recompile_limit = 4096
torch._dynamo.config.accumulated_recompile_limit = 1 << 20
FIELDS = ["date", "gpu", "torch", "triton", "op", "tokens", "hidden", "dtype", "backend", "mode", "us", "gbps",
          "vs_compile"]


def _bytes(op: str, rows: int, hidden: int) -> int:
    scales = {"per_tensor_quant": 1, "per_tensor_quant_static": 1, "per_token_quant": rows}.get(
        op, rows * (hidden // 128))
    return rows * hidden * (2 + 1) + 4 * scales


def _static_scale(x, fmt):
    """The scale a calibration would give x: its amax over the format's max (float32, one element)."""
    return (x.float().abs().amax() / fp8.fp8_max(fmt)).reshape(1)


def _call(op: str, x, fmt, backend, scale=None):
    if op == "per_tensor_quant":
        return lambda: rocm_accel_ops.per_tensor_quant(x, dtype=fmt, backend=backend)
    if op == "per_tensor_quant_static":
        return lambda: rocm_accel_ops.per_tensor_quant(x, scale, dtype=fmt, backend=backend)
    if op == "per_token_quant":
        return lambda: rocm_accel_ops.per_token_quant(x, dtype=fmt, backend=backend)
    return lambda: rocm_accel_ops.per_token_group_quant(x, 128, op.endswith("_cm"), dtype=fmt, backend=backend)


def _reference(op: str, fmt, scale=None):
    if op == "per_tensor_quant":
        return lambda x: torch_quant.per_tensor_quant(x, None, fmt)
    if op == "per_tensor_quant_static":
        return lambda x: torch_quant.per_tensor_quant(x, scale, fmt)
    if op == "per_token_quant":
        return lambda x: torch_quant.per_token_quant(x, fmt, None)
    return lambda x: torch_quant.per_token_group_quant(x, 128, op.endswith("_cm"), fmt)


def _candidates(op: str, x, fmt):
    base = op.removesuffix("_cm").removesuffix("_static")
    disp = quant_ops.DISPATCHERS[base]
    scale = _static_scale(x, fmt) if op.endswith("_static") else None
    args = {"per_tensor_quant": (x, scale, fmt), "per_token_quant": (x, fmt, None)}.get(
        base, (x, 128, op.endswith("_cm"), fmt))
    fns = {name: _call(op, x, fmt, name, scale) for name in ("triton", "aiter", "torch")
           if disp.refusal(name, args) is None}
    compiled = torch.compile(_reference(op, fmt, scale), dynamic=False)
    fns["compile"] = lambda: compiled(x)
    return fns


def bench_shapes(ops, tokens, hiddens, graph_max_tokens, dtype=torch.bfloat16):
    fmt = fp8.fp8_dtype(torch.device("cuda"))
    rows = []
    for op in ops:
        for h in hiddens:
            for t in tokens:
                x = torch.randn(t, h, device="cuda").mul_(3).to(dtype)
                nbytes = _bytes(op, t, h)
                fns = _candidates(op, x, fmt)
                for fn in fns.values():
                    fn()
                torch.cuda.synchronize()
                for mode in ["eager"] + (["graph"] if t <= graph_max_tokens else []):
                    bench = do_bench if mode == "eager" else do_bench_cudagraph
                    times = {name: bench(fn, rep=100, return_mode="median") for name, fn in fns.items()}
                    for name, ms in times.items():
                        rows.append(dict(op=op, tokens=t, hidden=h, dtype=str(dtype).removeprefix("torch."),
                                         backend=name, mode=mode, us=round(ms * 1e3, 2),
                                         gbps=round(nbytes / (ms * 1e-3) / 1e9, 1),
                                         vs_compile=round(times["compile"] / ms, 3)))
                del x, fns
                torch.cuda.empty_cache()
    return rows


def target_summary(rows, copy) -> list[str]:
    lines = []
    for op in sorted({r["op"] for r in rows}):
        sel = [r for r in rows if r["op"] == op and r["backend"] == "triton" and r["mode"] == "graph"
               and r["tokens"] >= TARGET["min_tokens"]]
        if not sel:
            continue
        worst = min(sel, key=lambda r: r["gbps"])
        pct = 100 * worst["gbps"] / copy
        met = "met" if pct >= TARGET["pct_of_copy"] else "NOT met"
        lines.append(f"target {op} >= {TARGET['pct_of_copy']:.0f}% of copy from {TARGET['min_tokens']} tokens "
                     f"(graph): min {pct:.1f}% at {worst['tokens']}x{worst['hidden']} ({worst['gbps']} GB/s): {met}")
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", default=",".join(map(str, TOKENS)))
    p.add_argument("--hidden", default=",".join(map(str, HIDDEN)))
    p.add_argument("--ops", default=",".join(OPS))
    p.add_argument("--graph-max-tokens", type=int, default=32768)
    p.add_argument("--csv", default=os.path.join(os.path.dirname(__file__), "results", "quant.csv"))
    args = p.parse_args(argv)
    print("command:", " ".join([os.path.basename(sys.executable)] + sys.argv))
    meta = dict(date=datetime.date.today().isoformat(), gpu=torch.cuda.get_device_name(), torch=torch.__version__,
                triton=triton.__version__)
    print(meta, "fp8:", fp8.fp8_dtype(torch.device("cuda")))
    copy = copy_gbps()  # 512 MiB of bf16, do_bench median
    print(f"device-to-device copy: {copy:.0f} GB/s (bytes read + written)")
    rows = bench_shapes(args.ops.split(","), [int(t) for t in args.tokens.split(",")],
                        [int(h) for h in args.hidden.split(",")], args.graph_max_tokens)
    os.makedirs(os.path.dirname(args.csv), exist_ok=True)
    new = not os.path.exists(args.csv)
    with open(args.csv, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        if new:
            writer.writeheader()
        for row in rows:
            writer.writerow({**meta, **row})
    print("\n| op | tokens | hidden | mode | backend | us | GB/s | % of copy | x compile |")
    print("|---|---:|---:|---|---|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['op']} | {row['tokens']} | {row['hidden']} | {row['mode']} | {row['backend']} | {row['us']} "
              f"| {row['gbps']} | {100 * row['gbps'] / copy:.0f}% | {row['vs_compile']} |")
    print()
    for line in target_summary(rows, copy):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
