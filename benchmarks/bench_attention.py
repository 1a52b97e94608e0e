"""Benchmark the attention family (flash_attn_func / flash_attn_varlen_func) on a GPU against SDPA.

On the device, from the repository root, with the pydantic wheels on ``PYTHONPATH`` (as for
the other benchmarks, docs/performance.md)::

    python3 benchmarks/bench_attention.py [--dtype bf16|fp16] [--quick | --shapes B,H,S,D;...]
        [--causal both|yes|no] [--passes fwd,bwd] [--varlen] [--include-torch-backend] [--csv PATH]

Shapes (B, H, S, D), self-attention (Sq = Sk, Hq = Hk, Dv = D): (8, 32, 4096, 128),
(1, 32, 16384, 128), (16, 16, 1024, 64), each causal and not; ``--quick``: the first only.

Candidates:

* ``triton``, ``auto`` (and ``torch`` with ``--include-torch-backend``: slow, may run out of
  memory at 16k): ``rocm_accel_ops.flash_attn_func(q, k, v, causal=..., backend=...)`` on
  (B, S, H, D) tensors, through the registered op as vLLM calls it (argument checks included);
  the progress line says which backend ``auto`` ran;
* ``flash``, ``cudnn``, ``efficient``: ``F.scaled_dot_product_attention`` under
  ``sdpa_kernel(SDPBackend.FLASH_ATTENTION | CUDNN_ATTENTION | EFFICIENT_ATTENTION)``, given
  pre-transposed contiguous (B, H, S, D) tensors: no layout copy is timed for them.

A candidate that cannot run here (unsupported kernel, out of memory) is reported ``n/a`` with
the first line of its error; the run goes on.

How each pass is timed (``triton.testing.do_bench``, warmup 25 ms, rep 100 ms, median; it
zeroes a 256 MB buffer before every call, so L2 starts cold, and the shapes' q/k/v alone are
>= 96 MB). The candidates are timed in ``--rounds`` rounds (default 2), the order reversed every
other round, and each candidate's fastest median is reported: with one round in a fixed order the
same kernel measured 1.501 ms as the first candidate of the varlen case (triton) and 1.258 ms
right after it (auto, which ran it too; 2026-12-02, H200); with two rounds, 1.240 vs 1.266 ms:

* ``fwd``: the forward under ``torch.no_grad()`` (inference: ours then skips the LSE; SDPA's
  kernels pick their own inference path).
* ``bwd``: the backward alone, the same way for every candidate: the forward runs once outside
  the timed region on ``requires_grad`` leaf tensors (so ours saves its LSE, as in training),
  then ``torch.autograd.grad(out, (q, k, v), dout, retain_graph=True)`` is timed. That is each
  candidate's registered backward (ours: ``torch.ops.rocm_accel.flash_attn_bwd``; SDPA: its
  aten backward kernel) behind the same autograd-engine call, the preprocessing (D = rowsum(dO*O))
  and dq/dk/dv allocation included, with no forward recompute and no layout copies.

FLOPs (``vllm_rocm_accel.inputs_attention.attention_flops``, FlashAttention's convention): forward
4 * B * H * Sq * Sk * D (2 for QK^T, 2 for PV, D == Dv), halved when causal with Sq == Sk; backward
2.5x the forward.

``--varlen`` adds one packed case: 8 sequences of lengths 4096, 1, 3071, 512, 2049, 129, 4000,
1000 (``--varlen-lens``), causal, H = 32, D = 128: ours ``flash_attn_varlen_func`` against SDPA on
the zero-padded (8, H, 4096, D) batch with ``is_causal`` (right padding: the valid rows see only
valid keys). Its TFLOP/s count the useful FLOPs (per-sequence sums) for every candidate, so the
padded SDPA is charged for its wasted work. Ours checks the cu_seqlens values on the host (one
small device-to-host copy per call, as users get it by default); ``--no-seqlens-check`` turns
that off (``VLLM_ROCM_ACCEL_CHECK_SEQLENS=0``).

Before timing, once per shape and causal flag, every candidate's output (fwd) and dq/dk/dv (bwd)
are compared with SDPA's (flash, else cudnn, else efficient): max |a - b| and ||a - b|| / ||b||
over the worst of dq, dk, dv; ``CHECK`` flags a relative error above 2e-2 (bf16) / 1e-2 (fp16).

``--host`` adds each candidate's host time per call to the progress lines (8 unsynchronized calls
from an idle GPU, median of 7): a do_bench figure above the kernel's time with a host time near
it means the launch, not the kernel, was slow.

Output: progress lines (ms and TFLOP/s per candidate), a final table of TFLOP/s with
``ours/flash`` and ``ours/cudnn`` (ours = triton) and ``auto/best`` (auto over the best other
candidate), the n/a reasons, and rows appended to ``benchmarks/results/attention.csv`` (date,
gpu, torch, triton, shape, dtype, causal, pass, candidate, ms, tflops, rel_err, note). A default
run (3 shapes x 2 causal flags x 2 passes, bf16) takes about 1-3 minutes on one H100/H200,
mostly Triton compiling each kernel variant on first use.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Callable, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.append(ROOT)  # run from a checkout without an install (an installed copy still wins)
BENCH = os.path.join(ROOT, "benchmarks")
if BENCH not in sys.path:
    sys.path.insert(0, BENCH)  # timing.py (already first when run as a script)

SHAPES = [(8, 32, 4096, 128), (1, 32, 16384, 128), (16, 16, 1024, 64)]
VARLEN_LENS = [4096, 1, 3071, 512, 2049, 129, 4000, 1000]  # 8 sequences, 1..4096
VARLEN_HEADS, VARLEN_HEAD_DIM = 32, 128
# (name, torch.nn.attention.SDPBackend member): the reference is the first of these that runs
SDPA_BACKENDS = (("flash", "FLASH_ATTENTION"), ("cudnn", "CUDNN_ATTENTION"), ("efficient", "EFFICIENT_ATTENTION"))
SDPA_NAMES = tuple(name for name, _ in SDPA_BACKENDS)
FIELDS = ["date", "gpu", "torch", "triton", "shape", "dtype", "causal", "pass", "candidate", "ms", "tflops",
          "rel_err", "note"]
CHECK_TOL = {"bf16": 2e-2, "fp16": 1e-2}
DEVICE = "cuda"


def first_line(e: BaseException, caught: Optional[list] = None) -> str:
    lines = [ln for ln in str(e).strip().splitlines() if ln.strip()]
    msg = f"{type(e).__name__}: {lines[0] if lines else ''}".strip()
    # SDPA's "No available kernel" gives its reasons as warnings: keep the first one.
    for w in caught or []:
        wl = [ln for ln in str(w.message).strip().splitlines() if ln.strip()]
        if wl:
            msg += f" ({wl[0]})"
            break
    return msg[:240]


# --- candidates ------------------------------------------------------------------
@dataclass
class Candidate:
    name: str
    call: Callable  # the forward on this candidate's own inputs -> out
    inputs: tuple  # the leaf tensors (requires_grad) the backward differentiates
    dout: object  # dout in this candidate's layout
    to_common: Callable  # out / a grad in this candidate's layout -> the common layout of ours
    kind: str  # "ours" | "sdpa"


def _sdpa_call(F, sdpa_kernel, backend, q, k, v, causal):
    def call():
        with sdpa_kernel(backend):
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    return call


def _sdpa_backends(SDPBackend):
    """SDPA_BACKENDS as (name, SDPBackend member) pairs (torch is imported after --help)."""
    return [(name, getattr(SDPBackend, member)) for name, member in SDPA_BACKENDS]


def _leaves(*ts):
    return tuple(t.detach().clone().requires_grad_(True) for t in ts)


def dense_candidates(env, q, k, v, dout, causal, ours_backends):
    """Ours on (B, S, H, D); SDPA on pre-transposed contiguous (B, H, S, D) copies."""
    F, sdpa_kernel, SDPBackend, ops = env["F"], env["sdpa_kernel"], env["SDPBackend"], env["ops"]
    cands = []
    qo, ko, vo = _leaves(q, k, v)
    for b in ours_backends:
        cands.append(Candidate(
            b, lambda b=b: ops.flash_attn_func(qo, ko, vo, causal=causal, backend=b), (qo, ko, vo), dout,
            lambda t: t, "ours"))
    qt, kt, vt = _leaves(*(t.transpose(1, 2).contiguous() for t in (q, k, v)))
    doutt = dout.transpose(1, 2).contiguous()
    for name, backend in _sdpa_backends(SDPBackend):
        cands.append(Candidate(name, _sdpa_call(F, sdpa_kernel, backend, qt, kt, vt, causal), (qt, kt, vt), doutt,
                               lambda t: t.transpose(1, 2), "sdpa"))
    return cands


def varlen_candidates(env, q, k, v, dout, cu, lens, ours_backends):
    """Ours varlen on packed (T, H, D); SDPA (causal) on the zero-padded (B, H, max, D) batch."""
    torch, F, sdpa_kernel, SDPBackend, ops = env["torch"], env["F"], env["sdpa_kernel"], env["SDPBackend"], env["ops"]
    max_len = max(lens)
    starts = [sum(lens[:i]) for i in range(len(lens))]
    cands = []
    qo, ko, vo = _leaves(q, k, v)
    for b in ours_backends:
        cands.append(Candidate(
            b, lambda b=b: ops.flash_attn_varlen_func(qo, ko, vo, cu, cu, max_len, max_len, causal=True, backend=b),
            (qo, ko, vo), dout, lambda t: t, "ours"))

    def pad(t):  # (T, H, D) -> (B, H, max, D) contiguous, zeros past each length
        out = t.new_zeros(len(lens), max_len, *t.shape[1:])
        for i, (s, n) in enumerate(zip(starts, lens)):
            out[i, :n] = t[s:s + n]
        return out.transpose(1, 2).contiguous()

    def unpad(t):  # (B, H, max, D) -> (T, H, D)
        tt = t.transpose(1, 2)
        return torch.cat([tt[i, :n] for i, n in enumerate(lens)])

    qt, kt, vt = _leaves(pad(q), pad(k), pad(v))
    doutt = pad(dout)
    for name, backend in _sdpa_backends(SDPBackend):
        cands.append(Candidate(name, _sdpa_call(F, sdpa_kernel, backend, qt, kt, vt, True), (qt, kt, vt), doutt,
                               unpad, "sdpa"))
    return cands


# --- measuring one case ---------------------------------------------------------------
def _errors(torch, got, want):
    """(max |a - b|, ||a - b|| / ||b||) in float32; for tuples the worst over the elements."""
    worst_abs = worst_rel = 0.0
    for a, b in zip(got, want):
        a, b = a.float(), b.float()
        d = a - b
        m, r = d.abs().max().item(), (d.norm() / b.norm().clamp_min(1e-30)).item()
        worst_abs = max(worst_abs, m if m == m else float("inf"))  # NaN counts as the worst
        worst_rel = max(worst_rel, r if r == r else float("inf"))
    return worst_abs, worst_rel


def _served_by(stats, op):
    served = sorted({b for (o, b), n in stats.call_counts().items() if o == op and n})
    return "+".join(served) or "?"


def run_case(env, args, shape_label, causal, flops, cands):
    """Set up, check and time every candidate of one (shape, causal): result rows."""
    torch, do_bench, stats = env["torch"], env["do_bench"], env["stats"]
    passes = args.passes
    state = {}  # name -> dict(out=, grads=, fwd_err=, bwd_err=, note=)
    for c in cands:
        st = state[c.name] = {}
        notes = []
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:  # warm / JIT the inference forward, then the training forward + backward once
                stats.reset()
                seen = len(caught)
                with torch.no_grad():
                    c.call()
                if c.name == "auto":
                    notes.append(f"fwd ran {_served_by(stats, 'flash_attn_fwd')}")
                with torch.enable_grad():
                    st["out"] = c.call()
                torch.cuda.synchronize()
            except Exception as e:  # noqa: BLE001 - any failure is reported, never fatal
                st["fwd_err"] = st["bwd_err"] = first_line(e, caught[seen:])
                torch.cuda.empty_cache()
                continue
            if "bwd" in passes:
                try:
                    stats.reset()
                    seen = len(caught)
                    st["grads"] = torch.autograd.grad(st["out"], c.inputs, c.dout, retain_graph=True)
                    torch.cuda.synchronize()
                    if c.name == "auto":
                        notes.append(f"bwd ran {_served_by(stats, 'flash_attn_bwd')}")
                except Exception as e:  # noqa: BLE001
                    st["bwd_err"] = first_line(e, caught[seen:])
                    torch.cuda.empty_cache()
        st["note"] = "; ".join(notes)

    # check against the first SDPA that ran (per pass)
    checks = {}
    for pss, key in (("fwd", "out"), ("bwd", "grads")):
        if pss not in passes:
            continue
        ref = next((c for c in cands if c.kind == "sdpa" and key in state[c.name]), None)
        if ref is None:
            print(f"  check {pss}: no SDPA backend ran; nothing to compare with")
            continue
        want = state[ref.name][key]
        want = tuple(ref.to_common(t) for t in (want if key == "grads" else (want,)))
        for c in cands:
            if c is ref or key not in state[c.name]:
                continue
            got = state[c.name][key]
            got = tuple(c.to_common(t) for t in (got if key == "grads" else (got,)))
            maxabs, rel = _errors(torch, got, want)
            checks[pss, c.name] = rel
            flag = "ok" if rel <= CHECK_TOL[args.dtype] else "CHECK"
            what = "out" if pss == "fwd" else "worst of dq,dk,dv"
            print(f"  check {pss} {c.name:>9} vs sdpa {ref.name}: {what} max|diff| {maxabs:.3e}, "
                  f"rel {rel:.3e} {flag}")
        del want
    for st in state.values():  # the gradients are checked: free them before timing
        if "grads" in st:
            st["grads"] = True

    rows = []
    for pss in passes:
        best, errs = {}, {}  # candidate -> fastest median over the rounds / its first error
        for rnd in range(args.rounds):  # alternate the order: no candidate always runs first
            for c in (cands if rnd % 2 == 0 else cands[::-1]):
                st = state[c.name]
                err = errs.get(c.name) or (st.get("fwd_err") if pss == "fwd" else st.get("bwd_err"))
                if pss == "bwd" and err is None and "grads" not in st:
                    err = "not set up"
                if err is not None:
                    errs[c.name] = err
                    continue
                fn = _pass_call(torch, c, st, pss)
                try:
                    ms = do_bench(fn, warmup=args.warmup, rep=args.rep, return_mode="median")
                    best[c.name] = min(ms, best.get(c.name, ms))
                except Exception as e:  # noqa: BLE001
                    errs[c.name] = first_line(e)
                    torch.cuda.empty_cache()
        host = _host_us(torch, cands, state, errs, pss) if args.host else {}
        line = []
        for c in cands:
            st = state[c.name]
            err = errs.get(c.name)
            ms = None if err else best.get(c.name)
            tflops = flops[pss] / (ms * 1e-3) / 1e12 if ms else None
            if ms:
                tflops_txt = f"{tflops:.1f}" if tflops >= 1 else f"{tflops:.3g}"
            rel = checks.get((pss, c.name))
            rows.append(dict(shape=shape_label, dtype=args.dtype, causal=causal, **{"pass": pss},
                             candidate=c.name, ms=round(ms, 4) if ms else "", tflops=float(tflops_txt) if ms else "",
                             rel_err=f"{rel:.2e}" if rel is not None else "",
                             note=err if err else st.get("note", "")))
            line.append((f"{c.name} {ms:.3f} ms {tflops_txt} TF/s" if ms else f"{c.name} n/a")
                        + (f" (host {host[c.name]:.0f} us)" if c.name in host else ""))
        print(f"  {pss}: " + ", ".join(line), flush=True)
    state.clear()
    cands.clear()
    torch.cuda.empty_cache()
    return rows


def _pass_call(torch, c, st, pss):
    """The zero-arg call a pass times: the no_grad forward, or the backward of the set-up output."""
    if pss == "fwd":
        def fn():
            with torch.no_grad():
                return c.call()
    else:
        def fn(out=st["out"]):
            return torch.autograd.grad(out, c.inputs, c.dout, retain_graph=True)
    return fn


def _host_us(torch, cands, state, errs, pss):
    """--host: each candidate's host time per call in µs (``timing.interleaved_per_call``: the
    median of 7 runs of 8 unsynchronized calls, each run started on an idle GPU, so the launch
    queue never fills), to tell a slow kernel from a slow launch in do_bench's figure."""
    from timing import interleaved_per_call

    fns = {c.name: _pass_call(torch, c, state[c.name], pss) for c in cands if c.name not in errs}
    return {name: sec * 1e6 for name, sec in interleaved_per_call(fns, 8, 7, include_device=False).items()}


