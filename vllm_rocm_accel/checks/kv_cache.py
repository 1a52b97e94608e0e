"""The KV-cache family's contract: argument checks for ``reshape_and_cache_flash`` and the
normalized problem every backend gets.

vLLM's ``torch.ops._C_cache_ops.reshape_and_cache_flash`` semantics (vLLM 0.32:
``vllm/_custom_ops.py`` ``reshape_and_cache_flash``, its Triton twin
``vllm/v1/attention/ops/triton_reshape_and_cache_flash.py``, the caller
``vllm/v1/attention/backends/flash_attn.py``):

* ``key`` (N, Hk, D), ``value`` (N, Hk, Dv); ``key_cache`` (num_blocks, block_size, Hk, D),
  ``value_cache`` (num_blocks, block_size, Hk, Dv), any strides (vLLM hands in the views
  ``kv_cache.unbind(0)`` gives);
* ``slot_mapping`` (T,) int64 (int32 accepted): the op writes **T = slot_mapping.shape[0]**
  tokens, rows ``0 .. T-1`` of ``key``/``value``; rows past T (vLLM pads key and value for
  CUDA graphs but not the slot mapping) are ignored. Token ``t`` goes to block
  ``s // block_size``, offset ``s % block_size`` with ``s = slot_mapping[t]``; ``s < 0`` (vLLM
  pads with -1) is skipped and writes nothing;
* ``kv_cache_dtype``: ``"auto"`` (or the name of the cache's own dtype: ``"bfloat16"``,
  ``"float16"``/``"half"``, ``"float32"``/``"float"``): the caches have key's dtype and get the
  values as they are; ``"fp8"``/``"fp8_e4m3"``: the caches hold FP8 e4m3 codes, as a float8
  tensor (its own format) or a uint8 view of one (the device's format,
  :func:`vllm_rocm_accel.fp8.fp8_dtype`: e4m3fnuz on gfx94x, e4m3fn elsewhere), written as
  ``fp8(clamp(x / scale, -fp8_max, fp8_max))`` in float32 (:mod:`vllm_rocm_accel.fp8`'s clamp),
  ``scale`` = ``k_scale`` for keys, ``v_scale`` for values. ``"fp8_e5m2"`` is refused;
* ``k_scale``, ``v_scale``: float32 one-element tensors (read only for FP8 caches).

Two tokens mapped to the same slot leave one of them there, which one unspecified (as in vLLM).
Everything here runs before any write; the slot values (``-1 <= s < num_blocks * block_size``)
are checked by :func:`check_slot_values`, which reads ``slot_mapping`` to the host and so is
gated by the op (``VLLM_ROCM_ACCEL_CHECK_SEQLENS``, skipped under CUDA graph capture).
"""

from __future__ import annotations

from dataclasses import dataclass
import torch

from . import FLOAT_DTYPES, check_same_device, check_tensor
from .. import fp8

SLOT_DTYPES = (torch.int64, torch.int32)
CACHE_FP8_DTYPES = (torch.uint8,) + fp8.FP8_DTYPES
FP8_NAMES = ("fp8", "fp8_e4m3")
NATIVE_NAMES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "half": torch.float16,
                "float32": torch.float32, "float": torch.float32}


@dataclass(frozen=True)
class CacheWrite:
    """One ``reshape_and_cache_flash`` call, normalized."""

    num_tokens: int  # T = slot_mapping.shape[0]
    num_heads: int
    head_dim: int
    head_dim_v: int
    num_blocks: int
    block_size: int
    dtype: torch.dtype  # key's (and value's)
    cache_dtype: torch.dtype  # what the caches hold: key's dtype, or the FP8 format (uint8 resolved)
    fp8: bool

    @property
    def num_slots(self) -> int:
        return self.num_blocks * self.block_size

    @property
    def kv_cache_dtype(self) -> str:
        """The canonical vLLM name of the cache's encoding."""
        return "fp8" if self.fp8 else "auto"


def _shape(name: str, t: torch.Tensor, dims: int, what: str) -> None:
    if t.dim() != dims:
        raise ValueError(f"{name} has shape {tuple(t.shape)}; expected {dims} dims {what}")


def _scale(name: str, t) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype != torch.float32:
        raise TypeError(f"{name} has dtype {t.dtype}; expected float32")
    if t.numel() != 1:
        raise ValueError(f"{name} has shape {tuple(t.shape)}; expected one element (shape () or (1,))")


