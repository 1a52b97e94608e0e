"""Sweep the dynamic per-tensor and per-token FP8 quant and the fused RMSNorm + quant kernels' launch
choices at hidden 4096 and 7168 on this GPU (issue 4: >= 85% of copy from 4096 tokens; on the H200
per_tensor_quant (dynamic) was at 50-60%, rms_norm_dynamic_quant at 73% / 78% at 4096 tokens), each
candidate checked against the shipped path first.

    python benchmarks/tune_quant_hidden.py [--quick] [--shapes OP:H,...] [--tokens 4096,16384] [--only REGEX]
                                           [--rep MS] [--budget-s S] [--json PATH] [--list]

The per-tensor variants alone, each ~1-2 s of compiles plus its timings on an H200 (``--list`` with the
same flags shows what runs):

    python benchmarks/tune_quant_hidden.py --shapes per_tensor_quant:4096,per_tensor_quant:7168

``--list`` prints the candidate names per (op, H) the other flags select, without a GPU, and exits.

Candidates (each a config edit, applied to the family section the launcher reads, so no code changes
between them; names list what they turn on):

* ``default``: the shipped config;
* ``whole rR Ww``: the whole-row kernel (BLOCK_N = next_power_of_2(H) in registers), R rows a program
  (the weight loaded once for all of them), W warps;
* ``chunked C rR Ww``: rows as cdiv(H, C) unrolled chunks, re-read from L1 / L2 by each pass;
* ``regs C rR Ww``: the same chunks held in registers (no re-reads, no padding: 7168 = 7 x 1024);
* ``tensor [bB] [rR] [aA] [Ww] flags`` (per_tensor_quant, dynamic): the per_tensor section's tiles
  (block_n B, rows_per_program R, num_warps W; absent: shipped) and amax_programs A, with the
  quantize kernel's ``split`` / ``rcp`` / ``sat`` (as below, one scale for the tensor) and ``rev``
  (``reverse``: its program p takes tile n_tiles - 1 - p, the amax kernel's last-read tiles first,
  likeliest still in L2), and ``flatB/Ww``: the section's flat tiles (dense x as one row, B elements a
  program, W warps; without it the row tiles); per_tensor_quant_static: ``ssplit`` (static_split, the
  guarded split division) and ``ssat`` (static_sat_cvt: no clamp before the saturating conversion);
* section-wide flags, none of which changes a bit (kernels/triton/quant.py): ``rcp`` / ``split``
  (``rcp_div`` true / "split": q = x / scale through the row's reciprocal and two corrections, or a
  two-term reciprocal and one correction: 4 FP32 operations instead of ~10 for ``div_rn``), ``sat``
  (``sat_cvt``: no clamp before the saturating FP8 conversion), ``wE`` (``weight_early``: the norm
  weight loaded with x in the tile's layout, before the sum of squares), ``lp`` (``lp_amax``: the
  normalized rows kept in bf16 until the division, the amax taken on them), ``hints`` (L1 eviction
  hints of the chunked kernels); and one that does change bits: ``mul`` (``rcp_div`` "mul": q = x times
  the row's reciprocal, codes within one FP8 step of the division's, so its candidates pass as
  ``1ulp`` at best; for the fused ops only);
* ``nregN`` (whole-row candidates): the launch's register cap for calls without a residual
  (a table entry's ``maxnreg_without_residual``).

Why (sm_90 SASS of the Triton 3.9 build, fast path per element, bf16 -> e4m3fn): the shipped rms kernel
issues ~24 instructions per element at H = 4096 (per_token_quant 16), 10 of them the per-element IEEE
division; 132 SMs x 4 issue slots then need about as long as the copy of the same bytes, so the kernel is
issue-bound on the H200 (faster HBM than the H100 for the same SMs). split + sat + wE: ~17 (per token
~10); regs at H = 7168: ~15 (shipped chunked 28).

Checks (before timing, at the first tokens value, on rows with zeros, -0.0, one huge value, tiny values
and FP8 subnormal steps): per_token_quant must equal the shipped path bit for bit (FP8 bytes and scales;
also with scale_ub, where the launcher falls back to the clamped reciprocal division). per_tensor_quant
too, except that -0.0 inputs may encode as +0 (0x80 -> 0x00, the same value: the split division on a
GPU), reported as ``exact (N -0 -> +0)``. The fused ops:
``exact``; ``1ulp``: codes at most one FP8 step apart on <= 0.5% of the bytes, scales within float32
rounding (2**-22 relative); ``1ulp-sum``: as 1ulp, but some scales one bf16 step apart (a chunk-wise sum
of squares, as the shipped chunked kernel's, rounds rstd differently in its last bit); residual equal.
Anything else is WRONG and never wins.

Times: CUDA graph replays (``do_bench_cudagraph`` median), against a device-to-device copy of the same
number of bytes (read + written) timed the same way, twice (start and end of the run; the faster
counts: single copy timings were ~35% slow in the last run's middle) -- "% copy" -- and against the
run's fastest copy rate -- "% peak". Prints a table, per shape the best candidate against the shipped one,
and config fragments ready to paste into configs/quant.json and configs/fused_quant.json (section-wide
flags chosen jointly over the widths; per_tensor: the one best candidate; record the run in
docs/performance.md). ``--quick``: 3 candidates per (op, H) besides the shipped one, about a
third of the time. The full run is ~85 candidates x 2 token counts, more than the
budget: ``--budget-s`` stops starting new candidates after that long (125 s), so one run fits a 150 s
slot, and the shapes run in SHAPES' order (biggest misses first); the skipped ones are listed.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import re
import sys
import time

import torch

import bench_fused_quant  # benchmarks/ is on sys.path when run as a script
import bench_quant
from vllm_rocm_accel.backends.triton import fused_quant as tfq
from vllm_rocm_accel.backends.triton import quant as tq

FMT = torch.float8_e4m3fn
EPS = 1e-6
OPS = ["per_tensor_quant", "per_token_quant", "rms_norm_dynamic_quant", "fused_add_rms_norm_dynamic_quant",
       "per_tensor_quant_static"]
QUANT_OPS = ("per_token_quant", "per_tensor_quant", "per_tensor_quant_static")  # x only, bench_quant's bytes
SECTION = {"per_tensor_quant": (tq, "per_tensor"), "per_tensor_quant_static": (tq, "per_tensor"),
           "per_token_quant": (tq, "per_token"),
           "rms_norm_dynamic_quant": (tfq, "rms_norm_quant"),
           "fused_add_rms_norm_dynamic_quant": (tfq, "rms_norm_quant")}
# biggest misses first: the budget stops the last ones
SHAPES = "per_tensor_quant:4096,per_tensor_quant:7168,rms_norm_dynamic_quant:4096,rms_norm_dynamic_quant:7168," \
         "per_token_quant:7168,fused_add_rms_norm_dynamic_quant:4096,fused_add_rms_norm_dynamic_quant:7168," \
         "per_token_quant:4096,per_tensor_quant_static:4096,per_tensor_quant_static:7168"
BIG = 10**9
NEVER = 2**62
FLAGS = ("rcp", "sat", "we", "lp")  # section-wide: rcp_div, sat_cvt, weight_early, lp_amax
DEVICE = "cuda"  # --device cpu: a dry run of the script's logic under TRITON_INTERPRET (times meaningless)


# --- candidates -----------------------------------------------------------------------------------
def spec(kind: str, *, chunk: int = 1024, rows: int = 1, warps: int = 4, rcp=False, sat=False, we=False, lp=False,
         hints=False, nreg=None) -> dict:
    """nreg: the whole-row kernel's register cap for calls without a residual (maxnreg_without_residual)."""
    return dict(kind=kind, chunk=chunk, rows=rows, warps=warps, rcp=rcp, sat=sat, we=we, lp=lp, hints=hints, nreg=nreg)


