"""Sweep the division variants of the two 1 x group FP8 quant kernels on this GPU: per_token_group_quant
and silu_and_mul_group_quant (issue 4: >= 85% of copy from 4096 tokens at hidden 4096 and 7168; on the
H200 both sat at 74-80% at 4096 tokens and ~83% at 16384 with the IEEE division, i.e. issue-bound, as
per_token_quant was before its ``split`` / ``sat`` flags).

    python benchmarks/tune_group_quant.py [--tokens 4096,16384] [--hidden 4096,7168] [--rep MS]

Candidates (section keys ``rcp_div`` / ``sat_cvt`` of ``quant.json:per_token_group`` and
``fused_quant.json:silu_mul_group_quant``; kernels/triton/quant.py's ``_quantize_groups``):
``default`` (the shipped config), ``split``, ``split sat``, ``rcp sat``, each x the shipped tiles; with
``--tiles E x W,...`` only ``default`` and ``split sat`` with each (elements_per_program E, num_warps W)
as the one tiles bracket, and for the silu kernel ``ftz`` (``split sat`` + ``ftz_silu``) with each too
(``--ops`` picks the kernels).
Before timing, each candidate's output on inputs with zeros, -0.0, a huge value, tiny values and FP8
subnormal steps must equal the default's byte for byte, save -0.0 quantizing to +0 (0x80 -> 0x00,
the same value); anything else is WRONG. Times: CUDA-graph replays (``do_bench_cudagraph`` median)
against the run's fastest device-to-device copy of the same bytes ("% peak copy", bench_quant's byte
count: x read once, q and the scales written). Prints one table and the flags to paste.
"""

from __future__ import annotations

import argparse
import copy
import functools
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_fused_quant  # noqa: E402
import bench_quant  # noqa: E402
from tune_quant_hidden import bench, copy_us, sync  # noqa: E402
from vllm_rocm_accel.backends.torch.quant import per_token_group_scales_layout  # noqa: E402
from vllm_rocm_accel.backends.triton import fused_quant as tfq  # noqa: E402
from vllm_rocm_accel.backends.triton import quant as tq  # noqa: E402

FMT = torch.float8_e4m3fn
GROUP = 128
CANDIDATES = {"default": {}, "split": dict(rcp_div="split"), "split sat": dict(rcp_div="split", sat_cvt=True),
              "rcp sat": dict(rcp_div=True, sat_cvt=True)}
OPS = {"per_token_group_quant": (tq, "per_token_group"), "silu_and_mul_group_quant": (tfq, "silu_mul_group_quant")}


class Edited:
    """Context: the launcher module ``mod`` reads its shipped config with ``keys`` set in ``section``."""

    def __init__(self, mod, section: str, keys: dict):
        self.mod, self.section, self.keys = mod, section, keys

    def __enter__(self):
        self.saved = self.mod._config
        cfg = copy.deepcopy(self.saved())
        cfg[tq._family("cuda")][self.section].update(self.keys)
        self.mod._config = functools.lru_cache(maxsize=1)(lambda: cfg)
        self.mod.clear_caches()

    def __exit__(self, *exc):
        self.mod._config = self.saved
        self.mod.clear_caches()


def make_x(op: str, tokens: int, hidden: int, special: bool) -> torch.Tensor:
    width = 2 * hidden if op.startswith("silu") else hidden  # silu: [gate | up], d = hidden outputs
    g = torch.Generator(device="cuda").manual_seed(tokens * 7 + hidden)
    x = torch.randn(tokens, width, device="cuda", generator=g) * 3
    if special:
        x *= torch.exp2(torch.empty(tokens, 1, device="cuda").uniform_(-3, 3, generator=g))
        x[0] = 0
        x[1, ::3] = -0.0
        x[2, 5] = 1e4
        x[2, 6:40] = 1e-30
        x[3, ::7] = 2.0 ** -9
    return x.to(torch.bfloat16)


