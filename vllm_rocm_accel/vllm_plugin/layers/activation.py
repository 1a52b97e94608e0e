"""vLLM's SiluAndMul and GeluAndMul routed to our activation ops.

Every forward path (eager ``forward_cuda/hip/cpu/xpu/oot`` and the ``forward_native`` vLLM
uses when the custom op is disabled or compiled) goes through ``rocm_accel_ops``. Inputs our
ops cannot serve (not a float tensor, an odd or empty last dim) fall back to vLLM's own
``forward_native``.

``GeluAndMul(approximate="tanh")`` is served as the tanh approximation on every platform, as
vLLM's and AITER's kernels compute it; vLLM's ``forward_native`` on ROCm alone substitutes
the erf form (a workaround for PyTorch's tanh GELU under torch.compile on ROCm).
``SiluAndMul.forward_native`` is a staticmethod in vLLM (other code calls it on the class),
and stays one here.
"""

from __future__ import annotations

import torch

_FLOATS = (torch.float32, torch.float16, torch.bfloat16)


def servable(x) -> bool:
    """Whether our ops take ``x`` (anything else goes to vLLM's own code)."""
    return (isinstance(x, torch.Tensor) and x.dtype in _FLOATS and x.dim() >= 1
            and x.shape[-1] > 0 and x.shape[-1] % 2 == 0)


def _make_silu_and_mul():
    from vllm.model_executor.layers.activation import SiluAndMul

    from ...facade import rocm_accel_ops

    class RocmAccelSiluAndMul(SiluAndMul):
        """vLLM's SiluAndMul with its forward routed to ``rocm_accel_ops.silu_and_mul``."""

        @staticmethod
        def forward_native(x: torch.Tensor) -> torch.Tensor:
            if not servable(x):
                return SiluAndMul.forward_native(x)
            return rocm_accel_ops.silu_and_mul(x)

        def forward_cuda(self, x: torch.Tensor) -> torch.Tensor:
            return self.forward_native(x)

        forward_hip = forward_cuda
        forward_cpu = forward_cuda
        forward_xpu = forward_cuda
        forward_oot = forward_cuda

    return "SiluAndMul", RocmAccelSiluAndMul


def _make_gelu_and_mul():
    from vllm.model_executor.layers.activation import GeluAndMul

    from ...facade import rocm_accel_ops

    class RocmAccelGeluAndMul(GeluAndMul):
        """vLLM's GeluAndMul with its forward routed to ``rocm_accel_ops.gelu_and_mul``."""

        def forward_native(self, x: torch.Tensor) -> torch.Tensor:
            if not servable(x) or self.approximate not in ("none", "tanh"):
                return super().forward_native(x)
            return rocm_accel_ops.gelu_and_mul(x, self.approximate)

        forward_cuda = forward_native
        forward_hip = forward_native
        forward_cpu = forward_native
        forward_xpu = forward_native
        forward_oot = forward_native

    return "GeluAndMul", RocmAccelGeluAndMul


FACTORIES = (_make_silu_and_mul, _make_gelu_and_mul)
