"""With the aiter flags off, importing the package and calling every op never imports aiter.

Runs in a fresh interpreter with a booby-trapped ``aiter`` on the path: any import of it,
direct or through a backend, kills the check.
"""

import json
import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import json, sys, torch
    import vllm_rocm_accel
    from vllm_rocm_accel import rocm_accel_ops, doctor, plugin
    from vllm_rocm_accel.ops import register_all, dispatchers
    plugin_state = None
    ops = register_all()
    x = torch.randn(4, 32); r = torch.randn(4, 32); w = torch.randn(32)
    for backend in ("auto", "torch", "triton"):
        rocm_accel_ops.rms_norm(x, w, 1e-6, backend=backend)
        rocm_accel_ops.fused_add_rms_norm(x.clone(), r.clone(), w, 1e-6, backend=backend)
        rocm_accel_ops.fused_add_rms_norm(x, r, w, 1e-6, inplace=False, backend=backend)
    a = torch.randn(3, 16)
    for backend in ("auto", "torch", "triton"):
        rocm_accel_ops.silu_and_mul(a, backend=backend)
        rocm_accel_ops.gelu_and_mul(a, "tanh", out=torch.empty(3, 8), backend=backend)
        pos = torch.randint(0, 64, (5,))
        cache = torch.randn(64, 16)
        q, k = torch.randn(5, 4 * 16), torch.randn(5, 2 * 16)
        rocm_accel_ops.rotary_embedding(pos, q, k, 16, cache, True, backend=backend)
        rocm_accel_ops.rotary_embedding(pos, q, None, 16, cache, False, inplace=False, backend=backend)
    qa, ka, va = torch.randn(1, 5, 4, 16), torch.randn(1, 6, 2, 16), torch.randn(1, 6, 2, 16)
    cu = torch.tensor([0, 2, 5], dtype=torch.int32)
    for backend in ("auto", "torch", "triton"):
        rocm_accel_ops.flash_attn_func(qa, ka, va, causal=True, backend=backend)
        rocm_accel_ops.flash_attn_varlen_func(qa[0], ka[0, :5], va[0, :5], cu, cu, 3, 3, backend=backend)
    for name, (disp, example) in dispatchers().items():
        args = example(name, 2, 32, torch.bfloat16, torch.device("cpu"))
        disp.explain(args)
        disp.auto(args).run  # every family's auto choice, resolved without aiter
    doctor.collect()
    print(json.dumps({"aiter_imported": "aiter" in sys.modules, "ops": sorted(ops)}))
    """
)


def test_aiter_never_imported_with_flags_off(tmp_path):
    trap = tmp_path / "aiter"
    (trap / "jit").mkdir(parents=True)
    (trap / "ops").mkdir()
    (trap / "jit" / "core.py").write_text("")
    (trap / "__init__.py").write_text("raise SystemExit('aiter was imported')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
           "VLLM_ROCM_USE_AITER": "0", "TRITON_INTERPRET": "1"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["aiter_imported"] is False
    assert {"fused_add_rms_norm", "fused_add_rms_norm_", "rms_norm"} <= set(result["ops"])