def tensor_spec(*, block=None, rows=None, warps=None, amax=None, rcp=False, sat=False, rev=False,
                ssplit=False, ssat=False, flat=None) -> dict:
    """A per_tensor candidate: None keeps the shipped table's / amax_programs value; ssplit: the
    section's static_split (static scales through the guarded split division); ssat: its
    static_sat_cvt (no clamp before the saturating conversion, static scales); flat: (block, warps),
    the section's flat tiles for every size (dense x as one row: no partly masked column tiles)."""
    return dict(kind="tensor", block=block, rows=rows, warps=warps, amax=amax, rcp=rcp, sat=sat, rev=rev,
                ssplit=ssplit, ssat=ssat, flat=flat)


def candidates(op: str, hidden: int, quick: bool) -> list[dict]:
    """Specs for (op, hidden): the shipped config first. Widths that are powers of two favour the
    whole-row kernel (no padding), others the chunk kernels; the lists are what the SASS counts
    (module docstring) make plausible, not a grid."""
    pow2 = hidden == tq._pow2_ceil(hidden)
    S = dict(rcp="split", sat=True)
    if op == "per_tensor_quant_static":  # the quantize kernel alone; row tiles shared with the dynamic form
        X = dict(ssplit=True, ssat=True)
        full = [tensor_spec(flat=(4096, 8), **X), tensor_spec(flat=(8192, 8), **X), tensor_spec(flat=(2048, 4), **X),
                tensor_spec(flat=(4096, 4), **X), tensor_spec(flat=(8192, 16), **X),
                tensor_spec(flat=(16384, 16), **X),
                tensor_spec(flat=(4096, 8), ssplit=True), tensor_spec(flat=(4096, 8), ssat=True),
                tensor_spec(flat=(4096, 8)), tensor_spec(**X), tensor_spec(ssplit=True),
                tensor_spec(ssplit=True, rows=2)]
        return [dict(kind="default")] + (full[:3] if quick else full)
    if op == "per_tensor_quant":  # shipped at H > 1024: block 2048, 1 row, 4 warps, 1024 amax programs
        T = dict(S, rev=True)
        full = [tensor_spec(**S), tensor_spec(rev=True), tensor_spec(**T), tensor_spec(rcp="split", rev=True),
                tensor_spec(rcp=True, rev=True), tensor_spec(block=4096, **T), tensor_spec(block=1024, rows=2, **T),
                tensor_spec(warps=8, block=4096, **T), tensor_spec(amax=2048, **T), tensor_spec(amax=528, **T),
                tensor_spec(flat=(4096, 8), **T), tensor_spec(flat=(8192, 8), **T), tensor_spec(flat=(2048, 4), **T),
                tensor_spec(flat=(8192, 16), **T)]
        return [dict(kind="default")] + (full[:3] if quick else full)
    if op == "per_token_quant":
        if pow2:
            full = [spec("whole", **S), spec("regs", **S), spec("whole", rcp="split"), spec("whole", warps=8, **S),
                    spec("whole", rows=2, **S), spec("regs", chunk=512, **S), spec("chunked", **S),
                    spec("whole", warps=2, **S)]
        else:
            full = [spec("regs", **S), spec("chunked", warps=8, **S), spec("regs", warps=8, **S),
                    spec("chunked", warps=8, rcp="split"), spec("chunked", warps=8, hints=True, **S),
                    spec("regs", rcp="split"), spec("regs", rows=2, **S), spec("regs", rows=2, warps=8, **S),
                    spec("whole", **S), spec("whole", warps=8, **S)]
    else:
        W = dict(S, we=True)
        M = dict(rcp="mul", sat=True, we=True)  # the product with the reciprocal: within one FP8 step
        if pow2:
            full = [spec("whole", **W), spec("whole", **M), spec("whole", lp=True, **M), spec("whole", warps=8, **M),
                    spec("whole", nreg=56, **M), spec("whole", nreg=48, **M), spec("whole", nreg=56, lp=True, **M),
                    spec("whole", rows=2, **M), spec("whole", rows=2, warps=8, **M), spec("whole", warps=2, **M),
                    spec("whole", rcp="mul", we=True), spec("regs", **S), spec("whole", rcp="split"),
                    spec("whole", rcp="split", we=True), spec("whole", lp=True, **W), spec("whole", rcp=True, we=True),
                    spec("whole", warps=8, **W), spec("whole", rows=2, warps=8, **W), spec("whole", rows=2, **W),
                    spec("regs", **W), spec("regs", chunk=512, **W), spec("whole", warps=2, **W),
                    spec("whole", warps=2, **S), spec("regs", warps=2, **W), spec("whole", warps=1, **W),
                    spec("whole", warps=1, lp=True, **W)]
        else:
            full = [spec("regs", **S), spec("regs", rcp="mul", sat=True), spec("regs", **M), spec("regs", warps=8, **M),
                    spec("regs", warps=2, **M), spec("whole", warps=8, **M), spec("regs", rows=2, warps=8, **M),
                    spec("regs", warps=8, **S), spec("whole", warps=8, **W), spec("chunked", **S),
                    spec("regs", rcp="split"), spec("regs", **W), spec("regs", warps=8, **W),
                    spec("regs", rows=2, warps=8, **S), spec("whole", **W), spec("regs", warps=2, **S),
                    spec("regs", warps=2, **W)]
    return [dict(kind="default")] + (full[:3] if quick else full)