# --- inputs: the generators the tests use -------------------------------------------------
def _dense_inputs(b, h, s, d, dtype):
    from vllm_rocm_accel.inputs_attention import dense_qkv

    return tuple(t.contiguous() for t in dense_qkv(b, s, s, h, h, d, dtype=dtype, device=DEVICE))


def _varlen_inputs(lens, h, d, dtype):
    from vllm_rocm_accel.inputs_attention import varlen_qkv

    q, k, v, cu, _, _, _ = varlen_qkv(lens, lens, h, h, d, dtype=dtype, device=DEVICE)
    return q.contiguous(), k.contiguous(), v.contiguous(), cu


# --- report ---------------------------------------------------------------------------
def _ratio(a, b):
    return f"{a / b:.2f}" if a is not None and b else "n/a"


def _case(r) -> str:
    return f"{r['shape']}/{'causal' if r['causal'] else 'full'}/{r['pass']}"


def print_table(rows, names):
    print("\nTFLOP/s (fwd: no_grad forward; bwd: autograd.grad alone; SDPA on pre-transposed (B,H,S,D),"
          " its layout copies not timed; ours = triton; rel err: triton vs SDPA)")
    head = ["shape", "causal", "pass", "rel err"] + names + ["ours/flash", "ours/cudnn", "auto/best"]
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join(["---"] * 4 + ["---:"] * (len(head) - 4)) + "|")
    groups = {}
    for r in rows:
        groups.setdefault((r["shape"], r["causal"], r["pass"]), {})[r["candidate"]] = r
    for (shape, causal, pss), by in groups.items():
        tf = {n: (by[n]["tflops"] if n in by and by[n]["tflops"] != "" else None) for n in names}
        others = [v for n, v in tf.items() if n != "auto" and v is not None]
        cells = [shape, "yes" if causal else "no", pss, by.get("triton", {}).get("rel_err", "") or "-"]
        cells += [("n/a" if tf[n] is None else f"{tf[n]:.1f}" if tf[n] >= 1 else f"{tf[n]:.3g}") for n in names]
        cells += [_ratio(tf["triton"], tf["flash"]), _ratio(tf["triton"], tf["cudnn"]),
                  _ratio(tf["auto"], max(others) if others else None)]
        print("| " + " | ".join(cells) + " |")
    reasons = {}
    for r in rows:
        if r["tflops"] == "" and r["note"]:
            reasons.setdefault((r["candidate"], r["note"]), []).append(_case(r))
    if reasons:
        print("\nn/a:")
        for (name, note), where in reasons.items():
            print(f"  {name}: {note}  [{'every case' if len(where) == len(groups) else ', '.join(where)}]")
    autos = {}
    for r in rows:
        if r["candidate"] == "auto" and r["tflops"] != "" and r["note"]:
            autos.setdefault(r["note"], []).append(_case(r))
    for note, where in autos.items():
        print(f"auto {note}: [{'every case' if len(where) == len(groups) else ', '.join(where)}]")


