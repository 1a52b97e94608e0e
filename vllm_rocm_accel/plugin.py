"""The ``vllm.general_plugins`` entry point: ``vllm_rocm_accel.plugin:register``.

vLLM calls it in every process it starts (engine core, workers). It is
idempotent and thread-safe: ops registered once, IR providers, layer
routing, the FP8 linear kernel and the CUSTOM attention backend
installed once.
"""

from __future__ import annotations

import logging
import threading

from . import settings

logger = logging.getLogger("vllm_rocm_accel")
_lock = threading.Lock()
_state: dict[str, object] = {}


def register() -> None:
    with _lock:
        if _state:
            return
        cfg = settings.get_settings()  # a bad environment fails here, at startup
        from .ops import register_all
        from .vllm_plugin import attention_backend, fp8_linear, ir_providers, layers

        ops = register_all()
        ir_ops = ir_providers.register()
        routed = layers.register() if cfg.VLLM_ROCM_ACCEL_ROUTE_VLLM_LAYERS else []
        fp8_platforms = fp8_linear.register() if cfg.VLLM_ROCM_ACCEL_FP8_LINEAR else []
        # The setting is read inside: VLLM_ROCM_ACCEL_ATTENTION_BACKEND=0 leaves vLLM's CUSTOM slot empty.
        attention = attention_backend.register()
        _state.update(ops=sorted(ops), ir_ops=ir_ops, routed=routed, fp8_linear=fp8_platforms,
                      attention_backend=attention)
        logger.info(
            "vllm-rocm-accel: %d ops registered; IR provider 'rocm_accel' for %s; routed layers: %s; "
            "FP8 linear kernel %s appended for %s; attention backend: %s",
            len(ops), ir_ops or "(already)", routed or "none (VLLM_ROCM_ACCEL_ROUTE_VLLM_LAYERS=0)",
            fp8_linear.RocmAccelFP8ScaledMMLinearKernel.__name__,
            fp8_platforms or "no platform (VLLM_ROCM_ACCEL_FP8_LINEAR=0)",
            f"{attention_backend.CLASS_PATH} as {attention}" if attention else "not registered",
        )


def state() -> dict[str, object]:
    """What :func:`register` did in this process (empty before it ran)."""
    return dict(_state)
