"""Paged-KV attention (mixed prefill chunks and decodes) through AITER.

Contract of amd-aiter 0.1.7.post2.dev18, read from the wheel. ``py:N`` = ``aiter/ops/mha.py``,
``att:N`` = ``aiter/ops/attention.py`` (both star-imported into ``aiter``, ``aiter/__init__.py:63,75``),
``tri:N`` = ``aiter/ops/triton/unified_attention.py``. C++ in the wheel's ``aiter_meta/``:
``ckv:N`` = ``csrc/py_itfs_ck/mha_varlen_fwd_kernels.cu``, ``pav1:N`` = ``csrc/cpp_itfs/pa/pa_v1.py``,
``pa1c:N`` = ``csrc/cpp_itfs/pa/pa_v1.cuh``, ``pajj:N`` = ``csrc/cpp_itfs/pa/pa_v1.cpp.jinja``,
``pak:N`` = ``csrc/cpp_itfs/pa/pa_kernels.cuh``, ``skv:N`` = ``3rdparty/composable_kernel/include/ck_tile/
ops/fmha/kernel/fmha_fwd_splitkv_kernel.hpp``, ``skvp:N`` = ``.../pipeline/block_fmha_fwd_splitkv_pipeline_
qr_ks_vs.hpp``. vLLM 0.32: ``fa:N`` = ``vllm/v1/attention/backends/rocm_aiter_fa.py``, ``ua:N`` =
``.../rocm_aiter_unified_attn.py``, ``ops:N`` = ``vllm/_aiter_ops.py``, ``rocm:N`` = ``vllm/platforms/rocm.py``.

Which entry. vLLM reaches AITER for a paged batch in two ways:

* ``ROCM_AITER_UNIFIED_ATTN`` calls ``aiter.ops.triton.unified_attention.unified_attention`` once for
  the whole mixed batch (ua:274-294; tri:103). It is not an ``aiter.<name>`` (``aiter/__init__.py``
  never imports ``aiter.ops.triton``), it returns no LSE, asserts ``causal`` (tri:126) and takes only a
  left window (tri:134). Our adapters may only call checked ``aiter.<name>`` functions, so it is not
  used here; it is the Triton kernel our own triton backend already stands for.
* ``ROCM_AITER_FA`` (selected when ``rocm_aiter_ops.is_mha_enabled()``, i.e. ``VLLM_ROCM_USE_AITER``
  and ``VLLM_ROCM_USE_AITER_MHA``, ops:2272-2273, rocm:505-506) splits the batch: decodes go to
  ``paged_attention_v1`` (fa:1482-1503, ``kv_cache_layout="NHD"``, ``sliding_window = left + 1``, fa:1502),
  prefills/extends to ``flash_attn_varlen_func`` (fa:1221, 1021), whose paged form is
  ``mha_varlen_fwd(..., block_table=...)`` (py:455, 474; CK split-KV, ckv:529-577).

So this adapter uses the two public entries of the MHA family, gated like vLLM's ROCM_AITER_FA by
feature ``"mha"`` (``VLLM_ROCM_USE_AITER_MHA``); ``VLLM_ROCM_USE_AITER_UNIFIED_ATTENTION``
(feature ``"unified_attention"``) is read by nothing in vLLM 0.32 (``is_triton_unified_attn_enabled``,
ops:2387, has no caller) and gates no entry used here:

``mha_varlen_fwd(q, k_cache, v_cache, cu_seqlens_q, cu_seqlens_k, ..., block_table=...)`` (py:455)
  the mixed batch. Facts:

  * k/v dtype == q dtype, fp16/bf16 (ckv:352-356); FP8 would need FP8 q, gives bf16 out and takes no
    descale ("TODO - support descale", ckv:366): **FP8 caches are declined**.
  * page size ``k.size(1) % 128 == 0`` (ckv:409-410): **vLLM's 16/32/64 blocks are declined**.
    Cache shape (num_blocks, block, Hk, D) (ckv:457-458), unit last stride (ckv:392-393), other
    strides honoured (page stride ``batch_stride_k`` is int32, addresses 64-bit: skv:242, 848-856).
  * block_table int32, unit last stride, (B, max_blocks) (ckv:387-388, 459).
  * per-sequence key length comes from ``cu_seqlens_k`` only: ``seqlens_k`` is always nullopt
    (ckv:525; skv:648-655), so ``cu_seqlens_k = [0, cumsum(seqused_k)]`` is built on the device.
  * head dims multiples of 8, <= 256, Hq % Hk == 0 (ckv:425-429); masks bottom-right per sequence,
    ``window >= max_seqlen_k`` -> -1 (ckv:431-432), causal -> right 0 (ckv:436-441), so a right window
    ``>= max_seqlen_k`` but ``< max_seqlen_q - 1`` is declined (as in part 1).
  * ``logits_soft_cap`` is applied only without bias: the ALiBi branch of the split-KV pipeline skips
    it (skvp:397-416 vs 418-430), so softcap with ALiBi is declined.
  * num_splits: chosen inside (``override_num_splits_if_necessary``, ckv:534); no argument, so ours is
    ignored. lse (Hq, Tq) float32 (ckv:490): our layout. ``out`` given: q's dtype, unit last stride,
    (Tq, Hq, Dv) (ckv:469-474). Rows outside every sequence are never written (``torch::empty`` /
    the given out), and ``max_seqlen_k == 0`` writes out 0, lse +inf (ckv:625-628); what the split-KV
    combine writes on rows that see no key is not readable here, so the adapter writes out 0 and
    lse +inf on every such row itself (found on the device), as part 1 does.

``paged_attention_v1(out, workspace, q, k_cache, v_cache, scale, block_tables, cu_query_lens,
context_lens, max_context_len, alibi, kv_cache_dtype, "NHD", softcap, k_scale, v_scale, ...)`` (att:173)
  the decode-only batch (``max_seqlen_q <= 1``), as vLLM calls it (fa:1482-1503). Facts:

  * one query per sequence: a sequence with ``query_len > 1`` is skipped (pa1c:75-77), one with
    ``query_len == 0`` is still computed and written at ``cu_query_lens[b]``, the next sequence's row
    (pa1c:71-74): so the adapter passes ``cu_query_lens=None`` (row b of a gathered q, pa1c:69-70),
    gathering q's decode rows and scattering the results back on the device.
  * q/out dense (B, Hq, D): the kernel indexes heads by ``HEAD_SIZE`` (pak:137-139) and writes
    [num_seqs, num_heads, head_size] (pa1c:98); one head size for K and V (pajj:60): D == Dv.
  * block size 16 or 32 (``static_assert(BLOCK_SIZE <= k_thread_per_block)`` = 32 for 16-bit caches,
    pak:254-259; "assumes minimum block size is 16", pak:267-268); head size a multiple of 64
    (``VHELOOP = HEAD_SIZE / 16 / NWARPS``, pak:269; vLLM requires >= 64, fa:1357-1363) up to 256;
    GQA ratios up to 16 or multiples of 16 (``GQA_RATIO_PER_LOOP = G / ceil(G / 16)``, pak:61-62).
  * block_tables rows are read at ``seq * max_num_blocks_per_seq`` (pa1c:86): passed contiguous.
  * the workspace is exp_sums, max_logits (float32) and tmp_out (q's dtype) of
    (B, Hq, ceil(max_context_len / 256)) (pajj:69-72, pav1:126), sized as vLLM does (fa:1466-1476).
  * ALiBi (Hq,) only (indexed by head, pak:249-250); ALiBi is added before softcap (pak:424-437, then
    462-481) where our contract caps first: softcap with ALiBi is declined. The sliding window sets
    ``-FLT_MAX`` **before** softcap (pak:447-460), which softcap turns into ``-cap``: softcap with a
    window is declined. Window: keys ``j >= context_len - sliding_window`` (pak:457), so
    ``sliding_window = left + 1`` (0 = off), as vLLM passes it (fa:1503).
  * FP8 caches: the kernel converts q (pak:393-402) and P (pak:639-648) to FP8 for fp8 x fp8 MFMAs (pak:406, 794), i.e. it
    also quantizes the query; that is not our contract's numerics (cache dequantized, q kept), so
    **FP8 caches are declined** here too.
  * no LSE output: with an LSE requested the mixed entry is used, or the call is declined.
  * ``context_len == 0`` reads partition -1 in the reduce (pak:915-934); such rows are overwritten.
  * arch: gfx90a/gfx942/gfx950 (pa1c:21-22); CK fmha: every gfx9 (part 1).

Unverified: no AMD GPU ran this; both kernels are checked only against the model
(``tests/aiter_model/model_paged_attention.py``). Whether CK's split-KV combine writes 0 / -inf on
rows without keys is not read, so those rows are always overwritten.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Optional

import torch

from . import arch_reason, device_arch as _device_arch
# part 1's limits hold here too: ARCHS pa_v1.cuh:21-22, DTYPES ckv:352-356 / pav1:83-100,
# MAX_HEAD_DIM / HEAD_DIM_MULTIPLE ckv:425-428, MAX_INDEX int32 strides and offsets
from .attention import (
    ARCHS,
    DTYPES,
    HEAD_DIM_MULTIPLE,
    MAX_HEAD_DIM,
    MAX_INDEX,
    _alibi_reason,
    _empty_rows,
    _gqa_reason,
    _head_dims_reason,
    _right_window_reason,
    _unit_last_reason,
    _window_args,
)

if TYPE_CHECKING:  # the dataclass lives in checks/paged_attention.py
    from ...checks.paged_attention import PagedProblem

CK_PAGE_MULTIPLE = 128  # ckv:410
PA_BLOCK_SIZES = (16, 32)  # pak:259, 267-268
PA_HEAD_DIM_MULTIPLE = 64  # pak:269, fa:1357-1363
PA_MAX_GQA_PER_LOOP = 16  # pak:61-62
PA_PARTITION = 256  # att:191 default partition_size, pak:46 T_PAR_SIZE


def _aiter():
    import aiter  # lazy: importing aiter starts JIT builds

    return aiter


# --- arch -----------------------------------------------------------------------
def arch_unsupported_reason(device: torch.device) -> Optional[str]:
    """AITER's CK fmha and its pa_v1 kernel are built for gfx90a, gfx942 and gfx950."""
    return arch_reason(_device_arch(device), ARCHS, "aiter paged attention kernels need {archs}")