# --- main -----------------------------------------------------------------------------
def parse_shapes(text: str):
    shapes = []
    for part in text.split(";"):
        vals = tuple(int(x) for x in part.replace("x", ",").split(",") if x.strip())
        if len(vals) != 4:
            raise argparse.ArgumentTypeError(f"shape {part!r} is not B,H,S,D")
        shapes.append(vals)
    return shapes


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dtype", choices=["bf16", "fp16"], default="bf16")
    p.add_argument("--shapes", type=parse_shapes, default=SHAPES,
                   help="B,H,S,D;B,H,S,D;... (default: %(default)s)")
    p.add_argument("--quick", action="store_true", help=f"one shape only: {SHAPES[0]}")
    p.add_argument("--causal", choices=["both", "yes", "no"], default="both")
    p.add_argument("--passes", default="fwd,bwd", help="fwd,bwd (default) or one of them")
    p.add_argument("--varlen", action="store_true",
                   help=f"add the packed causal case: {len(VARLEN_LENS)} sequences of lengths {VARLEN_LENS}")
    p.add_argument("--varlen-lens", default=",".join(map(str, VARLEN_LENS)), help="sequence lengths for --varlen")
    p.add_argument("--no-seqlens-check", action="store_true",
                   help="VLLM_ROCM_ACCEL_CHECK_SEQLENS=0: skip ours' host check of cu_seqlens values "
                        "(one small device-to-host copy per varlen call; on by default, as users get it)")
    p.add_argument("--include-torch-backend", action="store_true", help="also time backend='torch' (slow)")
    p.add_argument("--warmup", type=int, default=25, help="do_bench warmup, ms")
    p.add_argument("--rep", type=int, default=100, help="do_bench rep, ms")
    p.add_argument("--rounds", type=int, default=2,
                   help="timing rounds per pass, candidate order reversed every other round; each candidate's "
                        "fastest median is reported (default 2)")
    p.add_argument("--host", action="store_true",
                   help="also print each candidate's host time per call (unsynchronized calls on an idle GPU)")
    p.add_argument("--csv", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                                 "attention.csv"))
    args = p.parse_args(argv)
    if args.quick:
        args.shapes = SHAPES[:1]
    args.passes = [x for x in ("fwd", "bwd") if x in args.passes.split(",")]
    if not args.passes:
        p.error("--passes: give fwd, bwd or both")
    if args.rounds < 1:
        p.error("--rounds must be >= 1")
    args.varlen_lens = [int(x) for x in args.varlen_lens.split(",")]
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    print("command:", " ".join([os.path.basename(sys.executable)] + sys.argv))
    if args.no_seqlens_check:
        os.environ["VLLM_ROCM_ACCEL_CHECK_SEQLENS"] = "0"

    import torch  # GPU-side imports after --help

    if not torch.cuda.is_available():
        print("no CUDA/ROCm device: this benchmark needs a GPU", file=sys.stderr)
        return 2
    import torch.nn.functional as F
    import triton
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from triton.testing import do_bench

    from timing import append_csv
    from vllm_rocm_accel import rocm_accel_ops, settings
    from vllm_rocm_accel.inputs_attention import attention_flops
    from vllm_rocm_accel.ops import stats

    settings.refresh()
    env = dict(torch=torch, F=F, sdpa_kernel=sdpa_kernel, SDPBackend=SDPBackend, ops=rocm_accel_ops,
               do_bench=do_bench, stats=stats)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    meta = dict(date=datetime.date.today().isoformat(), gpu=torch.cuda.get_device_name(), torch=torch.__version__,
                triton=triton.__version__)
    print(meta)
    print(f"dtype {args.dtype}; passes {','.join(args.passes)}; do_bench warmup {args.warmup} ms, rep {args.rep} ms,"
          " median; SDPA candidates get pre-transposed contiguous (B,H,S,D) inputs (layout copies not timed);"
          " ours gets (B,S,H,D)")
    ours = ["triton", "auto"] + (["torch"] if args.include_torch_backend else [])
    names = ours + list(SDPA_NAMES)
    causals = {"both": [False, True], "yes": [True], "no": [False]}[args.causal]
    t0 = time.perf_counter()
    rows = []
    for b, h, s, d in args.shapes:
        for causal in causals:
            label = f"{b}x{h}x{s}x{d}"
            print(f"\n(B,H,S,D)=({b},{h},{s},{d}) causal={causal}", flush=True)
            torch.manual_seed(0)
            q, k, v = _dense_inputs(b, h, s, d, dtype)
            dout = torch.randn_like(q)
            flops = {m: attention_flops(b, h, s, s, d, causal=causal, mode=m) for m in ("fwd", "bwd")}
            cands = dense_candidates(env, q, k, v, dout, causal, ours)
            del q, k, v, dout
            rows += run_case(env, args, label, causal, flops, cands)
    if args.varlen:
        lens = args.varlen_lens
        label = f"varlen{len(lens)}x{VARLEN_HEADS}x[{min(lens)}..{max(lens)}]x{VARLEN_HEAD_DIM}"
        print(f"\nvarlen: {len(lens)} sequences {lens}, H={VARLEN_HEADS}, D={VARLEN_HEAD_DIM}, causal; SDPA on the "
              f"zero-padded ({len(lens)},{VARLEN_HEADS},{max(lens)},{VARLEN_HEAD_DIM}) batch; TFLOP/s count useful "
              f"FLOPs only; cu_seqlens host check {'off' if args.no_seqlens_check else 'on'}", flush=True)
        torch.manual_seed(0)
        q, k, v, cu = _varlen_inputs(lens, VARLEN_HEADS, VARLEN_HEAD_DIM, dtype)
        dout = torch.randn_like(q)
        flops = {m: sum(attention_flops(1, VARLEN_HEADS, n, n, VARLEN_HEAD_DIM, causal=True, mode=m) for n in lens)
                 for m in ("fwd", "bwd")}
        cands = varlen_candidates(env, q, k, v, dout, cu, lens, ours)
        del q, k, v, dout
        rows += run_case(env, args, label, True, flops, cands)

    append_csv(args.csv, FIELDS, [{**meta, **row} for row in rows])
    print_table(rows, names)
    print(f"\n{len(rows)} rows appended to {args.csv}; {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
