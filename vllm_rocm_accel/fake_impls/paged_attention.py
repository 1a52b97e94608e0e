"""Fakes for the paged-attention family: the argument checks, then outputs of the real shapes."""

from __future__ import annotations

from typing import Optional

import torch

from ..checks.paged_attention import check_out, check_paged_args


def paged_attn_fwd(
    q: torch.Tensor,
    key_cache: torch.Tensor,
    value_cache: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    seqused_k: torch.Tensor,
    block_table: torch.Tensor,
    max_seqlen_q: int,
    max_seqlen_k: int,
    softmax_scale: float,
    causal: bool,
    window_left: int,
    window_right: int,
    softcap: float,
    alibi_slopes: Optional[torch.Tensor],
    k_scale: Optional[torch.Tensor],
    v_scale: Optional[torch.Tensor],
    num_splits: int,
    return_lse: bool,
    backend: str = "auto",
    check_values: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    p = check_paged_args(q, key_cache, value_cache, cu_seqlens_q, seqused_k, block_table, max_seqlen_q,
                         max_seqlen_k, softmax_scale, causal, window_left, window_right, softcap, alibi_slopes,
                         k_scale, v_scale, num_splits)
    out = q.new_empty(p.out_shape())
    lse = q.new_empty(p.lse_shape() if return_lse else (0,), dtype=torch.float32)
    return out, lse


def paged_attn_fwd_out(
    out: torch.Tensor,
    q: torch.Tensor,
    key_cache: torch.Tensor,
    value_cache: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    seqused_k: torch.Tensor,
    block_table: torch.Tensor,
    max_seqlen_q: int,
    max_seqlen_k: int,
    softmax_scale: float,
    causal: bool,
    window_left: int,
    window_right: int,
    softcap: float,
    alibi_slopes: Optional[torch.Tensor],
    k_scale: Optional[torch.Tensor],
    v_scale: Optional[torch.Tensor],
    num_splits: int,
    return_lse: bool,
    backend: str = "auto",
    check_values: bool = True,
) -> torch.Tensor:
    p = check_paged_args(q, key_cache, value_cache, cu_seqlens_q, seqused_k, block_table, max_seqlen_q,
                         max_seqlen_k, softmax_scale, causal, window_left, window_right, softcap, alibi_slopes,
                         k_scale, v_scale, num_splits)
    check_out(out, p, q)
    return q.new_empty(p.lse_shape() if return_lse else (0,), dtype=torch.float32)
