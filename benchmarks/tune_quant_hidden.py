"""Sweep the per-token FP8 quant and fused RMSNorm + quant kernels' launch choices at hidden 4096 and
7168 on this GPU (issue 4: per_token_quant 77% and rms_norm_dynamic_quant 57% of copy at 4096 x 7168
on the H100), each candidate checked against the current default path first.

    python benchmarks/tune_quant_hidden.py [--hidden 4096,7168] [--tokens 4096,16384] [--ops ...]
                                           [--only REGEX] [--rep MS] [--budget-s S] [--json PATH]

Candidates (each a config edit, applied to the 'cuda' family section the launcher reads, so no
code changes between them): ``default`` (the shipped config); ``whole``: the whole-row kernel
(BLOCK_N = next_power_of_2(H) in registers) at a warp count and rows per program; ``looped``: the
runtime-loop kernel at a chunk size; ``chunked``: the new kernels, rows as cdiv(H, chunk) unrolled
power-of-two chunks (7168 = 7 x 1024: no idle lanes, every load of the first pass in flight at
once), with ``hints`` (L1 evict_last / evict_first) and ``rcp``: ``rcp_div``, the division by the
row's scale through its reciprocal plus two exact corrections (the same bits as the IEEE division,
fewer instructions; also applies to the whole-row kernel).

Checks (at the first tokens value, before timing): per_token_quant must equal the default bit for
bit (FP8 bytes and scales), also with scale_ub and on rows with zeros, -0.0, tiny and huge values;
the fused ops' chunked and looped kernels sum squares chunk-wise, so rstd may differ in the last bit:
they pass as '1ulp' if codes differ by at most one step on <= 0.5% of bytes and scales by <= 1e-6
relative (bf16 rows: one bf16 step), as tests/gpu does; anything else is 'WRONG' and never wins.
Times: CUDA graph replays (``do_bench_cudagraph`` median), against a device-to-device copy of the
same number of bytes (read + written) timed the same way. Prints a table, the best candidate per
(op, hidden) and per config section, and a JSON block ready for configs/quant.json and
configs/fused_quant.json (merge by hand; record the run in docs/performance.md).
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
from triton.testing import do_bench_cudagraph

import bench_fused_quant  # benchmarks/ is on sys.path when run as a script
import bench_quant
from vllm_rocm_accel.backends.triton import fused_quant as tfq
from vllm_rocm_accel.backends.triton import quant as tq

FMT = torch.float8_e4m3fn
EPS = 1e-6
OPS = ["per_token_quant", "rms_norm_dynamic_quant", "fused_add_rms_norm_dynamic_quant"]
SECTION = {"per_token_quant": (tq, "per_token"), "rms_norm_dynamic_quant": (tfq, "rms_norm_quant"),
           "fused_add_rms_norm_dynamic_quant": (tfq, "rms_norm_quant")}
BIG = 10**9
DEVICE = "cuda"  # --device cpu: a dry run of the script's logic under TRITON_INTERPRET (times meaningless)


# --- candidates -----------------------------------------------------------------------------------
def candidates(op: str, hidden: int) -> list[dict]:
    """Specs: {'kind': 'default' | 'whole' | 'looped' | 'chunked', ...}. Widths that are powers of two
    (already at the copy rate with the whole-row kernel) get a short list: what adopting the
    section-wide options (rcp_div, a chunked bracket) would do to them."""
    c = [dict(kind="default")]
    if hidden == tq._pow2_ceil(hidden):
        warps = 4 if hidden <= 4096 else 8
        return c + [dict(kind="whole", rows=1, warps=warps, rcp=True), dict(kind="whole", rows=1, warps=2 * warps,
                                                                             rcp=False),
                    dict(kind="chunked", chunk=1024, rows=1, warps=4, hints=False, rcp=False),
                    dict(kind="chunked", chunk=1024, rows=1, warps=4, hints=False, rcp=True),
                    dict(kind="chunked", chunk=2048, rows=1, warps=8, hints=False, rcp=True)]
    for w in (4, 8, 16):
        c.append(dict(kind="whole", rows=1, warps=w, rcp=False))
    for w in (8, 16):
        c.append(dict(kind="whole", rows=1, warps=w, rcp=True))
    for b, w in ((1024, 4), (2048, 8)):
        c.append(dict(kind="looped", block=b, warps=w))
    for ch, rows, w, hints, rcp in ((1024, 1, 4, False, False), (1024, 1, 8, False, False), (2048, 1, 8, False, False),
                                    (1024, 2, 8, False, False), (1024, 1, 4, False, True), (1024, 1, 8, False, True),
                                    (2048, 1, 8, False, True), (1024, 1, 4, True, True), (512, 1, 4, False, True)):
        c.append(dict(kind="chunked", chunk=ch, rows=rows, warps=w, hints=hints, rcp=rcp))
    return c


def name(spec: dict) -> str:
    k = spec["kind"]
    if k == "default":
        return "default"
    if k == "whole":
        return f"whole r{spec['rows']} {spec['warps']}w" + (" rcp" if spec["rcp"] else "")
    if k == "looped":
        return f"looped {spec['block']}/{spec['warps']}w"
    return (f"chunked {spec['chunk']} r{spec['rows']} {spec['warps']}w" + (" hints" if spec["hints"] else "")
            + (" rcp" if spec["rcp"] else ""))


def apply(section: dict, spec: dict) -> None:
    """Edit a per_token / rms_norm_quant section so that every width and row count takes ``spec``."""
    k = spec["kind"]
    if k == "default":
        return
    section["chunked"] = []
    section["rcp_div"] = bool(spec.get("rcp", False))
    if k == "whole":
        section.update(single_pass_max_cols=BIG, padded_looped_min_rows=2**62,
                       tables={"default": [{"max_cols": BIG, "rows_per_program": spec["rows"],
                                            "num_warps": spec["warps"]}]})
    elif k == "looped":
        section.update(single_pass_max_cols=0, looped=[{"max_cols": BIG, "block": spec["block"],
                                                        "num_warps": spec["warps"]}])
    else:
        section["chunked"] = [{"max_cols": BIG, "min_rows": 1, "chunk": spec["chunk"], "rows_per_program": spec["rows"],
                               "num_warps": spec["warps"], "hints": spec["hints"]}]


def config_fragment(spec: dict, hidden: int, default_section: dict) -> dict:
    """What to put into the 'cuda' section for rows of ``hidden`` to take ``spec`` (from 256 rows for
    the chunked kernel, as the padded-row switch; rcp_div is section-wide)."""
    k = spec["kind"]
    if k == "default":
        return {}
    if k == "whole":
        return {"tables.default bracket": {"max_cols": hidden, "rows_per_program": spec["rows"],
                                           "num_warps": spec["warps"]},
                "note": f"and keep H = {hidden} single pass (single_pass_max_idle >= {1 - hidden / tq._pow2_ceil(hidden):.3f})",
                "rcp_div": spec["rcp"]}
    if k == "looped":
        return {"looped bracket": {"max_cols": hidden, "block": spec["block"], "num_warps": spec["warps"]},
                "note": f"and send H = {hidden} to the looped kernel (padded_looped_min_rows "
                        f"{default_section.get('padded_looped_min_rows')})"}
    return {"chunked": [{"max_cols": hidden, "min_rows": 256, "chunk": spec["chunk"],
                         "rows_per_program": spec["rows"], "num_warps": spec["warps"], "hints": spec["hints"]}],
            "rcp_div": spec["rcp"],
            "note": "chunked brackets are sorted by max_cols; a width below the first bracket's range needs its own "
                    "bracket with min_rows 2**62 to keep the old path"}


class Configured:
    """Context: the launcher module reads ``spec`` applied to its shipped config."""

    def __init__(self, mod, section: str, spec: dict):
        self.mod, self.section, self.spec, self.family = mod, section, spec, tq._family(DEVICE)

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
    if special:  # rows over ~6 binades, and the edge cases of the reciprocal division
        x *= torch.exp2(torch.empty(tokens, 1, device=DEVICE).uniform_(-3, 3, generator=g))
        x[0] = 0
        x[1, ::3] = -0.0
        x[2, 5] = 1e4
        x[2, 6:40] = 1e-30
        x[3, ::7] = 2.0 ** -9  # FP8 subnormal steps after the scale
    x = x.to(torch.bfloat16)
    if op == "per_token_quant":
        return dict(x=x)
    r = (torch.randn(tokens, hidden, device=DEVICE, generator=g)).to(torch.bfloat16)
    w = (torch.rand(hidden, device=DEVICE, generator=g) + 0.5).to(torch.bfloat16)
    return dict(x=x, r=r, w=w)


def nbytes(op: str, tokens: int, hidden: int) -> int:
    """Bytes read + written by one call on bf16 rows: bench_quant's / bench_fused_quant's count."""
    if op == "per_token_quant":
        return bench_quant._bytes(op, tokens, hidden)
    return bench_fused_quant._bytes(op, tokens, hidden, 2)  # 2: bf16 element bytes


def make_call(op: str, inp: dict, ub=None):
    x = inp["x"]
    q = torch.empty(x.shape, dtype=FMT, device=DEVICE)
    s = torch.empty(x.shape[0], 1, dtype=torch.float32, device=DEVICE)
    if op == "per_token_quant":
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
    (qw, sw, rw), (qg, sg, rg) = want, got
    if rw is not None and not torch.equal(rw, rg):
        return "WRONG (residual)"
    if torch.equal(qw, qg) and torch.equal(sw, sg):
        return "exact"
    if op == "per_token_quant":
        return f"WRONG ({int((qw != qg).sum())} bytes, {int((sw != sg).sum())} scales)"
    rel = ((sg - sw).abs() / sw.abs()).max().item()
    codes = (qw.to(torch.int16) & 0x7F) - (qg.to(torch.int16) & 0x7F)  # adjacent FP8 magnitudes differ by 1
    bad_sign = ((qw & 0x80) != (qg & 0x80)) & (((qw | qg) & 0x7F) != 0)
    nbad = int((qw != qg).sum())
    ok = (rel <= torch.finfo(torch.bfloat16).eps + 1e-6 and codes.abs().max().item() <= 1
          and not bool(bad_sign.any()) and nbad <= max(4, int(0.005 * qw.numel())))
    return f"1ulp ({nbad} bytes, scales {rel:.1e})" if ok else f"WRONG ({nbad} bytes, scales {rel:.1e})"


def sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def bench(fn, rep: int) -> float:
    if DEVICE != "cuda":
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1e6
    return do_bench_cudagraph(fn, rep=rep, return_mode="median") * 1e3  # us


def copy_us(nb: int, rep: int) -> float:
    src = torch.empty(nb // 2, dtype=torch.uint8, device=DEVICE).random_()
    dst = torch.empty_like(src)
    dst.copy_(src)
    return bench(lambda: dst.copy_(src), rep)


# --- the sweep ------------------------------------------------------------------------------------
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hidden", default="7168,4096", help="in this order (the budget may stop the last ones)")
    p.add_argument("--tokens", default="4096,16384")
    p.add_argument("--ops", default=",".join(OPS))
    p.add_argument("--only", default="", help="regex on candidate names (default is always kept)")
    p.add_argument("--rep", type=int, default=10, help="ms of graph replays per timing (do_bench_cudagraph rep)")
    p.add_argument("--budget-s", type=float, default=165.0, help="stop starting new candidates after this long")
    p.add_argument("--json", default="", help="also write the results and the best configs here")
    p.add_argument("--device", default="cuda", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    global DEVICE
    DEVICE = a.device
    t_start = time.time()
    hiddens = [int(h) for h in a.hidden.split(",")]
    tokens = [int(t) for t in a.tokens.split(",")]
    ops = [o for o in a.ops.split(",") if o]
    print(torch.cuda.get_device_name() if DEVICE == "cuda" else DEVICE, "torch", torch.__version__,
          "triton", __import__("triton").__version__,
          "family", tq._family(DEVICE), flush=True)
    pattern = re.compile(a.only) if a.only else None

    copies = {}
    for op in ops:
        for h in hiddens:
            for t in tokens:
                nb = nbytes(op, t, h)
                if nb not in copies:
                    copies[nb] = copy_us(nb, a.rep)
    results = []  # dicts: op, hidden, tokens, variant, spec, us, gbps, pct, check
    skipped = []
    for h in hiddens:
        for op in ops:
            mod, section = SECTION[op]
            print(f"[{time.time() - t_start:.0f} s] {op} H={h}", flush=True)
            inputs = {t: make_inputs(op, t, h, special=False) for t in tokens}
            probe = make_inputs(op, tokens[0], h, special=True)
            ub = torch.tensor([1.0], device=DEVICE) if op == "per_token_quant" else None
            want = outputs(op, probe)
            want_ub = outputs(op, probe, ub) if ub is not None else None
            for spec in candidates(op, h):
                vname = name(spec)
                if spec["kind"] != "default" and pattern is not None and not pattern.search(vname):
                    continue
                if time.time() - t_start > a.budget_s:
                    skipped.append(f"{op} {h} {vname}")
                    continue
                try:
                    with Configured(mod, section, spec):
                        status = compare(op, want, outputs(op, probe))
                        if ub is not None and spec.get("rcp") and not status.startswith("WRONG"):
                            status_ub = compare(op, want_ub, outputs(op, probe, ub))
                            if status_ub != "exact":
                                status = f"{status}; scale_ub {status_ub}"
                        for t in tokens:
                            fn, _, _ = make_call(op, inputs[t])
                            fn()
                            us = bench(fn, a.rep)
                            nb = nbytes(op, t, h)
                            gbps = nb / (us * 1e-6) / 1e9
                            results.append(dict(op=op, hidden=h, tokens=t, variant=vname, spec=spec, us=round(us, 2),
                                                gbps=round(gbps, 1), pct=round(100 * copies[nb] / us, 1),
                                                check=status))
                            print(f"  {op} {t}x{h} {vname:28s} {us:8.2f} us {gbps:7.1f} GB/s "
                                  f"{100 * copies[nb] / us:5.1f}% of copy  [{status}]", flush=True)
                except Exception as e:  # e.g. out of resources
                    print(f"  {op} {h} {vname}: {type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}",
                          flush=True)
                sync()
            del inputs, probe
            if DEVICE == "cuda":
                torch.cuda.empty_cache()

    print("\n| op | tokens x hidden | variant | us | GB/s | % of copy | check |")
    print("|---|---|---|---:|---:|---:|---|")
    for r in results:
        print(f"| {r['op']} | {r['tokens']} x {r['hidden']} | {r['variant']} | {r['us']} | {r['gbps']} | {r['pct']}% "
              f"| {r['check']} |")
    print("\ncopy of the same bytes (graph, us):",
          {f"{nb / 1e6:.0f} MB": round(us, 2) for nb, us in sorted(copies.items())})

    def ranked(sel_ops, h):
        """Candidates valid for every op in sel_ops, timed at every tokens value: by the sum over
        (op, tokens) of time / default time."""
        rows = [r for r in results if r["op"] in sel_ops and r["hidden"] == h]
        base = {(r["op"], r["tokens"]): r["us"] for r in rows if r["variant"] == "default"}
        by = {}
        for r in rows:
            by.setdefault(r["variant"], []).append(r)
        full = {v: rs for v, rs in by.items() if len(rs) == len(sel_ops) * len(tokens)
                and not any("WRONG" in x["check"] for x in rs)}
        score = {v: sum(x["us"] / base.get((x["op"], x["tokens"]), x["us"]) for x in rs) / len(rs)
                 for v, rs in full.items()}
        return sorted(full, key=score.get), full, score

    best = {}
    print("\nbest per (op, hidden) (mean time / default over the tokens; min % of copy):")
    for op in ops:
        for h in hiddens:
            order, full, score = ranked([op], h)
            for v in order[:3]:
                print(f"  {op} H={h}: {v:28s} x{score[v]:.3f} of default, "
                      f"min {min(x['pct'] for x in full[v]):.1f}% of copy, "
                      + ", ".join(f"{x['tokens']}: {x['us']} us" for x in full[v]))
    sections = {}
    for op in ops:
        sections.setdefault(SECTION[op], []).append(op)
    print("\nbest per config section and hidden (all its ops together):")
    for (mod, section), sel in sections.items():
        file = "quant.json" if mod is tq else "fused_quant.json"
        default_section = mod._family_config(DEVICE)[section]
        for h in hiddens:
            order, full, score = ranked(sel, h)
            if not order:
                continue
            v = order[0]
            spec = full[v][0]["spec"]
            best[f"{file}:{section}:{h}"] = dict(
                file=file, family="cuda", section=section, hidden=h, variant=v, spec=spec,
                vs_default=round(score[v], 3), min_pct_of_copy=min(x["pct"] for x in full[v]),
                per_shape={f"{x['op']} {x['tokens']}": f"{x['us']} us, {x['pct']}% of copy, {x['check']}"
                           for x in full[v]},
                fragment=config_fragment(spec, h, default_section))
            print(f"  {file} {section} H={h}: {v} (x{score[v]:.3f} of default, min "
                  f"{best[f'{file}:{section}:{h}']['min_pct_of_copy']}% of copy)")
    if skipped:
        print(f"\nbudget of {a.budget_s:.0f} s ran out; not run: {len(skipped)}: " + "; ".join(skipped[:20]))
    print("\nBEST_CONFIGS_JSON")
    print(json.dumps(best, indent=1))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(dict(results=results, best=best, copies=copies, skipped=skipped), f, indent=1)
    print(f"\ntotal {time.time() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
