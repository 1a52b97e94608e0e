"""Rotary embedding through AITER's cached-positions kernel (``aiter.rope_cached_positions_2c_fwd_impl``).

Contract of amd-aiter 0.1.7 (aiter/ops/rope.py)::

    rope_cached_positions_2c_fwd_impl(output_x, output_y, input_x, input_y, cos, sin, positions,
                                      rotate_style, reuse_freqs_front_part, nope_first) -> None

Inputs and outputs are "sbhd" (seq, batch, heads, head dim); positions are [s, b]; with
``reuse_freqs_front_part=True`` cos and sin are [max_position, 1, 1, rotary_dim // 2] and the
rotated width is twice their last dim. ``rotate_style`` 0 is NeoX (halves), 1 GPT-J (pairs).
As AITER's own ``RotaryEmbedding.forward_hip`` does, vLLM's (T, H * D) / (T, H, D) query and
key become (1, T, H, D) views (s = 1, b = T: a 1 x T positions grid), and the kernel gets
their leading ``rotary_dim`` elements, so the tail is never touched by it.

This adapter:

* splits the (max_position, rotary_dim) cos||sin cache into the two tables in the query
  dtype, **memoized per cache tensor** (:class:`CosSinMemo`): no strong reference to the
  cache, the entry evicted when the cache tensor dies, and a lookup that only hits for the
  very same live tensor with the same data pointer, version, shape and dtype;
* appends one NaN row (index ``max_position``) to both tables and maps every position
  outside ``[0, max_position)`` to it, so the kernel never reads outside the tables and
  such tokens come out as NaN (the pass-through tail of those rows is set to NaN by us);
* hands AITER contiguous int64 positions (a strided positions tensor aborts the process
  inside AITER);
* in place, passes the input views as the outputs (what the wheel's own
  ``rope_cached_positions_2c_fwd_inplace`` does); out of place, fresh outputs, so nothing is
  copied but the untouched tail (only when ``rotary_dim < head_size``).

Guards (:func:`supports_args`, :func:`arch_unsupported_reason`): gfx942/gfx950, float16/bfloat16
query and key of one dtype, a key (the two-channel kernel rotates both), unit element stride.
"""

from __future__ import annotations

import threading
import weakref
from typing import Optional

import torch

from . import arch_reason, device_arch

_DTYPES = (torch.float16, torch.bfloat16)
ARCHS = ("gfx942", "gfx950")


def _aiter():
    import aiter  # lazy: importing aiter starts JIT builds

    return aiter


