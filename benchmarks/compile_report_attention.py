"""Compile-only register / spill / shared-memory report of the Triton attention kernels for sm_90.

    python benchmarks/compile_report_attention.py [--d 64,128,256] [--kernels fwd,pre,bwd_kv,bwd_q]
                                                  [--causal both|yes|no] [--no-candidates] [--gqa]
                                                  [--arch 90] [--jobs 1]

No GPU needed: each kernel is compiled ahead of time with this machine's Triton (its CUDA backend
and ptxas ship with the wheel) for ``GPUTarget("cuda", arch, 32)``. For every kernel (forward,
backward preprocess, dK/dV, dQ), head dim D in --d (D = Dv), causal and not, bf16, and every
config -- the rule ``configs/attention.json``'s cuda section picks plus the CANDIDATES below --
it prints registers per thread, spill stores/loads (bytes per thread, from ``ptxas -v``), the
stack frame, static+dynamic shared memory, whether the PTX issues wgmma (Hopper tensor-core
MMAs) and whether ptxas serialized them (its C7515 "wgmma ... serialized" note).

The arguments are the ones the launcher really passes: ``backends/triton/attention.py``'s
``forward`` / ``backward`` run on small CPU tensors (B=1, H=2, S=4096: strides and lengths
specialize exactly as the benchmark shapes do) with the kernel launches intercepted, and each
intercepted call is specialized and compiled through Triton's own binder. Identical compiles
(causal and not often are) run once.

These are compile-time facts about one Triton / ptxas version, not timings: a spill-free,
wgmma-using config can still be slow, and another Triton version allocates registers
differently. Exit status 1 if any compile failed (e.g. over the shared-memory limit).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import sys
import time
from concurrent.futures import ProcessPoolExecutor

os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # the 3.9 default, without its warning

import torch  # noqa: E402
import triton  # noqa: E402

from vllm_rocm_accel.backends.triton import attention as ta  # noqa: E402
from vllm_rocm_accel.checks.attention import check_dense  # noqa: E402

# (BLOCK_M, BLOCK_N, num_warps, num_stages) tried besides the json's choice, per pass and bucket
CANDIDATES = {
    "fwd": {
        64: [(128, 64, 4, 3), (128, 128, 8, 3), (128, 64, 8, 3), (128, 128, 4, 3)],
        128: [(128, 64, 8, 3), (128, 128, 8, 3), (128, 64, 8, 2), (128, 32, 8, 3)],
        256: [(64, 64, 8, 2), (128, 64, 8, 2), (128, 32, 8, 2), (64, 64, 4, 2)],
    },
    "bwd_kv": {
        64: [(64, 128, 8, 2), (32, 128, 8, 2), (64, 64, 4, 2), (32, 64, 4, 3)],
        128: [(64, 128, 8, 2), (32, 128, 8, 2), (16, 128, 8, 2), (32, 64, 4, 2), (16, 64, 8, 1), (64, 64, 8, 2)],
        256: [(32, 64, 8, 1), (16, 64, 8, 1), (16, 64, 4, 1), (32, 32, 4, 1)],
    },
    "bwd_q": {
        64: [(128, 64, 8, 2), (64, 64, 4, 2), (128, 32, 4, 2), (64, 128, 8, 2)],
        128: [(128, 32, 8, 2), (128, 64, 8, 2), (64, 64, 4, 2), (64, 32, 4, 2)],
        256: [(64, 32, 8, 1), (64, 16, 4, 1), (32, 32, 4, 1), (64, 16, 8, 1)],
    },
}
KERNELS = {"fwd": "_FWD", "pre": "_PRE", "bwd_kv": "_DKDV", "bwd_q": "_DQ"}
SEQ = 4096


def _capture(d: int, causal: bool, params: dict, gqa: bool) -> dict:
    """{launcher name: (kernel, args, constexprs, num_warps, num_stages)} of one forward+backward."""
    rec = {}
    saved = {}
    for name in ("_FWD", "_PRE", "_DKDV", "_DQ", "_FILL"):
        launcher = getattr(ta, name)
        saved[name] = launcher.launch

        def launch(grid, args, constexprs, num_warps, num_stages=None, _n=name, _k=launcher.kernel):
            rec[_n] = (_k, args, constexprs, num_warps, num_stages)

        launcher.launch = launch
    try:
        hq, hk = (2, 1) if gqa else (2, 2)
        q = torch.zeros(1, SEQ, hq, d, dtype=torch.bfloat16)
        k = torch.zeros(1, SEQ, hk, d, dtype=torch.bfloat16)
        v = torch.zeros(1, SEQ, hk, d, dtype=torch.bfloat16)
        p = check_dense(q, k, v, None, causal, (-1, -1), 0.0, None, 0.0)
        out, lse = ta.forward(q, k, v, None, None, None, p, True, params=params)
        ta.backward(torch.zeros_like(out), q, k, v, out, lse, None, None, None, p, params=params)
    finally:
        for name, fn in saved.items():
            getattr(ta, name).launch = fn
    # the preprocess block the launcher uses on a GPU (the CPU run above picked the CPU one)
    kern, args, cx, w, s = rec["_PRE"]
    rec["_PRE"] = (kern, args, (cx[0], ta.preprocess_block_m("cuda")) + tuple(cx[2:]), w, s)
    return rec


def _compile(job):
    """(key, result dict) of one compile; runs in a worker or in-process."""
    key, kern, args, constexprs, warps, stages, arch = job
    from triton import knobs
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, make_backend
    from triton.runtime.jit import create_function_from_signature

    target = GPUTarget("cuda", arch, 32)
    backend = make_backend(target)
    binder = create_function_from_signature(kern.signature, kern.params, backend)
    kw = {"num_warps": warps}
    if stages is not None:
        kw["num_stages"] = stages
    t0 = time.time()
    try:
        bound, spec, options = binder(*args, *constexprs, **kw)
        options, signature, cexprs, attrs = kern._pack_args(backend, kw, bound, spec, options)
        knobs.nvidia.dump_ptxas_log = True
        knobs.compilation.always_compile = True  # a cache hit would skip ptxas and its -v log
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            ck = triton.compile(ASTSource(kern, signature, cexprs, attrs), target=target, options=options.__dict__)
        log = buf.getvalue()
    except Exception as e:  # noqa: BLE001 - reported, and the exit status says so
        msg = str(e).strip().splitlines()
        return key, {"error": f"{type(e).__name__}: {msg[0][:160] if msg else ''}"}
    regs = re.search(r"Used (\d+) registers", log)
    spill = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", log)
    ptx = ck.asm.get("ptx", "")
    return key, {
        "regs": int(regs.group(1)) if regs else -1,
        "stack": int(spill.group(1)) if spill else -1,
        "spill_st": int(spill.group(2)) if spill else -1,
        "spill_ld": int(spill.group(3)) if spill else -1,
        "shared": int(ck.metadata.shared),
        "wgmma": ptx.count("wgmma.mma_async"),
        "serialized": "C7515" in log,
        "secs": time.time() - t0,
    }


def _job_key(kern, args, constexprs, warps, stages):
    from triton.runtime.jit import native_specialize_impl  # what the compile is keyed on
    from triton.backends.compiler import BaseBackend
    spec = tuple(native_specialize_impl(BaseBackend, a, False, True, True)[:2] for a in args)
    return (kern.__name__, spec, constexprs, warps, stages)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--d", default="64,128,256", help="head dims (D = Dv)")
    ap.add_argument("--kernels", default="fwd,pre,bwd_kv,bwd_q")
    ap.add_argument("--causal", default="both", choices=("both", "yes", "no"))
    ap.add_argument("--no-candidates", action="store_true", help="only the configs attention.json picks")
    ap.add_argument("--configs", default="", help="extra 'pass:BM,BN,W,S;...' to try (e.g. bwd_kv:64,64,4,2)")
    ap.add_argument("--gqa", action="store_true", help="2 query heads per kv head (group is a runtime int)")
    ap.add_argument("--arch", type=int, default=90)
    ap.add_argument("--jobs", type=int, default=1, help="compile processes (the default keeps a shared box calm)")
    args = ap.parse_args(argv)
    dims = [int(x) for x in args.d.split(",")]
    kernels = args.kernels.split(",")
    for kname in kernels:
        if kname not in KERNELS:
            ap.error(f"unknown kernel {kname!r}; expected some of {list(KERNELS)}")
    causals = {"both": (False, True), "yes": (True,), "no": (False,)}[args.causal]
    extra = {}
    for item in filter(None, args.configs.split(";")):
        pass_, cfg = item.split(":")
        extra.setdefault(pass_, []).append(tuple(int(x) for x in cfg.split(",")))
    print(f"triton {triton.__version__}, target sm_{args.arch} (compile only; not timings), bf16, S={SEQ}"
          f"{', GQA group 2' if args.gqa else ''}", flush=True)

    # rows: (kernel, D, causal, config, source) -> job key
    rows, jobs = [], {}
    for d in dims:
        bucket = ta.head_bucket(d, d)
        for causal in causals:
            for kname in kernels:
                pass_ = "fwd" if kname == "pre" else kname
                json_cfg = ta.launch_config("cuda", pass_, bucket, causal, "bfloat16")
                cfgs = [(json_cfg, "json")]
                if kname != "pre" and not args.no_candidates:
                    cfgs += [(c, "cand") for c in CANDIDATES[kname].get(bucket, []) + extra.get(kname, [])
                             if c != json_cfg]
                for cfg, src in cfgs:
                    params = {p: cfg for p in ("fwd", "bwd_kv", "bwd_q")}
                    kern, a, cx, w, s = _capture(d, causal, params, args.gqa)[KERNELS[kname]]
                    key = _job_key(kern, a, cx, w, s)
                    cfg_shown = "BM=64 (fixed)" if kname == "pre" else cfg
                    rows.append((kname, d, causal, cfg_shown, src, key))
                    jobs.setdefault(key, (key, kern, a, cx, w, s, args.arch))
    print(f"{len(rows)} rows, {len(jobs)} distinct compiles", flush=True)

    results = {}
    t0 = time.time()
    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs) as ex:
            for key, res in ex.map(_compile, jobs.values()):
                results[key] = res
    else:
        for i, job in enumerate(jobs.values()):
            key, res = _compile(job)
            results[key] = res
            print(f"  [{i + 1}/{len(jobs)}] {key[0]} {key[2][2:4] if key[0] != 'attn_bwd_preprocess_kernel' else ''}"
                  f" w={key[3]} s={key[4]}: {res.get('error') or str(res['regs']) + ' regs'}"
                  f" ({res.get('secs', 0):.1f}s)", file=sys.stderr, flush=True)

    hdr = (f"{'kernel':7} {'D':>3} {'causal':6} {'(BM, BN, warps, stages)':24} {'src':4} {'regs':>4} "
           f"{'spill st/ld B':>13} {'stack':>5} {'smem KB':>7} {'wgmma':>5} {'serial':>6}")
    print(hdr)
    print("-" * len(hdr))
    failed = 0
    for kname, d, causal, cfg, src, key in rows:
        r = results[key]
        head = f"{kname:7} {d:>3} {str(causal):6} {str(cfg):24} {src:4}"
        if "error" in r:
            failed += 1
            print(f"{head} COMPILE ERROR {r['error']}")
            continue
        print(f"{head} {r['regs']:>4} {str(r['spill_st']) + '/' + str(r['spill_ld']):>13} {r['stack']:>5} "
              f"{r['shared'] / 1024:>7.1f} {('yes' if r['wgmma'] else 'no'):>5} "
              f"{('yes' if r['serialized'] else '-'):>6}")
    print(f"{len(jobs)} compiles in {time.time() - t0:.0f}s; {failed} row(s) failed to compile", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
