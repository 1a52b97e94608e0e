"""Out-of-tree replacements of vLLM layers (``CustomOp.register_oot``).

vLLM instantiates the registered subclass wherever a model builds the layer, so
every forward path (eager ``forward_cuda/hip/cpu`` and the ``forward_native``
used under torch.compile) goes through our ops. Calls our ops cannot serve
(vLLM's ``var_hidden_size`` override) fall back to vLLM's own code.
"""

from __future__ import annotations

_registered: dict[str, type] = {}


def _make_rms_norm():
    from vllm.model_executor.layers.layernorm import RMSNorm

    from ..facade import rocm_accel_ops

    class RocmAccelRMSNorm(RMSNorm):
        """vLLM's RMSNorm with its forward routed to ``rocm_accel_ops``."""

        def forward_native(self, x, residual=None):
            if self.variance_size_override is not None:
                return super().forward_native(x, residual)
            if residual is None:
                return rocm_accel_ops.rms_norm(x, self.weight.data if self.pass_weight else None, self.variance_epsilon)
            return rocm_accel_ops.fused_add_rms_norm(
                x, residual, self.weight.data if self.pass_weight_add else None, self.variance_epsilon
            )

        forward_cuda = forward_native
        forward_hip = forward_native
        forward_cpu = forward_native
        forward_xpu = forward_native
        forward_oot = forward_native

    return "RMSNorm", RocmAccelRMSNorm


LAYER_FACTORIES = (_make_rms_norm,)


def register() -> list[str]:
    """Register each replacement once; returns the vLLM layer names now routed."""
    from vllm.model_executor.custom_op import CustomOp, op_registry_oot

    for factory in LAYER_FACTORIES:
        name, cls = factory()
        if name in op_registry_oot:
            continue  # ours from an earlier call, or another plugin's: never register twice
        CustomOp.register_oot(cls, name=name)
        _registered[name] = cls
    return sorted(_registered)


def routed_layers() -> list[str]:
    return sorted(_registered)
