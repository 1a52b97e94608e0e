"""The op families. :func:`register_all` defines every ``torch.ops.rocm_accel.*`` op once."""

from __future__ import annotations

import importlib

import torch

from .catalog import FAMILIES

_ops: dict[str, torch._ops.OpOverload] = {}


def _family(name: str):
    return importlib.import_module(f"{__name__}.{name}")


def register_all() -> dict[str, torch._ops.OpOverload]:
    """Register every family's ops (idempotent, thread-safe through the registry)."""
    if not _ops:
        for family in FAMILIES:
            _ops.update(_family(family).register())
    return _ops


def dispatchers() -> dict:
    """op name -> (OpDispatch, example_args(op, rows, hidden, dtype, device)), for doctor."""
    out = {}
    for family in FAMILIES:
        module = _family(family)
        out.update({name: (d, module.example_args) for name, d in module.DISPATCHERS.items()})
    return out
