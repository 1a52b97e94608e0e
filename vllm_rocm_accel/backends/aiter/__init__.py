"""Adapters to AMD's AITER. Thin: layout conversion only, aiter imported lazily.

Never imported unless an aiter backend was selected, which needs ROCm gfx9,
AMD's aiter and the feature's ``VLLM_ROCM_USE_AITER*`` flags. Not run on AMD
hardware by us: checked against the amd-aiter wheel's signatures and a torch
model of the functions' contracts (tests/aiter_model).
"""
