"""FlashAttention forward/backward through AITER's MHA kernels (CK tile, and the v3 assembly kernels).

Contract of amd-aiter 0.1.7.post2.dev18, read from the wheel (``py:N`` = ``aiter/ops/mha.py``,
star-imported into ``aiter`` by ``aiter/__init__.py:75``; ``mha.py`` has no ``__all__``, so the
underscore helpers ``_flash_attn_forward`` / ``_flash_attn_backward`` / ``_flash_attn_varlen_*``
are **not** ``aiter.<name>``: the lowest public forward-only entries are the compiled ops below).
C++ sources in the wheel's ``aiter_meta/``: ``ck:N`` = ``csrc/py_itfs_ck/mha_fwd_kernels.cu``,
``ckv:N`` = ``.../mha_varlen_fwd_kernels.cu``, ``ckb:N`` = ``.../mha_bwd_kernels.cu``,
``ckvb:N`` = ``.../mha_varlen_bwd_kernels.cu``, ``asm:N`` = ``csrc/py_itfs_cu/asm_mha_fwd.cu``,
``asmvb:N`` = ``csrc/py_itfs_cu/asm_mha_varlen_bwd.cu``, ``gen:N`` = ``csrc/cpp_itfs/mha_fwd_generate.py``,
``v3f:N`` = ``hsa/gfx942/fmha_v3_fwd/codegen.py``, ``pipe:N`` = ``3rdparty/composable_kernel/include/
ck_tile/ops/fmha/pipeline/block_fmha_pipeline_qr_ks_vs.hpp``, ``bpipe:N`` = ``.../block_fmha_bwd_dq_dk_dv_
pipeline_kr_ktr_vr.hpp``, ``cg:N`` = ``3rdparty/composable_kernel/example/ck_tile/01_fmha/codegen/ops/``.

The entries (all ``@compile_ops``, returning ``(out, softmax_lse, S_dmask, rng_state)`` forward and
``(dq, dk, dv, softmax_d)`` backward)::

    mha_fwd(q, k, v, dropout_p, softmax_scale, is_causal, window_size_left, window_size_right,
            return_softmax_lse, return_dropout_randval, cu_seqlens_q=None, cu_seqlens_kv=None,
            out=None, bias=None, alibi_slopes=None, gen=None)                              # py:174
    fmha_v3_fwd(..same to return_dropout_randval.., how_v3_bf16_cvt, out=None, bias=None,
            alibi_slopes=None, gen=None)                                                  # py:219
    mha_varlen_fwd(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, min_seqlen_q,
            dropout_p, softmax_scale, logits_soft_cap, zero_tensors, is_causal, window_size_left,
            window_size_right, return_softmax_lse, return_dropout_randval, out=None, block_table=None,
            bias=None, alibi_slopes=None, gen=None, cu_seqlens_q_padded=None, cu_seqlens_k_padded=None)  # py:455
    fmha_v3_varlen_fwd(..., return_dropout_randval, how_v3_bf16_cvt, out=None, ...)       # py:546
    mha_bwd(dout, q, k, v, out, softmax_lse, dropout_p, softmax_scale, is_causal, window_size_left,
            window_size_right, deterministic, dq=None, dk=None, dv=None, dbias=None, bias=None,
            alibi_slopes=None, rng_state=None, gen=None)                                  # py:753
    fmha_v3_bwd(..., deterministic, is_v3_atomic_fp32, how_v3_bf16_cvt, dq=None, dk=None, dv=None,
            alibi_slopes=None, rng_state=None, gen=None)                                  # py:805
    mha_varlen_bwd(dout, q, k, v, out, softmax_lse, cu_seqlens_q, cu_seqlens_k, max_seqlen_q,
            max_seqlen_k, dropout_p, softmax_scale, zero_tensors, is_causal, window_size_left,
            window_size_right, deterministic, dq=None, dk=None, dv=None, alibi_slopes=None,
            rng_state=None, gen=None, cu_seqlens_q_padded=None, cu_seqlens_k_padded=None)  # py:1064
    fmha_v3_varlen_bwd(..., deterministic, is_v3_atomic_fp32, how_v3_bf16_cvt, dq=None, ...)  # py:1133

Facts this adapter relies on:

* layouts are ours: q/k/v/out (B, S, H, D) or (T, H, D), unit last-dim stride, other strides honoured
  (ck:49-68, ckv:54-75); head dims multiples of 8 and <= 256 (``TORCH_CHECK`` ck:201-204, ckv:346-349,
  ckb:268-271); fp16/bf16 (ck:168; ckb:239); Hq % Hk == 0. lse is (B, Hq, Sq) dense (ck:274) and
  (Hq, Tq) varlen (ckv:411) float32: **our layouts, no padding**. The backward reads lse with its
  strides, but CK keeps ``softmax_d`` with lse's strides (ckb:71, ckvb:75-76), so lse is passed
  contiguous.
* masks: bottom-right aligned; ``window >= seqlen_k`` (max_seqlen_k for varlen) becomes -1
  (ck:207-208, ckv:352-353, ckb:274-275, py:1191-1192, py:2027-2028); causal sets right = 0 (ck:216);
  ``seqlen_q == 1`` without ALiBi drops causal (ck:211, py:35-37). Making ``right`` unbounded when
  ``right >= seqlen_k`` is only exact when also ``right >= seqlen_q - 1``: otherwise (early query
  rows of a long query block) AITER would show keys our contract hides, so such calls are declined.
* soft-capping: the dense entries have no ``logits_soft_cap`` (ck:117 passes 0.0) and no backward has
  one (ckvb), so softcap > 0 is declined. ALiBi: (Hq,) or (B, Hq), unit last stride (ck:81-87,
  ckb:108-112), fwd and bwd. Dropout is declined: AITER's mask comes from its Philox ``rng_state``,
  which our autograd does not carry.
* rows that see no key: CK writes ``out = 0`` and ``lse = -inf`` (early exit pipe:242-249; ``l == 0``
  -> ``o = 0`` pipe:689, lse = m + log(0) pipe:670), FlashAttention CUDA and our contract ``+inf``.
  The v3 assembly kernels' behaviour there is not readable. So after every forward the adapter
  writes ``out = 0, lse = +inf`` on those rows itself: dense, they are the leading
  ``sq - sk - right`` rows (host arithmetic); varlen they are found on the device from cu_seqlens,
  together with rows past ``cu_seqlens_q[-1]`` (which AITER never writes: ``torch::empty``, ckv:398,
  411). The backward gets AITER's own convention back (``+inf`` -> ``-inf``), which CK's backward
  maps to 0 (bpipe:573) and AITER's own fwd->bwd flow feeds its v3 kernels.
* v3 (assembly) forward: AITER's module for it is built with ``--receipt 1`` (``optCompilerConfig.json``
  ``module_fmha_v3_fwd``) = the v3 dispatch **only** (gen:167-193, 209): an unsupported call returns
  -1 and ``TORCH_CHECK(t >= 0)`` fails (asm:322), so eligibility is decided in Python, as AITER does
  (py:1196-1206 dense, also needing ``seqlen_q > 128``, py:1227; py:1903-1913 varlen): bf16,
  hdim_v 128 and hdim_q 128 (or 192 on gfx950), no ALiBi/bias/dropout, no sliding window. AITER's
  ``swa = left > 0 or right > 0`` (py:1189, 1901) lets ``left == 0`` through, but the kernels only take
  ``left == -1`` with right 0 (causal) or no mask (v3f:326, 383, 441, 491): we require that. v3
  exists for gfx942/gfx950 only (gen:170); AITER's varlen gate has no arch check (an AITER bug on
  gfx90a), ours has. ``how_v3_bf16_cvt``: AITER's default 1 (py:1787, 2394); on gfx950 AITER forces
  0 in the backward ("rtna & rtz are deprecated in gfx950", py:1503-1505); the gfx950 forward kernels
  do not read it. We pass 0 on gfx950 everywhere (also the varlen backward, where AITER forgot) and
  1 on gfx942.
* v3 backward: dense ``can_impl_fmha_v3_bwd`` (py:1265-1441) for gfx942, the gfx950 rule (py:1545-1557)
  with ``is_950_1block`` (py:1530-1537), taken only when ``seqlen_q > 16`` (py:1561-1563); ``dq`` is
  zeroed first (py:1564-1565); ``deterministic`` / ``is_v3_atomic_fp32`` become False for a one-block
  gfx950 call (py:1585-1586). Varlen: py:2079-2110 (no seqlen_q condition). Every one of these
  decisions that depends on a sequence length uses the **key** length where AITER's does
  (``is_950_1block``: ``seqlen_k <= 256``; ``np``/``pddv``: ``seqlen_k % 64``; the window
  normalization), never the query length: we normalize the windows with seqlen_k before deciding
  (AITER's own dense backward computes ``swa`` from the raw windows, py:1524-1527; normalizing first
  is what its C++ does anyway). The one query-length rule, v3 forward only for ``seqlen_q > 128``
  ("prefer CK for decode", py:1227), stays a query-length rule.
* CK dense decode special case: ``seqlen_q == 1``, GQA, no window/ALiBi/dropout swaps q to
  (B, G, Hk, D) and reshapes ``out`` back with ``head_size_q`` (ck:235-243, 350-352): with
  ``head_dim != head_dim_v`` that reshape throws, so such calls are declined.
* the CK backward ``mha_bwd`` reads ``rng_state.data_ptr()`` even without dropout when none is passed
  (ckb:371-381, no allocation branch, unlike ckvb:396-398), so a 2-element int64 tensor is always passed,
  as AITER's own ``FlashAttnFunc`` does with the forward's. Varlen backward with ``zero_tensors=True``
  zeroes dq/dk/dv (ckvb:371-375, asmvb:387-391), so rows outside every sequence get 0.
* ``deterministic=False``: AITER's non-deterministic CK backward (atomics into a zeroed float32
  ``dq_accum``, ckb:334-335); the contract asks determinism of the triton backend only.
* CK MHA is generated for every gfx9 (``KernelComponentFactoryGfx9`` = ``__gfx9__ && !__gfx950__``,
  cg:fmha_fwd.py:637-639, cg:fmha_bwd.py:414-416, plus gfx950 factories), so gfx90a is served by
  the CK kernels (the v3 path is off there).

Unverified: no AMD GPU ran this. The assembly kernels are binaries; their empty-row output is
overwritten as above, and their backward with lse = -inf on such rows is AITER's own flow.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from ...checks.attention import AttnProblem
from . import arch_reason, device_arch as _device_arch

ARCHS = ("gfx90a", "gfx942", "gfx950")  # CK tile fmha: every gfx9 (cg:fmha_fwd.py:637-639, 750-751)
V3_ARCHS = ("gfx942", "gfx950")  # the assembly kernels (gen:170)
DTYPES = (torch.float16, torch.bfloat16)  # ck:168, ckb:239
MAX_HEAD_DIM = 256  # ck:201-202, ckb:270-271
HEAD_DIM_MULTIPLE = 8  # ck:203-204, ckb:268-269
MAX_INDEX = 2**31 - 1  # ck_tile::index_t offsets and sizes are int32
V3_FWD_MIN_SEQLEN_Q = 128  # dense v3 forward only above this query length (py:1227)
V3_BWD_MIN_SEQLEN_Q = 16  # dense v3 backward only above this (py:1561-1563)
GFX950_ONE_BLOCK_MAX_SEQLEN_K = 256  # py:1530-1537


def _aiter():
    import aiter  # lazy: importing aiter starts JIT builds

    return aiter


# --- arch -----------------------------------------------------------------------
def arch_unsupported_reason(device: torch.device) -> Optional[str]:
    """AITER's CK fmha kernels are generated for gfx9 (gfx90a, gfx942, gfx950)."""
    return arch_reason(_device_arch(device), ARCHS, "aiter MHA kernels need {archs}")


