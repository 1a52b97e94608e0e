"""Benchmark the norm family on a GPU: every available backend, and torch.compile of the reference.

    python benchmarks/bench_norm.py [--tokens 1,16,...] [--hidden 4096,8192] [--csv PATH]

For each (op, tokens, hidden) in bf16 it times the triton, torch (eager reference) and, where
it can run, aiter backends, plus ``torch.compile`` of the reference, three ways:

* ``eager``: ``triton.testing.do_bench`` (median, L2 flushed before each run; the flush
  kernel hides host time shorter than itself);
* ``back2back`` (shapes up to ``--b2b-max-tokens``): wall-clock per call over calls issued
  back to back, as a decode step issues them; host overhead shows here;
* ``graph`` (shapes up to ``--graph-max-tokens``, all by default): inside a CUDA graph
  (``do_bench_cudagraph``): device time only, no host overhead. From 4096 tokens the working
  set exceeds the H100's 50 MB L2, so this is the bandwidth measurement. Bandwidth counts each input read once and each output written
once. A host-overhead table compares a bare ``torch.ops`` call with our facade. Rows are
appended to a CSV keyed by GPU, versions and date; ``benchmarks/plot_norm.py`` draws it.
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
from vllm_rocm_accel.backends.torch import norm as torch_norm
from vllm_rocm_accel.inputs import norm_inputs
from vllm_rocm_accel.ops import norm as norm_ops

TOKENS = [1, 16, 64, 256, 1024, 2048, 4096, 8192, 16384, 32768]
# One compiled reference per shape (dynamic=False): allow every recompile, or dynamo
# silently falls back to eager after the default 8 and the baseline is no longer compiled.
torch._dynamo.config.recompile_limit = 4096
torch._dynamo.config.accumulated_recompile_limit = 1 << 20
HIDDEN = [4096, 8192]
EPS = 1e-6
FIELDS = ["date", "gpu", "torch", "triton", "op", "tokens", "hidden", "dtype", "backend", "mode", "us", "gbps",
          "vs_compile"]


def _bytes(op: str, rows: int, hidden: int, elem: int) -> int:
    passes = 2 if op == "rms_norm" else 4  # x in, out | x, residual in, out, residual out
    return passes * rows * hidden * elem + hidden * elem


def _candidates(op: str, x, r, w):
    """name -> zero-arg callable, for every backend that can serve this call, plus compile."""
    disp = norm_ops.RMS_NORM if op == "rms_norm" else norm_ops.FUSED_ADD_RMS_NORM
    args = (x, w, EPS) if op == "rms_norm" else (x, r, w, EPS)
    fns = {}
    for name in ("triton", "aiter", "torch"):
        if disp.refusal(name, args) is not None:
            continue
        if op == "rms_norm":
            fns[name] = lambda b=name: rocm_accel_ops.rms_norm(x, w, EPS, backend=b)
        else:
            fns[name] = lambda b=name: rocm_accel_ops.fused_add_rms_norm(x, r, w, EPS, inplace=False, backend=b)
    if op == "rms_norm":
        compiled = torch.compile(torch_norm.rms_norm, dynamic=False)
        fns["compile"] = lambda: compiled(x, w, EPS)
    else:
        compiled = torch.compile(lambda a, b, c, e: torch_norm.fused_add_rms_norm(a, b, c, e, False), dynamic=False)
        fns["compile"] = lambda: compiled(x, r, w, EPS)
    if op == "fused_add_rms_norm":  # vLLM's in-place form, on our Triton kernel
        xi, ri = x.clone(), r.clone()
        fns["triton_inplace"] = lambda: rocm_accel_ops.fused_add_rms_norm(xi, ri, w, EPS, backend="triton")
    return fns


def bench_shapes(tokens, hiddens, graph_max_tokens, b2b_max_tokens, dtype=torch.bfloat16):
    rows = []
    for op in ("rms_norm", "fused_add_rms_norm"):
        for hidden in hiddens:
            for t in tokens:
                x, r, w = norm_inputs((t, hidden), dtype, "cuda")
                nbytes = _bytes(op, t, hidden, x.element_size())
                fns = _candidates(op, x, r, w)
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
                        rows.append(dict(op=op, tokens=t, hidden=hidden, dtype=str(dtype).removeprefix("torch."),
                                         backend=name, mode=mode, us=round(ms * 1e3, 2),
                                         gbps=round(nbytes / (ms * 1e-3) / 1e9, 1),
                                         vs_compile=round(times["compile"] / ms, 3)))
                del x, r, w, fns
                torch.cuda.empty_cache()
    return rows


def host_overhead():
    """Host time per call (tiny 1x4096 bf16 rows, so the GPU never holds the loop back)."""
    lib = torch.library.Library("rocm_accel_bench", "FRAGMENT")
    lib.define("noop(Tensor(a!) x) -> ()")
    lib.impl("noop", lambda x: None, "CUDA")
    from vllm_rocm_accel.backends.triton import norm as triton_norm

    x, _, w = norm_inputs((1, 4096), torch.bfloat16, "cuda")
    out = torch.empty_like(x)
    op = torch.ops.rocm_accel.rms_norm.default
    noop = torch.ops.rocm_accel_bench.noop.default
    compiled = torch.compile(torch_norm.rms_norm, dynamic=False)
    cases = {
        "bare torch.ops no-op custom op (Python impl)": lambda: noop(x),
        "triton launcher alone (writes into out)": lambda: triton_norm.rms_norm(out, x, w, EPS),
        "torch.ops.rocm_accel.rms_norm(backend='triton')": lambda: op(x, w, EPS, "triton"),
        "rocm_accel_ops.rms_norm(backend='triton')": lambda: rocm_accel_ops.rms_norm(x, w, EPS, backend="triton"),
        "rocm_accel_ops.rms_norm() (auto)": lambda: rocm_accel_ops.rms_norm(x, w, EPS),
        "torch.compile(reference)": lambda: compiled(x, w, EPS),
        "torch reference, eager (5 kernels)": lambda: torch_norm.rms_norm(x, w, EPS),
    }
    per_call = interleaved_per_call(cases, 2000, 7, include_device=False, warmup=200)
    return {name: round(sec * 1e6, 2) for name, sec in per_call.items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", default=",".join(map(str, TOKENS)))
    p.add_argument("--hidden", default=",".join(map(str, HIDDEN)))
    p.add_argument("--graph-max-tokens", type=int, default=32768)
    p.add_argument("--b2b-max-tokens", type=int, default=256)
    p.add_argument("--csv", default=os.path.join(os.path.dirname(__file__), "results", "norm.csv"))
    args = p.parse_args(argv)
    print("command:", " ".join([os.path.basename(sys.executable)] + sys.argv))
    gpu = torch.cuda.get_device_name()
    meta = dict(date=datetime.date.today().isoformat(), gpu=gpu, torch=torch.__version__, triton=triton.__version__)
    print(meta)
    copy = copy_gbps()  # 512 MiB of bf16, do_bench median
    print(f"device-to-device copy: {copy:.0f} GB/s (bytes read + written)")
    overhead = host_overhead()
    print("\nhost time per call (us), 1x4096 bf16:")
    for name, us in overhead.items():
        print(f"  {us:8.2f}  {name}")
    rows = bench_shapes([int(t) for t in args.tokens.split(",")], [int(h) for h in args.hidden.split(",")],
                        args.graph_max_tokens, args.b2b_max_tokens)
    os.makedirs(os.path.dirname(args.csv), exist_ok=True)
    new = not os.path.exists(args.csv)
    with open(args.csv, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        if new:
            writer.writeheader()
        for row in rows:
            writer.writerow({**meta, **row})
    print(f"\n| op | tokens | hidden | mode | backend | us | GB/s | % of copy | x compile |")
    print("|---|---:|---:|---|---|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['op']} | {row['tokens']} | {row['hidden']} | {row['mode']} | {row['backend']} | {row['us']} "
              f"| {row['gbps']} | {100 * row['gbps'] / copy:.0f}% | {row['vs_compile']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
