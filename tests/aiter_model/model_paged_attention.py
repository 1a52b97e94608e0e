"""A torch model of amd-aiter 0.1.7.post2.dev18's paged-KV attention entries (tests only).

``mha_varlen_fwd`` (``aiter/ops/mha.py:455``) with a ``block_table`` (CK split-KV; without one this
module hands the call to :mod:`.model_attention`), and ``paged_attention_v1``
(``aiter/ops/attention.py:173``). Signatures are the wheel's (a test compares them). Raises
:class:`~aiter_model.model.AiterContractError` where the real call would fail or read/write wrong
memory (sources in ``aiter_meta/``; see ``vllm_rocm_accel/backends/aiter/paged_attention.py``):

* ``mha_varlen_fwd`` paged: q/k/v/out one dtype fp16/bf16; unit last strides; cache
  (num_blocks, page, Hk, D) with ``page % 128 == 0``; block_table int32 (B, max_blocks) with unit last
  stride; ``cu_seqlens_k`` required (the only key-length source: ``seqlens_k`` is nullopt, and
  ``seqstart_k_ptr`` would be null); its lengths fit the table; every used entry < num_blocks; no
  dropout / bias / padded cu_seqlens. Semantics: bottom-right masks per sequence with
  ``window >= max_seqlen_k -> -1``, causal -> right 0, ``max_seqlen_q == 1`` without ALiBi drops causal;
  softcap applied only without ALiBi (the ALiBi branch skips it). Rows with no visible key: unknown
  (NaN); rows outside every sequence: not written (NaN in a fresh out).
* ``paged_attention_v1``: fp16/bf16 q/out, ``kv_cache_dtype == "auto"`` (cache in q's dtype),
  ``"NHD"`` cache (num_blocks, block, Hk, D), block 16/32, head size a multiple of 64 up to 256, one
  head size for K and V, GQA ratio <= 16 or a multiple of 16; q rows with head stride ``D``; out dense
  (num_seqs, Hq, D); block_tables int32 contiguous (rows read at ``seq * max_blocks``); context_lens
  int32 (num_seqs,); workspace big enough; k_scale/v_scale tensors (their pointers are always read);
  ALiBi (Hq,) float32. Query row of sequence b: ``b`` without ``cu_query_lens``; with it
  ``cu_query_lens[b]``, skipped when the length is > 1 and computed (into the next sequence's row)
  when it is 0, as the kernel does. Numerics: per 256-key partition a softmax whose partial output is
  stored in q's dtype (tmp_out), combined in float32 and rounded once more; ALiBi
  ``slope * (j - len + 1)`` added, then the window sets ``-FLT_MAX``, then softcap (so masked keys get
  ``-cap``). ``context_len == 0``: NaN. FP8 caches and the HND layout are not modelled.
"""

from __future__ import annotations

import inspect
import math
from types import SimpleNamespace
from typing import Optional

import torch

from . import model_attention
from .model import DTYPES, AiterContractError, _record, _require  # noqa: F401

__all__ = ["mha_varlen_fwd", "paged_attention_v1", "MODELLED_PAGED_ATTENTION"]
MODELLED_PAGED_ATTENTION = ("mha_varlen_fwd", "paged_attention_v1")
FLT_MAX = 3.4028234663852886e38
PARTITION = 256


def _check(fn, name, t, dims, dtype=None):
    _require(isinstance(t, torch.Tensor), fn, f"{name} must be a Tensor, got {type(t).__name__}")
    _require(t.dim() == dims, fn, f"{name} must be {dims}-D, got shape {tuple(t.shape)}")
    if dtype is not None:
        _require(t.dtype == dtype, fn, f"{name} must have dtype {dtype}, got {t.dtype}")


