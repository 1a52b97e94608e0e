"""vLLM's RMSNorm routed to our norm ops. Calls our ops cannot serve (vLLM's
``var_hidden_size`` override) fall back to vLLM's own code."""

from __future__ import annotations


def _make_rms_norm():
    from vllm.model_executor.layers.layernorm import RMSNorm

    from ...facade import rocm_accel_ops

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


FACTORIES = (_make_rms_norm,)