def _bf16_cvt(arch: Optional[str]) -> int:
    """``how_v3_bf16_cvt``: 0 (round to nearest even) on gfx950, where AITER says rtna/rtz are
    deprecated (py:1503-1505); AITER's default 1 elsewhere (py:1787)."""
    return 0 if arch == "gfx950" else 1


# --- masks ----------------------------------------------------------------------
def _aiter_window(p: AttnProblem) -> tuple[int, int]:
    """The (left, right) AITER's kernels end up with: ``>= seqlen_k`` -> -1 (the KEY length; for
    varlen ``max_seqlen_k``), as ck:207-208 / ckv:352-353 / py:1191-1192 do; causal right = 0."""
    sk = p.seqlen_k
    left = -1 if p.window_left >= sk else p.window_left
    right = 0 if p.causal else (-1 if p.window_right >= sk else p.window_right)
    return left, right


def _window_args(p: AttnProblem) -> tuple[bool, int, int]:
    """(is_causal, window_size_left, window_size_right) as AITER's own callers pass them: causal
    with right -1 (the C++ sets 0, ck:216), else our window."""
    if p.causal:
        return True, p.window_left, -1
    return False, p.window_left, p.window_right


def _v3_mask_ok(p: AttnProblem) -> bool:
    """No mask, or bottom-right causal without a left bound: the masks the v3 kernels take
    (v3f:326, 383, 441, 491). AITER's ``swa`` test (py:1189) would also let ``left == 0`` through."""
    left, right = _aiter_window(p)
    return left == -1 and right in (-1, 0)


