"""Benchmark the rotary embedding on a GPU: every available backend, and torch.compile of the reference.

    python benchmarks/bench_rope.py [--tokens 1,16,...] [--dtypes bfloat16,float16] [--csv PATH]

Shape: Llama-3-8B-like q32/k8, head 128, full rotary, NeoX, an fp32 (max_position 8192, 128)
cos||sin cache, int64 positions. For each (dtype, tokens) it times our triton and torch
backends in place (vLLM's form; ``*_oop``: out of place), aiter where it can run, and
``torch.compile`` of the reference (vLLM's ``RotaryEmbedding.forward_static`` op for op:
index_select, chunk, rotate in the dtype, cat; out of place, as vLLM's compiled models run it),
three ways, as ``bench_norm.py``:

* ``eager``: ``triton.testing.do_bench`` (median, L2 flushed before each run);
* ``back2back`` (up to ``--b2b-max-tokens``): wall-clock per call over calls issued back to back;
* ``graph``: inside a CUDA graph (``do_bench_cudagraph``): device time only.

Bytes per call: query and key read and written once, one cache row read per token
(rotary_dim elements of the cache dtype) and the positions read once. ``x compile`` is
compile's time over the backend's (above 1: faster than compile). Rows are appended to a CSV
keyed by GPU, versions and date.
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
from vllm_rocm_accel.backends.torch.rope import _apply_rotary
from vllm_rocm_accel.inputs_rope import rope_inputs
from vllm_rocm_accel.ops import rope as rope_ops

TOKENS = [1, 16, 64, 256, 1024, 2048, 4096, 8192, 16384, 32768]
Q_HEADS, K_HEADS, HEAD = 32, 8, 128
MAX_POSITION = 8192
# One compiled reference per shape (dynamic=False): allow every recompile.
torch._dynamo.config.recompile_limit = 4096
torch._dynamo.config.accumulated_recompile_limit = 1 << 20
FIELDS = ["date", "gpu", "torch", "triton", "op", "tokens", "q_heads", "k_heads", "head_size", "dtype", "backend",
          "mode", "us", "gbps", "vs_compile"]


def reference(positions, query, key, head_size, cos_sin_cache, is_neox):
    """vLLM 0.32's ``RotaryEmbedding.forward_static`` (full rotary), the baseline torch.compile gets."""
    num_tokens = positions.shape[0]
    cos, sin = cos_sin_cache.index_select(0, positions).chunk(2, dim=-1)
    rd = cos_sin_cache.shape[-1]
    q = query.view(num_tokens, -1, head_size)
    q = torch.cat((_apply_rotary(q[..., :rd], cos, sin, is_neox), q[..., rd:]), dim=-1).reshape(query.shape)
    k = key.view(num_tokens, -1, head_size)
    k = torch.cat((_apply_rotary(k[..., :rd], cos, sin, is_neox), k[..., rd:]), dim=-1).reshape(key.shape)
    return q, k


def _bytes(tokens: int, q, k, cache) -> int:
    return (2 * (q.numel() + k.numel()) * q.element_size() + tokens * cache.shape[1] * cache.element_size()
            + tokens * 8)


def _candidates(pos, q, k, cache):
    args = (pos, q, k, HEAD, cache, True, None)
    fns = {}
    qi, ki = q.clone(), k.clone()
    for name in ("triton", "aiter", "torch"):
        if rope_ops.ROTARY_EMBEDDING.refusal(name, args) is not None:
            continue
        fns[name] = lambda b=name: rocm_accel_ops.rotary_embedding(pos, qi, ki, HEAD, cache, True, backend=b)
        fns[name + "_oop"] = lambda b=name: rocm_accel_ops.rotary_embedding(pos, q, k, HEAD, cache, True,
                                                                            inplace=False, backend=b)
    compiled = torch.compile(reference, dynamic=False)
    cache_q = cache.to(q.dtype)  # vLLM's _match_cos_sin_cache_dtype: the compiled model holds it converted
    fns["compile"] = lambda: compiled(pos, q, k, HEAD, cache_q, True)
    return fns


