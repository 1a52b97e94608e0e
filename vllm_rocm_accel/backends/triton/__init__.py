"""Triton backends: launchers for the kernels in ``vllm_rocm_accel.kernels.triton``."""
