"""The paged-attention family: attention over vLLM's paged KV cache, for serving (forward only).

Custom ops (``torch.ops.rocm_accel.*``):

* ``paged_attn_fwd(q, key_cache, value_cache, cu_seqlens_q, seqused_k, block_table, max_seqlen_q,
  max_seqlen_k, softmax_scale, causal, window_left, window_right, softcap, alibi_slopes?, k_scale?,
  v_scale?, num_splits, return_lse, backend="auto", check_values=True) -> (out, lse)``; ``lse``
  is empty (numel 0) unless ``return_lse``;
* ``paged_attn_fwd_out(out!, ...the same...) -> lse``: writes into ``out`` (vLLM's attention
  layers hand their output buffer in).

Layouts, FP8 caches and masking: :mod:`vllm_rocm_accel.checks.paged_attention`. The public entry
is :func:`vllm_rocm_accel.ops.attention.flash_attn_varlen_func` with ``block_table=...`` (the
facade routes to it), which calls :func:`flash_attn_varlen_paged` here.

``num_splits``: 0 asks :func:`vllm_rocm_accel.split_k.choose_num_splits` (in the triton backend,
the only one that splits: aiter and torch ignore it), 1 is off, G >= 2 is forced there, negative is a
``ValueError``.

Argument checks run before any backend, and so do the index values' checks (``cu_seqlens_q``,
``seqused_k`` against ``max_seqlen_k`` and the table's capacity, the block_table entries each
sequence uses against the cache): a bad call writes nothing. The value checks read the index
tensors to the host (three small copies) unless ``VLLM_ROCM_ACCEL_CHECK_SEQLENS=0``, a CUDA graph
is being captured, or the caller passes ``check_values=False`` (a caller that validated the same
metadata itself, on host copies: the vLLM backend does, once per step in its metadata builder).
The argument checks (shapes, dtypes, devices) run regardless.

Backends: aiter (AMD's paged/varlen kernels, gated by ``VLLM_ROCM_USE_AITER_MHA`` as vLLM gates its
ROCM_AITER_FA backend, whose paged path runs them), triton (ours) and torch (gather, then attend).
The triton adapter is imported on first use (it imports triton); the aiter adapter imports aiter
itself, lazily.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from .. import dispatch
from ..backends.aiter import paged_attention as aiter_paged
from ..backends.torch import paged_attention as torch_paged
from ..checks.attention import normalize_window
from ..checks.paged_attention import PagedProblem, check_out, check_paged_args, check_paged_values
from ..fake_impls import paged_attention as fake
from ..registry import register_op
from .call_prep import grad_needed, host_value_checks_on, unit_last
from .stats import count

FWD = "paged_attn_fwd"
FWD_OUT = "paged_attn_fwd_out"
FEATURE = "mha"  # vLLM runs AITER's paged attention in ROCM_AITER_FA, gated by VLLM_ROCM_USE_AITER_MHA

# --- backends ---------------------------------------------------------------
_triton_mod = None


def _triton():
    global _triton_mod
    if _triton_mod is None:
        from ..backends.triton import paged_attention as triton_paged  # imports triton: only on first use

        _triton_mod = triton_paged
    return _triton_mod


def _triton_supports(*args) -> Optional[str]:
    return _triton().supports_args(*args)


def _triton_forward(*args) -> None:
    _triton().forward(*args)


_aiter_gate = dispatch.aiter_supported_for(FEATURE)


def _aiter_supported(device: torch.device) -> Optional[str]:
    # the flags first: the arch query below runs only where aiter may be used
    return _aiter_gate(device) or aiter_paged.arch_unsupported_reason(device)


def _call_shape(q, key_cache, value_cache, cu_q, seqused_k, block_table, alibi, k_scale, v_scale,
                p: PagedProblem) -> dispatch.CallShape:
    """Policy rows are the (max) key length, columns the head dim."""
    return dispatch.CallShape(q.device, q.dtype, p.max_seqlen_k, p.head_dim)


def _dispatch(op: str) -> dispatch.OpDispatch:
    return dispatch.OpDispatch(
        op,
        [
            dispatch.Backend("aiter", aiter_paged.forward, _aiter_supported, aiter_paged.supports_args),
            dispatch.Backend("triton", _triton_forward, dispatch.triton_supported, _triton_supports),
            dispatch.Backend("torch", torch_paged.forward, dispatch.torch_supported, torch_paged.supports_args),
        ],
        _call_shape,
    )


PAGED_ATTN_FWD = _dispatch(FWD)
PAGED_ATTN_FWD_OUT = _dispatch(FWD_OUT)


# --- the shared body of both ops ----------------------------------------------
def _check_values(p: PagedProblem, cu_seqlens_q, seqused_k, block_table, check_values: bool) -> None:
    if check_values and host_value_checks_on(cu_seqlens_q):
        check_paged_values(cu_seqlens_q, seqused_k, block_table, p)


def _attend(op: str, disp: dispatch.OpDispatch, out: Optional[torch.Tensor], q, key_cache, value_cache,
            cu_seqlens_q, seqused_k, block_table, max_seqlen_q, max_seqlen_k, softmax_scale, causal, window_left,
            window_right, softcap, alibi_slopes, k_scale, v_scale, num_splits, return_lse, backend, check_values):
    """Checks everything, then runs the chosen backend into ``out`` (allocated when None)."""
    p = check_paged_args(q, key_cache, value_cache, cu_seqlens_q, seqused_k, block_table, max_seqlen_q,
                         max_seqlen_k, softmax_scale, causal, window_left, window_right, softcap, alibi_slopes,
                         k_scale, v_scale, num_splits, return_lse)
    if out is not None:
        check_out(out, p, q)
    _check_values(p, cu_seqlens_q, seqused_k, block_table, check_values)
    q, block_table = unit_last(q), unit_last(block_table)
    alibi = None if alibi_slopes is None else alibi_slopes.contiguous()
    args = (q, key_cache, value_cache, cu_seqlens_q.contiguous(), seqused_k.contiguous(), block_table, alibi,
            k_scale, v_scale, p)
    impl = disp.select(backend, args)
    count(op, impl.name)
    if out is None:
        out = q.new_empty(p.out_shape())
    lse = torch.empty(p.lse_shape() if return_lse else (0,), dtype=torch.float32, device=q.device)
    if p.total_q == 0:
        return out, lse
    if p.max_seqlen_q == 0 or p.max_seqlen_k == 0:  # no row sees a key
        out.zero_()
        lse.fill_(float("inf"))
        return out, lse
    target = out if out.stride(-1) == 1 else torch.empty_like(out, memory_format=torch.contiguous_format)
    impl.run(target, *args, lse if return_lse else None, num_splits)
    if target is not out:
        out.copy_(target)
    return out, lse


# --- op implementations -----------------------------------------------------
def paged_attn_fwd_impl(
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
    return _attend(FWD, PAGED_ATTN_FWD, None, q, key_cache, value_cache, cu_seqlens_q, seqused_k, block_table,
                   max_seqlen_q, max_seqlen_k, softmax_scale, causal, window_left, window_right, softcap,
                   alibi_slopes, k_scale, v_scale, num_splits, return_lse, backend, check_values)


def paged_attn_fwd_out_impl(
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
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"out must be a torch.Tensor, got {type(out).__name__}")
    _, lse = _attend(FWD_OUT, PAGED_ATTN_FWD_OUT, out, q, key_cache, value_cache, cu_seqlens_q, seqused_k,
                     block_table, max_seqlen_q, max_seqlen_k, softmax_scale, causal, window_left, window_right,
                     softcap, alibi_slopes, k_scale, v_scale, num_splits, return_lse, backend, check_values)
    return lse


# --- the public function (through ops/attention.py's flash_attn_varlen_func) -------
def flash_attn_varlen_paged(q, key_cache, value_cache, cu_seqlens_q, max_seqlen_q, max_seqlen_k, *, seqused_k,
                            block_table, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                            softcap=0.0, alibi_slopes=None, return_lse=False, num_splits=0, k_descale=None,
                            v_descale=None, out=None, backend="auto", check_values=True):
    """``flash_attn_varlen_func(q, key_cache, value_cache, cu_seqlens_q, None, max_seqlen_q, max_seqlen_k,
    seqused_k=..., block_table=...)``: out (Tq, Hq, Dv) (written into ``out`` when given), plus lse
    (Hq, Tq) float32 with ``return_lse``. ``k_descale`` / ``v_descale`` are the FP8 cache's scales.
    Forward only: inputs that need gradients raise ``ValueError``. ``check_values=False`` skips
    the index values' checks (the caller validated them; see the module docstring)."""
    if grad_needed(q, key_cache, value_cache):
        raise ValueError("paged attention (block_table=...) is forward-only: q, key_cache and value_cache must "
                         "not require grad (run it under torch.no_grad() or detach them)")
    if dropout_p != 0:
        raise ValueError(f"dropout_p must be 0 with block_table (the paged path is forward-only), got {dropout_p}")
    if seqused_k is None:
        raise ValueError("block_table needs seqused_k: (batch,) int32, the number of cached keys of each sequence")
    if softmax_scale is None:
        if not isinstance(q, torch.Tensor) or q.dim() != 3:
            raise ValueError("q must be a 3-D (total_tokens, heads, head_dim) tensor")
        softmax_scale = 1.0 / math.sqrt(q.shape[-1])
    left, right = normalize_window(window_size, bool(causal))
    args = (q, key_cache, value_cache, cu_seqlens_q, seqused_k, block_table, max_seqlen_q, max_seqlen_k,
            softmax_scale, bool(causal), left, right, softcap, alibi_slopes, k_descale, v_descale, num_splits,
            bool(return_lse), backend or "auto", bool(check_values))
    check_paged_args(*args[:17])  # the clear errors, before the dispatcher's own type checks
    if out is None:
        result, lse = torch.ops.rocm_accel.paged_attn_fwd(*args)
    else:
        lse = torch.ops.rocm_accel.paged_attn_fwd_out(out, *args)
        result = out
    return (result, lse) if return_lse else result