# --- which entry ----------------------------------------------------------------
def _common_reason(q, key_cache, value_cache, block_table, alibi_slopes, p: "PagedProblem") -> Optional[str]:
    if p.dtype not in DTYPES:
        return f"aiter paged attention takes float16/bfloat16 queries, not {p.dtype}"
    if p.fp8:
        return ("FP8 caches are not taken: mha_varlen_fwd needs k/v in q's dtype with no descale "
                "(mha_varlen_fwd_kernels.cu:355-356, 366), and paged_attention_v1 quantizes the query to FP8 "
                "too (pa_kernels.cuh:393-402), which is not our contract's numerics")
    reason = _gqa_reason(p.num_heads_q, p.num_heads_k)
    for name, t in (("q", q), ("key_cache", key_cache), ("value_cache", value_cache)):
        reason = reason or _unit_last_reason(name, t, "aiter")
    if reason:
        return reason
    for name, t in (("key_cache", key_cache), ("value_cache", value_cache)):
        if any(s > MAX_INDEX for s in t.stride()):
            return f"{name} has a stride past 2**31; aiter's kernels take int32 strides"
    if p.total_q * p.num_heads_q * max(p.head_dim, p.head_dim_v) > MAX_INDEX:
        return "q/out span more than 2**31 elements; aiter's kernels index them with 32-bit offsets"
    reason = _alibi_reason(alibi_slopes)
    if reason:
        return reason
    if p.softcap > 0 and p.has_alibi:
        return ("softcap with ALiBi is not taken: CK's split-KV pipeline skips the cap when ALiBi is on "
                "(block_fmha_fwd_splitkv_pipeline_qr_ks_vs.hpp:397-430) and paged_attention_v1 caps after "
                "adding ALiBi (pa_kernels.cuh:424-481); our contract caps first")
    return None


