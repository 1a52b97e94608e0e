"""Registration of our ops into the ``rocm_accel`` torch library.

One helper, :func:`register_op`, defines an op with the schema inferred from the
implementation's Python signature, registers the implementation on the dispatch
keys that run it (CPU, and CUDA which ROCm shares) and the fake implementation
that ``torch.compile`` traces. It uses ``Library.define/impl`` directly (the
low-overhead path vLLM's ``direct_register_custom_op`` takes) rather than the
``torch.library.custom_op`` wrapper, whose Python-side dispatch costs more per
call. Registration is idempotent and thread-safe.
"""

from __future__ import annotations

import threading
from typing import Callable, Iterable

import torch
from torch.library import Library, infer_schema

NAMESPACE = "rocm_accel"
DISPATCH_KEYS = ("CPU", "CUDA")

_lib = Library(NAMESPACE, "FRAGMENT")  # must live as long as the process
_lock = threading.Lock()
_registered: dict[str, torch._ops.OpOverload] = {}


def register_op(
    name: str,
    impl: Callable,
    fake: Callable,
    *,
    mutates_args: Iterable[str] = (),
    dispatch_keys: Iterable[str] = DISPATCH_KEYS,
) -> torch._ops.OpOverload:
    """Define ``torch.ops.rocm_accel.<name>`` once and return its default overload."""
    op = _registered.get(name)
    if op is not None:
        return op
    with _lock:
        op = _registered.get(name)
        if op is not None:
            return op
        schema = infer_schema(impl, mutates_args=tuple(mutates_args))
        _lib.define(name + schema)
        for key in dispatch_keys:
            _lib.impl(name, impl, key)
        _lib._register_fake(name, fake)
        op = getattr(getattr(torch.ops, NAMESPACE), name).default
        _registered[name] = op
        return op


def registered_ops() -> dict[str, torch._ops.OpOverload]:
    return dict(_registered)