RCP_NAMES = {True: "rcp", "split": "split", "mul": "mul"}  # rcp_div values


def name(s: dict) -> str:
    k = s["kind"]
    if k == "default":
        return "default"
    if k == "tensor":
        parts = ["tensor"] + [f"{p}{s[key]}" for p, key in (("b", "block"), ("r", "rows"), ("a", "amax"))
                              if s[key] is not None]
        parts += [f"{s['warps']}w"] if s["warps"] is not None else []
        parts += [RCP_NAMES[s["rcp"]]] if s["rcp"] else []
        parts += [f"flat{s['flat'][0]}/{s['flat'][1]}w"] if s["flat"] else []
        return " ".join(parts + [f for f, on in (("sat", s["sat"]), ("rev", s["rev"]), ("ssplit", s["ssplit"]),
                                                 ("ssat", s["ssat"])) if on])
    base = (f"whole r{s['rows']} {s['warps']}w" if k == "whole"
            else f"{k} {s['chunk']} r{s['rows']} {s['warps']}w")
    base += f" nreg{s['nreg']}" if s["nreg"] else ""
    flags = [RCP_NAMES[s["rcp"]]] if s["rcp"] else []
    flags += [f for f, on in (("sat", s["sat"]), ("wE", s["we"]), ("lp", s["lp"]), ("hints", s["hints"])) if on]
    return " ".join([base] + flags)