def _swa(left: int, right: int) -> bool:
    return left > 0 or right > 0  # AITER's definition (py:1313, 1527, 2034)


def _dense_empty_rows(p: AttnProblem) -> int:
    """Dense: the query rows that see no key are the leading ``sq - sk - right`` (right >= 0)."""
    if p.seqlen_k == 0:
        return p.seqlen_q
    if p.window_right < 0:
        return 0
    return min(max(p.seqlen_q - p.seqlen_k - p.window_right, 0), p.seqlen_q)


def _empty_rows(cu_q: torch.Tensor, seqlens_k: torch.Tensor, p) -> torch.Tensor:
    """Varlen (and paged), on the device: (Tq,) bool, rows that see no key or belong to no sequence.
    ``seqlens_k`` (B,) is each sequence's key count; ``p`` an AttnProblem or a PagedProblem (both
    have ``window_right`` 0 when causal)."""
    rows = torch.arange(p.total_q, device=cu_q.device, dtype=cu_q.dtype)
    b = torch.searchsorted(cu_q, rows, right=True) - 1  # the sequence of each row (B past the end)
    outside = b >= p.batch
    b = b.clamp(0, p.batch - 1)
    start = cu_q[b]
    sq = cu_q[b + 1] - start
    sk = seqlens_k[b]
    empty = outside | (sk == 0)
    if p.window_right >= 0:
        empty |= (rows - start) < (sq - sk - p.window_right)
    return empty


