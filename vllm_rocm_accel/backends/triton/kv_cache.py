"""Triton KV-cache write launcher: grid and launch parameters for ``kernels/triton/kv_cache.py``.

Writes into the caches it is given; the op layer validates first (shapes, dtypes, devices and,
unless turned off, the slot values). Every tensor is passed with all its strides, so strided
cache views (``kv_cache.unbind(0)``, block-interleaved layouts) and strided key/value rows (a
slice of a fused QKV projection) need no copy. No host read of a device tensor: the launch is
CUDA-graph capturable.

Launch parameters are data (``configs/kv_cache.json``), keyed by device family; FP8 encoding
follows the quant family's launcher (``backends/triton/quant.py``'s :func:`format_params`:
native conversion where ``quant.json``'s ``native_fp8`` lists the format, the kernel's own
bit encoding through a uint8 view elsewhere, e.g. under the interpreter or e4m3fnuz on NVIDIA).
"""

from __future__ import annotations

import functools
from typing import Optional

import torch

from ...checks.kv_cache import CacheWrite
from ...kernels.triton import kv_cache as _k
from . import config_data
from .config_data import family as _family
from .config_data import pow2_ceil
from .fast_launch import FastLauncher
from .quant import format_params

_config = config_data.loader("kv_cache")  # a module attribute: tests and tuners replace it
_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_WRITE = FastLauncher(_k.reshape_and_cache_flash_kernel)


@functools.lru_cache(maxsize=None)
def launch_params(device_type: str, num_heads: int, head_dim: int, head_dim_v: int) -> tuple[int, int, int, int]:
    """(BLOCK_H, BLOCK_D, BLOCK_DV, num_warps) for this head geometry."""
    section = config_data.section(_config(), _family(device_type))
    block_d, block_dv = pow2_ceil(head_dim), pow2_ceil(head_dim_v)
    widest = max(block_d, block_dv)
    block_h = 1
    while block_h * 2 * widest <= int(section["tile_elems"]) and block_h < pow2_ceil(num_heads):
        block_h *= 2
    tile = block_h * widest
    warps = next((int(w) for limit, w in section["num_warps"] if tile <= limit), int(section["num_warps"][-1][1]))
    return block_h, block_d, block_dv, warps


def clear_caches() -> None:
    """Forget the loaded config and the cached launch choices (tests, retuning)."""
    _config.cache_clear()
    launch_params.cache_clear()
    _WRITE.clear()


def supports_args(key, value, key_cache, value_cache, slot_mapping, k_scale, v_scale, p: CacheWrite) -> Optional[str]:
    if key.dtype not in _DTYPES:
        return f"key dtype {key.dtype} is not float32/float16/bfloat16"
    return None


def _target(cache: torch.Tensor, p: CacheWrite, sw_fp8: bool) -> torch.Tensor:
    """What the kernel stores into: the cache, its FP8 view (native conversion) or its bytes (SW_FP8)."""
    if not p.fp8:
        return cache
    return cache.view(torch.uint8) if sw_fp8 else cache.view(p.cache_dtype)


def write(key, value, key_cache, value_cache, slot_mapping, k_scale, v_scale, p: CacheWrite) -> None:
    """``key_cache``/``value_cache`` <- rows ``0 .. T-1`` of key/value at their slots (-1 skipped)."""
    if p.num_tokens == 0 or p.num_heads == 0:
        return
    dev = key.device.type
    if p.fp8:
        fmax, fnuz, sw, _ = format_params(dev, p.cache_dtype)
    else:
        fmax, fnuz, sw = 0.0, False, False
    kc, vc = _target(key_cache, p, sw), _target(value_cache, p, sw)
    block_h, block_d, block_dv, warps = launch_params(dev, p.num_heads, p.head_dim, p.head_dim_v)
    grid = (p.num_tokens, -(-p.num_heads // block_h))
    args = (key, *key.stride(), value, *value.stride(), kc, *kc.stride(), vc, *vc.stride(), slot_mapping,
            slot_mapping.stride(0), k_scale, v_scale, p.num_heads, p.head_dim, p.head_dim_v, p.block_size)
    # constexprs: BLOCK_H, BLOCK_D, BLOCK_DV, FP8, FP8_MAX, SW_FP8, FNUZ
    _WRITE.launch(grid, args, (block_h, block_d, block_dv, p.fp8, fmax, sw, fnuz), warps)
