"""Out-of-tree replacements of vLLM layers (``CustomOp.register_oot``), one module per family.

vLLM instantiates the registered subclass wherever a model builds the layer, so every
forward path (eager ``forward_cuda/hip/cpu`` and the ``forward_native`` used under
torch.compile) goes through our ops. Each family module has ``FACTORIES``: callables that
import vLLM lazily and return ``(vLLM layer class name, replacement class)``.
"""

from __future__ import annotations

import importlib

FAMILIES = (
    "norm",
    "activation",
    "rope",
)

_registered: dict[str, type] = {}


def register() -> list[str]:
    """Register each replacement once; returns the vLLM layer names now routed."""
    from vllm.model_executor.custom_op import CustomOp, op_registry_oot

    for family in FAMILIES:
        for factory in importlib.import_module(f"{__name__}.{family}").FACTORIES:
            name, cls = factory()
            if name in op_registry_oot:
                continue  # ours from an earlier call, or another plugin's: never register twice
            CustomOp.register_oot(cls, name=name)
            _registered[name] = cls
    return sorted(_registered)


def routed_layers() -> list[str]:
    return sorted(_registered)