# --- guards ---------------------------------------------------------------------
# Reasons shared with paged_attention.py (None: fine).
def _gqa_reason(num_heads_q: int, num_heads_k: int) -> Optional[str]:
    if num_heads_q % num_heads_k:
        return f"{num_heads_q} query heads are not a multiple of {num_heads_k} key heads"
    return None


def _head_dims_reason(p, suffix: str) -> Optional[str]:
    for name, d in (("head_dim", p.head_dim), ("head_dim_v", p.head_dim_v)):
        if d % HEAD_DIM_MULTIPLE or d > MAX_HEAD_DIM:
            return f"{name} {d} is not a multiple of {HEAD_DIM_MULTIPLE} up to {MAX_HEAD_DIM}{suffix}"
    return None


def _right_window_reason(causal: bool, right: int, sq: int, sk: int, q_name: str, k_name: str,
                         who: str) -> Optional[str]:
    """A right window AITER makes unbounded (``>= sk``) where that is not exact (``< sq - 1``)."""
    if not causal and 0 <= right and right >= sk and right < sq - 1:
        return (f"window right {right} >= {k_name} {sk} but < {q_name} - 1: {who} makes it unbounded, "
                "which would show early query rows keys the window hides")
    return None


def _unit_last_reason(name: str, t: torch.Tensor, who: str) -> Optional[str]:
    if t.stride(-1) != 1 and t.shape[-1] > 1:
        return f"{name} has last-dim stride {t.stride(-1)}; {who} needs unit stride"
    return None


