"""The public ops and families, as data. Kept free of torch imports so settings validation
can name the ops cheaply.

``OP_FEATURES``: op name -> the vLLM AITER feature whose flag (with the master flag
``VLLM_ROCM_USE_AITER``) gates its aiter backend; ``None``: vLLM has no per-feature flag for
it, so the master flag alone gates it.
``FAMILIES``: the modules under ``ops/`` that :func:`vllm_rocm_accel.ops.register_all` loads;
each has ``register() -> {name: OpOverload}``, ``DISPATCHERS`` and ``example_args``.
"""

OP_FEATURES: dict[str, str | None] = {
    "rms_norm": "rmsnorm",
    "fused_add_rms_norm": "rmsnorm",
    "silu_and_mul": None,
    "gelu_and_mul": None,
    "rotary_embedding": "triton_rope",
    "per_tensor_quant": "linear",
    "per_token_quant": "linear",
    "per_token_group_quant": "linear",
    # vLLM 0.32 runs its AITER rmsnorm + quant and silu-and-mul + group-quant fusion passes on
    # rocm_aiter_ops.is_enabled() alone (compilation/passes/pass_manager.py): the master flag.
    "rms_norm_dynamic_quant": None,
    "fused_add_rms_norm_dynamic_quant": None,
    "silu_and_mul_group_quant": None,
    "gemm_a8w8": "linear",
    "gemm_a8w8_blockscale": "linear",
    # vLLM gates AITER's flash_attn_func / flash_attn_varlen_func with VLLM_ROCM_USE_AITER_MHA.
    "flash_attn_fwd": "mha",
    "flash_attn_bwd": "mha",
    # vLLM runs AITER's paged attention (varlen over the block table, paged decode) in its
    # ROCM_AITER_FA backend, which VLLM_ROCM_USE_AITER_MHA gates (platforms/rocm.py).
    "paged_attn_fwd": "mha",
    "paged_attn_fwd_out": "mha",
    # vLLM has no per-feature flag for the KV-cache write: its AITER attention backends call vLLM's own
    # reshape_and_cache_flash, and the fused rope + cache write is gated by rocm_aiter_ops.is_enabled()
    # (v1/attention/backends/rocm_aiter_fa.py): the master flag alone.
    "reshape_and_cache_flash": None,
}
OP_NAMES: tuple[str, ...] = tuple(OP_FEATURES)

FAMILIES: tuple[str, ...] = (
    "norm",
    "activation",
    "rope",
    "quant",
    "fused_quant",
    "gemm",
    "attention",
    "paged_attention",
    "kv_cache",
)