def _gather(cache, table_row, n):
    """The first n slots of one sequence: (n, Hk, D) float32."""
    bs = cache.shape[1]
    j = torch.arange(n)
    return cache[table_row[j // bs].long(), j % bs].float()


def _check_table(fn, block_table, lens, num_blocks, bs, name="block_table"):
    for b, n in enumerate(lens):
        _require(n <= block_table.shape[1] * bs, fn, f"sequence {b} has {n} keys, more than {name} holds")
        used = block_table[b, : (n + bs - 1) // bs]
        _require(bool(((used >= 0) & (used < num_blocks)).all()), fn, f"{name} row {b} points outside the cache")


# --- mha_varlen_fwd with block_table ------------------------------------------------
def _paged_varlen(fn, q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, softmax_scale,
                  logits_soft_cap, is_causal, window_size_left, window_size_right, return_softmax_lse, out,
                  block_table, alibi_slopes):
    _check(fn, "q", q, 3)
    _require(q.dtype in DTYPES, fn, f"q has dtype {q.dtype}; fp8 inputs are not modelled, others unsupported")
    for name, t in (("k", k), ("v", v)):
        _check(fn, name, t, 4)
        _require(t.dtype == q.dtype, fn, f"query and {name} must have the same dtype ({t.dtype} vs {q.dtype})")
    for name, t in (("q", q), ("k", k), ("v", v)):
        _require(t.stride(-1) == 1, fn, f"{name}: Input tensor must have contiguous last dimension")
    _check(fn, "block_table", block_table, 2, torch.int32)
    _require(block_table.stride(-1) == 1, fn, "block_table must have contiguous last dimension")
    num_blocks, page, hk, d = k.shape
    _require(page % 128 == 0, fn, "Paged KV cache block size must be divisible by 128")
    tq, hq, dq = q.shape
    dv = v.shape[-1]
    _require(dq == d and tuple(v.shape[:3]) == (num_blocks, page, hk), fn, "k/v shapes do not match q (CHECK_SHAPE)")
    model_attention._check_heads(fn, q, k, v)
    _require(isinstance(cu_seqlens_q, torch.Tensor) and cu_seqlens_q.dtype == torch.int32
             and cu_seqlens_q.is_contiguous() and cu_seqlens_q.dim() == 1, fn, "cu_seqlens_q must be contiguous int32")
    batch = cu_seqlens_q.numel() - 1
    _require(batch > 0, fn, "batch size must be postive")
    _require(tuple(block_table.shape[:1]) == (batch,), fn, "block_table must be (batch_size, max_num_blocks_per_seq)")
    _require(cu_seqlens_k is not None, fn, "paged KV needs cu_seqlens_k: seqlens_k is never passed to the kernel")
    _require(cu_seqlens_k.dtype == torch.int32 and cu_seqlens_k.is_contiguous()
             and tuple(cu_seqlens_k.shape) == (batch + 1,), fn, "cu_seqlens_k must be contiguous int32 (batch_size + 1)")
    cq, ck = cu_seqlens_q.tolist(), cu_seqlens_k.tolist()
    lq = [b - a for a, b in zip(cq, cq[1:])]
    lk = [b - a for a, b in zip(ck, ck[1:])]
    _require(cq[0] == 0 and min(lq) >= 0 and cq[-1] <= tq and max(lq) <= max_seqlen_q, fn,
             f"cu_seqlens_q = {cq} does not fit q / max_seqlen_q")
    _require(ck[0] == 0 and min(lk) >= 0 and max(lk) <= max_seqlen_k, fn,
             f"cu_seqlens_k = {ck} gives lengths past max_seqlen_k {max_seqlen_k}")
    _check_table(fn, block_table, lk, num_blocks, page)
    model_attention._check_alibi(fn, alibi_slopes, batch, hq, q)
    causal, left, right = model_attention._window(fn, is_causal, window_size_left, window_size_right,
                                                  max_seqlen_q, max_seqlen_k, alibi_slopes is not None)
    if out is None:
        out = torch.full((tq, hq, dv), math.nan, dtype=q.dtype)
    else:
        _check(fn, "out", out, 3, q.dtype)
        _require(out.stride(-1) == 1 and tuple(out.shape) == (tq, hq, dv), fn, f"out must be ({tq}, {hq}, {dv}) with unit last stride")
    lse = torch.full((hq, tq), math.nan, dtype=torch.float32)
    if max_seqlen_k == 0:
        out.zero_()
        lse.fill_(math.inf)
    else:
        for b in range(batch):
            if lq[b] == 0:
                continue
            qs = q[cq[b]:cq[b + 1]]
            kk = model_attention._expand(_gather(k, block_table[b], lk[b]), hq)
            vv = model_attention._expand(_gather(v, block_table[b], lk[b]), hq)
            sq, sk = lq[b], lk[b]
            s = torch.einsum("qhd,khd->hqk", qs.float(), kk) * softmax_scale
            i = torch.arange(sq)[:, None]
            j = torch.arange(sk)[None, :]
            if alibi_slopes is not None:
                slopes = alibi_slopes if alibi_slopes.dim() == 1 else alibi_slopes[b]
                s = s - slopes.float()[:, None, None] * (i + sk - sq - j).abs()
            elif logits_soft_cap > 0:  # the ALiBi branch of the pipeline never caps
                s = logits_soft_cap * torch.tanh(s / logits_soft_cap)
            s = s.masked_fill(~model_attention._visible(sq, sk, left, right, q.device), -math.inf)
            l = torch.logsumexp(s, dim=-1)
            p = torch.exp(s - l[..., None]).nan_to_num(0.0)
            o = torch.einsum("hqk,khd->qhd", p, vv)
            empty = torch.isneginf(l)  # what the split-KV combine writes there is not read: NaN
            o = o.masked_fill(empty.T[..., None], math.nan)
            l = l.masked_fill(empty, math.nan)
            out[cq[b]:cq[b + 1]] = o.to(q.dtype)
            lse[:, cq[b]:cq[b + 1]] = l
    if not return_softmax_lse:
        lse = torch.empty(0, dtype=torch.float32)
    return out, lse, torch.empty(0), torch.empty(2, dtype=torch.int64)


def mha_varlen_fwd(*args, **kwargs):
    """The wheel's ``mha_varlen_fwd`` (its signature is :func:`.model_attention.mha_varlen_fwd`'s): with a
    ``block_table`` the paged-KV model here, without one the dense-KV model of attention part 1."""
    bound = _MHA_VARLEN_FWD.bind(*args, **kwargs)
    bound.apply_defaults()
    a = SimpleNamespace(**bound.arguments)
    if a.block_table is None:
        return model_attention.mha_varlen_fwd(*args, **kwargs)
    fn = "mha_varlen_fwd"
    model_attention._record_call(fn, bound.arguments)
    _require(not a.dropout_p and not a.return_dropout_randval, fn, "Paged KV does not support dropout")
    _require(a.bias is None, fn, "Page attention does not supports bias for now")
    _require(a.cu_seqlens_q_padded is None and a.cu_seqlens_k_padded is None, fn,
             "Paged KV (splitkv, pagekv) does not support sequence padding.")
    if a.zero_tensors or a.min_seqlen_q:
        raise NotImplementedError("zero_tensors and min_seqlen_q are not modelled for paged KV")
    return _paged_varlen(fn, a.q, a.k, a.v, a.cu_seqlens_q, a.cu_seqlens_k, a.max_seqlen_q, a.max_seqlen_k,
                         a.softmax_scale, a.logits_soft_cap, a.is_causal, a.window_size_left, a.window_size_right,
                         a.return_softmax_lse, a.out, a.block_table, a.alibi_slopes)


_MHA_VARLEN_FWD = inspect.signature(model_attention.mha_varlen_fwd)
mha_varlen_fwd.__signature__ = _MHA_VARLEN_FWD  # what the signature test (and inspect) reads


# --- paged_attention_v1 -------------------------------------------------------------
def _pa_row(q, kc, vc, scale, slope, softcap, sliding_window, dtype):
    """One query row (Hq, D) against its (n, Hk, D) keys, as pa_v1 computes it: (Hq, D) float32."""
    hq, n = q.shape[0], kc.shape[0]
    kk = model_attention._expand(kc, hq)
    vv = model_attention._expand(vc, hq)
    s = torch.einsum("hd,khd->hk", q.float(), kk) * scale
    j = torch.arange(n)
    if slope is not None:
        s = s + slope.float()[:, None] * (j - n + 1)
    if sliding_window > 0:
        s = torch.where(j < n - sliding_window, torch.full_like(s, -FLT_MAX), s)
    if softcap > 0:
        s = softcap * torch.tanh(s / softcap)
    ms, ls, os_ = [], [], []
    for p0 in range(0, n, PARTITION):
        sp = s[:, p0:p0 + PARTITION]
        m = sp.amax(-1)
        e = torch.exp(sp - m[:, None])
        l = e.sum(-1)
        os_.append((torch.einsum("hk,khd->hd", e, vv[p0:p0 + PARTITION]) / l[:, None]).to(dtype).float())
        ms.append(m)
        ls.append(l)
    m = torch.stack(ms)  # (P, Hq)
    w = torch.stack(ls) * torch.exp(m - m.amax(0))
    return (w[..., None] * torch.stack(os_)).sum(0) / w.sum(0)[:, None]


def paged_attention_v1(
    out: torch.Tensor,
    workspace_buffer: torch.Tensor,
    query: torch.Tensor,
    key_cache: torch.Tensor,
    value_cache: torch.Tensor,
    scale: float,
    block_tables: torch.Tensor,
    cu_query_lens: Optional[torch.Tensor],
    context_lens: torch.Tensor,
    max_context_len: int,
    alibi_slopes: Optional[torch.Tensor],
    kv_cache_dtype: str,
    kv_cache_layout: str,
    logits_soft_cap: float,
    k_scale: torch.Tensor,
    v_scale: torch.Tensor,
    fp8_out_scale: Optional[torch.Tensor] = None,
    partition_size: int = 256,
    mtp: int = 1,
    sliding_window: int = 0,
) -> torch.Tensor:
    fn = "paged_attention_v1"
    _record(fn, out=out, workspace_buffer=workspace_buffer, query=query, key_cache=key_cache, value_cache=value_cache,
            scale=scale, block_tables=block_tables, cu_query_lens=cu_query_lens, context_lens=context_lens,
            max_context_len=max_context_len, alibi_slopes=alibi_slopes, kv_cache_dtype=kv_cache_dtype,
            kv_cache_layout=kv_cache_layout, logits_soft_cap=logits_soft_cap, k_scale=k_scale, v_scale=v_scale,
            fp8_out_scale=fp8_out_scale, partition_size=partition_size, mtp=mtp, sliding_window=sliding_window)
    if kv_cache_dtype != "auto" or kv_cache_layout != "NHD" or fp8_out_scale is not None:
        raise NotImplementedError("FP8 caches, FP8 output and the HND layout are not modelled")
    _require(partition_size == PARTITION and mtp == 1, fn, "the model covers partition_size 256, mtp 1 (T_PAR_SIZE is 256)")
    _check(fn, "query", query, 3)
    _require(query.dtype in DTYPES, fn, f"Unsupported data type: {query.dtype}")
    _check(fn, "out", out, 3, query.dtype)
    for name, t in (("key_cache", key_cache), ("value_cache", value_cache)):
        _check(fn, name, t, 4, query.dtype)
        _require(t.stride(-1) == 1, fn, f"{name} must have unit last stride")
    _require(key_cache.stride() == value_cache.stride(), fn, "key_cache and value_cache share one set of strides")
    num_blocks, bs, hk, d = key_cache.shape
    tq, hq, dq = query.shape
    _require(tuple(value_cache.shape) == (num_blocks, bs, hk, d), fn, "value_cache must match key_cache (one head size)")
    _require(dq == d, fn, f"query head size {dq} != cache head size {d}")
    _require(bs in (16, 32), fn, f"block size {bs}: static_assert(BLOCK_SIZE <= 32), minimum 16")
    _require(d % 64 == 0 and d <= 256, fn, f"head size {d} must be a multiple of 64 up to 256")
    _require(hq % hk == 0, fn, "num_heads % num_kv_heads != 0")
    g = hq // hk
    _require(g <= 16 or g % 16 == 0, fn, f"GQA ratio {g} is split into loops of 16 unevenly")
    _require(query.stride(-1) == 1 and query.stride(1) == d, fn, "query heads are read at head * HEAD_SIZE: head stride must be D")
    _check(fn, "block_tables", block_tables, 2, torch.int32)
    _require(block_tables.is_contiguous(), fn, "block_tables rows are read at seq * max_num_blocks_per_seq: must be contiguous")
    num_seqs = block_tables.shape[0]
    _require(out.is_contiguous() and tuple(out.shape[1:]) == (hq, d) and out.shape[0] >= num_seqs, fn,
             "out is written densely as [num_seqs, num_heads, head_size]")
    _check(fn, "context_lens", context_lens, 1, torch.int32)
    _require(context_lens.is_contiguous() and context_lens.shape[0] == num_seqs, fn, "context_lens must be (num_seqs,) contiguous int32")
    for name, t in (("k_scale", k_scale), ("v_scale", v_scale)):
        _require(isinstance(t, torch.Tensor) and t.dtype == torch.float32 and t.numel() >= 1, fn,
                 f"{name} must be a float32 tensor (its data_ptr is read)")
    parts = math.ceil(max_context_len / PARTITION)
    need = num_seqs * hq * parts * (2 * 4 + d * query.element_size())
    _require(workspace_buffer.dtype == torch.uint8 and workspace_buffer.is_contiguous() and workspace_buffer.numel() >= need,
             fn, f"workspace_buffer must hold {need} bytes")
    if alibi_slopes is not None:
        _require(alibi_slopes.dtype == torch.float32 and tuple(alibi_slopes.shape) == (hq,) and alibi_slopes.is_contiguous(),
                 fn, "alibi_slopes must be (num_heads,) float32, read per head")
    lens = context_lens.tolist()
    _require(max(lens, default=0) <= max_context_len, fn, "a context is longer than max_context_len (partitions missing)")
    _check_table(fn, block_tables, lens, num_blocks, bs, "block_tables")
    if cu_query_lens is None:
        rows, qlens = list(range(num_seqs)), [1] * num_seqs
    else:
        _check(fn, "cu_query_lens", cu_query_lens, 1, torch.int32)
        _require(cu_query_lens.numel() >= num_seqs + 1, fn, "cu_query_lens must have num_seqs + 1 entries")
        c = cu_query_lens.tolist()
        rows, qlens = c[:num_seqs], [b - a for a, b in zip(c, c[1:num_seqs + 1])]
    for b in range(num_seqs):
        if qlens[b] > 1:
            continue  # pa_v1.cuh:75-77
        _require(0 <= rows[b] < tq and rows[b] < out.shape[0], fn, f"sequence {b} reads query row {rows[b]} outside q/out")
        if lens[b] == 0:
            out[rows[b]] = math.nan  # the reduce reads partition -1
            continue
        kc = _gather(key_cache, block_tables[b], lens[b])
        vc = _gather(value_cache, block_tables[b], lens[b])
        o = _pa_row(query[rows[b]], kc, vc, scale, alibi_slopes, logits_soft_cap, sliding_window, query.dtype)
        out[rows[b]] = o.to(out.dtype)
    return out