def bench_shapes(tokens, dtypes, graph_max_tokens, b2b_max_tokens):
    rows = []
    for dtype in dtypes:
        for t in tokens:
            pos, q, k, cache = rope_inputs(t, Q_HEADS, K_HEADS, HEAD, dtype, "cuda", max_position=MAX_POSITION)
            nbytes = _bytes(t, q, k, cache)
            fns = _candidates(pos, q, k, cache)
            for fn in fns.values():
                fn()  # compile / JIT before timing
            torch.cuda.synchronize()
            modes = (["eager"] + (["back2back"] if t <= b2b_max_tokens else [])
                     + (["graph"] if t <= graph_max_tokens else []))
            for mode in modes:
                if mode == "back2back":
                    times = {n: v * 1e3 for n, v in interleaved_per_call(fns, 300, 9, include_device=True).items()}
                else:
                    bench = do_bench if mode == "eager" else do_bench_cudagraph
                    times = {name: bench(fn, rep=100, return_mode="median") for name, fn in fns.items()}
                for name, ms in times.items():
                    rows.append(dict(op="rotary_embedding", tokens=t, q_heads=Q_HEADS, k_heads=K_HEADS,
                                     head_size=HEAD, dtype=str(dtype).removeprefix("torch."), backend=name,
                                     mode=mode, us=round(ms * 1e3, 2), gbps=round(nbytes / (ms * 1e-3) / 1e9, 1),
                                     vs_compile=round(times["compile"] / ms, 3)))
            del pos, q, k, cache, fns
            torch.cuda.empty_cache()
    return rows


def host_overhead():
    """Host time per call for one decode token (the GPU never holds the loop back)."""
    from vllm_rocm_accel.backends.triton import rope as triton_rope

    pos, q, k, cache = rope_inputs(1, Q_HEADS, K_HEADS, HEAD, torch.bfloat16, "cuda")
    op = torch.ops.rocm_accel.rotary_embedding_.default
    compiled = torch.compile(reference, dynamic=False)
    cache_q = cache.to(q.dtype)
    cases = {
        "triton launcher alone (in place)": lambda: triton_rope.rotary_embedding(pos, q, k, q, k, HEAD, cache, True),
        "torch.ops.rocm_accel.rotary_embedding_(backend='triton')": lambda: op(pos, q, k, HEAD, cache, True, None, "triton"),
        "rocm_accel_ops.rotary_embedding(backend='triton')": lambda: rocm_accel_ops.rotary_embedding(
            pos, q, k, HEAD, cache, True, backend="triton"),
        "rocm_accel_ops.rotary_embedding() (auto)": lambda: rocm_accel_ops.rotary_embedding(pos, q, k, HEAD, cache, True),
        "torch.compile(reference)": lambda: compiled(pos, q, k, HEAD, cache_q, True),
        "torch reference, eager": lambda: reference(pos, q, k, HEAD, cache_q, True),
    }
    per_call = interleaved_per_call(cases, 2000, 7, include_device=False, warmup=200)
    return {name: round(sec * 1e6, 2) for name, sec in per_call.items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", default=",".join(map(str, TOKENS)))
    p.add_argument("--dtypes", default="bfloat16,float16")
    p.add_argument("--graph-max-tokens", type=int, default=32768)
    p.add_argument("--b2b-max-tokens", type=int, default=256)
    p.add_argument("--csv", default=os.path.join(os.path.dirname(__file__), "results", "rope.csv"))
    args = p.parse_args(argv)
    print("command:", " ".join([os.path.basename(sys.executable)] + sys.argv))
    gpu = torch.cuda.get_device_name()
    meta = dict(date=datetime.date.today().isoformat(), gpu=gpu, torch=torch.__version__, triton=triton.__version__)
    print(meta)
    copy = copy_gbps()  # 512 MiB of bf16, do_bench median
    print(f"device-to-device copy: {copy:.0f} GB/s (bytes read + written)")
    overhead = host_overhead()
    print("\nhost time per call (us), 1 token, q32/k8/d128 bf16:")
    for name, us in overhead.items():
        print(f"  {us:8.2f}  {name}")
    rows = bench_shapes([int(t) for t in args.tokens.split(",")],
                        [getattr(torch, d) for d in args.dtypes.split(",")],
                        args.graph_max_tokens, args.b2b_max_tokens)
    os.makedirs(os.path.dirname(args.csv), exist_ok=True)
    new = not os.path.exists(args.csv)
    with open(args.csv, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        if new:
            writer.writeheader()
        for row in rows:
            writer.writerow({**meta, **row})
    print(f"\nq{Q_HEADS}/k{K_HEADS}/d{HEAD}, neox, fp32 cache")
    print("| dtype | tokens | mode | backend | us | GB/s | % of copy | x compile |")
    print("|---|---:|---|---|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['dtype']} | {row['tokens']} | {row['mode']} | {row['backend']} | {row['us']} "
              f"| {row['gbps']} | {100 * row['gbps'] / copy:.0f}% | {row['vs_compile']} |")
    # Targets (bf16, graph mode): triton >= 1.15x compile from 4096 tokens, never below 1x.
    worst = [r for r in rows if r["dtype"] == "bfloat16" and r["mode"] == "graph" and r["backend"] == "triton"]
    if worst:
        print("\ntargets (bf16, graph, triton in place vs compile):")
        for r in worst:
            need = 1.15 if r["tokens"] >= 4096 else 1.0
            print(f"  {r['tokens']:>6} tokens: {r['vs_compile']:.3f}x (need >= {need}) "
                  f"{'OK' if r['vs_compile'] >= need else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