def _alibi_reason(alibi_slopes: Optional[torch.Tensor]) -> Optional[str]:
    if alibi_slopes is not None and alibi_slopes.stride(-1) != 1:
        return "alibi_slopes must have a unit last-dim stride for aiter"
    return None


def supports_args(q, k, v, cu_seqlens_q, cu_seqlens_k, alibi_slopes, p: AttnProblem) -> Optional[str]:
    if p.dtype not in DTYPES:
        return f"aiter MHA takes float16/bfloat16, not {p.dtype}"
    if p.dropout_p > 0:
        return ("dropout is not taken: AITER draws its mask from its own Philox rng_state, which our "
                "autograd does not carry to the backward")
    if p.softcap > 0:
        return "softcap is not taken: aiter's dense MHA and every MHA backward have no logits_soft_cap"
    reason = (_head_dims_reason(p, ", which aiter's MHA kernels require")
              or _gqa_reason(p.num_heads_q, p.num_heads_k)
              or _right_window_reason(p.causal, p.window_right, p.seqlen_q, p.seqlen_k, "seqlen_q", "seqlen_k",
                                      "aiter"))
    if reason:
        return reason
    if (not p.varlen and p.seqlen_q == 1 and p.num_heads_q > p.num_heads_k and p.head_dim != p.head_dim_v
            and not p.has_alibi and _aiter_window(p) == (-1, -1)):
        return ("single-query GQA with head_dim != head_dim_v: aiter's mha_fwd reshapes its output with "
                "head_dim (mha_fwd_kernels.cu:350-351) and fails")
    for name, t in (("q", q), ("k", k), ("v", v)):
        reason = _unit_last_reason(name, t, "aiter MHA")
        if reason:
            return reason
        if 1 + sum((n - 1) * s for n, s in zip(t.shape, t.stride())) > MAX_INDEX:
            return f"{name} spans more than 2**31 elements; aiter's kernels index with 32-bit offsets"
    widest = max(p.head_dim, p.head_dim_v)  # out, and the GQA-expanded dk/dv of the backward (ckb:346-348)
    if max(p.total_q, p.total_k) * p.num_heads_q * widest > MAX_INDEX:
        return "an output spans more than 2**31 elements; aiter's kernels index with 32-bit offsets"
    return _alibi_reason(alibi_slopes)


# --- forward --------------------------------------------------------------------
def _use_v3_fwd(arch: Optional[str], p: AttnProblem) -> bool:
    ok = (
        arch in V3_ARCHS
        and not p.has_alibi
        and p.dropout_p == 0
        and p.head_dim_v == 128
        and (p.head_dim == 128 or (arch == "gfx950" and p.head_dim == 192))
        and p.dtype == torch.bfloat16
        and not _swa(*_aiter_window(p))
        and _v3_mask_ok(p)
    )
    if p.varlen:
        return ok  # py:1916: no length condition for varlen
    return ok and p.seqlen_q > V3_FWD_MIN_SEQLEN_Q  # py:1227 (a query-length rule: decode stays on CK)


