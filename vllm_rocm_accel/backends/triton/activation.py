"""Triton gated-activation launcher: grid and launch parameters for ``kernels/triton/activation.py``.

The launcher writes into the ``out`` it is given; the op layer allocates, validates,
and asks :func:`supports_args` first.

Rows are addressed as ``base + row * row_stride + col``: any ``x`` (or ``out``) whose last
dim has stride 1 and whose leading dims collapse to a single row stride (``big[:, :2d]``,
an N-D view of such rows) is used in place, without a copy.

Launch parameters are data (``configs/activation.json``), keyed by device family; the
per-(device type, d, dtype) choice is cached so a call does only integer work on the host.
"""

from __future__ import annotations

import functools
from typing import Optional

import torch
import triton

from ...kernels.triton import activation as _k
from . import config_data
from .config_data import family as _family
from .config_data import pow2
from .fast_launch import FastLauncher
from .norm import _row_stride  # the row geometry the norm launcher uses, shared

_config = config_data.loader("activation")  # a module attribute: tests and tuners replace it
_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
ACT_CODES = {"silu": 0, "gelu": 1, "gelu_tanh": 2}  # the kernel's ACT constexpr
_ACT = FastLauncher(_k.act_and_mul_kernel)


# --- launch parameters ------------------------------------------------------
@functools.lru_cache(maxsize=None)
def launch_params(device_type: str, d: int, dtype: torch.dtype) -> tuple[int, int, int]:
    """(BLOCK_N, rows_per_program, num_warps) for output rows of ``d`` elements."""
    fam = config_data.section(_config(), _family(device_type))
    tables = fam["tables"]
    table = tables.get(str(dtype).removeprefix("torch."), tables["default"])
    entry = next((e for e in table if d <= e["max_d"]), table[-1])
    block = min(pow2("block_n", int(entry["block_n"]), "activation.json"), triton.next_power_of_2(d))
    rows = pow2("rows_per_program", int(entry["rows_per_program"]), "activation.json")
    return block, rows, int(entry["num_warps"])


def clear_caches() -> None:
    """Forget the loaded config and every cached launch choice (for tests and retuning)."""
    _config.cache_clear()
    _family.cache_clear()
    launch_params.cache_clear()
    _ACT.clear()


# --- what it can serve --------------------------------------------------------
def _reason(name: str, t: torch.Tensor) -> Optional[str]:
    if t.dtype not in _DTYPES:
        return f"{name} dtype {t.dtype} is not float32/float16/bfloat16"
    if t.numel() and _row_stride(t) is None:
        return (f"{name} (shape {tuple(t.shape)}, stride {t.stride()}) cannot be viewed as rows with "
                "last-dim stride 1 without a copy")
    return None


def supports_args(x: torch.Tensor, out: Optional[torch.Tensor] = None) -> Optional[str]:
    """None when the launcher can serve ``x`` (and ``out``, when given) as they are."""
    return _reason("x", x) or (None if out is None else _reason("out", out))


# --- launcher -----------------------------------------------------------------
def act_and_mul(out: torch.Tensor, x: torch.Tensor, activation: str) -> None:
    """``out <- act(x[..., :d]) * x[..., d:]``; ``act`` is ``silu``, ``gelu`` or ``gelu_tanh``."""
    if out.numel() == 0:
        return
    xs, os_ = _row_stride(x), _row_stride(out)
    if xs is None or os_ is None:
        raise ValueError(
            "triton act_and_mul: x and out must be row-strided with last-dim stride 1 (check supports_args "
            f"first); got strides {x.stride()} and {out.stride()}"
        )
    d = out.shape[-1]
    n_rows = out.numel() // d
    block, rows_pp, warps = launch_params(x.device.type, d, x.dtype)
    idx64 = (n_rows + rows_pp) * max(abs(xs), abs(os_)) + 2 * d + block >= 2**31
    # 1-D grid, row block major (see the kernel); plain ints: triton.cdiv is a slow @jit call on the host.
    # At most cdiv(rows, rows_pp) * cdiv(d, block) programs, far below the 2**31 - 1 limit for any
    # tensor that fits in memory (2**31 programs would cover over 2**40 output elements).
    grid = (-(-n_rows // rows_pp) * -(-d // block),)
    # constexprs: ACT, ROWS, BLOCK_N, IDX64
    _ACT.launch(grid, (x, xs, out, os_, n_rows, d), (ACT_CODES[activation], rows_pp, block, idx64), warps)
