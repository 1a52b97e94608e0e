"""The vLLM plugin: entry point declared, registration idempotent, RMSNorm routed through our ops."""

import importlib.metadata

import pytest
import torch

vllm = pytest.importorskip("vllm")

from vllm_rocm_accel import plugin, rocm_accel_ops  # noqa: E402
from vllm_rocm_accel.vllm_plugin import ir_providers, layers  # noqa: E402


def test_entry_point_is_installed():
    eps = importlib.metadata.entry_points(group="vllm.general_plugins")
    assert any(ep.value == "vllm_rocm_accel.plugin:register" for ep in eps)


def test_register_is_idempotent_and_routes_rmsnorm(seed):
    from vllm import ir
    from vllm.config import VllmConfig, set_current_vllm_config
    from vllm.model_executor.custom_op import op_registry_oot
    from vllm.model_executor.layers.layernorm import RMSNorm

    plugin.register()
    plugin.register()
    state = plugin.state()
    assert "RMSNorm" in state["routed"] and layers.routed_layers() == state["routed"]
    assert ir_providers.PROVIDER in ir.ops.rms_norm.impls and ir_providers.PROVIDER in ir.ops.fused_add_rms_norm.impls
    assert layers.register() == state["routed"]  # a second call registers nothing new and does not raise
    assert op_registry_oot["RMSNorm"].__name__ == "RocmAccelRMSNorm"

    with set_current_vllm_config(VllmConfig()):
        norm = RMSNorm(48, eps=1e-5)
    assert type(norm).__name__ == "RocmAccelRMSNorm"
    with torch.no_grad():
        norm.weight.copy_(torch.rand(48) + 0.5)
    x, r = torch.randn(5, 48), torch.randn(5, 48)
    want = ir.ops.rms_norm.impls["native"].impl_fn(x, norm.weight.data, 1e-5)
    want_add = ir.ops.fused_add_rms_norm.impls["native"].impl_fn(x, r, norm.weight.data, 1e-5)
    rocm_accel_ops.reset_call_counts()
    got = norm(x)
    got_add = norm(x.clone(), r.clone())
    assert rocm_accel_ops.call_counts() == {("rms_norm", "torch"): 1, ("fused_add_rms_norm", "torch"): 1}
    assert torch.equal(got, want)  # bit-identical to vLLM's native op
    assert torch.equal(got_add[0], want_add[0]) and torch.equal(got_add[1], want_add[1])


def test_ir_provider_matches_native(seed):
    from vllm import ir

    plugin.register()
    x, r, w = torch.randn(3, 32, dtype=torch.bfloat16), torch.randn(3, 32, dtype=torch.bfloat16), torch.randn(32, dtype=torch.bfloat16)
    impl = ir.ops.rms_norm.impls[ir_providers.PROVIDER]
    assert impl.supports_args(x, w, 1e-6) and not impl.supports_args(x, w, 1e-6, 16)
    assert torch.equal(impl.impl_fn(x, w, 1e-6), ir.ops.rms_norm.impls["native"].impl_fn(x, w, 1e-6))
    add = ir.ops.fused_add_rms_norm.impls[ir_providers.PROVIDER]
    got = add.func_impl_fn(x, r, w, 1e-6)  # functional call: vLLM clones the activations for inplace impls
    want = ir.ops.fused_add_rms_norm.impls["native"].impl_fn(x, r, w, 1e-6)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
