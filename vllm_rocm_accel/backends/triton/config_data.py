"""Launch configs as data, shared by the Triton launchers.

Each launcher's parameters live in ``configs/<name>.json``: one section per device family
(``cuda``, ``rocm``, ``interpret``). A launcher keeps its own cached loader (``_config =
loader("<name>")``) so that tests and tuners can replace or clear it per module, and picks its
section with :func:`section` of :func:`family`. :func:`pow2` checks a config's power-of-two
fields, naming the file and the field; :func:`pow2_ceil` rounds a width up to a power of two.
"""
from __future__ import annotations

import functools
import json
import os
from typing import Callable

import torch

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "configs")


def loader(name: str) -> Callable[[], dict]:
    """A cached reader of ``configs/<name>.json`` (``cache_clear()`` makes it read the file again)."""
    path = os.path.join(CONFIG_DIR, f"{name}.json")

    @functools.lru_cache(maxsize=1)
    def config() -> dict:
        with open(path) as f:
            return json.load(f)

    return config


def interpreting() -> bool:
    """Whether Triton runs kernels in its interpreter (``TRITON_INTERPRET``) in this process."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


@functools.lru_cache(maxsize=None)
def family(device_type: str) -> str:
    """The config family of a device type: ``interpret`` under TRITON_INTERPRET or off CUDA (the
    interpreter is Triton's only target there), else ``rocm`` on a HIP build, ``cuda`` otherwise."""
    if interpreting():
        return "interpret"
    if device_type == "cuda":
        return "rocm" if torch.version.hip else "cuda"
    return "interpret"


def section(cfg: dict, family_name: str) -> dict:
    """The family's section of a loaded config, the ``cuda`` one where the family has none."""
    return cfg.get(family_name) or cfg["cuda"]


def dtype_table(section: dict, dtype: torch.dtype) -> list:
    """A section's launch table for ``dtype``: ``tables["bfloat16"]`` (etc.) where the section has
    one, else ``tables["default"]``."""
    tables = section["tables"]
    return tables.get(str(dtype).removeprefix("torch."), tables["default"])


def bracket(entries: list, n: int) -> dict:
    """The first of ``entries`` (sorted by ``max_cols``) with ``n <= max_cols``, else the last."""
    return next((e for e in entries if n <= e["max_cols"]), entries[-1])


def pow2(name: str, value: int, source: str, minimum: int = 1) -> int:
    """``value`` if it is a power of two >= ``minimum``, else a ValueError naming the config file
    ``source`` (e.g. ``"quant.json"``) and its field ``name``."""
    if value < minimum or value & (value - 1):
        bound = f" >= {minimum}" if minimum > 1 else ""
        raise ValueError(f"{source}: {name} must be a power of two{bound}, got {value}")
    return value


def pow2_ceil(n: int) -> int:
    """The smallest power of two >= max(n, 1)."""
    return 1 << max(0, n - 1).bit_length()
