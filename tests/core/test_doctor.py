"""doctor: platform, versions, settings with sources, feature states, and per-op choices with reasons."""

import json
import os
import subprocess
import sys

from vllm_rocm_accel import doctor


def test_doctor_report_here(fresh_settings):
    fresh_settings(VLLM_ROCM_USE_AITER="1", VLLM_ROCM_USE_AITER_RMSNORM="0")
    report = doctor.collect()
    assert report["platform"] == "cpu"
    assert report["versions"]["torch"]
    settings_by_name = {s["name"]: s for s in report["settings"]}
    assert settings_by_name["VLLM_ROCM_USE_AITER"] == {"name": "VLLM_ROCM_USE_AITER", "value": True, "source": "environment"}
    assert settings_by_name["VLLM_ROCM_ACCEL_BACKEND"]["source"] == "default"
    features = {f["feature"]: f for f in report["features"]}
    assert features["rmsnorm"] == {"feature": "rmsnorm", "enabled": False,
                                   "decided_by": "VLLM_ROCM_USE_AITER_RMSNORM=0 (environment)"}
    assert features["mha"]["enabled"] is True
    ops = {(o["op"], o["case"]): o for o in report["ops"]}
    from vllm_rocm_accel.ops import dispatchers

    assert set(ops) == {(op, case) for op in dispatchers() for case in ("decode", "prefill")}
    assert {"rms_norm", "fused_add_rms_norm"} <= {op for op, _ in ops}
    assert {"rms_norm_dynamic_quant", "fused_add_rms_norm_dynamic_quant", "silu_and_mul_group_quant"} <= {
        op for op, _ in ops}
    for o in ops.values():
        assert o["auto"] == "torch"
        assert o["backends"]["torch"].startswith("chosen")
        assert "aiter runs on ROCm" in o["backends"]["aiter"]
    text = doctor.render(report)
    assert "rmsnorm" in text and "decided by VLLM_ROCM_USE_AITER_RMSNORM=0" in text


def test_doctor_cli_json():
    env = {k: v for k, v in os.environ.items() if not k.startswith("VLLM_ROCM")}
    env["VLLM_ROCM_ACCEL_BACKEND"] = "torch"
    proc = subprocess.run([sys.executable, "-m", "vllm_rocm_accel.cli", "doctor", "--json"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert all(o["override"] == "torch" for o in report["ops"])
    assert report["aiter"]["is_amd"] is False
