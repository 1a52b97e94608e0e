"""Backend choice: explicit backends explain refusals, auto never raises, overrides and policy data apply."""

import json

import pytest
import torch

from helpers import cuda_like
from vllm_rocm_accel import platform, policy, rocm_accel_ops
from vllm_rocm_accel.ops import norm


def _xw(rows=4, hidden=16, dtype=torch.float32):
    return torch.randn(rows, hidden, dtype=dtype), torch.randn(hidden, dtype=dtype)


def test_auto_on_cpu_is_torch_and_counts(seed):
    rocm_accel_ops.reset_call_counts()
    x, w = _xw()
    rocm_accel_ops.rms_norm(x, w, 1e-5)
    assert rocm_accel_ops.call_counts() == {("rms_norm", "torch"): 1}


def test_explicit_backend_that_cannot_serve_says_why(seed, monkeypatch):
    x, w = _xw()
    with pytest.raises(ValueError, match=r"backend 'aiter' cannot serve this call: tensor on cpu"):
        rocm_accel_ops.rms_norm(x, w, 1e-5, backend="aiter")
    monkeypatch.setenv("TRITON_INTERPRET", "0")  # the triton predicate reads it at call time
    norm.RMS_NORM.clear_caches()
    try:
        with pytest.raises(ValueError, match="no Triton target"):
            rocm_accel_ops.rms_norm(x, w, 1e-5, backend="triton")
    finally:
        monkeypatch.undo()
        norm.RMS_NORM.clear_caches()
    with pytest.raises(ValueError, match="backend='cuda' is not one of auto, aiter, triton, torch"):
        rocm_accel_ops.rms_norm(x, w, 1e-5, backend="cuda")


def test_explicit_triton_refuses_unit_stride_violation(seed):
    x = torch.randn(8, 32)[:, ::2]  # last-dim stride 2
    w = torch.randn(16)
    with pytest.raises(ValueError, match="backend 'triton' cannot serve"):
        rocm_accel_ops.rms_norm(x, w, 1e-5, backend="triton")
    out = rocm_accel_ops.rms_norm(x, w, 1e-5)  # auto falls back instead of raising
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_env_override_forces_backend(seed, fresh_settings):
    rocm_accel_ops.reset_call_counts()
    fresh_settings(VLLM_ROCM_ACCEL_BACKEND="rms_norm=triton")
    x, w = _xw()
    r = torch.randn_like(x)
    rocm_accel_ops.rms_norm(x, w, 1e-5)
    rocm_accel_ops.fused_add_rms_norm(x, r, w, 1e-5)
    assert rocm_accel_ops.call_counts() == {("rms_norm", "triton"): 1, ("fused_add_rms_norm", "torch"): 1}
    fresh_settings(VLLM_ROCM_ACCEL_BACKEND="aiter")
    with pytest.raises(ValueError, match="backend 'aiter' cannot serve"):
        rocm_accel_ops.rms_norm(x, w, 1e-5)


def test_policy_file_override(seed, fresh_settings, tmp_path):
    path = tmp_path / "policy.json"
    path.write_text(json.dumps({"ops": {"rms_norm": [{"backend": "triton", "max_rows": 4}, {"backend": "torch"}]}}))
    fresh_settings(VLLM_ROCM_ACCEL_POLICY_FILE=str(path))
    rocm_accel_ops.reset_call_counts()
    x, w = _xw(rows=4)
    rocm_accel_ops.rms_norm(x, w, 1e-5)
    x, w = _xw(rows=5)
    rocm_accel_ops.rms_norm(x, w, 1e-5)
    assert rocm_accel_ops.call_counts() == {("rms_norm", "triton"): 1, ("rms_norm", "torch"): 1}