def make_call(op: str, x: torch.Tensor, hidden: int):
    q = torch.empty(x.shape[0], hidden, dtype=FMT, device="cuda")
    s = per_token_group_scales_layout((x.shape[0],), hidden // GROUP, False, "cuda")
    if op == "per_token_group_quant":
        return (lambda: tq.per_token_group_quant(q, s, x, GROUP)), q, s
    return (lambda: tfq.silu_and_mul_group_quant(q, s, x, GROUP)), q, s


def outputs(op: str, x: torch.Tensor, hidden: int):
    fn, q, s = make_call(op, x, hidden)
    fn()
    sync()
    return q.view(torch.uint8).clone(), s.clone()


def compare(want, got) -> str:
    (qw, sw), (qg, sg) = want, got
    if not torch.equal(sw, sg):
        return "WRONG (scales)"
    bad = qw != qg
    zeros = int((bad & (qw == 0x80) & (qg == 0x00)).sum())
    if int(bad.sum()) != zeros:
        return f"WRONG ({int(bad.sum()) - zeros} bytes)"
    return f"exact ({zeros} -0 -> +0)" if zeros else "exact"


def nbytes(op: str, tokens: int, hidden: int) -> int:
    if op == "per_token_group_quant":
        return bench_quant._bytes(op, tokens, hidden)
    return bench_fused_quant._bytes(op, tokens, hidden, 2)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", default="4096,16384")
    p.add_argument("--hidden", default="4096,7168")
    p.add_argument("--rep", type=int, default=200, help="ms of graph replays per timing")
    p.add_argument("--tiles", default="", help="ExW,...: sweep split sat with these (elements_per_program, "
                                                "num_warps) instead of the division variants")
    p.add_argument("--ops", default=",".join(OPS))
    a = p.parse_args(argv)
    ops = {name: OPS[name] for name in a.ops.split(",")}
    per_op = {op: CANDIDATES for op in ops}
    if a.tiles:
        for op in ops:
            per_op[op] = {"default": {}}
            for spec in a.tiles.split(","):
                e, w = (int(v) for v in spec.lower().split("x"))
                tables = {"default": [{"max_tiles": 10 ** 12, "elements_per_program": e, "num_warps": w}]}
                per_op[op][f"split sat {e}/{w}w"] = dict(rcp_div="split", sat_cvt=True, tables=tables)
                if op.startswith("silu"):  # and the flush-to-zero silu (fused_quant.json's ftz_silu)
                    per_op[op][f"ftz {e}/{w}w"] = dict(rcp_div="split", sat_cvt=True, ftz_silu=True, tables=tables)
    tokens = [int(t) for t in a.tokens.split(",")]
    hiddens = [int(h) for h in a.hidden.split(",")]
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}")
    peak = 0.0  # bytes / us of the fastest copy
    rows = []
    for op, (mod, section) in ops.items():
        for h in hiddens:
            want = outputs(op, make_x(op, 64, h, True), h)
            for cname, keys in per_op[op].items():
                with Edited(mod, section, keys):
                    check = compare(want, outputs(op, make_x(op, 64, h, True), h))
                    for t in tokens:
                        nb = nbytes(op, t, h)
                        c = copy_us(nb, a.rep)
                        peak = max(peak, nb / c)
                        us = bench(make_call(op, make_x(op, t, h, False), h)[0], a.rep) if "WRONG" not in check \
                            else float("nan")
                        rows.append((op, h, t, cname, us, nb, check))
                        print(f"  {op} {t}x{h} {cname:10s} {us:8.2f} us  [{check}]", flush=True)
    print(f"\npeak copy {peak * 1e-3:.0f} GB/s\n")
    print("| op | tokens x hidden | candidate | us | % peak copy | check |\n|---|---|---|---:|---:|---|")
    for op, h, t, cname, us, nb, check in rows:
        print(f"| {op} | {t} x {h} | {cname} | {us:.2f} | {100 * nb / us / peak:.1f}% | {check} |")
    for op in ops:
        best = {}
        for op2, h, t, cname, us, nb, check in rows:
            if op2 == op and "WRONG" not in check:
                best.setdefault(cname, []).append(us)
        mean = {c: sum(v) / len(v) for c, v in best.items()}
        pick = min(mean, key=mean.get)
        print(f"{op}: best on mean time {pick!r} -> {per_op[op][pick]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