def apply(section: dict, s: dict, hiddens=None) -> None:
    """Edit a per_token / rms_norm_quant section so that every width and row count takes spec ``s``; a
    per_tensor one so that its flags and amax_programs are ``s``'s, and its tiles in the brackets that
    serve ``hiddens`` (None: in every bracket)."""
    if s["kind"] == "default":
        return
    if s["kind"] == "tensor":  # the per_tensor section
        section.update(rcp_div=s["rcp"], sat_cvt=s["sat"], reverse=s["rev"], static_split=s["ssplit"],
                       static_sat_cvt=s["ssat"])
        section.pop("flat", None)  # a candidate without flat tiles times the row tiles
        if s["flat"]:
            section["flat"] = [{"max_numel": BIG * BIG, "block": s["flat"][0], "num_warps": s["flat"][1]}]
        if s["amax"] is not None:
            section["amax_programs"] = s["amax"]
        for table in section["tables"].values():
            serving = {id(next((e for e in table if h <= e["max_cols"]), table[-1])) for h in hiddens or ()}
            for e in table:
                if hiddens is not None and id(e) not in serving:
                    continue
                for key, field in (("block", "block_n"), ("rows", "rows_per_program"), ("warps", "num_warps")):
                    if s[key] is not None:
                        e[field] = s[key]
        return
    section.update(rcp_div=s["rcp"], sat_cvt=s["sat"], weight_early=s["we"], lp_amax=s["lp"], chunked=[])
    if s["kind"] == "whole":
        section.update(single_pass_max_cols=BIG, padded_looped_min_rows=NEVER,
                       tables={"default": [{"max_cols": BIG, "rows_per_program": s["rows"], "num_warps": s["warps"]}]})
        if s["nreg"]:
            section["tables"]["default"][0]["maxnreg_without_residual"] = s["nreg"]
    else:
        section["chunked"] = [{"max_cols": BIG, "min_rows": 1, "chunk": s["chunk"], "rows_per_program": s["rows"],
                               "num_warps": s["warps"], "hints": s["hints"], "regs": s["kind"] == "regs"}]


class Configured:
    """Context: the launcher module reads spec ``s`` applied to its shipped config."""

    def __init__(self, mod, section: str, s: dict):
        self.mod, self.section, self.spec, self.family = mod, section, s, tq._family(DEVICE)

    def __enter__(self):
        self.saved = self.mod._config
        cfg = copy.deepcopy(self.saved())
        apply(cfg[self.family][self.section], self.spec)
        self.mod._config = functools.lru_cache(maxsize=1)(lambda: cfg)
        self.mod.clear_caches()
        return self

    def __exit__(self, *exc):
        self.mod._config = self.saved
        self.mod.clear_caches()


# --- inputs, calls, checks ------------------------------------------------------------------------
def make_inputs(op: str, tokens: int, hidden: int, special: bool):
    g = torch.Generator(device=DEVICE).manual_seed(tokens * 7 + hidden)
    x = torch.randn(tokens, hidden, device=DEVICE, generator=g) * 3
    if special:  # rows over ~6 binades, and the edge cases of the reciprocal divisions
        x *= torch.exp2(torch.empty(tokens, 1, device=DEVICE).uniform_(-3, 3, generator=g))
        x[0] = 0
        x[1, ::3] = -0.0
        x[2, 5] = 1e4
        x[2, 6:40] = 1e-30
        x[3, ::7] = 2.0 ** -9  # FP8 subnormal steps after the scale
    x = x.to(torch.bfloat16)
    if op == "per_tensor_quant_static":  # the scale a calibration would give
        return dict(x=x, static=bench_quant._static_scale(x, FMT))
    if op in QUANT_OPS:
        return dict(x=x)
    r = (torch.randn(tokens, hidden, device=DEVICE, generator=g)).to(torch.bfloat16)
    if special:
        r[4] = -x[4]  # a row whose sum is zero
    w = (torch.rand(hidden, device=DEVICE, generator=g) + 0.5).to(torch.bfloat16)
    return dict(x=x, r=r, w=w)


def nbytes(op: str, tokens: int, hidden: int) -> int:
    """Bytes read + written by one call on bf16 rows: bench_quant's / bench_fused_quant's count."""
    if op in QUANT_OPS:
        return bench_quant._bytes(op, tokens, hidden)
    return bench_fused_quant._bytes(op, tokens, hidden, 2)  # 2: bf16 element bytes