def _cache_format(kv_cache_dtype, key: torch.Tensor, key_cache: torch.Tensor) -> tuple[bool, torch.dtype]:
    """(fp8, the dtype the caches hold) for this ``kv_cache_dtype`` and cache tensor dtype."""
    if not isinstance(kv_cache_dtype, str):
        raise TypeError(f"kv_cache_dtype must be a str, got {type(kv_cache_dtype).__name__}")
    if kv_cache_dtype in FP8_NAMES:
        if key_cache.dtype not in CACHE_FP8_DTYPES:
            raise ValueError(
                f"kv_cache_dtype={kv_cache_dtype!r} needs FP8 caches (float8_e4m3fn, float8_e4m3fnuz, or uint8 "
                f"holding the device's FP8 format); key_cache has dtype {key_cache.dtype}")
        fmt = fp8.fp8_dtype(key_cache.device) if key_cache.dtype == torch.uint8 else key_cache.dtype
        return True, fmt
    if kv_cache_dtype == "auto" or kv_cache_dtype in NATIVE_NAMES:
        want = key.dtype if kv_cache_dtype == "auto" else NATIVE_NAMES[kv_cache_dtype]
        if key_cache.dtype != want or key.dtype != want:
            raise ValueError(
                f"kv_cache_dtype={kv_cache_dtype!r} stores key and value unconverted: key_cache has dtype "
                f"{key_cache.dtype}, key {key.dtype} (for FP8 caches pass kv_cache_dtype='fp8')")
        return False, want
    raise ValueError(
        f"kv_cache_dtype={kv_cache_dtype!r} is not supported; expected 'auto', 'fp8' or 'fp8_e4m3' "
        f"(or the cache's own dtype name: {', '.join(NATIVE_NAMES)})")


def check_reshape_and_cache_flash_args(key, value, key_cache, value_cache, slot_mapping, kv_cache_dtype, k_scale,
                                       v_scale) -> CacheWrite:
    """Every check that needs no host read of a tensor's values -> :class:`CacheWrite`."""
    check_tensor("key", key, FLOAT_DTYPES)
    check_tensor("value", value, FLOAT_DTYPES)
    check_tensor("key_cache", key_cache, FLOAT_DTYPES + CACHE_FP8_DTYPES)
    check_tensor("value_cache", value_cache, FLOAT_DTYPES + CACHE_FP8_DTYPES)
    check_tensor("slot_mapping", slot_mapping, SLOT_DTYPES)
    _scale("k_scale", k_scale)
    _scale("v_scale", v_scale)
    _shape("key", key, 3, "(num_tokens, num_heads, head_size)")
    _shape("value", value, 3, "(num_tokens, num_heads, head_size_v)")
    _shape("key_cache", key_cache, 4, "(num_blocks, block_size, num_heads, head_size)")
    _shape("value_cache", value_cache, 4, "(num_blocks, block_size, num_heads, head_size_v)")
    _shape("slot_mapping", slot_mapping, 1, "(num_tokens,)")
    if value.dtype != key.dtype:
        raise ValueError(f"value has dtype {value.dtype}; expected key's dtype {key.dtype}")
    if value_cache.dtype != key_cache.dtype:
        raise ValueError(f"value_cache has dtype {value_cache.dtype}; expected key_cache's dtype {key_cache.dtype}")
    for name, t in (("value", value), ("key_cache", key_cache), ("value_cache", value_cache),
                    ("slot_mapping", slot_mapping), ("k_scale", k_scale), ("v_scale", v_scale)):
        check_same_device(name, t, "key", key)
    n, heads, d = key.shape
    if value.shape[0] != n or value.shape[1] != heads:
        raise ValueError(f"value has shape {tuple(value.shape)}; expected ({n}, {heads}, head_size_v) like key "
                         f"{tuple(key.shape)}")
    dv = value.shape[2]
    num_blocks, block_size = key_cache.shape[0], key_cache.shape[1]
    if tuple(key_cache.shape) != (num_blocks, block_size, heads, d):
        raise ValueError(f"key_cache has shape {tuple(key_cache.shape)}; expected (num_blocks, block_size, {heads}, "
                         f"{d}) for key {tuple(key.shape)}")
    if tuple(value_cache.shape) != (num_blocks, block_size, heads, dv):
        raise ValueError(f"value_cache has shape {tuple(value_cache.shape)}; expected ({num_blocks}, {block_size}, "
                         f"{heads}, {dv}) like key_cache and value")
    if block_size < 1:
        raise ValueError(f"key_cache has block_size {block_size}; expected >= 1")
    tokens = slot_mapping.shape[0]
    if tokens > n:
        raise ValueError(f"slot_mapping has {tokens} entries but key and value only {n} rows "
                         "(the op writes one row per slot_mapping entry)")
    is_fp8, cache_dtype = _cache_format(kv_cache_dtype, key, key_cache)
    return CacheWrite(tokens, heads, d, dv, num_blocks, block_size, key.dtype, cache_dtype, is_fp8)


def check_slot_values(slot_mapping: torch.Tensor, num_slots: int) -> None:
    """Every slot is -1 (padding, skipped) or in [0, num_slots). One small device-to-host copy."""
    if slot_mapping.numel() == 0:
        return
    lo, hi = (int(v) for v in torch.aminmax(slot_mapping))
    if lo < -1:
        bad = int((slot_mapping < -1).nonzero()[0, 0])
        raise ValueError(f"slot_mapping[{bad}] = {int(slot_mapping[bad])}; slots are -1 (padding) or >= 0")
    if hi >= num_slots:
        bad = int((slot_mapping >= num_slots).nonzero()[0, 0])
        raise ValueError(f"slot_mapping[{bad}] = {int(slot_mapping[bad])} points past the cache's {num_slots} slots "
                         "(num_blocks * block_size)")

