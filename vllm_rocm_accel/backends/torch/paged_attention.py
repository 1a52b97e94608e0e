"""Paged attention in plain torch: gather, then attend. The reference backend (correct, not fast).

Each sequence's keys and values are gathered through ``block_table`` into a padded
(B, max_seqlen_k, Hk, D) batch with index tensors built on the device (no loop over sequences, no
host read), dequantized when the cache is FP8 (``fp8.to(float32) * scale``), and handed to the
padded math of :mod:`vllm_rocm_accel.backends.torch.attention` (its SDPA path where that applies:
a CUDA/ROCm device, no lse, no softcap, no ALiBi). The semantics are therefore part 1's, per
sequence with ``sk = seqused_k[b]``.

``num_splits`` is ignored: there is one pass over the gathered keys, so there is nothing to split.
"""

from __future__ import annotations

from typing import Optional

import torch

from ...checks.attention import AttnProblem
from ...checks.paged_attention import PagedProblem
from . import attention as dense

_INF = float("inf")


def _attn_problem(p: PagedProblem) -> AttnProblem:
    """The padded varlen problem the gathered batch is, in part 1's terms."""
    return AttnProblem(
        varlen=True, batch=p.batch, seqlen_q=p.max_seqlen_q, seqlen_k=p.max_seqlen_k, total_q=p.total_q,
        total_k=p.batch * p.max_seqlen_k, num_heads_q=p.num_heads_q, num_heads_k=p.num_heads_k,
        head_dim=p.head_dim, head_dim_v=p.head_dim_v, dtype=p.dtype, softmax_scale=p.softmax_scale,
        causal=p.causal, window_left=p.window_left, window_right=p.window_right, softcap=p.softcap,
        dropout_p=0.0, seed=0, has_alibi=p.has_alibi,
    )


def _slots(seqused_k: torch.Tensor, block_table: torch.Tensor, p: PagedProblem):
    """(blocks, offsets, valid): (B, max_seqlen_k) cache coordinates of each sequence's key slots."""
    j = torch.arange(p.max_seqlen_k, device=block_table.device)
    col = (j // p.block_size).clamp(max=p.max_blocks_per_seq - 1)
    valid = j[None, :] < seqused_k.long()[:, None]
    blocks = block_table.long().index_select(1, col)  # (B, max_seqlen_k)
    blocks = torch.where(valid, blocks, 0)  # padding reads block 0, masked below and by lens_k
    return blocks, (j % p.block_size)[None, :], valid


def gather(cache: torch.Tensor, scale: Optional[torch.Tensor], slots, p: PagedProblem) -> torch.Tensor:
    """(num_blocks, block_size, Hk, D) cache -> (B, max_seqlen_k, Hk, D) float32 of each sequence's
    keys (zeros past ``seqused_k[b]``), dequantized with ``scale`` when the cache is FP8."""
    blocks, offsets, valid = slots
    if p.fp8:  # index the bytes (every device indexes uint8), then read them as the FP8 format
        raw = cache if cache.dtype == torch.uint8 else cache.view(torch.uint8)
        rows = raw[blocks, offsets].view(p.cache_dtype).float() * scale.reshape(())
    else:
        rows = cache[blocks, offsets].float()
    return torch.where(valid[:, :, None, None], rows, 0.0)


def supports_args(q, key_cache, value_cache, cu_seqlens_q, seqused_k, block_table, alibi_slopes, k_scale,
                  v_scale, p: PagedProblem) -> Optional[str]:
    """Always None: this backend serves every call the checks accept (it is the fallback)."""
    return None


def forward(out, q, key_cache, value_cache, cu_seqlens_q, seqused_k, block_table, alibi_slopes, k_scale,
            v_scale, p: PagedProblem, lse: Optional[torch.Tensor], num_splits: int) -> None:
    """Writes every element of ``out`` (p.out_shape(), q.dtype) and of ``lse`` (p.lse_shape(),
    float32) when given. ``num_splits`` is ignored (see the module docstring)."""
    if p.max_seqlen_q == 0 or p.max_seqlen_k == 0 or p.num_blocks == 0 or p.max_blocks_per_seq == 0:
        out.zero_()
        if lse is not None:
            lse.fill_(_INF)
        return
    pa = _attn_problem(p)
    slots = _slots(seqused_k, block_table, p)
    kp = gather(key_cache, k_scale, slots, p)
    vp = gather(value_cache, v_scale, slots, p)
    lens_q, lens_k = dense._lengths(cu_seqlens_q), seqused_k.long()
    qp = dense._pad(q, cu_seqlens_q, p.max_seqlen_q)
    if lse is None and dense._sdpa_eligible(q, pa):
        o = dense._sdpa_padded(qp, kp.to(q.dtype), vp.to(q.dtype), lens_q, lens_k, pa)
        out.copy_(dense._unpad(o, cu_seqlens_q, p.total_q))
        return
    o, l_ = dense._math_forward(qp.float(), kp, vp, lens_q, lens_k, dense._slopes(alibi_slopes, pa), pa)
    out.copy_(dense._unpad(o, cu_seqlens_q, p.total_q))
    if lse is not None:
        lse.copy_(dense._unpad(l_.transpose(1, 2), cu_seqlens_q, p.total_q, fill=_INF).t())