def _varlen_reason(p: "PagedProblem") -> Optional[str]:
    """Why ``mha_varlen_fwd(block_table=...)`` cannot take the call (None: it can)."""
    if p.block_size % CK_PAGE_MULTIPLE:
        return (f"mha_varlen_fwd needs a page size divisible by {CK_PAGE_MULTIPLE} "
                f"(mha_varlen_fwd_kernels.cu:410), block_size is {p.block_size}")
    return (_head_dims_reason(p, " (mha_varlen_fwd)")
            or _right_window_reason(p.causal, p.window_right, p.max_seqlen_q, p.max_seqlen_k, "max_seqlen_q",
                                    "max_seqlen_k", "mha_varlen_fwd"))


def _decode_reason(alibi_slopes, p: "PagedProblem") -> Optional[str]:
    """Why ``paged_attention_v1`` cannot take the call (None: it can)."""
    if p.max_seqlen_q > 1:
        return f"paged_attention_v1 serves one query per sequence, max_seqlen_q is {p.max_seqlen_q}"
    if p.block_size not in PA_BLOCK_SIZES:
        return f"paged_attention_v1 takes block sizes {PA_BLOCK_SIZES} (pa_kernels.cuh:259), not {p.block_size}"
    if p.head_dim != p.head_dim_v:
        return "paged_attention_v1 has one head size for K and V (pa_v1.cpp.jinja:60)"
    if p.head_dim % PA_HEAD_DIM_MULTIPLE or p.head_dim > MAX_HEAD_DIM:
        return (f"paged_attention_v1 takes head sizes that are multiples of {PA_HEAD_DIM_MULTIPLE} up to "
                f"{MAX_HEAD_DIM} (pa_kernels.cuh:269), not {p.head_dim}")
    g = p.group
    if g > PA_MAX_GQA_PER_LOOP and g % PA_MAX_GQA_PER_LOOP:
        return f"paged_attention_v1 splits GQA groups into loops of {PA_MAX_GQA_PER_LOOP} (pa_kernels.cuh:61-62); group {g} does not divide"
    if alibi_slopes is not None and alibi_slopes.dim() != 1:
        return "paged_attention_v1 reads ALiBi slopes per head only, (Hq,) (pa_kernels.cuh:249-250)"
    if p.softcap > 0 and p.window_left >= 0:
        return ("softcap with a sliding window is not taken: paged_attention_v1 masks with -FLT_MAX before "
                "capping (pa_kernels.cuh:447-481), so hidden keys get -softcap, not -inf")
    return None


