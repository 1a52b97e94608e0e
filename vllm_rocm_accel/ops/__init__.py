"""The op families. :func:`register_all` defines every ``torch.ops.rocm_accel.*`` op once."""

from __future__ import annotations

import torch

_ops: dict[str, torch._ops.OpOverload] = {}


def register_all() -> dict[str, torch._ops.OpOverload]:
    """Register every family's ops (idempotent, thread-safe through the registry)."""
    if not _ops:
        from . import norm

        _ops.update(norm.register())
    return _ops


def dispatchers() -> dict:
    """op name -> (OpDispatch, example_args(op, rows, hidden, dtype, device)), for doctor."""
    from . import norm

    return {name: (d, norm.example_args) for name, d in norm.DISPATCHERS.items()}
