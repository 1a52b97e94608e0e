"""Paged-attention test inputs and their reference, built independently of the library's gather.

:func:`paged_case` draws each sequence's keys and values contiguously, then writes them into a
paged cache one block at a time with a plain Python loop, through a block table whose blocks are
a random permutation of the cache (non-contiguous, out of order). Slots nobody uses, and table
entries past each sequence's last block, hold garbage (random values; out-of-range block ids),
so a backend that reads them shows up. With ``fp8`` the cache holds ``fp8(k / k_scale)`` and the
reference keys are the dequantized values ``fp8.float() * k_scale``, so the comparison measures
the attention, not the quantization.

:func:`case_of` gathers the keys of paged inputs built elsewhere into a :class:`PagedCase`.
:func:`paged_ref` is ``attention_ref`` (float64, one sequence at a time) on the contiguous keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from attention_ref import attention_ref

GARBAGE_BLOCK = 10**6  # a table entry no sequence uses: out of range on purpose


@dataclass
class PagedCase:
    q: torch.Tensor
    key_cache: torch.Tensor
    value_cache: torch.Tensor
    cu_seqlens_q: torch.Tensor
    seqused_k: torch.Tensor
    block_table: torch.Tensor
    max_seqlen_q: int
    max_seqlen_k: int
    k_scale: Optional[torch.Tensor]
    v_scale: Optional[torch.Tensor]
    keys: list  # per sequence (sk, Hk, D) float64: what the cache means
    values: list

    def op_inputs(self):
        return (self.q, self.key_cache, self.value_cache, self.cu_seqlens_q, self.seqused_k, self.block_table)

    def to(self, device) -> "PagedCase":
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return PagedCase(move(self.q), move(self.key_cache), move(self.value_cache), move(self.cu_seqlens_q),
                         move(self.seqused_k), move(self.block_table), self.max_seqlen_q, self.max_seqlen_k,
                         move(self.k_scale), move(self.v_scale), self.keys, self.values)


def paged_case(lens_q: Sequence[int], lens_k: Sequence[int], heads_q: int, heads_k: int, head_dim: int,
               block_size: int, dtype: torch.dtype = torch.float32, head_dim_v: Optional[int] = None,
               fp8: Optional[torch.dtype] = None, spare_blocks: int = 3, spare_cols: int = 1,
               extra_rows: int = 0, max_seqlen_k: Optional[int] = None) -> PagedCase:
    """A mixed batch: sequence ``b`` has ``lens_q[b]`` query rows and ``lens_k[b]`` cached keys.

    ``fp8``: the cache dtype (``torch.float8_e4m3fn`` / ``float8_e4m3fnuz``, or ``torch.uint8`` for
    an e4m3fn cache seen as bytes). ``extra_rows``: rows of q past ``cu_seqlens_q[-1]``.
    """
    dv = head_dim if head_dim_v is None else head_dim_v
    batch = len(lens_q)
    need = [-(-sk // block_size) for sk in lens_k]
    num_blocks = sum(need) + spare_blocks
    cols = max(need, default=0) + spare_cols
    cache_dtype = dtype if fp8 is None else fp8
    store = torch.float8_e4m3fn if fp8 is torch.uint8 else cache_dtype
    k_scale = v_scale = None
    if fp8 is not None:
        k_scale = torch.tensor([0.02], dtype=torch.float32)
        v_scale = torch.tensor([0.015], dtype=torch.float32)
    key_cache = torch.randn(num_blocks, block_size, heads_k, head_dim).to(store)
    value_cache = torch.randn(num_blocks, block_size, heads_k, dv).to(store)
    order = torch.randperm(num_blocks).tolist()
    table = torch.where(torch.rand(batch, cols) < 0.5, -1, GARBAGE_BLOCK).to(torch.int32)
    keys, values = [], []
    taken = 0
    for b, sk in enumerate(lens_k):
        k = torch.randn(sk, heads_k, head_dim)
        v = torch.randn(sk, heads_k, dv)
        if fp8 is not None:
            top = torch.finfo(store).max
            k8, v8 = ((x / s).clamp(-top, top).to(store) for x, s in ((k, k_scale), (v, v_scale)))
            k, v = k8.float() * k_scale, v8.float() * v_scale
        else:
            k8, v8 = k.to(store), v.to(store)
        keys.append(k.to(dtype).double() if fp8 is None else k.double())
        values.append(v.to(dtype).double() if fp8 is None else v.double())
        for j in range(need[b]):
            blk = order[taken]
            taken += 1
            table[b, j] = blk
            lo, hi = j * block_size, min((j + 1) * block_size, sk)
            key_cache[blk, : hi - lo] = k8[lo:hi]
            value_cache[blk, : hi - lo] = v8[lo:hi]
    if fp8 is torch.uint8:
        key_cache, value_cache = key_cache.view(torch.uint8), value_cache.view(torch.uint8)
    cu = [0]
    for n in lens_q:
        cu.append(cu[-1] + n)
    q = torch.randn(cu[-1] + extra_rows, heads_q, head_dim).to(dtype)
    return PagedCase(
        q=q, key_cache=key_cache, value_cache=value_cache, cu_seqlens_q=torch.tensor(cu, dtype=torch.int32),
        seqused_k=torch.tensor(list(lens_k), dtype=torch.int32), block_table=table,
        max_seqlen_q=max(lens_q, default=0), max_seqlen_k=max(lens_k, default=0) if max_seqlen_k is None else max_seqlen_k,
        k_scale=k_scale, v_scale=v_scale, keys=keys, values=values,
    )


def case_of(q, key_cache, value_cache, cu_seqlens_q, seqused_k, block_table) -> PagedCase:
    """The :class:`PagedCase` of (unquantized) paged inputs built elsewhere: sequence ``b``'s keys and
    values gathered through its block table (slot ``j`` at ``block_table[b, j // block_size]``,
    offset ``j % block_size``), as float64."""
    bs = key_cache.shape[1]
    keys, values = [], []
    for b, n in enumerate(seqused_k.tolist()):
        j = torch.arange(n)
        blocks = block_table[b, j // bs].long()
        keys.append(key_cache[blocks, j % bs].double())
        values.append(value_cache[blocks, j % bs].double())
    lens_q = (cu_seqlens_q[1:] - cu_seqlens_q[:-1]).tolist()
    return PagedCase(q, key_cache, value_cache, cu_seqlens_q, seqused_k, block_table, max(lens_q, default=0),
                     max(seqused_k.tolist(), default=0), None, None, keys, values)


def paged_ref(case: PagedCase, upcast: bool = True, **opts):
    """(out, lse) of ``attention_ref`` over the contiguous keys: float64 with ``upcast``, else as a
    careful kernel in q's dtype would compute (for the tolerance)."""
    hk, d = case.key_cache.shape[2], case.key_cache.shape[3]
    dv = case.value_cache.shape[3]
    k = torch.cat(case.keys) if case.keys else torch.zeros(0, hk, d, dtype=torch.float64)
    v = torch.cat(case.values) if case.values else torch.zeros(0, hk, dv, dtype=torch.float64)
    cu_k = [0]
    for n in case.seqused_k.tolist():
        cu_k.append(cu_k[-1] + n)
    q = case.q.cpu()
    if upcast:
        q = q.double()
    else:
        k, v = k.to(q.dtype), v.to(q.dtype)
    return attention_ref(q, k, v, cu_seqlens_q=case.cu_seqlens_q.cpu(),
                         cu_seqlens_k=torch.tensor(cu_k, dtype=torch.int32), upcast=upcast, **opts)