# --- registration ---------------------------------------------------------------
CONTEXT = 4096  # keys per sequence in doctor's example call


def example_args(op: str, rows: int, hidden: int, dtype: torch.dtype, device: torch.device) -> tuple:
    """A typical call for doctor: a decode step of ``rows`` sequences (one query each) over 4096
    cached keys, 32 query / 8 kv heads, D = 128, block size 16 (the sequences share their blocks,
    so the cache stays small)."""
    block_size, hk, d = 16, 8, 128
    blocks = CONTEXT // block_size
    q = torch.empty(rows, 32, d, dtype=dtype, device=device)
    key_cache = torch.empty(blocks, block_size, hk, d, dtype=dtype, device=device)
    value_cache = torch.empty(blocks, block_size, hk, d, dtype=dtype, device=device)
    cu_q = torch.arange(rows + 1, dtype=torch.int32, device=device)
    seqused_k = torch.full((rows,), CONTEXT, dtype=torch.int32, device=device)
    block_table = torch.arange(blocks, dtype=torch.int32, device=device).expand(rows, blocks)
    p = check_paged_args(q, key_cache, value_cache, cu_q, seqused_k, block_table, 1, CONTEXT, d ** -0.5, True, -1,
                         0, 0.0, None, None, None, 0)
    return (q, key_cache, value_cache, cu_q, seqused_k, block_table, None, None, None, p)


DISPATCHERS = {FWD: PAGED_ATTN_FWD, FWD_OUT: PAGED_ATTN_FWD_OUT}


def register() -> dict[str, torch._ops.OpOverload]:
    return {
        FWD: register_op(FWD, paged_attn_fwd_impl, fake.paged_attn_fwd),
        FWD_OUT: register_op(FWD_OUT, paged_attn_fwd_out_impl, fake.paged_attn_fwd_out, mutates_args=("out",)),
    }
