"""vLLM integration through its public extension points only.

* ``ir_providers``: our ops as a ``rocm_accel`` provider of vLLM IR ops
  (``vllm.ir.ops.rms_norm.register_impl``), selectable with
  ``--kernel-config '{"ir_op_priority": {"rms_norm": ["rocm_accel"]}}'``.
* ``layers``: ``CustomOp.register_oot`` replacements of vLLM layers that call
  our facade (the default routing; ``VLLM_ROCM_ACCEL_ROUTE_VLLM_LAYERS=0`` turns it off).
* ``fp8_linear``: an ``FP8ScaledMMLinearKernel`` calling our quant + ``gemm_a8w8`` ops,
  appended to vLLM's FP8 linear kernel lists (``register_linear_kernel``); chosen where
  vLLM's own kernels decline or are named in ``VLLM_DISABLED_KERNELS``
  (``VLLM_ROCM_ACCEL_FP8_LINEAR=0`` leaves it out).
* ``attention_backend``: a paged-KV attention backend (our ``reshape_and_cache_flash`` + paged
  ``flash_attn_varlen_func``) in vLLM's ``CUSTOM`` backend slot (``register_backend``), chosen
  with ``--attention-backend CUSTOM`` (``VLLM_ROCM_ACCEL_ATTENTION_BACKEND=0`` leaves it out).
"""