def make_call(op: str, inp: dict, ub=None):
    x = inp["x"]
    q = torch.empty(x.shape, dtype=FMT, device=DEVICE)
    s = torch.empty(x.shape[0], 1, dtype=torch.float32, device=DEVICE)
    if op == "per_tensor_quant":  # dynamic: the amax kernel, then the quantize kernel
        s = torch.empty(1, dtype=torch.float32, device=DEVICE)
        fn = lambda: tq.per_tensor_quant(q, s, x, None)  # noqa: E731
    elif op == "per_tensor_quant_static":  # one pass
        s = torch.empty(1, dtype=torch.float32, device=DEVICE)
        fn = lambda: tq.per_tensor_quant(q, s, x, inp["static"])  # noqa: E731
    elif op == "per_token_quant":
        fn = lambda: tq.per_token_quant(q, s, x, ub)  # noqa: E731
    elif op == "rms_norm_dynamic_quant":
        fn = lambda: tfq.rms_norm_dynamic_quant(q, s, x, None, inp["w"], EPS)  # noqa: E731
    else:
        r = inp["r"]
        fn = lambda: tfq.rms_norm_dynamic_quant(q, s, x, r, inp["w"], EPS)  # noqa: E731
    return fn, q, s


def outputs(op: str, inp: dict, ub=None):
    """One call on fresh outputs (and a fresh residual): (q bytes, scales, residual or None)."""
    inp = dict(inp)
    if "r" in inp:
        inp["r"] = inp["r"].clone()
    fn, q, s = make_call(op, inp, ub)
    fn()
    sync()
    return q.view(torch.uint8).clone(), s.clone(), (inp["r"] if op.startswith("fused_add") else None)