# --- the cos/sin memo -----------------------------------------------------------
class CosSinMemo:
    """cos/sin tables of a cos||sin cache, per (live cache tensor, dtype).

    Keyed by ``id(cache)``; an entry also holds a weak reference to its cache and the
    cache's fingerprint (data pointer, version counter, shape, stride, dtype, device), and
    hits only when the weak reference still points at the very tensor asked about and the
    fingerprint matches. A ``weakref.finalize`` on the cache removes the entry when the cache
    dies, so a new cache that reuses the id (or the address) never sees stale tables, and the
    memo never keeps a cache alive.
    """

    def __init__(self) -> None:
        self._entries: dict[int, tuple] = {}  # id -> (weakref, fingerprint, {dtype: (cos, sin)}, finalizer)
        self._lock = threading.Lock()

    @staticmethod
    def _fingerprint(cache: torch.Tensor) -> tuple:
        return (cache.data_ptr(), cache._version, tuple(cache.shape), cache.stride(), cache.dtype, cache.device)

    def __len__(self) -> int:
        return len(self._entries)

    def _evict(self, key: int, ref: weakref.ref) -> None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry[0] is ref:
                del self._entries[key]

    def clear(self) -> None:
        with self._lock:
            for entry in self._entries.values():
                entry[3].detach()
            self._entries.clear()

    def get(self, cache: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        key = id(cache)
        fp = self._fingerprint(cache)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry[0]() is cache and entry[1] == fp:
                tables = entry[2].get(dtype)
                if tables is not None:
                    return tables
        tables = split_cos_sin(cache, dtype)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry[0]() is cache and entry[1] == fp:
                entry[2][dtype] = tables
            else:
                if entry is not None:  # a stale entry: its cache changed in place (or died unnoticed)
                    entry[3].detach()
                ref = weakref.ref(cache)
                finalizer = weakref.finalize(cache, self._evict, key, ref)
                finalizer.atexit = False
                self._entries[key] = (ref, fp, {dtype: tables}, finalizer)
        return tables


def split_cos_sin(cache: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos, sin), each (max_position + 1, 1, 1, rotary_dim // 2) contiguous in ``dtype``; row
    ``max_position`` is NaN (where out-of-range positions are sent)."""
    max_pos, width = cache.shape
    half = width // 2
    tables = torch.empty(2, max_pos + 1, half, dtype=dtype, device=cache.device)
    tables[0, :max_pos].copy_(cache[:, :half])
    tables[1, :max_pos].copy_(cache[:, half:])
    tables[:, max_pos].fill_(float("nan"))
    return tables[0].view(max_pos + 1, 1, 1, half), tables[1].view(max_pos + 1, 1, 1, half)


MEMO = CosSinMemo()


# --- guards ---------------------------------------------------------------------
def arch_unsupported_reason(device: torch.device) -> Optional[str]:
    """The cached-positions rope kernels are built for gfx942 and gfx950 only (None off CUDA/HIP:
    the platform gate has already refused)."""
    return arch_reason(device_arch(device), ARCHS, "aiter rope_cached_positions kernels need {archs}")


def _sbhd(t: torch.Tensor, head_size: int) -> Optional[torch.Tensor]:
    """(1, T, H, D) view of a (T, H * D) or (T, H, D) tensor with unit element stride, else None."""
    if t.dim() == 3:
        if t.stride(2) != 1 and head_size != 1:
            return None
        return t.unsqueeze(0)
    if t.stride(1) != 1 and t.shape[1] != 1:
        return None
    tokens = t.shape[0]
    return t.as_strided((1, tokens, t.shape[1] // head_size, head_size),
                        (tokens * t.stride(0), t.stride(0), head_size, 1))


def supports_args(positions, query, key, head_size, cos_sin_cache, is_neox, rotary_dim) -> Optional[str]:
    if query.dtype not in _DTYPES:
        return f"aiter rope takes float16/bfloat16, got {query.dtype}"
    if key is None:
        return "aiter's two-channel rope kernel needs a key"
    if key.dtype != query.dtype:
        return f"aiter rope needs query and key of one dtype ({query.dtype} != {key.dtype})"
    width = cos_sin_cache.shape[-1]
    if width % 2 or width > head_size:
        return f"rotary_dim {width} must be even and <= head_size {head_size}"
    if _sbhd(query, head_size) is None or _sbhd(key, head_size) is None:
        return "aiter rope reads heads with unit element stride; query or key has another"
    return None


# --- the call -------------------------------------------------------------------
def _positions(positions: torch.Tensor, max_pos: int) -> torch.Tensor:
    """Contiguous int64 (1, T) indices into the tables: out-of-range positions -> the NaN row."""
    p = positions.to(torch.int64).clamp(-1, max_pos)  # -1 and max_pos: out of range
    return p.remainder(max_pos + 1).view(1, -1)  # -1 -> max_pos; a new contiguous tensor


def rotary_embedding(
    positions: torch.Tensor,
    query: torch.Tensor,
    key: torch.Tensor,
    head_size: int,
    cos_sin_cache: torch.Tensor,
    is_neox: bool,
    inplace: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    max_pos, rotary_dim = cos_sin_cache.shape
    cos, sin = MEMO.get(cos_sin_cache, query.dtype)
    pos = _positions(positions, max_pos)
    q4, k4 = _sbhd(query, head_size), _sbhd(key, head_size)
    if inplace:
        qo4, ko4 = q4, k4
    else:
        qo4 = torch.empty(q4.shape, dtype=query.dtype, device=query.device)
        ko4 = torch.empty(k4.shape, dtype=key.dtype, device=key.device)
    partial = rotary_dim < head_size
    r = slice(0, rotary_dim)
    _aiter().rope_cached_positions_2c_fwd_impl(
        qo4[..., r] if partial else qo4,
        ko4[..., r] if partial else ko4,
        q4[..., r] if partial else q4,
        k4[..., r] if partial else k4,
        cos,
        sin,
        pos,
        0 if is_neox else 1,
        True,
        False,
    )
    if partial:
        bad = (pos == max_pos).view(1, -1, 1, 1)
        nan = torch.full((), float("nan"), dtype=query.dtype, device=query.device)
        for src, dst in ((q4, qo4), (k4, ko4)):
            if inplace:
                dst[..., rotary_dim:].masked_fill_(bad, nan)
            else:
                torch.where(bad, nan, src[..., rotary_dim:], out=dst[..., rotary_dim:])
    if inplace:
        return query, key
    return qo4.view(query.shape), ko4.view(key.shape)
