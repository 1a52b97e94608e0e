"""Sweep the Triton FP8 GEMM tile configs on a GPU and print the best per shape.

    python benchmarks/tune_gemm.py [--ms 1,16,128,1024,4096,8192] [--kernels a8w8,blockscale]
    python benchmarks/tune_gemm.py --kernels a8w8_persistent [--quick]   # ~1-2 min on an H100 / H200

For each (M, N, K) with N, K from the issue-4 targets it times every candidate config of
``backends/triton/gemm.py`` (device time inside a CUDA graph, median) and prints the best,
the runner-up and the default (``configs/gemm.json``) config, so the json can be edited
from measurements. The a8w8 kernels are timed with per-token A and per-channel W scales
(benchmarks/bench_gemm.py's inputs).

``a8w8_persistent`` (not in the default ``--kernels``; M defaults to 4096, 8192) sweeps the
persistent TMA kernel: tiles 128x128x128, 128x256x128, 256x128x128, num_warps 4 / 8,
num_stages 3 / 4 / 5, GROUP_M 8 (``--quick``: 4 configs), leaving out configs whose operand
stages alone overflow shared memory. Every candidate's output is first checked against
``torch._scaled_mm`` (flagged and not timed on a mismatch). Per shape it prints the best
persistent config against the shipped config, ``torch._scaled_mm`` (default and
``use_fast_accum=True``) and bf16 ``torch.mm``, and at the end the config with the least
summed time over the shapes as configs/gemm.json rules to paste.

``blockscale_persistent`` (M defaults to 2048, 4096, 8192) sweeps the persistent TMA blockscale
kernel (tiles of 64-256 rows by 64 or 128 columns, 4 / 8 warps, 3-5 stages), each candidate
checked first against the shipped tiled kernel's output, and prints per shape the best against
the shipped config, cuBLAS block-wise ``_scaled_mm`` and bf16 ``torch.mm``, then the configs
with the least summed time.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import torch  # noqa: E402
from triton.testing import do_bench_cudagraph  # noqa: E402

from bench_gemm import _inputs  # noqa: E402  (the same a8w8 inputs as the benchmark)
from vllm_rocm_accel import fp8  # noqa: E402
from vllm_rocm_accel.backends.torch import gemm as torch_gemm  # noqa: E402
from vllm_rocm_accel.backends.triton import gemm as tg  # noqa: E402
from vllm_rocm_accel.checks.gemm import blocks  # noqa: E402

NK = [(4096, 4096), (14336, 4096), (4096, 14336)]
MS = {"a8w8": "1,16,128,1024,4096,8192", "blockscale": "1,16,128,1024,4096,8192", "a8w8_persistent": "4096,8192",
      "blockscale_persistent": "2048,4096,8192"}
PERSISTENT_TILES = [(128, 128, 128), (128, 256, 128), (256, 128, 128)]
PERSISTENT_QUICK = [(128, 256, 128, 8, 8, 3, 1), (128, 256, 128, 8, 8, 4, 1), (128, 128, 128, 8, 8, 4, 1),
                    (256, 128, 128, 8, 8, 3, 1)]
EPS_BF16 = 2.0**-8
ACC = 2.0**-9  # fast FP8 accumulation on Hopper, relative to sum |a_k w_k| (tests/gpu/test_gemm_gpu.py)


def a8w8_candidates(m: int):
    """(BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M, num_warps, num_stages, SPLIT_K) to try at M."""
    if m <= 16:
        return list(itertools.product([16], [64, 128], [128, 256], [1], [4], [4], [1, 2, 4, 8]))
    if m <= 128:
        return list(itertools.product([32, 64], [64, 128], [128], [8], [4], [3, 4], [1, 2, 4]))
    if m <= 1024:
        return (list(itertools.product([128], [128, 256], [128], [8], [8], [3, 4], [1, 2]))
                + [(64, 128, 128, 8, 4, 4, 1), (64, 128, 128, 8, 4, 4, 2)])
    return list(itertools.product([128], [128, 256], [64, 128], [8], [8], [3, 4], [1]))


def blockscale_candidates(m: int):
    """(BLOCK_M, BLOCK_N, 128, GROUP_M, num_warps, num_stages) to try at M."""
    if m <= 16:
        return list(itertools.product([16], [64, 128], [128], [1], [4], [3, 4]))
    if m <= 128:
        return list(itertools.product([32, 64], [64, 128], [128], [8], [4], [3, 4]))
    return (list(itertools.product([128], [128, 256], [128], [8], [8], [3, 4]))
            + [(64, 128, 128, 8, 4, 4), (64, 128, 128, 8, 4, 3), (64, 128, 128, 16, 4, 4), (64, 64, 128, 8, 4, 4)])


def persistent_candidates(quick: bool, smem: int):
    """(BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M, num_warps, num_stages, SPLIT_K = 1) of the persistent
    kernel, less those whose ``num_stages`` operand buffers alone need more than ``smem`` bytes."""
    cands = PERSISTENT_QUICK if quick else [(bm, bn, bk, 8, w, st, 1) for bm, bn, bk in PERSISTENT_TILES
                                            for w in (4, 8) for st in (3, 4, 5)]
    kept = [c for c in cands if c[5] * (c[0] + c[1]) * c[2] <= smem]
    for c in cands:
        if c not in kept:
            print(f"    left out {c}: {c[5]} stages of operands need {c[5] * (c[0] + c[1]) * c[2]} B > {smem} B "
                  f"of shared memory")
    return kept


def blockscale_persistent_candidates(smem: int):
    """(BLOCK_M, BLOCK_N, 128, GROUP_M, num_warps, num_stages) of the persistent blockscale kernel
    (BLOCK_N divides 128: one W block a tile), less those whose operand stages overflow ``smem``."""
    cands = ([(128, 128, 128, 8, w, st) for w in (4, 8) for st in (3, 4, 5)]
             + [(128, 128, 128, 16, 8, 4), (256, 128, 128, 8, 8, 3), (256, 128, 128, 8, 8, 4),
                (64, 128, 128, 8, 4, 4), (64, 128, 128, 8, 4, 5), (128, 64, 128, 8, 4, 4)])
    return [c for c in cands if c[5] * (c[0] + c[1]) * c[2] <= smem]


def _time(fn) -> float:
    try:
        fn()
        torch.cuda.synchronize()
        return do_bench_cudagraph(fn, rep=20, return_mode="median") * 1e3
    except Exception as e:  # out of shared memory / registers: not a candidate
        print(f"    skipped: {type(e).__name__}: {str(e).splitlines()[0][:120]}")
        return float("inf")


def tune(kernel: str, ms, nks):
    fmt = fp8.fp8_dtype(torch.device("cuda"))
    for n, k in nks:
        for m in ms:
            a = torch.randn(m, k, device="cuda").to(fmt)
            w = torch.randn(n, k, device="cuda").to(fmt)
            out = torch.empty(m, n, dtype=torch.bfloat16, device="cuda")
            if kernel == "a8w8":
                sa = torch.rand(m, 1, device="cuda") + 0.5
                sw = torch.rand(n, 1, device="cuda") + 0.5
                cands = a8w8_candidates(m)
                default, default_kernel = tg.gemm_params(a.device, m, n, k), tg.gemm_kernel(a.device, m, n, k)
                run = lambda p, kern="tiled": tg.gemm_a8w8(out, a, w, sa, sw, "token", "channel", None,  # noqa: E731
                                                           params=p, kernel=kern)
            else:
                sa = torch.rand(m, blocks(k), device="cuda") + 0.5
                sw = torch.rand(blocks(n), blocks(k), device="cuda") + 0.5
                cands = blockscale_candidates(m)
                default = tg.blockscale_params(a.device, m, n, k)
                default_kernel = tg.blockscale_kernel(a.device, m, n, k)
                run = lambda p, kern="tiled": tg.gemm_a8w8_blockscale(out, a, w, sa, sw, params=p,  # noqa: E731
                                                                      kernel=kern)
            results = sorted((_time(lambda: run(c)), c) for c in cands)
            d = _time(lambda: run(default, default_kernel))
            flops = 2 * m * n * k
            best_us, best = results[0]
            print(f"{kernel} M={m} N={n} K={k}: best {best_us:.1f} us ({flops / best_us / 1e6:.0f} TFLOP/s) {best}; "
                  f"2nd {results[1][0]:.1f} {results[1][1]}; default {d:.1f} us {default}", flush=True)
            del a, w, out


def _mismatch(out, ref, bound) -> str:
    """'' when ``out`` is within two bf16 roundings (its own and the reference's) of ``ref`` plus
    fast FP8 accumulation (``ACC * bound``), else where the worst element is, both values and the
    tolerance."""
    err = (out.float() - ref.float()).abs()
    tol = 2 * EPS_BF16 * ref.float().abs() + ACC * bound
    bad = ~(err <= tol)  # NaN counts as bad
    if not bad.any():
        return ""
    i = int(torch.argmax(torch.where(bad, err / tol, torch.zeros_like(err))))
    r, c = divmod(i, out.shape[1])
    return (f"MISMATCH vs torch._scaled_mm: {int(bad.sum())} of {out.numel()} beyond tolerance; worst at ({r}, {c}): "
            f"got {out[r, c].item()!r}, ref {ref[r, c].item()!r}, tol {tol[r, c].item():.3g}; "
            f"NaN: {int(torch.isnan(out).sum())}")


def _checked_time(fn, out, ref, bound, label: str) -> float:
    """Run ``fn`` once into ``out`` (NaN-filled first), check it against ``ref``, then time it;
    inf (and a printed reason) when it fails to run or mismatches."""
    out.fill_(float("nan"))
    try:
        fn()
        torch.cuda.synchronize()
    except Exception as e:  # out of shared memory / registers: not a candidate
        print(f"    {label} skipped: {type(e).__name__}: {str(e).splitlines()[0][:120]}")
        return float("inf")
    bad = _mismatch(out, ref, bound)
    if bad:
        print(f"    {label} {bad}")
        return float("inf")
    return _time(fn)


def _persistent_inputs(op: str, m: int, n: int, k: int, fmt):
    """bench_gemm.py's operands and scales of ``op`` and a bf16 out; says so when TMA cannot take
    them (the persistent kernels would fall back to the tiled ones)."""
    a, w, sa, sw = _inputs(op, m, n, k, fmt)
    why = tg.tma_reason(a, w)
    if why:
        print(f"{op} M={m} N={n} K={k}: the persistent kernel cannot run here ({why}); it would fall back to the "
              f"tiled kernel")
    return a, w, sa, sw, torch.empty(m, n, dtype=torch.bfloat16, device=a.device)


def tune_persistent(ms, nks, quick: bool, device: str = "cuda"):
    """The persistent TMA kernel's sweep (see the module docstring); returns {config: {shape: us}}."""
    dev = torch.device(device)
    fmt = fp8.fp8_dtype(dev)
    smem = torch.cuda.get_device_properties(dev).shared_memory_per_block_optin
    cands = persistent_candidates(quick, smem)
    t0 = time.time()
    table = {c: {} for c in cands}
    summary = []
    for n, k in nks:
        for m in ms:
            a, w, sa, sw, out = _persistent_inputs("a8w8_rowwise", m, n, k, fmt)
            ref = torch_gemm._scaled_mm(a, w, sa, sw, "token", "channel", None, torch.bfloat16)
            bound = (a.float().abs() * sa) @ (w.float().abs() * sw).t()
            res = {}
            for c in cands:
                run = lambda: tg.gemm_a8w8(out, a, w, sa, sw, "token", "channel", None, params=c,  # noqa: E731
                                           kernel="persistent")
                res[c] = table[c][(m, n, k)] = _checked_time(run, out, ref, bound, f"persistent {c}")
            shipped, shipped_kernel = tg.gemm_params(dev, m, n, k), tg.gemm_kernel(dev, m, n, k)
            t_shipped = _checked_time(lambda: tg.gemm_a8w8(out, a, w, sa, sw, "token", "channel", None, params=shipped,
                                                           kernel=shipped_kernel),
                                      out, ref, bound, f"shipped {shipped_kernel} {shipped}")
            del bound
            sw_row = sw.reshape(1, -1)
            ab, wb = a.to(torch.bfloat16), w.to(torch.bfloat16)
            refs = {"scaled_mm": _time(lambda: torch_gemm._scaled_mm(a, w, sa, sw, "token", "channel", None,
                                                                     torch.bfloat16)),
                    "scaled_mm_fast": _time(lambda: torch._scaled_mm(a, w.t(), scale_a=sa, scale_b=sw_row,
                                                                     out_dtype=torch.bfloat16, use_fast_accum=True)),
                    "bf16": _time(lambda: torch.mm(ab, wb.t()))}
            best_us, best = min((us, c) for c, us in res.items()) if res else (float("inf"), None)
            flops = 2 * m * n * k
            line = (f"a8w8_persistent M={m} N={n} K={k}: best {best_us:.1f} us "
                    f"({flops / best_us / 1e6:.0f} TFLOP/s) {best}; shipped {shipped_kernel} {t_shipped:.1f} us "
                    f"{shipped}; scaled_mm {refs['scaled_mm']:.1f}; scaled_mm_fast {refs['scaled_mm_fast']:.1f}; "
                    f"bf16 {refs['bf16']:.1f} -> persistent {refs['bf16'] / best_us:.3f}x bf16, "
                    f"{refs['scaled_mm_fast'] / best_us:.3f}x scaled_mm_fast, {t_shipped / best_us:.3f}x shipped "
                    f"(shipped {refs['bf16'] / t_shipped:.3f}x bf16)")
            print(line, f"[{time.time() - t0:.0f} s]", flush=True)
            summary.append(line)
            del a, w, sa, sw, out, ref, ab, wb
            torch.cuda.empty_cache()
    print("\nsummary:\n" + "\n".join(summary))
    _print_rule(table, ms)
    return table


def tune_blockscale_persistent(ms, nks, device: str = "cuda"):
    """The persistent TMA blockscale kernel against the shipped config (kernel and tiles), cuBLAS block-wise
    ``_scaled_mm`` and bf16 ``torch.mm``; every candidate checked against the shipped output first."""
    dev = torch.device(device)
    fmt = fp8.fp8_dtype(dev)
    cands = blockscale_persistent_candidates(torch.cuda.get_device_properties(dev).shared_memory_per_block_optin)
    t0 = time.time()
    table = {c: {} for c in cands}
    summary = []
    for n, k in nks:
        for m in ms:
            a, w, sa, sw, out = _persistent_inputs("blockscale", m, n, k, fmt)
            shipped, shipped_kernel = tg.blockscale_params(dev, m, n, k), tg.blockscale_kernel(dev, m, n, k)
            ref = torch.empty_like(out)  # the tiled kernel with the shipped tiles: no persistent code in it
            tg.gemm_a8w8_blockscale(ref, a, w, sa, sw, params=shipped, kernel="tiled")
            sa_f, sw_f = torch_gemm.expand_block_scales(sa, sw, m, n, k)
            bound = (a.float().abs() * sa_f) @ (w.float().abs() * sw_f).t()
            del sa_f, sw_f
            res = {}
            for c in cands:
                run = lambda: tg.gemm_a8w8_blockscale(out, a, w, sa, sw, params=c, kernel="persistent")  # noqa: E731
                res[c] = table[c][(m, n, k)] = _checked_time(run, out, ref, bound, f"persistent {c}")
            del bound
            t_shipped = _time(lambda: tg.gemm_a8w8_blockscale(out, a, w, sa, sw, params=shipped,
                                                              kernel=shipped_kernel))
            ab, wb = a.to(torch.bfloat16), w.to(torch.bfloat16)
            t_cublas = (_time(lambda: torch_gemm._blockwise_scaled_mm(a, w, sa, sw, torch.bfloat16))
                        if torch_gemm.blockwise_scaled_mm_refusal(a, w) is None else float("nan"))
            t_bf16 = _time(lambda: torch.mm(ab, wb.t()))
            best_us, best = min((us, c) for c, us in res.items()) if res else (float("inf"), None)
            line = (f"blockscale_persistent M={m} N={n} K={k}: best {best_us:.1f} us {best}; shipped "
                    f"{shipped_kernel} {t_shipped:.1f} us {shipped}; scaled_mm {t_cublas:.1f}; bf16 {t_bf16:.1f} -> "
                    f"persistent {t_bf16 / best_us:.3f}x bf16, {t_cublas / best_us:.3f}x scaled_mm, "
                    f"{t_shipped / best_us:.3f}x shipped (shipped {t_bf16 / t_shipped:.3f}x bf16)")
            print(line, f"[{time.time() - t0:.0f} s]", flush=True)
            summary.append(line)
            del a, w, sa, sw, out, ref, ab, wb
            torch.cuda.empty_cache()
    print("\nsummary:\n" + "\n".join(summary))
    whole = {c: sum(t.values()) for c, t in table.items() if t and all(v < float("inf") for v in t.values())}
    for c in sorted(whole, key=whole.get)[:4]:
        print(f"summed over the shapes: {whole[c]:.1f} us {c}")
    return table


def _print_rule(table: dict, ms) -> None:
    """The config with the least summed time over every swept shape, as configs/gemm.json rules:
    the shipped last tiled rule kept below the smallest swept M, the persistent one above."""
    whole = {c: sum(t.values()) for c, t in table.items() if t and all(v < float("inf") for v in t.values())}
    if not whole:
        print("no persistent config ran correctly on every shape: no rule to suggest")
        return
    best = min(whole, key=whole.get)
    names = ("BLOCK_M", "BLOCK_N", "BLOCK_K", "GROUP_M", "num_warps", "num_stages")
    rule = {"kernel": "persistent", **dict(zip(names, best[:6]))}
    rules = tg._section("cuda", "gemm_a8w8")["rules"]
    tiled = next(r for r in reversed(rules) if r.get("kernel", "tiled") != "persistent")  # the last tiled rule
    below = {"max_m": min(ms) - 1, **{key: v for key, v in tiled.items() if key != "max_m"}}
    print(f"\nbest over all swept shapes: {best} (summed {whole[best]:.1f} us). To ship it from M = {min(ms)}, "
          f"replace the cuda gemm_a8w8 rules from the last tiled one on (configs/gemm.json) by these two:")
    print(json.dumps(below, indent=2) + ",")
    print(json.dumps(rule, indent=2))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ms", default=None, help="comma-separated M (default per kernel: " + str(MS) + ")")
    p.add_argument("--kernels", default="a8w8,blockscale",
                   help="any of a8w8, blockscale, a8w8_persistent, blockscale_persistent")
    p.add_argument("--nk", default=";".join(f"{n},{k}" for n, k in NK))
    p.add_argument("--quick", action="store_true", help="a8w8_persistent: 4 configs only")
    args = p.parse_args(argv)
    print("command:", " ".join([os.path.basename(sys.executable)] + sys.argv), torch.cuda.get_device_name(),
          "torch", torch.__version__, "triton", __import__("triton").__version__)
    nks = [tuple(int(v) for v in s.split(",")) for s in args.nk.split(";")]
    for kernel in args.kernels.split(","):
        ms = [int(m) for m in (args.ms or MS[kernel]).split(",")]
        if kernel == "a8w8_persistent":
            tune_persistent(ms, nks, args.quick)
        elif kernel == "blockscale_persistent":
            tune_blockscale_persistent(ms, nks)
        else:
            tune(kernel, ms, nks)
    return 0


if __name__ == "__main__":
    sys.exit(main())
