"""Benchmark the fused FP8 quant family on a GPU: every available backend, the unfused ops back to back,
and torch.compile of the unfused reference.

    python benchmarks/bench_fused_quant.py [--tokens 1,16,...] [--hidden 4096,7168] [--ops ...] [--no-compile] [--csv PATH]
    python benchmarks/bench_fused_quant.py --tune [--tokens 4096,16384] [--hidden 4096,7168]

For each (op, tokens, hidden) with bf16 input and the device's FP8 format it times:

* ``triton``, ``torch`` (eager reference) and, where it can run, ``aiter``: the fused op's backends;
* ``unfused``: our Triton ops one after the other (``rms_norm`` / ``fused_add_rms_norm`` /
  ``silu_and_mul``, then ``per_token_quant`` / ``per_token_group_quant``): what fusing saves;
* ``compile``: ``torch.compile`` of the unfused torch reference (``backends/torch/fused_quant.py``),
  which Inductor fuses itself (``--no-compile`` leaves it out: its compiles took a 70 s device
  call's whole time on the H200 before the first row was printed);

two ways (as ``bench_quant.py``): ``eager`` (``do_bench``, L2 flushed) and ``graph`` (in a CUDA
graph, device time only; the targets are judged here). A line per shape is printed as it finishes.

Ops and ``hidden``: ``rms_norm_dynamic_quant`` and ``fused_add_rms_norm_dynamic_quant`` (H = hidden,
with a bf16 weight; the fused add updates its residual in place on every call),
``silu_and_mul_group_quant`` (output width d = hidden, x of 2 * d, group 128, row-major scales;
``_cm``: column-major). Bytes per call (useful traffic): rms 2 B read + 1 B written per element;
fused add 2 + 2 read, 2 + 1 written; silu 4 B read + 1 B written per output element; plus the
weight and the scales. Target (issue 4): >= 85% of copy bandwidth from 4096 tokens at hidden 4096
and 7168 (graph column); the summary at the end prints it. Rows are appended to a CSV keyed by GPU,
versions and date.

``--tune``: sweeps the Triton launch parameters (``configs/fused_quant.json``) at the given shapes:
the whole-row norm kernel at 4, 8 and 16 warps, the looped one at several chunk sizes and warps, and
the SiLU kernel's tile sizes; prints each variant's graph time and % of copy, and the best per shape.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import functools
import os
import sys

import torch
import triton
from triton.testing import do_bench, do_bench_cudagraph

from timing import append_csv, copy_gbps as copy_bandwidth  # benchmarks/ is on sys.path when run as a script
from vllm_rocm_accel import fp8, rocm_accel_ops
from vllm_rocm_accel.backends.torch import fused_quant as torch_fq
from vllm_rocm_accel.backends.triton import fused_quant as triton_fq
from vllm_rocm_accel.inputs import norm_inputs
from vllm_rocm_accel.inputs_activation import act_and_mul_inputs
from vllm_rocm_accel.ops import fused_quant as fq_ops

TOKENS = [1, 16, 64, 256, 1024, 4096, 8192, 16384, 32768]
HIDDEN = [4096, 7168]
OPS = ["rms_norm_dynamic_quant", "fused_add_rms_norm_dynamic_quant", "silu_and_mul_group_quant",
       "silu_and_mul_group_quant_cm"]
TARGET = dict(min_tokens=4096, pct_of_copy=85.0)
EPS = 1e-6
torch._dynamo.config.recompile_limit = 4096
torch._dynamo.config.accumulated_recompile_limit = 1 << 20
FIELDS = ["date", "gpu", "torch", "triton", "op", "tokens", "hidden", "dtype", "backend", "mode", "us", "gbps",
          "vs_compile"]
TUNE_FIELDS = ["date", "gpu", "torch", "triton", "op", "tokens", "hidden", "variant", "us", "gbps", "pct_of_copy"]


# --- calls ------------------------------------------------------------------------------------
def _inputs(op: str, rows: int, hidden: int, dtype):
    if op.startswith("silu"):
        return (act_and_mul_inputs(rows, hidden, dtype, "cuda"),)
    x, r, w = norm_inputs((rows, hidden), dtype, "cuda")
    return (x, r, w)


def _bytes(op: str, rows: int, hidden: int, elem: int) -> int:
    if op.startswith("silu"):
        return rows * hidden * (2 * elem + 1) + 4 * rows * (hidden // 128)
    per_elem = elem + 1 if op == "rms_norm_dynamic_quant" else 3 * elem + 1
    return rows * hidden * per_elem + elem * hidden + 4 * rows


def _fused(op: str, inputs, fmt, backend):
    if op == "rms_norm_dynamic_quant":
        x, _, w = inputs
        return lambda: rocm_accel_ops.rms_norm_dynamic_quant(x, w, EPS, dtype=fmt, backend=backend)
    if op == "fused_add_rms_norm_dynamic_quant":
        x, r, w = inputs
        return lambda: rocm_accel_ops.fused_add_rms_norm_dynamic_quant(x, r, w, EPS, dtype=fmt, backend=backend)
    (x,) = inputs
    return lambda: rocm_accel_ops.silu_and_mul_group_quant(x, 128, op.endswith("_cm"), dtype=fmt, backend=backend)


def _unfused(op: str, inputs, fmt):
    """Our Triton ops back to back: the norm / activation op, then the quant op."""
    if op == "rms_norm_dynamic_quant":
        x, _, w = inputs
        return lambda: rocm_accel_ops.per_token_quant(rocm_accel_ops.rms_norm(x, w, EPS, backend="triton"),
                                                      dtype=fmt, backend="triton")
    if op == "fused_add_rms_norm_dynamic_quant":
        return _unfused_add(*inputs, fmt)
    (x,) = inputs
    return lambda: rocm_accel_ops.per_token_group_quant(rocm_accel_ops.silu_and_mul(x, backend="triton"), 128,
                                                        op.endswith("_cm"), dtype=fmt, backend="triton")


def _unfused_add(x, r, w, fmt):
    """fused_add_rms_norm out of place (x is kept, as the fused op keeps it), residual copied back, then quant."""
    def call():
        out, summed = rocm_accel_ops.fused_add_rms_norm(x, r, w, EPS, inplace=False, backend="triton")
        r.copy_(summed)
        return rocm_accel_ops.per_token_quant(out, dtype=fmt, backend="triton")

    return call


def _compiled_reference(op: str, inputs, fmt):
    """torch.compile of the unfused torch reference, its tensors passed as arguments."""
    if op == "rms_norm_dynamic_quant":
        x, _, w = inputs
        fn = torch.compile(torch_fq.rms_norm_dynamic_quant, dynamic=False)
        return lambda: fn(x, w, EPS, fmt)
    if op == "fused_add_rms_norm_dynamic_quant":
        x, r, w = inputs
        fn = torch.compile(torch_fq.fused_add_rms_norm_dynamic_quant, dynamic=False)
        return lambda: fn(x, r, w, EPS, fmt)
    (x,) = inputs
    fn = torch.compile(torch_fq.silu_and_mul_group_quant, dynamic=False)
    return lambda: fn(x, 128, op.endswith("_cm"), fmt)


def _dispatch_args(op: str, inputs, fmt):
    if op == "rms_norm_dynamic_quant":
        x, _, w = inputs
        return fq_ops.RMS_NORM_QUANT, (x, w, EPS, fmt)
    if op == "fused_add_rms_norm_dynamic_quant":
        x, r, w = inputs
        return fq_ops.FUSED_ADD_RMS_NORM_QUANT, (x, r, w, EPS, fmt)
    (x,) = inputs
    return fq_ops.SILU_AND_MUL_GROUP_QUANT, (x, 128, op.endswith("_cm"), fmt)


def _candidates(op: str, inputs, fmt, with_compile: bool = True):
    disp, args = _dispatch_args(op, inputs, fmt)
    fns = {name: _fused(op, inputs, fmt, name) for name in ("triton", "aiter", "torch")
           if disp.refusal(name, args) is None}
    fns["unfused"] = _unfused(op, inputs, fmt)
    if with_compile:
        fns["compile"] = _compiled_reference(op, inputs, fmt)
    return fns


# --- the benchmark --------------------------------------------------------------------------------
def bench_shapes(ops, tokens, hiddens, graph_max_tokens, dtype=torch.bfloat16, with_compile=True):
    fmt = fp8.fp8_dtype(torch.device("cuda"))
    elem = torch.empty((), dtype=dtype).element_size()
    rows = []
    for op in ops:
        for h in hiddens:
            for t in tokens:
                inputs = _inputs(op, t, h, dtype)
                nbytes = _bytes(op, t, h, elem)
                fns = _candidates(op, inputs, fmt, with_compile)
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
                                         vs_compile=round(times["compile"] / ms, 3) if "compile" in times else ""))
                    print(f"  {op} {t}x{h} {mode}: " + ", ".join(f"{n} {ms * 1e3:.2f} us" for n, ms in times.items()),
                          flush=True)
                del inputs, fns
                torch.cuda.empty_cache()
    return rows


def target_summary(rows, copy_gbps) -> list[str]:
    lines = []
    for op in [o for o in OPS if any(r["op"] == o for r in rows)]:
        sel = [r for r in rows if r["op"] == op and r["backend"] == "triton" and r["mode"] == "graph"
               and r["tokens"] >= TARGET["min_tokens"]]
        if not sel:
            continue
        worst = min(sel, key=lambda r: r["gbps"])
        pct = 100 * worst["gbps"] / copy_gbps
        met = "met" if pct >= TARGET["pct_of_copy"] else "NOT met"
        vs = min((r["vs_compile"] for r in sel if r["vs_compile"] != ""), default="n/a (--no-compile)")
        lines.append(f"target {op} >= {TARGET['pct_of_copy']:.0f}% of copy from {TARGET['min_tokens']} tokens "
                     f"(graph): min {pct:.1f}% at {worst['tokens']}x{worst['hidden']} ({worst['gbps']} GB/s): {met}; "
                     f"min triton / compile {vs}x")
    return lines


# --- tuning ---------------------------------------------------------------------------------------
def _norm_variants():
    for warps in (4, 8, 16):
        yield f"whole-row {warps}w", lambda sec, w=warps: sec.update(
            single_pass_max_cols=10**9, padded_looped_min_rows=2**62,
            tables={"default": [{"max_cols": 10**9, "rows_per_program": 1, "num_warps": w}]})
    for block in (1024, 2048, 4096):
        for warps in (4, 8):
            yield f"looped {block}/{warps}w", lambda sec, b=block, w=warps: sec.update(
                single_pass_max_cols=0, looped=[{"max_cols": 10**9, "block": b, "num_warps": w}])


def _silu_variants():
    for elems in (1024, 2048, 4096, 8192):
        for warps in (4, 8):
            yield f"tiles {elems}/{warps}w", lambda sec, e=elems, w=warps: sec.update(
                tables={"default": [{"max_tiles": 10**12, "elements_per_program": e, "num_warps": w}]})


def tune(ops, tokens, hiddens, copy_gbps, dtype=torch.bfloat16):
    fmt = fp8.fp8_dtype(torch.device("cuda"))
    elem = torch.empty((), dtype=dtype).element_size()
    family = triton_fq._family("cuda")
    base = copy.deepcopy(triton_fq._config())
    rows = []
    try:
        for op in ops:
            section_name = "silu_mul_group_quant" if op.startswith("silu") else "rms_norm_quant"
            variants = _silu_variants() if op.startswith("silu") else _norm_variants()
            for name, edit in variants:
                cfg = copy.deepcopy(base)
                edit(cfg[family][section_name])
                triton_fq._config = functools.lru_cache(maxsize=1)(lambda c=cfg: c)
                triton_fq.clear_caches()
                for h in hiddens:
                    for t in tokens:
                        inputs = _inputs(op, t, h, dtype)
                        fn = _fused(op, inputs, fmt, "triton")
                        fn()
                        ms = do_bench_cudagraph(fn, rep=100, return_mode="median")
                        gbps = _bytes(op, t, h, elem) / (ms * 1e-3) / 1e9
                        rows.append(dict(op=op, tokens=t, hidden=h, variant=name, us=round(ms * 1e3, 2),
                                         gbps=round(gbps, 1), pct_of_copy=round(100 * gbps / copy_gbps, 1)))
                        print(f"  {op} {t}x{h} {name}: {ms * 1e3:.2f} us, {100 * gbps / copy_gbps:.1f}% of copy",
                              flush=True)
                        del inputs
    finally:
        triton_fq._config = functools.lru_cache(maxsize=1)(lambda: base)
        triton_fq.clear_caches()
    print("\nbest variant per shape (graph):")
    for key in sorted({(r["op"], r["tokens"], r["hidden"]) for r in rows}):
        sel = [r for r in rows if (r["op"], r["tokens"], r["hidden"]) == key]
        best = min(sel, key=lambda r: r["us"])
        print(f"  {key[0]} {key[1]}x{key[2]}: {best['variant']} {best['us']} us ({best['pct_of_copy']}% of copy)")
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", default=None, help="default: " + ",".join(map(str, TOKENS)) + " (--tune: 4096,16384)")
    p.add_argument("--hidden", default=",".join(map(str, HIDDEN)))
    p.add_argument("--ops", default=",".join(OPS))
    p.add_argument("--graph-max-tokens", type=int, default=32768)
    p.add_argument("--tune", action="store_true", help="sweep the Triton launch parameters instead")
    p.add_argument("--no-compile", action="store_true",
                   help="skip the torch.compile reference (its compiles take most of a short run)")
    p.add_argument("--csv", default=None, help="default: benchmarks/results/fused_quant.csv (--tune: fused_quant_tune.csv)")
    args = p.parse_args(argv)
    print("command:", " ".join([os.path.basename(sys.executable)] + sys.argv))
    meta = dict(date=datetime.date.today().isoformat(), gpu=torch.cuda.get_device_name(), torch=torch.__version__,
                triton=triton.__version__)
    print(meta, "fp8:", fp8.fp8_dtype(torch.device("cuda")))
    copy_gbps = copy_bandwidth()
    print(f"device-to-device copy: {copy_gbps:.0f} GB/s (bytes read + written)")
    ops = [o for o in args.ops.split(",") if o]
    hiddens = [int(h) for h in args.hidden.split(",")]
    results = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
    if args.tune:
        tokens = [int(t) for t in (args.tokens or "4096,16384").split(",")]
        rows = tune(ops, tokens, hiddens, copy_gbps)
        append_csv(args.csv or os.path.join(results, "fused_quant_tune.csv"), TUNE_FIELDS,
                   [{**meta, **row} for row in rows])
        return 0
    tokens = [int(t) for t in (args.tokens or ",".join(map(str, TOKENS))).split(",")]
    rows = bench_shapes(ops, tokens, hiddens, args.graph_max_tokens, with_compile=not args.no_compile)
    append_csv(args.csv or os.path.join(results, "fused_quant.csv"), FIELDS, [{**meta, **row} for row in rows])
    print("\n| op | tokens | hidden | mode | backend | us | GB/s | % of copy | x compile |")
    print("|---|---:|---:|---|---|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['op']} | {row['tokens']} | {row['hidden']} | {row['mode']} | {row['backend']} | {row['us']} "
              f"| {row['gbps']} | {100 * row['gbps'] / copy_gbps:.0f}% | {row['vs_compile']} |")
    print()
    for line in target_summary(rows, copy_gbps):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
