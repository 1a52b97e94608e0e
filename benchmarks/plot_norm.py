"""Plot benchmarks/results/norm.csv and check the norm targets.

    python benchmarks/plot_norm.py [--csv PATH] [--png PATH] [--copy-gbps 2967]

Targets (issue 2): at >= 4096 tokens, >= 90% of the measured device-to-device copy
bandwidth; >= 1.0x torch.compile at every shape.
"""

from __future__ import annotations

import argparse
import csv
import os
from collections import defaultdict

HERE = os.path.dirname(__file__)


def load(path, gpu=None, date=None):
    rows = list(csv.DictReader(open(path)))
    date = date or max(r["date"] for r in rows)
    return [r for r in rows if r["date"] == date and (gpu is None or r["gpu"] == gpu)]


def summarize(rows, copy_gbps):
    print("\nTargets, backend=triton (and triton_inplace for the fused op):")
    worst_bw = min((float(r["gbps"]) / copy_gbps, r) for r in rows
                   if r["backend"].startswith("triton") and r["mode"] == "graph" and int(r["tokens"]) >= 4096)
    print(f"  bandwidth at >= 4096 tokens (device time, CUDA graph): min {100 * worst_bw[0]:.1f}% of copy "
          f"({worst_bw[1]['op']} {worst_bw[1]['tokens']}x{worst_bw[1]['hidden']} {worst_bw[1]['backend']})")
    by_mode = defaultdict(list)
    for r in rows:
        if r["backend"] in ("triton", "triton_inplace"):
            by_mode[r["mode"]].append((float(r["vs_compile"]), r))
    for mode, vals in sorted(by_mode.items()):
        vals.sort(key=lambda v: v[0])
        lo, r = vals[0]
        below = [v for v in vals if v[0] < 1.0]
        print(f"  vs torch.compile, {mode:9s}: min {lo:.3f}x ({r['op']} {r['tokens']}x{r['hidden']} {r['backend']}), "
              f"median {vals[len(vals) // 2][0]:.3f}x, {len(below)} of {len(vals)} below 1.0x")


def plot(rows, png):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(12, 8), sharex=True)
    for i, op in enumerate(("rms_norm", "fused_add_rms_norm")):
        for j, hidden in enumerate(("4096", "8192")):
            ax = axes[i][j]
            for backend in ("triton", "triton_inplace", "compile", "torch", "aiter"):
                pts = sorted((int(r["tokens"]), float(r["gbps"])) for r in rows
                             if r["op"] == op and r["hidden"] == hidden and r["backend"] == backend
                             and r["mode"] == "eager")
                if pts:
                    ax.plot(*zip(*pts), marker="o", label=backend)
            ax.set_xscale("log", base=2)
            ax.set_title(f"{op}, hidden {hidden}, bf16 (eager, L2 flushed)")
            ax.set_ylabel("GB/s")
            ax.grid(alpha=0.3)
    axes[1][0].set_xlabel("tokens")
    axes[1][1].set_xlabel("tokens")
    axes[0][0].legend()
    fig.suptitle(f"{rows[0]['gpu']}, torch {rows[0]['torch']}, triton {rows[0]['triton']}, {rows[0]['date']}")
    fig.tight_layout()
    fig.savefig(png, dpi=90)
    print(f"wrote {png}")


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--csv", default=os.path.join(HERE, "results", "norm.csv"))
    p.add_argument("--png", default=os.path.join(HERE, "results", "norm.png"))
    p.add_argument("--copy-gbps", type=float, default=2967.0)
    p.add_argument("--date")
    a = p.parse_args(argv)
    rows = load(a.csv, date=a.date)
    summarize(rows, a.copy_gbps)
    plot(rows, a.png)


if __name__ == "__main__":
    main()
