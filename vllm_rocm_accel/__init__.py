"""vllm-rocm-accel: accelerated kernels for vLLM.

AMD's AITER on ROCm gfx9, our portable Triton kernels on any GPU, torch
everywhere, behind one facade: ``from vllm_rocm_accel import rocm_accel_ops``.
Importing the package is cheap: torch ops are registered when the facade is
first imported, and neither triton nor aiter is imported until a call needs it.
"""

__version__ = "0.1.0"


def __getattr__(name):
    if name == "rocm_accel_ops":
        from .facade import rocm_accel_ops

        return rocm_accel_ops
    raise AttributeError(f"module 'vllm_rocm_accel' has no attribute {name!r}")


__all__ = ["rocm_accel_ops", "__version__"]