def forward(q, k, v, cu_seqlens_q, cu_seqlens_k, alibi_slopes, p: AttnProblem, need_lse: bool):
    arch = _device_arch(q.device)
    causal, left, right = _window_args(p)
    scale = float(p.softmax_scale)
    if p.varlen:
        if _use_v3_fwd(arch, p):
            out, lse, _, _ = _aiter().fmha_v3_varlen_fwd(
                q, k, v, cu_seqlens_q, cu_seqlens_k, p.seqlen_q, p.seqlen_k, 0, 0.0, scale, 0.0, False,
                causal, left, right, need_lse, False, _bf16_cvt(arch), None, None, None, alibi_slopes, None,
            )
        else:
            out, lse, _, _ = _aiter().mha_varlen_fwd(
                q, k, v, cu_seqlens_q, cu_seqlens_k, p.seqlen_q, p.seqlen_k, 0, 0.0, scale, 0.0, False,
                causal, left, right, need_lse, False, out=None, block_table=None, bias=None,
                alibi_slopes=alibi_slopes, gen=None,
            )
        empty = _empty_rows(cu_seqlens_q, cu_seqlens_k[1:] - cu_seqlens_k[:-1], p)
        out.masked_fill_(empty[:, None, None], 0.0)
        if need_lse:
            lse.masked_fill_(empty[None, :], math.inf)
    else:
        if _use_v3_fwd(arch, p):
            out, lse, _, _ = _aiter().fmha_v3_fwd(
                q, k, v, 0.0, scale, causal, left, right, need_lse, False, _bf16_cvt(arch),
                None, None, alibi_slopes, None,
            )
        else:
            out, lse, _, _ = _aiter().mha_fwd(
                q, k, v, 0.0, scale, causal, left, right, need_lse, False, None, None,
                None, None, alibi_slopes, None,
            )
        n = _dense_empty_rows(p)
        if n:
            out[:, :n].zero_()
            if need_lse:
                lse = lse.view(p.batch, p.num_heads_q, p.seqlen_q)
                lse[:, :, :n].fill_(math.inf)
    if not need_lse:
        return out, None
    return out, lse.view(p.lse_shape())


# --- backward -------------------------------------------------------------------
def _can_v3_bwd_gfx942(dout, q, k, v, dk, dv, p: AttnProblem, arch: Optional[str]) -> bool:
    """AITER's ``can_impl_fmha_v3_bwd`` (py:1265-1441) with ``is_v3_atomic_fp32=True`` (AITER's
    default, py:1864) and no bias/dropout/determinism; windows normalized with seqlen_k."""
    if arch != "gfx942":
        return False
    sq, sk, hq, hk, d, dv_ = p.seqlen_q, p.seqlen_k, p.num_heads_q, p.num_heads_k, p.head_dim, p.head_dim_v
    left, right = _aiter_window(p)
    causal = p.causal
    mask = causal and left == -1
    nmask = not causal and left == -1 and right == -1
    swa = _swa(left, right)
    npssk = (
        sq == sk and sk % 64 == 0
        and q.stride(1) == dout.stride(1) and q.stride(2) == dout.stride(2) and q.stride(0) == dout.stride(0)
        and k.stride(1) == v.stride(1) and k.stride(2) == v.stride(2) and k.stride(0) == v.stride(0)
        and k.stride(2) == dk.stride(2) and v.stride(2) == dv.stride(2)
        and dk.stride(0) / k.stride(0) == hq / hk and dv.stride(0) / v.stride(0) == hq / hk
    )
    np_ = (d == 128 and npssk) and not swa  # hd64 needs is_v3_atomic_fp32 False
    pssk = d == 64 and not swa
    pddv = False  # needs is_v3_atomic_fp32 False
    psskddv = 64 < d <= 192 and (nmask or mask or (swa and 64 < d <= 128))
    return (
        not p.has_alibi and d == dv_ and hq % hk == 0 and 64 <= d <= 192 and d % 8 == 0
        and (np_ or pssk or pddv or psskddv)
    )