def test_policy_columns_of_rope_are_heads_times_head_size(seed, fresh_settings, tmp_path):
    """RoPE's policy columns are heads x head size: a min_cols rule must pick per query shape,
    even after a call of the same head size but fewer heads was cached (torch-only CPU ops
    serve both; the counts say which backend each went to)."""
    path = tmp_path / "policy.json"
    path.write_text(json.dumps({"ops": {"rotary_embedding": [{"backend": "triton", "min_cols": 512},
                                                             {"backend": "torch"}]}}))
    fresh_settings(VLLM_ROCM_ACCEL_POLICY_FILE=str(path))
    rocm_accel_ops.reset_call_counts()
    cache = torch.randn(16, 32)
    pos = torch.randint(0, 16, (3,))
    for heads in (2, 8):  # 2 x 32 = 64 columns: torch; 8 x 32 = 256: still torch; 16 x 32: triton
        q, k = torch.randn(3, heads, 32), torch.randn(3, 1, 32)
        rocm_accel_ops.rotary_embedding(pos, q, k, 32, cache, True)
    q, k = torch.randn(3, 16, 32), torch.randn(3, 1, 32)
    q_out, k_out = rocm_accel_ops.rotary_embedding(pos, q, k, 32, cache, True)
    ref_q, ref_k = rocm_accel_ops.rotary_embedding(pos, q, k, 32, cache, True, backend="torch")
    torch.testing.assert_close(q_out, ref_q, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(k_out, ref_k, rtol=1e-6, atol=1e-6)
    assert rocm_accel_ops.call_counts() == {("rotary_embedding", "torch"): 3, ("rotary_embedding", "triton"): 1}


@pytest.fixture
def simulated_mi300(monkeypatch, fresh_settings):
    """ROCm gfx942 with AMD's aiter installed, as far as our predicates can tell."""
    install = platform.AiterInstall(True, True, "/opt/aiter", "amd-aiter", "0.1.7", "AMD aiter (simulated)")
    monkeypatch.setattr(platform, "platform_kind", lambda: "rocm")
    monkeypatch.setattr(platform, "device_arch", lambda index=0: "gfx942")
    monkeypatch.setattr(platform, "aiter_install", lambda: install)
    monkeypatch.setattr(platform, "triton_unavailable_reason", lambda device: None)
    monkeypatch.setattr(platform, "device_index", lambda device: 0)
    return fresh_settings


def test_auto_on_simulated_mi300_follows_flags_and_dtype(simulated_mi300):
    x, w = cuda_like(64, 4096), cuda_like(4096)
    simulated_mi300(VLLM_ROCM_USE_AITER="1")
    assert policy.family_of(x.device) == "rocm_gfx9"
    assert norm.RMS_NORM.auto((x, w, 1e-6)).name == "aiter"
    xf, wf = cuda_like(64, 4096, dtype=torch.float32), cuda_like(4096, dtype=torch.float32)
    assert norm.RMS_NORM.auto((xf, wf, 1e-6)).name == "triton"  # aiter rmsnorm is 16-bit only
    simulated_mi300(VLLM_ROCM_USE_AITER="1", VLLM_ROCM_USE_AITER_RMSNORM="0")
    assert norm.RMS_NORM.auto((x, w, 1e-6)).name == "triton"
    why = dict(norm.RMS_NORM.explain((x, w, 1e-6)))
    assert "VLLM_ROCM_USE_AITER_RMSNORM=0" in why["aiter"]
    simulated_mi300(VLLM_ROCM_USE_AITER="0")
    assert norm.RMS_NORM.auto((x, w, 1e-6)).name == "triton"
    assert "VLLM_ROCM_USE_AITER=0" in dict(norm.RMS_NORM.explain((x, w, 1e-6)))["aiter"]


def test_auto_never_raises_on_odd_calls(seed):
    for x in (torch.randn(3, 7)[:, ::2], torch.randn(2, 3, 5).transpose(0, 1), torch.randn(0, 9)):
        w = torch.randn(x.shape[-1])
        out = rocm_accel_ops.rms_norm(x, w, 1e-5)
        assert out.shape == x.shape


# -- rules marked "fast_path" ------------------------------------------------------------------
def _fast_dispatch(fast):
    from vllm_rocm_accel import dispatch

    seen = []

    def fast_path(x):
        seen.append(x)
        return fast(x)

    ok = lambda *a: None  # noqa: E731
    backends = [dispatch.Backend("torch", lambda x: "torch", ok, ok, fast_path=fast_path),
                dispatch.Backend("triton", lambda x: "triton", ok, ok)]
    shape = lambda x: dispatch.CallShape(torch.device("cpu"), torch.float32, 1, 1)  # noqa: E731
    return dispatch.OpDispatch("fast_path_probe_op", backends, shape), seen


def test_fast_path_rules_apply_only_where_the_backend_says_so(monkeypatch):
    rules = (policy._rule({"backend": "torch", "fast_path": True}, "test"), policy._rule({"backend": "triton"}, "test"))
    monkeypatch.setattr(policy, "rules_for", lambda op, device: rules)
    d, seen = _fast_dispatch(lambda x: x.numel() == 1)
    fast, slow, empty = torch.empty(1), torch.empty(2), torch.empty(0)
    assert d.select("auto", (fast,)).name == "torch"
    assert d.select("auto", (slow,)).name == "triton"
    assert d.select("auto", (empty,)).name == "triton"
    assert len(seen) == 3 and all(a is b for a, b in zip(seen, (fast, slow, empty)))  # the call's own args
    assert d.select("torch", (slow,)).name == "torch"  # explicit names ignore the rule's condition
    assert dict(d.explain((fast,)))["torch"] == "chosen (policy: torch fast path)"
    assert dict(d.explain((slow,)))["triton"].startswith("chosen")


def test_fast_path_key_must_be_a_bool():
    assert policy._rule({"backend": "torch", "fast_path": True}, "t").fast_path
    assert not policy._rule({"backend": "torch"}, "t").fast_path
    with pytest.raises(Exception, match="bad policy rule"):
        policy._rule({"backend": "torch", "fast_path": "yes"}, "t")


def test_cuda_attention_policy_routes_dense_calls_to_cudnn(monkeypatch):
    """The shipped cuda policy (measured on an H200): the torch backend's cuDNN path for a dense
    bf16 forward of >= 1024 keys (with or without the lse) and for every dense backward (any key
    length) unless deterministic; our Triton kernels for shorter forwards, a deterministic
    backward, or where the cuDNN path declines (GQA here). torch's own cuDNN checks need a GPU,
    so they are stood in with 'yes'."""
    import dataclasses

    from vllm_rocm_accel.backends.torch import attention as torch_attn
    from vllm_rocm_accel.checks.attention import check_dense
    from vllm_rocm_accel.ops import attention as attn

    monkeypatch.setattr(policy, "family_of", lambda device: "cuda" if device.type == "cuda" else "cpu")
    monkeypatch.setattr(torch_attn, "_cudnn_accepts", lambda *a: True)
    monkeypatch.setattr(torch_attn, "_cudnn_ops_present", lambda: True)
    policy._clear()
    try:
        q, k, v = (cuda_like(2, 4096, 8, 128) for _ in range(3))
        p = check_dense(q, k, v, None, True, (-1, -1), 0.0, None, 0.0)
        args = (q, k, v, None, None, None, p)
        assert attn.FLASH_ATTN_FWD.auto(args).name == "torch"
        assert attn.FLASH_ATTN_BWD.auto(args).name == "torch"
        pd = dataclasses.replace(p, deterministic=True)
        assert attn.FLASH_ATTN_BWD.auto((q, k, v, None, None, None, pd)).name == "triton"
        kg, vg = cuda_like(2, 4096, 2, 128), cuda_like(2, 4096, 2, 128)
        pg = check_dense(q, kg, vg, None, True, (-1, -1), 0.0, None, 0.0)
        assert attn.FLASH_ATTN_FWD.auto((q, kg, vg, None, None, None, pg)).name == "triton"
        assert attn.FLASH_ATTN_BWD.auto((q, kg, vg, None, None, None, pg)).name == "triton"
        qs, ks, vs = (cuda_like(2, 1000, 8, 64) for _ in range(3))  # below the forward's crossover
        ps = check_dense(qs, ks, vs, None, True, (-1, -1), 0.0, None, 0.0)
        assert attn.FLASH_ATTN_FWD.auto((qs, ks, vs, None, None, None, ps)).name == "triton"
        assert attn.FLASH_ATTN_BWD.auto((qs, ks, vs, None, None, None, ps)).name == "torch"
    finally:
        monkeypatch.undo()
        policy._clear()


def test_cuda_gemm_policy_takes_cublas_for_small_per_tensor_calls(monkeypatch):
    """The shipped cuda policy: cuBLAS's per-tensor FP8 GEMM (the torch backend) for M <= 128
    with per-tensor scales on both operands; our Triton kernel for row-wise scales and larger M.
    (The device checks of torch._scaled_mm and Triton's FP8 dot need a GPU: stood in with 'yes'.)"""
    from vllm_rocm_accel.backends.torch import gemm as torch_gemm
    from vllm_rocm_accel.ops import gemm as gemm_ops

    monkeypatch.setattr(policy, "family_of", lambda device: "cuda" if device.type == "cuda" else "cpu")
    from vllm_rocm_accel.backends.triton import gemm as triton_gemm

    monkeypatch.setattr(torch_gemm, "scaled_mm_refusal", lambda *a: None)
    monkeypatch.setattr(triton_gemm, "_native_formats", lambda device: (torch.float8_e4m3fn,))
    policy._clear()
    try:
        fp8 = torch.float8_e4m3fn
        w = cuda_like(4096, 4096, dtype=fp8)
        one = cuda_like(1, dtype=torch.float32)

        def chosen(m, a_kind, w_kind):
            a = cuda_like(m, 4096, dtype=fp8)
            sa = one if a_kind == "tensor" else cuda_like(m, 1, dtype=torch.float32)
            sw = one if w_kind == "tensor" else cuda_like(4096, 1, dtype=torch.float32)
            return gemm_ops.GEMM_A8W8.auto((a, w, sa, sw, a_kind, w_kind, None, torch.bfloat16)).name

        assert chosen(1, "tensor", "tensor") == "torch"
        assert chosen(128, "tensor", "tensor") == "torch"
        assert chosen(129, "tensor", "tensor") == "triton"
        assert chosen(16, "token", "channel") == "triton"
        assert chosen(16, "tensor", "channel") == "triton"
    finally:
        monkeypatch.undo()
        policy._clear()
