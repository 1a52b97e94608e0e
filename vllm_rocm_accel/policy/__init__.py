"""The ``auto`` policy: per device family, per op, an ordered list of rules (data).

Files beside this module, one per device family: ``cpu.json``, ``cuda.json``
(measured on an H100), ``rocm_gfx9.json`` (gfx90a / gfx942 / gfx950). A rule
names a backend and, optionally, the dtypes and row/column ranges it applies
to, and ``"fast_path": true`` (the rule applies only where that backend's
``fast_path`` predicate says its fast kernel serves the call, e.g. the torch
attention backend's cuDNN SDPA); the first rule whose backend can serve the
call wins. ``torch`` is the
implicit last resort. ``VLLM_ROCM_ACCEL_POLICY_FILE`` points at a file of the
same form whose ops replace the built-in ones (for tuning on a new machine).
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from typing import Optional

import torch

from .. import platform, settings

_DIR = os.path.dirname(__file__)
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# Data files beside the policies that are not per-family policy tables.
NOT_POLICIES = frozenset({"split_k.json"})  # the split-K heuristic's constants (vllm_rocm_accel.split_k)


@dataclass(frozen=True)
class Rule:
    backend: str
    dtypes: Optional[frozenset] = None
    min_rows: int = 0
    max_rows: Optional[int] = None
    min_cols: int = 0
    max_cols: Optional[int] = None
    fast_path: bool = False  # only where the backend's fast_path(...) says its fast kernel serves the call

    def matches(self, shape) -> bool:
        if self.dtypes is not None and shape.dtype not in self.dtypes:
            return False
        if shape.rows < self.min_rows or (self.max_rows is not None and shape.rows > self.max_rows):
            return False
        if shape.cols < self.min_cols or (self.max_cols is not None and shape.cols > self.max_cols):
            return False
        return True

    def describe(self) -> str:
        parts = [self.backend]
        if self.dtypes is not None:
            parts.append("dtypes=" + "/".join(sorted(str(d).removeprefix("torch.") for d in self.dtypes)))
        if self.min_rows or self.max_rows is not None:
            parts.append(f"rows {self.min_rows}..{self.max_rows if self.max_rows is not None else 'inf'}")
        if self.min_cols or self.max_cols is not None:
            parts.append(f"cols {self.min_cols}..{self.max_cols if self.max_cols is not None else 'inf'}")
        if self.fast_path:
            parts.append("fast path")
        return " ".join(parts)


def _rule(entry: dict, where: str) -> Rule:
    unknown = set(entry) - {"backend", "dtypes", "min_rows", "max_rows", "min_cols", "max_cols", "fast_path", "why"}
    if unknown or entry.get("backend") not in settings.BACKENDS or not isinstance(entry.get("fast_path", False), bool):
        raise settings.SettingsError(f"bad policy rule {entry!r} in {where}")
    dtypes = entry.get("dtypes")
    return Rule(
        backend=entry["backend"],
        dtypes=None if dtypes is None else frozenset(_DTYPES[d] for d in dtypes),
        min_rows=entry.get("min_rows", 0),
        max_rows=entry.get("max_rows"),
        min_cols=entry.get("min_cols", 0),
        max_cols=entry.get("max_cols"),
        fast_path=entry.get("fast_path", False),
    )


def _read(path: str) -> dict[str, tuple[Rule, ...]]:
    with open(path) as f:
        data = json.load(f)
    return {op: tuple(_rule(e, path) for e in rules) for op, rules in data["ops"].items()}


def family_of(device: torch.device) -> str:
    if device.type != "cuda":
        return "cpu"
    kind = platform.platform_kind()
    if kind == "rocm":
        return "rocm_gfx9" if platform.is_gfx9(platform.device_index(device)) else "rocm"
    return "cuda"


@functools.lru_cache(maxsize=None)
def _family_table(family: str) -> dict[str, tuple[Rule, ...]]:
    path = os.path.join(_DIR, f"{family}.json")
    table = _read(path) if os.path.exists(path) else {}
    override = settings.get_settings().VLLM_ROCM_ACCEL_POLICY_FILE
    if override:
        table = {**table, **_read(override)}
    return table


@functools.lru_cache(maxsize=None)
def rules_for(op: str, device: torch.device) -> tuple[Rule, ...]:
    return _family_table(family_of(device)).get(op, ())


@functools.lru_cache(maxsize=None)
def row_bounds(op: str) -> tuple[int, ...]:
    """Every row count at which some family's rule for ``op`` starts or stops applying.

    ``bisect(row_bounds(op), rows)`` names the row bracket of a call exactly, so a choice
    cached per bracket is the choice the rules would make for any row count in it.
    """
    bounds = set()
    for name in os.listdir(_DIR):
        if name.endswith(".json") and name not in NOT_POLICIES:
            for rule in _family_table(name[:-5]).get(op, ()):
                bounds.add(rule.min_rows)
                if rule.max_rows is not None:
                    bounds.add(rule.max_rows + 1)
    return tuple(sorted(bounds))


def _clear() -> None:
    _family_table.cache_clear()
    rules_for.cache_clear()
    row_bounds.cache_clear()


settings.on_refresh(_clear)
