"""Split-K for paged attention: how many partial passes over the keys (``num_splits = 0``).

A two-regime occupancy model (the shape of AMD's MI300 split-K heuristic, plus a long-context
split of saturated batches that H200 measurements asked for):

* ``programs = batch * num_heads_k * query_blocks``, where ``query_blocks = ceil(max_seqlen_q /
  q_block_rows)`` (1 for decode): one program per (sequence, kv head, query block), as the
  kernels launch them without splitting;
* **saturated**: ``programs >= saturate_waves * multiprocessors`` -> 2 when the call is a decode
  (max_seqlen_q <= 1) and ``max_seqlen_k >= 2 * saturated_min_keys_per_split`` (long contexts:
  two passes still gain 5-9% on an H200 from 8K keys), else 1 (short contexts: the combine's
  traffic costs more than the split gains; prefill: only decode was measured);
* **undersubscribed**: the smallest ``G`` in {2, 4, 8, 16} with ``programs * G >= target_waves *
  multiprocessors`` (16 if none reaches it), capped so that every split keeps at least
  ``min_keys_per_split`` keys of ``max_seqlen_k`` (short contexts gain nothing from splitting).

``saturated_min_keys_per_split >= min_keys_per_split`` (checked on load), so every split of
either regime keeps at least ``min_keys_per_split`` keys and G never grows with the batch; a
value no context reaches (e.g. ``2**40``) turns the saturated split off.

The multiprocessor count is read from the device at run time
(``torch.cuda.get_device_properties(i).multi_processor_count``: 132 on an H100 SXM / H200, 304 on
an MI300X, whatever the device says elsewhere); CPU tensors never split. The constants are data,
per device family (:func:`vllm_rocm_accel.policy.family_of`), in ``policy/split_k.json``. The
``cuda`` ones are **measured**: fitted on an NVIDIA H200 (132 SMs) to decode times from
``benchmarks/tune_decode.py`` (GPU time of CUDA-graph replays, L2 flushed before each; q 1, Hq 32,
Hk 8, D 128, bf16, block size 16, batch {1, 4, 16, 64, 256} x context {1K, 8K, 32K, 128K}), every
shape within 5% of its best forced G. The ``rocm`` / ``rocm_gfx9`` / ``default`` ones are
unmeasured starting points (see the file's note).
"""

from __future__ import annotations

import functools
import json
import math
import os
from dataclasses import dataclass
from typing import Optional

import torch

from . import policy, settings

PATH = os.path.join(os.path.dirname(__file__), "policy", "split_k.json")
SPLITS = (1, 2, 4, 8, 16)


@dataclass(frozen=True)
class SplitConstants:
    """One device family's constants (see the module docstring)."""

    saturate_waves: float
    target_waves: float
    min_keys_per_split: int
    saturated_min_keys_per_split: int
    q_block_rows: int


_FIELDS = {"saturate_waves": float, "target_waves": float, "min_keys_per_split": int,
           "saturated_min_keys_per_split": int, "q_block_rows": int}


def _constants(entry, where: str) -> SplitConstants:
    if not isinstance(entry, dict) or set(entry) != set(_FIELDS):
        raise ValueError(f"{where}: expected exactly the keys {sorted(_FIELDS)}, got {entry!r}")
    values = {}
    for name, kind in _FIELDS.items():
        val = entry[name]
        if isinstance(val, bool) or not isinstance(val, (int, float)) or (kind is int and not isinstance(val, int)):
            raise ValueError(f"{where}: {name} must be {'an int' if kind is int else 'a number'}, got {val!r}")
        if not (math.isfinite(val) and val > 0):
            raise ValueError(f"{where}: {name} must be finite and > 0, got {val!r}")
        values[name] = kind(val)
    if values["saturated_min_keys_per_split"] < values["min_keys_per_split"]:
        raise ValueError(f"{where}: saturated_min_keys_per_split must be >= min_keys_per_split, got {entry!r}")
    return SplitConstants(**values)


def load(path: str = PATH) -> dict[str, SplitConstants]:
    """The file's families -> constants, validated (``ValueError`` naming the file and key)."""
    with open(path) as f:
        data = json.load(f)
    if not isinstance(data, dict) or not isinstance(data.get("families"), dict):
        raise ValueError(f"{path}: expected an object with a 'families' object")
    if list(data.get("splits", SPLITS)) != list(SPLITS):
        raise ValueError(f"{path}: 'splits' must be {list(SPLITS)} (what the kernels support)")
    families = {name: _constants(entry, f"{path}: families.{name}") for name, entry in data["families"].items()}
    if "default" not in families:
        raise ValueError(f"{path}: families must include 'default'")
    return families


@functools.lru_cache(maxsize=None)
def _table() -> dict[str, SplitConstants]:
    return load()


def constants_for(device: torch.device) -> SplitConstants:
    table = _table()
    return table.get(policy.family_of(device), table["default"])


@functools.lru_cache(maxsize=None)
def _multiprocessors_of(index: int) -> int:
    return int(torch.cuda.get_device_properties(index).multi_processor_count)


def multiprocessors(device: torch.device) -> int:
    """The device's multiprocessor (SM / CU) count, read once per device; 1 for the CPU."""
    if device.type != "cuda":
        return 1
    return _multiprocessors_of(device.index if device.index is not None else torch.cuda.current_device())


def splits_for(programs: int, max_seqlen_k: int, multiprocessors: int, c: SplitConstants,
               decode: bool = True) -> int:
    """The model itself, on plain numbers (see the module docstring). ``decode``: every query
    block is one query (max_seqlen_q <= 1); the saturated regime's split was measured on decode
    batches only, so calls with prefill rows keep G = 1 there (no float32 split workspace
    the size of a whole prefill)."""
    if programs <= 0 or max_seqlen_k <= 0:
        return 1
    if programs >= c.saturate_waves * multiprocessors:
        return 2 if decode and max_seqlen_k >= 2 * c.saturated_min_keys_per_split else 1
    target = c.target_waves * multiprocessors
    g = next((s for s in SPLITS[1:] if programs * s >= target), SPLITS[-1])
    cap = max(s for s in SPLITS if s == 1 or max_seqlen_k >= s * c.min_keys_per_split)
    return min(g, cap)


def choose_num_splits(batch: int, num_heads_k: int, max_seqlen_q: int, max_seqlen_k: int,
                      device: Optional[torch.device]) -> int:
    """G in {1, 2, 4, 8, 16} for this call on ``device``; always 1 off the GPU."""
    device = torch.device("cpu") if device is None else torch.device(device)
    if device.type != "cuda":
        return 1
    c = constants_for(device)
    q_blocks = max(1, -(-max_seqlen_q // c.q_block_rows))
    return splits_for(batch * num_heads_k * q_blocks, max_seqlen_k, multiprocessors(device), c,
                      decode=max_seqlen_q <= 1)


def _clear() -> None:
    _table.cache_clear()
    _multiprocessors_of.cache_clear()


settings.on_refresh(_clear)