def _wants_lse(p) -> bool:
    return p.return_lse


def supports_args(q, key_cache, value_cache, cu_seqlens_q, seqused_k, block_table, alibi_slopes,
                  k_scale, v_scale, p: "PagedProblem") -> Optional[str]:
    common = _common_reason(q, key_cache, value_cache, block_table, alibi_slopes, p)
    if common is not None:
        return common
    varlen = _varlen_reason(p)
    if varlen is None:
        return None
    decode = _decode_reason(alibi_slopes, p)
    if decode is None:
        if _wants_lse(p):
            return f"paged_attention_v1 returns no LSE, and {varlen}"
        return None
    return f"{varlen}; {decode}"


# --- forward --------------------------------------------------------------------
def _forward_varlen(out, q, key_cache, value_cache, cu_q, seqused_k, block_table, alibi_slopes, p, lse):
    causal, left, right = _window_args(p)
    cu_k = torch.zeros(p.batch + 1, dtype=torch.int32, device=q.device)
    cu_k[1:] = torch.cumsum(seqused_k, 0, dtype=torch.int32)  # the only key length CK reads (ckv:525)
    need_lse = lse is not None
    o, l, _, _ = _aiter().mha_varlen_fwd(
        q, key_cache, value_cache, cu_q, cu_k, p.max_seqlen_q, p.max_seqlen_k, 0, 0.0,
        float(p.softmax_scale), float(p.softcap), False, causal, left, right, need_lse, False,
        out=out, block_table=block_table, bias=None, alibi_slopes=alibi_slopes, gen=None,
    )
    if o.data_ptr() != out.data_ptr():
        out.copy_(o)
    if need_lse:
        lse.copy_(l)
    empty = _empty_rows(cu_q, seqused_k, p)
    out.masked_fill_(empty[:, None, None], 0.0)
    if need_lse:
        lse.masked_fill_(empty[None, :], math.inf)


