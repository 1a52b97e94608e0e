"""The KV-cache family: vLLM's ``reshape_and_cache_flash``, the write of a step's keys and values
into the paged cache that paged attention reads.

Custom op ``torch.ops.rocm_accel.reshape_and_cache_flash(key, value, key_cache, value_cache,
slot_mapping, kv_cache_dtype, k_scale, v_scale, backend="auto", check_values=True) -> ()``,
mutating ``key_cache``
and ``value_cache`` (declared in its schema, so ``torch.compile`` functionalizes it). Layouts
and semantics are vLLM's (:mod:`vllm_rocm_accel.checks.kv_cache`): T = ``slot_mapping.shape[0]``
tokens, slot -1 skipped, unquantized or FP8 caches (per-tensor float32 scales, the arch's
format, ``fp8(clamp(x / scale))``).

Arguments are validated before any backend runs, so a rejected call writes nothing; the slot
values (``-1 <= s < num_blocks * block_size``) are checked too (one small device-to-host copy)
unless ``VLLM_ROCM_ACCEL_CHECK_SEQLENS=0``, a CUDA graph is being captured, or the caller passes
``check_values=False`` (the vLLM backend does: vLLM computes the slot mapping itself). The
argument checks run regardless.
"""

from __future__ import annotations

from typing import Optional

import torch

from .. import dispatch
from ..backends.aiter import kv_cache as aiter_kv
from ..backends.torch import kv_cache as torch_kv
from ..checks.kv_cache import CacheWrite, check_reshape_and_cache_flash_args, check_slot_values
from ..fake_impls import kv_cache as fake
from ..registry import register_op
from .call_prep import host_value_checks_on
from .stats import count

OP = "reshape_and_cache_flash"

# --- backends ---------------------------------------------------------------
_triton_mod = None


def _triton():
    global _triton_mod
    if _triton_mod is None:
        from ..backends.triton import kv_cache as triton_kv  # imports triton: only on first use

        _triton_mod = triton_kv
    return _triton_mod


def _triton_write(*args):
    return _triton().write(*args)


def _triton_supports(*args):
    return _triton().supports_args(*args)


def _call_shape(key, value, key_cache, value_cache, slot_mapping, k_scale, v_scale, p: CacheWrite):
    """Policy rows are the tokens written, columns one token's key elements (Hk * D)."""
    return dispatch.CallShape(key.device, key.dtype, p.num_tokens, p.num_heads * p.head_dim)


# vLLM has no per-feature flag for AITER's cache write: its AITER attention backends call vLLM's
# own reshape_and_cache_flash, and the fused rope + cache write is gated by rocm_aiter_ops.is_enabled()
# alone (v1/attention/backends/rocm_aiter_fa.py, fused_rope_kvcache_supported): the master flag.
_aiter_gate = dispatch.aiter_supported_for(None)


def _aiter_supported(device: torch.device) -> Optional[str]:
    return _aiter_gate(device) or aiter_kv.arch_unsupported_reason(device)


RESHAPE_AND_CACHE_FLASH = dispatch.OpDispatch(
    OP,
    [
        dispatch.Backend("aiter", aiter_kv.write, _aiter_supported, aiter_kv.supports_args),
        dispatch.Backend("triton", _triton_write, dispatch.triton_supported, _triton_supports),
        dispatch.Backend("torch", torch_kv.write, dispatch.torch_supported, torch_kv.supports_args),
    ],
    _call_shape,
)


def _check_values(slot_mapping: torch.Tensor, p: CacheWrite, check_values: bool) -> None:
    if check_values and host_value_checks_on(slot_mapping):
        check_slot_values(slot_mapping, p.num_slots)


# --- op implementation --------------------------------------------------------
def reshape_and_cache_flash_impl(
    key: torch.Tensor,
    value: torch.Tensor,
    key_cache: torch.Tensor,
    value_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
    kv_cache_dtype: str,
    k_scale: torch.Tensor,
    v_scale: torch.Tensor,
    backend: str = "auto",
    check_values: bool = True,
) -> None:
    p = check_reshape_and_cache_flash_args(key, value, key_cache, value_cache, slot_mapping, kv_cache_dtype,
                                           k_scale, v_scale)
    _check_values(slot_mapping, p, check_values)
    args = (key, value, key_cache, value_cache, slot_mapping, k_scale, v_scale, p)
    impl = RESHAPE_AND_CACHE_FLASH.select(backend, args)
    count(OP, impl.name)
    if p.num_tokens == 0 or p.num_heads == 0:
        return
    impl.run(*args)


def reshape_and_cache_flash(key, value, key_cache, value_cache, slot_mapping, kv_cache_dtype, k_scale, v_scale,
                            backend: Optional[str] = None, check_values: bool = True) -> None:
    """The public call (facade): checks first, so wrong Python types raise TypeError, not the
    dispatcher's RuntimeError. ``check_values=False`` skips the slot values' check."""
    check_reshape_and_cache_flash_args(key, value, key_cache, value_cache, slot_mapping, kv_cache_dtype, k_scale,
                                       v_scale)
    torch.ops.rocm_accel.reshape_and_cache_flash(key, value, key_cache, value_cache, slot_mapping, kv_cache_dtype,
                                                 k_scale, v_scale, backend or "auto", bool(check_values))


# --- registration ---------------------------------------------------------------
def example_args(op: str, rows: int, hidden: int, dtype: torch.dtype, device: torch.device) -> tuple:
    """A typical call for doctor: ``rows`` tokens, 8 kv heads of 128, 16-slot blocks, bf16 cache."""
    heads, dim, block = 8, 128, 16
    blocks = -(-rows // block) + 1
    key = torch.empty(rows, heads, dim, dtype=dtype, device=device)
    cache = torch.empty(2, blocks, block, heads, dim, dtype=dtype, device=device)
    kc, vc = cache.unbind(0)
    slots = torch.empty(rows, dtype=torch.int64, device=device)
    one = torch.ones(1, dtype=torch.float32, device=device)
    p = check_reshape_and_cache_flash_args(key, key, kc, vc, slots, "auto", one, one)
    return (key, key, kc, vc, slots, one, one, p)


DISPATCHERS = {OP: RESHAPE_AND_CACHE_FLASH}


def register() -> dict[str, torch._ops.OpOverload]:
    return {OP: register_op(OP, reshape_and_cache_flash_impl, fake.reshape_and_cache_flash,
                            mutates_args=("key_cache", "value_cache"))}
