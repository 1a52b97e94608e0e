"""The rotary-embedding family: ``rotary_embedding`` and its in-place form.

Custom ops (``torch.ops.rocm_accel.*``):

* ``rotary_embedding_(positions, query!, key!?, head_size, cos_sin_cache, is_neox,
  rotary_dim=None, backend="auto")``: vLLM's in-place semantics (``ops.rotary_embedding``);
* ``rotary_embedding(...) -> (query_out, key_out)``: new tensors, inputs left intact;
  ``key_out`` is an empty (numel 0) tensor of the query's dtype when ``key`` is None.

The contract (shapes, dtypes, partial rotary, GQA) is in :mod:`vllm_rocm_accel.checks.rope`.
A position outside ``[0, max_position)`` never reads outside the cache: that token's
query and key rows come out as NaN; with ``VLLM_ROCM_ACCEL_CHECK_POSITIONS=1`` the call
raises ``ValueError`` naming the first bad position before anything is written. Zero
tokens are allowed. Arguments are validated before any backend runs, so a bad call
leaves in-place inputs untouched.
"""

from __future__ import annotations

from typing import Optional

import torch

from .. import dispatch, settings
from ..backends.aiter import rope as aiter_rope
from ..backends.torch import rope as torch_rope
from ..checks.rope import check_positions_in_range, check_rope_args
from ..fake_impls import rope as fake
from ..registry import register_op
from .stats import count

OP = "rotary_embedding"

# --- backends ---------------------------------------------------------------
_triton_mod = None


def _triton():
    global _triton_mod
    if _triton_mod is None:
        from ..backends.triton import rope as triton_rope  # imports triton: only on first use

        _triton_mod = triton_rope
    return _triton_mod


def _triton_run(positions, query, key, head_size, cache, is_neox, inplace):
    if inplace:
        _triton().rotary_embedding(positions, query, key, query, key, head_size, cache, is_neox)
        return query, key
    q_out = torch.empty_like(query, memory_format=torch.contiguous_format)  # cheaper on the host than torch.empty(shape, ...): profile_host.py
    k_out = None if key is None else torch.empty_like(key, memory_format=torch.contiguous_format)
    _triton().rotary_embedding(positions, query, key, q_out, k_out, head_size, cache, is_neox)
    return q_out, k_out


def _triton_supports(*args):
    return _triton().supports_args(*args)


def _call_shape(positions, query, key, head_size, cache, is_neox, rotary_dim) -> dispatch.CallShape:
    tokens = query.shape[0]
    return dispatch.CallShape(query.device, query.dtype, tokens, query.numel() // tokens if tokens else 0)


_aiter_gate = dispatch.aiter_supported_for("triton_rope")


def _aiter_supported(device: torch.device) -> Optional[str]:
    return _aiter_gate(device) or aiter_rope.arch_unsupported_reason(device)


ROTARY_EMBEDDING = dispatch.OpDispatch(
    OP,
    [
        dispatch.Backend("aiter", aiter_rope.rotary_embedding, _aiter_supported, aiter_rope.supports_args),
        dispatch.Backend("triton", _triton_run, dispatch.triton_supported, _triton_supports),
        dispatch.Backend("torch", torch_rope.rotary_embedding, dispatch.torch_supported, torch_rope.supports_args),
    ],
    _call_shape,
)


# --- op implementations -----------------------------------------------------
def _choice_key(backend: str, positions, query, key, head_size, cache) -> Optional[tuple]:
    """Cache key for the backend choice, for calls with unit-stride heads (others take the full path)."""
    if query.stride(-1) != 1 or (key is not None and key.stride(-1) != 1) or cache.stride(-1) != 1:
        return None
    # query's per-token shape, not only its last dim: the policy's columns are heads x head size
    return (backend, query.dtype, query.device, query.shape[1:], head_size,
            None if key is None else (key.dtype, key.shape[1:]), cache.dtype, cache.shape[1],
            ROTARY_EMBEDDING.row_bracket(query.shape[0]))


def _run(positions, query, key, head_size, cos_sin_cache, is_neox, rotary_dim, backend, inplace):
    check_rope_args(positions, query, key, head_size, cos_sin_cache, is_neox, rotary_dim)
    if settings.get_settings().VLLM_ROCM_ACCEL_CHECK_POSITIONS:
        check_positions_in_range(positions, cos_sin_cache.shape[0])
    args = (positions, query, key, head_size, cos_sin_cache, is_neox, rotary_dim)
    impl = ROTARY_EMBEDDING.select(backend, args, _choice_key(backend, positions, query, key, head_size, cos_sin_cache))
    count(OP, impl.name)
    if positions.shape[0] == 0:
        if inplace:
            return query, key
        cf = torch.contiguous_format
        return (torch.empty_like(query, memory_format=cf),
                None if key is None else torch.empty_like(key, memory_format=cf))
    return impl.run(positions, query, key, head_size, cos_sin_cache, is_neox, inplace)


def rotary_embedding_inplace_impl(
    positions: torch.Tensor,
    query: torch.Tensor,
    key: Optional[torch.Tensor],
    head_size: int,
    cos_sin_cache: torch.Tensor,
    is_neox: bool,
    rotary_dim: Optional[int] = None,
    backend: str = "auto",
) -> None:
    _run(positions, query, key, head_size, cos_sin_cache, is_neox, rotary_dim, backend, True)


def rotary_embedding_impl(
    positions: torch.Tensor,
    query: torch.Tensor,
    key: Optional[torch.Tensor],
    head_size: int,
    cos_sin_cache: torch.Tensor,
    is_neox: bool,
    rotary_dim: Optional[int] = None,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    q, k = _run(positions, query, key, head_size, cos_sin_cache, is_neox, rotary_dim, backend, False)
    if k is None:
        k = torch.empty(0, dtype=query.dtype, device=query.device)
    return q, k


def example_args(op: str, rows: int, hidden: int, dtype: torch.dtype, device: torch.device) -> tuple:
    """A typical call for doctor: q32/k8/d128 neox over ``rows`` tokens (``hidden`` is ignored)."""
    head, max_pos = 128, 4096
    positions = torch.zeros(rows, dtype=torch.int64, device=device)
    query = torch.empty(rows, 32 * head, dtype=dtype, device=device)
    key = torch.empty(rows, 8 * head, dtype=dtype, device=device)
    cache = torch.empty(max_pos, head, dtype=torch.float32, device=device)
    return (positions, query, key, head, cache, True, None)


DISPATCHERS = {OP: ROTARY_EMBEDDING}


def register() -> dict[str, torch._ops.OpOverload]:
    return {
        "rotary_embedding": register_op("rotary_embedding", rotary_embedding_impl, fake.rotary_embedding),
        "rotary_embedding_": register_op(
            "rotary_embedding_", rotary_embedding_inplace_impl, fake.rotary_embedding_,
            mutates_args=("query", "key"),
        ),
    }