def _forward_decode(out, q, key_cache, value_cache, cu_q, seqused_k, block_table, alibi_slopes, p):
    """Decode rows gathered to (B, Hq, D), paged_attention_v1 without cu_query_lens, scattered back;
    rows that see no key are written 0."""
    b, hq, d = p.batch, p.num_heads_q, p.head_dim
    row = cu_q[:-1].to(torch.int64)
    has_row = (cu_q[1:] - cu_q[:-1]) == 1
    qd = q.index_select(0, row.clamp(0, max(p.total_q - 1, 0))).contiguous()
    od = torch.empty(b, hq, d, dtype=q.dtype, device=q.device)
    parts = max(1, math.ceil(p.max_seqlen_k / PA_PARTITION))
    elem = q.element_size()
    workspace = torch.empty(b * hq * parts * d * elem + 2 * b * hq * parts * 4, dtype=torch.uint8, device=q.device)
    one = torch.ones(1, dtype=torch.float32, device=q.device)  # read only for FP8 caches
    _aiter().paged_attention_v1(
        od, workspace, qd, key_cache, value_cache, float(p.softmax_scale), block_table.contiguous(), None,
        seqused_k, p.max_seqlen_k, alibi_slopes, "auto", "NHD", float(p.softcap), one, one,
        None, PA_PARTITION, 1, p.window_left + 1,
    )
    # scatter into zeros: rows of sequences without a query, and of those without keys (the kernel
    # reads partition -1 there, pak:915-934), go to a spare row past the end. With one query per
    # sequence these are all the rows that see no key (rows outside every sequence stay 0 too).
    dest = torch.where(has_row & (seqused_k > 0), row, torch.full_like(row, p.total_q))
    full = torch.zeros(p.total_q + 1, hq, d, dtype=q.dtype, device=q.device)
    full.index_copy_(0, dest, od)
    out.copy_(full[: p.total_q])


def forward(out, q, key_cache, value_cache, cu_seqlens_q, seqused_k, block_table, alibi_slopes,
            k_scale, v_scale, p: "PagedProblem", lse, num_splits) -> None:
    """Writes every element of ``out`` (and ``lse``). ``num_splits`` is ignored: neither entry takes one.
    The op layer (ops/paged_attention.py) passes contiguous int32 index tensors (checks/paged_attention.py)
    and returns before calling here when there are no query rows or no keys at all."""
    del k_scale, v_scale, num_splits  # FP8 is declined; AITER picks its own splits (ckv:534)
    args = (out, q, key_cache, value_cache, cu_seqlens_q, seqused_k, block_table, alibi_slopes, p)
    if _decode_reason(alibi_slopes, p) is None and lse is None:
        _forward_decode(*args)
    elif _varlen_reason(p) is None:
        _forward_varlen(*args, lse)
    else:
        raise ValueError(f"aiter paged attention: an LSE was asked for, but {_varlen_reason(p)} and "
                         "paged_attention_v1 returns no LSE")