def compare(op: str, want, got) -> str:
    """'exact', '1ulp', '1ulp-sum' or 'WRONG (...)' (module docstring)."""
    (qw, sw, rw), (qg, sg, rg) = want, got
    if rw is not None and not torch.equal(rw, rg):
        return "WRONG (residual)"
    if torch.equal(qw, qg) and torch.equal(sw, sg):
        return "exact"
    nbad = int((qw != qg).sum())
    rel = ((sg - sw).abs() / sw.abs()).max().item()
    what = f"{nbad} bytes, scales {rel:.1e}"
    if op == "per_tensor_quant":
        zeros = int(((qw == 0x80) & (qg == 0x00)).sum())  # -0.0 -> +0 (e4m3fn), the same value
        if torch.equal(sw, sg) and zeros == nbad:
            return f"exact ({zeros} -0 -> +0)"
        return f"WRONG ({what})"
    if op in ("per_token_quant", "per_tensor_quant_static"):
        return f"WRONG ({what})"
    codes = (qw.to(torch.int16) & 0x7F) - (qg.to(torch.int16) & 0x7F)  # adjacent FP8 magnitudes differ by 1
    bad_sign = ((qw & 0x80) != (qg & 0x80)) & (((qw | qg) & 0x7F) != 0)
    if codes.abs().max().item() > 1 or bool(bad_sign.any()) or nbad > max(4, int(0.005 * qw.numel())):
        return f"WRONG ({what})"
    if rel <= 2.0 ** -22:
        return f"1ulp ({what})"
    off = int(((sg - sw).abs() > 2.0 ** -22 * sw.abs()).sum())
    if rel <= torch.finfo(torch.bfloat16).eps + 1e-6 and off <= max(2, sw.numel() // 1000):
        return f"1ulp-sum ({what}, {off} scales one bf16 step)"
    return f"WRONG ({what})"


def sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def bench(fn, rep: int) -> float:
    if DEVICE != "cuda":
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1e6
    from triton.testing import do_bench_cudagraph

    return do_bench_cudagraph(fn, rep=rep, return_mode="median") * 1e3  # us


def copy_us(nb: int, rep: int) -> float:
    src = torch.empty(nb // 2, dtype=torch.uint8, device=DEVICE).random_()
    dst = torch.empty_like(src)
    dst.copy_(src)
    return bench(lambda: dst.copy_(src), rep)


# --- config fragments -----------------------------------------------------------------------------
def flags_of(s: dict) -> tuple:
    return (False, False, False, False) if s["kind"] == "default" else tuple(s[f] for f in FLAGS)


def layout_of(s: dict) -> tuple:
    return ("default",) if s["kind"] == "default" else (s["kind"], s["chunk"], s["rows"], s["warps"], s["hints"],
                                                        s["nreg"])


def tensor_proposal(results: list, hiddens: list, shipped: dict) -> dict:
    """per_tensor_quant: the candidate with the lowest mean time / shipped time over every timed
    (H, tokens) (its flags are section-wide and its tile edit applies to every width: one choice), as
    a fragment of the per_tensor section."""
    ok = [r for r in results if r["op"] == "per_tensor_quant" and r["hidden"] in hiddens and "WRONG" not in r["check"]]
    base = {(r["hidden"], r["tokens"]): r["us"] for r in ok if r["spec"]["kind"] == "default"}
    score, specs = {}, {}
    for r in ok:
        if (r["hidden"], r["tokens"]) in base:
            score.setdefault(r["variant"], []).append(r["us"] / base[(r["hidden"], r["tokens"])])
            specs[r["variant"]] = r["spec"]
    full = {v: sum(x) / len(x) for v, x in score.items() if len(x) == len(base)}
    if not full:
        return {}
    best = min(full, key=full.get)
    s = specs[best]
    out = {"file": "quant.json", "section": f"{tq._family(DEVICE)}.per_tensor", "best": best,
           "score_vs_shipped": round(full[best], 3),
           "ranking": {v: round(x, 3) for v, x in sorted(full.items(), key=lambda kv: kv[1])[:8]}}
    if s["kind"] == "default":
        out.update(fragment={}, notes=["the shipped per_tensor section stays"])
        return out
    frag = {"rcp_div": s["rcp"], "sat_cvt": s["sat"], "reverse": s["rev"]}
    if s["flat"]:
        frag["flat"] = [{"max_numel": BIG * BIG, "block": s["flat"][0], "num_warps": s["flat"][1]}]
    if s["amax"] is not None:
        frag["amax_programs"] = s["amax"]
    merged = copy.deepcopy(shipped)
    apply(merged, s, hiddens)
    if merged["tables"] != shipped["tables"]:
        frag["tables"] = merged["tables"]
    out.update(fragment=frag, merged_section=merged, notes=[
        "tiles timed only at H = " + ", ".join(map(str, hiddens)) + ": edited only in the brackets serving those "
        "widths (which may cover others); the flags are section-wide (all dynamic calls)"])
    return out


def section_proposal(results: list, ops: list, hiddens: list, shipped: dict, file: str, section: str) -> dict:
    """The section's best joint choice: the flag set (rcp_div, sat_cvt, weight_early, lp_amax) with
    the lowest summed score over its (op, H) rows, then per H the best layout under those flags
    (score: mean over ops and tokens of time / shipped time; where no candidate under the flags was
    timed at an H, the shipped layout stands in at score 1 and stays), as fragments of the section."""
    ok = [r for r in results if r["op"] in ops and r["hidden"] in hiddens and "WRONG" not in r["check"]]
    base = {(r["op"], r["hidden"], r["tokens"]): r["us"] for r in ok if r["spec"]["kind"] == "default"}
    score = {}  # (flags, hidden, layout) -> [ratios]
    specs = {}
    for r in ok:
        key = (r["op"], r["hidden"], r["tokens"])
        if key not in base:
            continue
        k = (flags_of(r["spec"]), r["hidden"], layout_of(r["spec"]))
        score.setdefault(k, []).append(r["us"] / base[key])
        specs[k] = r["spec"]
    want = {h: sum(1 for r in ok if r["hidden"] == h and r["spec"]["kind"] == "default") for h in hiddens}
    full = {k: sum(v) / len(v) for k, v in score.items() if len(v) == want[k[1]]}  # timed on every (op, tokens)
    if not full:
        return {}
    totals = {}
    for f in {k[0] for k in full}:
        totals[f] = sum(min([v for k, v in full.items() if k[0] == f and k[1] == h] or [1.0]) for h in hiddens)
    best_flags = min(totals, key=totals.get)
    out = {"file": file, "section": f"{tq._family(DEVICE)}.{section}",
           "score_vs_shipped": round(totals[best_flags] / len(hiddens), 3)}
    frag = {}
    if best_flags != (False, False, False, False):
        rcp, sat, we, lp = best_flags
        frag.update(rcp_div=rcp, sat_cvt=sat)
        if section == "rms_norm_quant":
            frag.update(weight_early=we, lp_amax=lp)
    chunked = copy.deepcopy(shipped.get("chunked") or [])
    tables_notes = []
    per_h = {}
    for h in sorted(hiddens):
        cands = {k[2]: v for k, v in full.items() if k[0] == best_flags and k[1] == h}
        if not cands:
            continue
        lay = min(cands, key=cands.get)
        per_h[h] = dict(layout=name(specs[(best_flags, h, lay)]) if lay != ("default",) else "default (shipped)",
                        score=round(cands[lay], 3))
        s = specs[(best_flags, h, lay)]
        if lay == ("default",):
            continue
        chunked = [e for e in chunked if e["max_cols"] != h]
        if s["kind"] in ("chunked", "regs"):
            entry = {"max_cols": h, "min_rows": 256, "chunk": s["chunk"], "rows_per_program": s["rows"],
                     "num_warps": s["warps"], "hints": s["hints"]}
            if s["kind"] == "regs":
                entry["regs"] = True
        else:
            entry = {"max_cols": h, "min_rows": NEVER, "chunk": 1024, "rows_per_program": 1, "num_warps": 4}
            idle = 1 - h / tq._pow2_ceil(h)
            keep = f"; single_pass_max_idle >= {idle:.3f} so H = {h} stays single pass" if idle else ""
            tables_notes.append(f"tables.default: the bracket covering H = {h} (BLOCK_N {tq._pow2_ceil(h)}) -> "
                                f"rows_per_program {s['rows']}, num_warps {s['warps']}"
                                + (f", maxnreg_without_residual {s['nreg']}" if s["nreg"] else "") + keep)
        chunked.append(entry)
    chunked.sort(key=lambda e: e["max_cols"])
    # widths below the smallest measured one keep their old path: a bracket that never applies
    lowest = min(hiddens)
    if chunked and chunked[0]["max_cols"] == lowest and chunked[0]["min_rows"] < NEVER:
        chunked.insert(0, {"max_cols": lowest - 1, "min_rows": NEVER, "chunk": 1024, "rows_per_program": 1,
                           "num_warps": 4})
    if chunked != (shipped.get("chunked") or []):
        frag["chunked"] = chunked
    merged = copy.deepcopy(shipped)
    merged.update(frag)
    out.update(fragment=frag, merged_section=merged, per_hidden=per_h, notes=tables_notes + [
        "min_rows 256 (the padded-row switch) was not measured below 4096 tokens; the flags are section-wide "
        "(every width of the section, measured only at " + ", ".join(map(str, hiddens)) + ")"])
    out["flag_totals"] = {"/".join(str(x) for x in f): round(v / len(hiddens), 3) for f, v in sorted(
        totals.items(), key=lambda kv: kv[1])[:6]}
    return out


# --- the sweep ------------------------------------------------------------------------------------
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", default=SHAPES, help="OP:H pairs in this order (the budget may stop the last ones)")
    p.add_argument("--tokens", default="4096,16384")
    p.add_argument("--quick", action="store_true", help="3 candidates per (op, H) besides the shipped one")
    p.add_argument("--only", default="", help="regex on candidate names (default is always kept)")
    p.add_argument("--rep", type=int, default=10, help="ms of graph replays per timing (do_bench_cudagraph rep)")
    p.add_argument("--budget-s", type=float, default=125.0, help="stop starting new candidates after this long")
    p.add_argument("--json", default="", help="also write the results and the proposals here")
    p.add_argument("--list", action="store_true", help="print the selected candidates' names (no GPU) and exit")
    p.add_argument("--device", default="cuda", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    global DEVICE
    DEVICE = a.device
    t_start = time.time()
    shapes = [(op, int(h)) for op, h in (x.split(":") for x in a.shapes.split(",") if x)]
    unknown = sorted({op for op, _ in shapes} - set(OPS))
    if unknown:
        p.error(f"unknown ops {unknown}; known: {OPS}")
    tokens = [int(t) for t in a.tokens.split(",")]
    if a.list:
        pattern = re.compile(a.only) if a.only else None
        total = 0
        for op, h in shapes:
            names = [name(s) for s in candidates(op, h, a.quick)
                     if s["kind"] == "default" or pattern is None or pattern.search(name(s))]
            total += len(names)
            print(f"{op} H={h}: {len(names)} candidates x {len(tokens)} token counts")
            for n in names:
                print(f"  {n}")
        print(f"{total} candidates in all (each ~1-2 s of compiles plus {len(tokens)} timings on a GPU)")
        return 0
    print(torch.cuda.get_device_name() if DEVICE == "cuda" else DEVICE, "torch", torch.__version__,
          "triton", __import__("triton").__version__, "family", tq._family(DEVICE), flush=True)
    pattern = re.compile(a.only) if a.only else None

    sizes = sorted({nbytes(op, t, h) for op, h in shapes for t in tokens})
    copies = {nb: copy_us(nb, a.rep) for nb in sizes}
    results = []  # dicts: op, hidden, tokens, variant, spec, us, check
    skipped = []
    for op, h in shapes:
        mod, section = SECTION[op]
        print(f"[{time.time() - t_start:.0f} s] {op} H={h}", flush=True)
        inputs = {t: make_inputs(op, t, h, special=False) for t in tokens}
        probe = make_inputs(op, tokens[0], h, special=True)
        ub = torch.tensor([1.0], device=DEVICE) if op == "per_token_quant" else None
        want = outputs(op, probe)
        want_ub = outputs(op, probe, ub) if ub is not None else None
        for s in candidates(op, h, a.quick):
            vname = name(s)
            if s["kind"] != "default" and pattern is not None and not pattern.search(vname):
                continue
            if time.time() - t_start > a.budget_s:
                skipped.append(f"{op} {h} {vname}")
                continue
            try:
                with Configured(mod, section, s):
                    status = compare(op, want, outputs(op, probe))
                    if ub is not None and s["kind"] != "default" and not status.startswith("WRONG"):
                        status_ub = compare(op, want_ub, outputs(op, probe, ub))
                        if status_ub != "exact":
                            status = f"{status}; scale_ub {status_ub}"
                    for t in tokens:
                        fn, _, _ = make_call(op, inputs[t])
                        fn()
                        us = bench(fn, a.rep)
                        results.append(dict(op=op, hidden=h, tokens=t, variant=vname, spec=s, us=round(us, 2),
                                            check=status))
                        print(f"  {op} {t}x{h} {vname:34s} {us:8.2f} us  [{status}]", flush=True)
            except Exception as e:  # e.g. out of resources
                print(f"  {op} {h} {vname}: {type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}",
                      flush=True)
            sync()
        del inputs, probe
        if DEVICE == "cuda":
            torch.cuda.empty_cache()

    for nb in sizes:  # again at the end: the faster of the two counts
        copies[nb] = min(copies[nb], copy_us(nb, a.rep))
    peak = max(nb / us for nb, us in copies.items())  # bytes per us
    for r in results:
        nb = nbytes(r["op"], r["tokens"], r["hidden"])
        r.update(gbps=round(nb / r["us"] / 1e3, 1), pct=round(100 * copies[nb] / r["us"], 1),
                 pct_peak=round(100 * nb / r["us"] / peak, 1))

    print("\n| op | tokens x hidden | variant | us | GB/s | % copy | % peak | check |")
    print("|---|---|---|---:|---:|---:|---:|---|")
    for r in results:
        print(f"| {r['op']} | {r['tokens']} x {r['hidden']} | {r['variant']} | {r['us']} | {r['gbps']} | {r['pct']}% "
              f"| {r['pct_peak']}% | {r['check']} |")
    print("\ncopy of the same bytes (graph, faster of two timings):",
          {f"{nb / 1e6:.0f} MB": f"{us:.2f} us, {nb / us / 1e3:.0f} GB/s" for nb, us in sorted(copies.items())},
          f"peak {peak / 1e3:.0f} GB/s")

    print("\nper shape: shipped -> best candidate (valid check), % of the same-bytes copy (% of the peak copy rate)")
    for op, h in shapes:
        for t in tokens:
            rows = [r for r in results if (r["op"], r["hidden"], r["tokens"]) == (op, h, t)]
            dflt = next((r for r in rows if r["variant"] == "default"), None)
            good = [r for r in rows if "WRONG" not in r["check"]]
            if dflt is None or not good:
                continue
            b = min(good, key=lambda r: r["us"])
            mark = "MET" if b["pct"] >= 85 else "not met"
            print(f"  {op} {t}x{h}: shipped {dflt['us']} us {dflt['pct']}% ({dflt['pct_peak']}%) -> {b['variant']} "
                  f"{b['us']} us {b['pct']}% ({b['pct_peak']}%) x{dflt['us'] / b['us']:.2f} [{b['check']}] {mark}")

    proposals = {}
    tensor_hs = sorted({h for op, h in shapes if op == "per_tensor_quant"})
    if tensor_hs:
        prop = tensor_proposal(results, tensor_hs, tq._family_config(DEVICE)["per_tensor"])
        if prop:
            proposals["quant.json:per_tensor"] = prop
    for mod, section, file in ((tq, "per_token", "quant.json"), (tfq, "rms_norm_quant", "fused_quant.json")):
        sel = [op for op, _ in shapes if SECTION[op][1] == section]
        hs = sorted({h for op, h in shapes if SECTION[op][1] == section})
        if not sel:
            continue
        prop = section_proposal(results, sorted(set(sel)), hs, mod._family_config(DEVICE)[section], file, section)
        if prop:
            proposals[f"{file}:{section}"] = prop
    print("\nCONFIG_FRAGMENTS_JSON (per section: the fragment to merge, chunked replacing the list, and the merged "
          "section to paste; the notes' table edits by hand)")
    print(json.dumps(proposals, indent=1))
    if skipped:
        print(f"\nbudget of {a.budget_s:.0f} s ran out; not run: {len(skipped)}: " + "; ".join(skipped[:30]))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(dict(results=results, proposals=proposals, copies={str(k): v for k, v in copies.items()},
                           peak_gbps=round(peak / 1e3, 1), skipped=skipped), f, indent=1)
    print(f"\ntotal {time.time() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