def _gfx950_one_block(p: AttnProblem, arch: Optional[str]) -> bool:
    """py:1530-1537: one key block (seqlen_k <= 256, the KEY length), so the kernel is deterministic."""
    return (arch == "gfx950" and p.seqlen_k <= GFX950_ONE_BLOCK_MAX_SEQLEN_K and 64 < p.head_dim <= 128
            and p.head_dim % 8 == 0 and not _swa(*_aiter_window(p)))


def _can_v3_bwd_gfx950(p: AttnProblem, arch: Optional[str]) -> bool:
    """py:1545-1557 (deterministic False); nmask from the normalized window."""
    if arch != "gfx950" or p.has_alibi:
        return False
    left, right = _aiter_window(p)
    nmask = not p.causal and left == -1 and right == -1
    d, dv_ = p.head_dim, p.head_dim_v
    return p.num_heads_q % p.num_heads_k == 0 and d % 8 == 0 and (
        64 < d <= 128 or (d == 192 and dv_ == 128 and nmask))


def _use_v3_bwd_varlen(p: AttnProblem, arch: Optional[str]) -> bool:
    """py:2079-2110 with ``is_v3_atomic_fp32=True``, deterministic False."""
    left, right = _aiter_window(p)
    d = p.head_dim
    common = (not p.has_alibi and d == p.head_dim_v and p.num_heads_q % p.num_heads_k == 0
              and d % 8 == 0 and not _swa(left, right) and left != 0)
    if arch == "gfx942":
        return common and 64 <= d <= 192
    if arch == "gfx950":
        return common and 64 < d <= 128
    return False


def backward(dout, q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k, alibi_slopes, p: AttnProblem):
    if lse.numel() == 0:  # the forward ran without it: AITER's backward needs the forward's lse
        _, lse = forward(q, k, v, cu_seqlens_q, cu_seqlens_k, alibi_slopes, p, True)
    arch = _device_arch(q.device)
    causal, left, right = _window_args(p)
    scale = float(p.softmax_scale)
    # dout/q/k/v/out come with unit last stride (the op layer), other strides honoured (ckb, ckvb);
    # AITER's convention for rows that see no key (CK's forward writes -inf, bpipe:573 reads it)
    lse = torch.where(torch.isposinf(lse), -math.inf, lse).contiguous()
    dq, dk, dv = (torch.empty(t.shape, dtype=t.dtype, device=t.device) for t in (q, k, v))  # contiguous, as the fake
    cvt = _bf16_cvt(arch)
    rng_state = torch.zeros(2, dtype=torch.int64, device=q.device)  # mha_bwd reads it even without dropout (ckb:380)
    if p.varlen:
        if _use_v3_bwd_varlen(p, arch):
            _aiter().fmha_v3_varlen_bwd(
                dout, q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k, p.seqlen_q, p.seqlen_k, 0.0, scale,
                True, causal, left, right, False, True, cvt, dq, dk, dv, alibi_slopes, rng_state, None,
            )
        else:
            _aiter().mha_varlen_bwd(
                dout, q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k, p.seqlen_q, p.seqlen_k, 0.0, scale,
                True, causal, left, right, False, dq, dk, dv, alibi_slopes, rng_state, None,
            )
        return dq, dk, dv
    left_n, _ = _aiter_window(p)
    one_block = _gfx950_one_block(p, arch)
    v3 = (_can_v3_bwd_gfx942(dout, q, k, v, dk, dv, p, arch) or _can_v3_bwd_gfx950(p, arch)) and left_n != 0
    if v3 and p.seqlen_q > V3_BWD_MIN_SEQLEN_Q:
        dq.zero_()  # py:1564-1565
        _aiter().fmha_v3_bwd(
            dout, q, k, v, out, lse, 0.0, scale, causal, left, right, False, not one_block, cvt,
            dq, dk, dv, alibi_slopes, rng_state, None,
        )
    else:
        _aiter().mha_bwd(
            dout, q, k, v, out, lse, 0.0, scale, causal, left, right, False, dq, dk, dv, None, None,
            alibi_slopes, rng_state, None,
        )
    return dq, dk, dv
