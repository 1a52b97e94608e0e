"""Triton attention backend: launchers for ``kernels/triton/attention.py`` (the attention contract).

``supports_args`` / ``forward`` / ``backward`` follow ``notes``' contract (see
``vllm_rocm_accel/checks/attention.py`` for :class:`AttnProblem` and the semantics):

* forward: one program per (BLOCK_M query rows, query head, sequence); dense and varlen share
  the kernel (varlen reads cu_seqlens). Varlen rows past ``cu_seqlens_q[-1]`` get out 0 and
  lse +inf from a small fill kernel (their count is on the device: no host read).
* backward: delta = rowsum(dout * out); dK/dV per (key block, kv head, sequence) summing the
  group's query heads; dQ per (query block, query head, sequence). No atomics: deterministic.

Tensors are addressed through their strides (last dim unit stride; others arbitrary); outputs
and gradients are fresh contiguous tensors. Launch parameters (BLOCK_M, BLOCK_N, num_warps,
num_stages per pass, head-dim bucket, masked or not, dtype) are data: ``configs/attention.json``,
per device family (``cuda`` / ``rocm`` / ``interpret``).

A forward rule's ``"kernel"`` picks the forward kernel: ``"pointer"`` (absent: the default, every
shipped rule) is :func:`~vllm_rocm_accel.kernels.triton.attention.attn_fwd_kernel`; ``"tma"`` is
:func:`~vllm_rocm_accel.kernels.triton.attention.attn_fwd_tma_kernel` (q/k/v/out through host-side
TMA tensor descriptors; optional ``"rescale_threshold"``, base-2 units, 0 / absent: rescale the
accumulator every key block). The TMA kernel takes only the common dense case (:func:`tma_reason`:
no varlen, softcap, ALiBi or window, a causal mask only with seqlen_q == seqlen_k, head_dim ==
head_dim_v in {64, 128}, float16/bfloat16, 16-byte aligned data pointers and strides, unit last
stride, a Hopper-or-later NVIDIA GPU or the interpreter); any other call runs the pointer kernel
with the same rule's tiles, warps and stages.
"""

from __future__ import annotations

import functools
from typing import Optional

import torch
import triton

from ...kernels.triton import attention as _k
from . import config_data, tma
from .config_data import family as _family
from .config_data import interpreting as _interpreting
from .config_data import pow2
from .fast_launch import FastLauncher

_config = config_data.loader("attention")  # a module attribute: tests and tuners replace it
_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_PASSES = ("fwd", "bwd_kv", "bwd_q")
_LOG2E = 1.4426950408889634
_MAX_GRID_YZ = 65535  # CUDA's limit on grid dims 1 and 2 (heads, batch)

_FWD = FastLauncher(_k.attn_fwd_kernel)
_PRE = FastLauncher(_k.attn_bwd_preprocess_kernel)
_DKDV = FastLauncher(_k.attn_bwd_dkdv_kernel)
_DQ = FastLauncher(_k.attn_bwd_dq_kernel)
_FILL = FastLauncher(_k.attn_fill_tail_kernel)
# One TMA launcher per input dtype: Triton specializes a host descriptor on its base dtype and block
# shape ("tensordesc<bf16[1, 128, 1, 128]>"); FastLauncher's key sees a descriptor only by its type,
# and the block shape is in the constexprs (BLOCK_M / BLOCK_N, HEAD_D).
_FWD_TMA = {dt: FastLauncher(_k.attn_fwd_tma_kernel) for dt in (torch.float16, torch.bfloat16)}
FWD_KERNELS = ("pointer", "tma")
_TMA_HEAD_DIMS = (64, 128)


# --- launch parameters --------------------------------------------------------------
def _family_config(family: str) -> dict:
    return config_data.section(_config(), family)


def head_bucket(head_dim: int, head_dim_v: int) -> int:
    """The padded head dim the configs are keyed on: max(BLOCK_D, BLOCK_DV)."""
    return max(_block_d(head_dim), _block_d(head_dim_v))


def _block_d(d: int) -> int:
    return max(16, triton.next_power_of_2(d))


@functools.lru_cache(maxsize=1024)
def _rule(family: str, pass_: str, bucket: int, masked: bool, dtype_name: str, tma_ok: bool = True) -> tuple:
    """(launch params, forward kernel, rescale threshold) of the first rule of the family's
    ``pass_`` list whose ``max_d`` >= bucket and whose optional ``causal`` / ``dtypes`` match;
    ``"kernel": "tma"`` rules only where the call fits the tma forward (``tma_ok``): other calls
    take the next rule, as tuned for the pointer kernel (or, with none left, the first tma rule's
    tiles on the pointer kernel)."""
    if pass_ not in _PASSES:
        raise ValueError(f"unknown attention pass {pass_!r}; expected one of {_PASSES}")
    passed_over = None
    for rule in _family_config(family)[pass_]:
        if bucket > rule.get("max_d", 1 << 30):
            continue
        if "causal" in rule and bool(rule["causal"]) != masked:
            continue
        if "dtypes" in rule and dtype_name not in rule["dtypes"]:
            continue
        if not tma_ok and rule.get("kernel") == "tma":
            passed_over = passed_over or rule
            continue
        params = (pow2("BLOCK_M", int(rule["BLOCK_M"]), "attention.json", 16),
                  pow2("BLOCK_N", int(rule["BLOCK_N"]), "attention.json", 16),
                  int(rule["num_warps"]), int(rule["num_stages"]))
        kernel = rule.get("kernel", "pointer")
        if kernel not in FWD_KERNELS or (kernel != "pointer" and pass_ != "fwd"):
            raise ValueError(f"attention.json: a {pass_} rule's kernel must be one of "
                             f"{FWD_KERNELS if pass_ == 'fwd' else ('pointer',)}, got {rule}")
        threshold = float(rule.get("rescale_threshold", 0.0))
        if threshold < 0 or (threshold and kernel != "tma"):
            raise ValueError(f"attention.json: rescale_threshold must be >= 0 and only on a tma rule, got {rule}")
        if kernel == "tma":
            _check_tma_tiles(params[0], params[1], source=f"attention.json: {rule}")
        return params, kernel, threshold
    if passed_over is not None:
        return (pow2("BLOCK_M", int(passed_over["BLOCK_M"]), "attention.json", 16),
                pow2("BLOCK_N", int(passed_over["BLOCK_N"]), "attention.json", 16),
                int(passed_over["num_warps"]), int(passed_over["num_stages"])), "pointer", 0.0
    raise ValueError(f"attention.json has no {pass_} rule for head-dim bucket {bucket} (masked={masked}, {dtype_name})")


def launch_config(family: str, pass_: str, bucket: int, masked: bool, dtype_name: str) -> tuple:
    """(BLOCK_M, BLOCK_N, num_warps, num_stages) of one pass: the first rule of the family's
    ``pass_`` list whose ``max_d`` >= bucket and whose optional ``causal`` / ``dtypes`` match."""
    return _rule(family, pass_, bucket, masked, dtype_name)[0]


def fwd_kernel(family: str, bucket: int, masked: bool, dtype_name: str) -> tuple[str, float]:
    """(kernel, rescale threshold) the forward rule for these keys names: kernel one of
    :data:`FWD_KERNELS` ("pointer" unless the rule says ``"kernel": "tma"``)."""
    _, kernel, threshold = _rule(family, "fwd", bucket, masked, dtype_name)
    return kernel, threshold


def _check_tma_tiles(bm: int, bn: int, source: str) -> None:
    if max(bm, bn) > tma.BOX:
        raise ValueError(f"{source}: the tma forward's BLOCK_M / BLOCK_N must be at most {tma.BOX} (a TMA box), "
                         f"got BLOCK_M={bm}, BLOCK_N={bn}")


def preprocess_block_m(device_type: str) -> int:
    """Query rows per program of the backward's delta (preprocess) kernel."""
    return 64 if device_type == "cuda" else 16


def _fill_params(device_type: str) -> tuple:
    fill = _family_config(_family(device_type)).get("fill", {})
    return int(fill.get("BLOCK_R", 64)), int(fill.get("num_warps", 4))


def clear_caches() -> None:
    """Forget the loaded config and cached choices (for tests and retuning)."""
    _config.cache_clear()
    _rule.cache_clear()
    _json_choice.cache_clear()
    _tma_problem_reason.cache_clear()
    for launcher in (_FWD, _PRE, _DKDV, _DQ, _FILL, *_FWD_TMA.values()):
        launcher.clear()


def _choice(p, pass_: str, device_type: str, override: Optional[dict] = None, tma_ok: bool = True) -> tuple:
    """((BLOCK_M, BLOCK_N, num_warps, num_stages), kernel, rescale threshold) of ``pass_`` for
    problem ``p`` (one rule lookup), blocks shrunk to the sequence lengths (short sequences:
    fewer padded rows). ``override`` (the tuner's) replaces the json's params; its
    ``"fwd_kernel"`` / ``"fwd_rescale_threshold"`` the forward rule's kernel / threshold."""
    if override is None:
        return _json_choice(p, pass_, device_type, tma_ok)
    return _choice_of(p, pass_, device_type, override, tma_ok)


@functools.lru_cache(maxsize=4096)
def _json_choice(p, pass_: str, device_type: str, tma_ok: bool) -> tuple:
    """:func:`_choice` without a tuner's override, once per problem (a dozen Python steps a call)."""
    return _choice_of(p, pass_, device_type, None, tma_ok)


def _choice_of(p, pass_: str, device_type: str, override: Optional[dict], tma_ok: bool) -> tuple:
    masked = p.windowed  # causal implies window_right = 0
    if override is not None and pass_ in override:
        (bm, bn, warps, stages), kernel, threshold = override[pass_], "pointer", 0.0
    else:
        (bm, bn, warps, stages), kernel, threshold = _rule(_family(device_type), pass_,
                                                           head_bucket(p.head_dim, p.head_dim_v), masked,
                                                           str(p.dtype).removeprefix("torch."), tma_ok)
    if override is not None and pass_ == "fwd":
        kernel = override.get("fwd_kernel", kernel)
        threshold = float(override.get("fwd_rescale_threshold", threshold))
    rows_m, rows_n = p.seqlen_q, p.seqlen_k  # pass "bwd_kv": BLOCK_M still tiles queries, BLOCK_N keys
    bm = min(bm, max(16, triton.next_power_of_2(max(rows_m, 1))))
    bn = min(bn, max(16, triton.next_power_of_2(max(rows_n, 1))))
    return (bm, bn, warps, stages), kernel, threshold


def _params(p, pass_: str, device_type: str, override: Optional[dict] = None) -> tuple:
    """(BLOCK_M, BLOCK_N, num_warps, num_stages) of :func:`_choice`."""
    return _choice(p, pass_, device_type, override)[0]


# --- geometry ------------------------------------------------------------------------
def _strides(t: torch.Tensor, varlen: bool) -> tuple[int, int, int]:
    """(batch, row, head) strides: varlen tensors have no batch dim (0)."""
    if varlen:
        return 0, t.stride(0), t.stride(1)
    return t.stride(0), t.stride(1), t.stride(2)


def _lse_strides(lse: torch.Tensor, varlen: bool) -> tuple[int, int]:
    """(batch, head) strides of an lse-layout tensor (unit row stride)."""
    if varlen:
        return 0, lse.stride(0)
    return lse.stride(0), lse.stride(1)


def _scalars(p) -> tuple:
    """(win_left, win_right, qk_scale, cap2): windows made non-negative (unbounded = a bound
    no |i + sk - sq - j| reaches), log2(e) folded into the scale."""
    big = p.seqlen_q + p.seqlen_k + 1
    left = big if p.window_left < 0 else min(p.window_left, big)
    right = big if p.window_right < 0 else min(p.window_right, big)
    if p.softcap > 0:
        return left, right, p.softmax_scale / p.softcap, p.softcap * _LOG2E
    return left, right, p.softmax_scale * _LOG2E, 0.0


def _prec(dtype: torch.dtype):
    return "ieee" if dtype == torch.float32 else None


def tma_reason(q, k, v, p) -> Optional[str]:
    """Why :func:`~vllm_rocm_accel.kernels.triton.attention.attn_fwd_tma_kernel` cannot run the
    forward of this (checked, dense or varlen) call, or None when it can."""
    reason = tma.device_reason(q.device, "the tma forward") or _tma_problem_reason(p)
    if reason is not None:
        return reason
    if not (q.data_ptr() | k.data_ptr() | v.data_ptr()) & 15 and _tma_strides_fit(
            q.stride(), k.stride(), v.stride(), q.element_size()):
        return None
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.data_ptr() % 16:
            return f"{name}'s data pointer is not 16-byte aligned"
        if t.stride(-1) != 1:
            return f"{name}'s last-dim stride is {t.stride(-1)}, not 1"
        for dim in range(t.dim() - 1):
            if t.stride(dim) * t.element_size() % 16:
                return f"{name}'s stride {dim} ({t.stride(dim)} elements) is not a multiple of 16 bytes"
    raise AssertionError("unreachable: _tma_strides_fit said no but every stride fits")


@functools.lru_cache(maxsize=1024)
def _tma_strides_fit(q_stride: tuple, k_stride: tuple, v_stride: tuple, element_size: int) -> bool:
    """Unit last-dim strides, every other stride a multiple of 16 bytes (a TMA descriptor's rule)."""
    return all(st[-1] == 1 and all(s * element_size % 16 == 0 for s in st[:-1])
               for st in (q_stride, k_stride, v_stride))


@functools.lru_cache(maxsize=4096)
def _tma_problem_reason(p) -> Optional[str]:
    """The part of :func:`tma_reason` the problem alone decides, once per problem."""
    if p.varlen:
        return "varlen calls run the pointer kernel"
    if p.softcap > 0 or p.has_alibi or p.dropout_p > 0:
        return "softcap, ALiBi and dropout run the pointer kernel"
    if p.window_left >= 0 or p.window_right > 0:
        return "sliding windows run the pointer kernel"
    if p.window_right == 0 and p.seqlen_q != p.seqlen_k:
        return f"a causal mask with seqlen_q {p.seqlen_q} != seqlen_k {p.seqlen_k} runs the pointer kernel"
    if p.head_dim != p.head_dim_v or p.head_dim not in _TMA_HEAD_DIMS:
        return f"head dims {p.head_dim}/{p.head_dim_v}: the tma forward takes equal head dims in {_TMA_HEAD_DIMS}"
    if p.dtype not in _FWD_TMA:
        return f"dtype {p.dtype}: the tma forward takes float16/bfloat16"
    if p.sees_nothing:
        return "an empty problem"
    return None


def supports_args(q, k, v, cu_seqlens_q, cu_seqlens_k, alibi_slopes, p) -> Optional[str]:
    """None when this backend can run the forward and backward of the call, else the reason."""
    if p.dropout_p > 0:
        return "the triton attention backend has no dropout (dropout_p > 0 runs on the torch backend)"
    if q.device.type != "cuda" and not _interpreting():
        return f"tensors are on {q.device.type}; the triton backend needs a GPU (or TRITON_INTERPRET=1)"
    if q.dtype not in _DTYPES:
        return f"dtype {q.dtype} is not float16/bfloat16/float32"
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.stride(-1) != 1 and t.shape[-1] > 1:
            return f"{name} has a last-dim stride of {t.stride(-1)}; the kernels read unit-stride rows"
    if not 1 <= p.head_dim <= 256 or not 1 <= p.head_dim_v <= 256:
        return f"head dims {p.head_dim}/{p.head_dim_v} are outside 1..256"
    if p.num_heads_q > _MAX_GRID_YZ or p.batch > _MAX_GRID_YZ:
        return f"{p.num_heads_q} heads x {p.batch} sequences exceed the grid's {_MAX_GRID_YZ} per dimension"
    if alibi_slopes is not None and (alibi_slopes.dtype != torch.float32 or not alibi_slopes.is_contiguous()):
        return "alibi_slopes must be contiguous float32"
    if p.varlen:
        for name, cu in (("cu_seqlens_q", cu_seqlens_q), ("cu_seqlens_k", cu_seqlens_k)):
            if cu.dtype != torch.int32 or not cu.is_contiguous():
                return f"{name} must be contiguous int32"
    return None


# --- launch ------------------------------------------------------------------------------
def _fill_tail(x: torch.Tensor, row_stride: int, head_stride: int, n_heads: int, n_cols: int,
               cu: torch.Tensor, batch: int, value: float) -> None:
    """x's packed rows past cu[batch] := value (every head, the first n_cols columns)."""
    total = x.shape[0] if x.dim() == 3 else x.shape[1]
    block_r, warps = _fill_params(x.device.type)
    _FILL.launch((triton.cdiv(total, block_r),),
                 (x, row_stride, head_stride, cu, batch, total, n_heads, n_cols, value),
                 (block_r, _block_d(n_cols) if n_cols > 1 else 1), warps)


def _alibi_args(alibi, dummy):
    if alibi is None:
        return dummy, 0
    return alibi, (alibi.stride(0) if alibi.dim() == 2 else 0)


def _forward_tma(q, k, v, out, lse, p, bm: int, bn: int, warps: int, stages: int, threshold: float) -> None:
    """The tma forward (:func:`tma_reason` said yes): 4-D descriptors of q/k/v/out as they are."""
    d = p.head_dim
    descs = [tma.TensorDescriptor(t, list(t.shape), list(t.stride()), [1, rows, 1, d])
             for t, rows in ((q, bm), (k, bn), (v, bn), (out, bm))]
    lse_t = lse if lse is not None else out
    lse_sb, lse_sh = (lse.stride(0), lse.stride(1)) if lse is not None else (0, 0)
    qk_scale = p.softmax_scale * _LOG2E
    # constexprs: HEAD_D, BLOCK_M, BLOCK_N, CAUSAL, STORE_LSE, RESCALE_TH
    _FWD_TMA[q.dtype].launch(
        (triton.cdiv(p.seqlen_q, bm), p.num_heads_q, p.batch),
        (*descs, lse_t, lse_sb, lse_sh, p.seqlen_q, p.seqlen_k, p.group, qk_scale),
        (d, bm, bn, p.window_right == 0, lse is not None, threshold),
        warps, stages,
    )


def forward(q, k, v, cu_seqlens_q, cu_seqlens_k, alibi_slopes, p, need_lse: bool, *, params=None):
    """(out, lse): out p.out_shape() in q.dtype, lse p.lse_shape() float32 (None unless need_lse).

    ``params`` (tuning only): {"fwd": (BLOCK_M, BLOCK_N, num_warps, num_stages)}, optionally
    "fwd_kernel" (one of :data:`FWD_KERNELS`) and "fwd_rescale_threshold"; the rule's kernel and
    threshold otherwise. Where :func:`tma_reason` says no, the json's tma rules are passed over
    (the next rule applies) and a tuner's ``"tma"`` runs the pointer kernel with its params."""
    out = torch.empty(p.out_shape(), dtype=q.dtype, device=q.device)
    lse = torch.empty(p.lse_shape(), dtype=torch.float32, device=q.device) if need_lse else None
    tma_ok = tma_reason(q, k, v, p) is None
    (bm, bn, warps, stages), kernel, threshold = _choice(p, "fwd", q.device.type, params, tma_ok)
    if kernel not in FWD_KERNELS:
        raise ValueError(f"kernel must be one of {FWD_KERNELS}, got {kernel!r}")
    if kernel == "tma" and tma_ok:
        _check_tma_tiles(bm, bn, source="attention forward params")
        _forward_tma(q, k, v, out, lse, p, bm, bn, warps, stages, threshold)
        return out, lse
    left, right, qk_scale, cap2 = _scalars(p)
    alibi, alibi_sb = _alibi_args(alibi_slopes, q)
    cu_q = cu_seqlens_q if p.varlen else q
    cu_k = cu_seqlens_k if p.varlen else q
    lse_t = lse if lse is not None else out
    lse_sb, lse_sh = _lse_strides(lse, p.varlen) if lse is not None else (0, 0)
    grid = (triton.cdiv(p.seqlen_q, bm), p.num_heads_q, p.batch)
    if grid[0] > 0:
        _FWD.launch(
            grid,
            (q, k, v, out, lse_t, cu_q, cu_k, alibi,
             *_strides(q, p.varlen), *_strides(k, p.varlen), *_strides(v, p.varlen), *_strides(out, p.varlen),
             lse_sb, lse_sh, alibi_sb,
             p.seqlen_q, p.seqlen_k, p.group, left, right, qk_scale, cap2),
            (p.head_dim, p.head_dim_v, bm, bn, _block_d(p.head_dim), _block_d(p.head_dim_v), p.varlen,
             p.softcap > 0, alibi_slopes is not None, lse is not None, _prec(q.dtype)),
            warps, stages,
        )
    if p.varlen:
        _fill_tail(out, out.stride(0), out.stride(1), p.num_heads_q, p.head_dim_v, cu_seqlens_q, p.batch, 0.0)
        if lse is not None:
            _fill_tail(lse, 1, lse.stride(0), p.num_heads_q, 1, cu_seqlens_q, p.batch, float("inf"))
    return out, lse


def backward(dout, q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k, alibi_slopes, p, *, params=None):
    """(dq, dk, dv), contiguous, in q/k/v's shapes and dtype. Deterministic (no atomics).

    ``params`` (tuning only): {"bwd_kv": (...), "bwd_q": (...)} as in :func:`forward`. An empty
    ``lse`` (the forward ran without it) is recomputed with this backend's forward."""
    if lse.numel() == 0:
        _, lse = forward(q, k, v, cu_seqlens_q, cu_seqlens_k, alibi_slopes, p, True)
    dq = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    dk = torch.empty(k.shape, dtype=k.dtype, device=k.device)
    dv = torch.empty(v.shape, dtype=v.dtype, device=v.device)
    lse = lse.contiguous()  # itself when already contiguous
    delta = torch.empty_like(lse)
    lse_sb, lse_sh = _lse_strides(lse, p.varlen)
    left, right, qk_scale, cap2 = _scalars(p)
    alibi, alibi_sb = _alibi_args(alibi_slopes, q)
    cu_q = cu_seqlens_q if p.varlen else q
    cu_k = cu_seqlens_k if p.varlen else q
    dev = q.device.type
    block_dv = _block_d(p.head_dim_v)
    prec = _prec(q.dtype)
    common = (p.seqlen_q, p.seqlen_k, p.group, left, right, qk_scale, cap2, p.softmax_scale)
    consts = (p.head_dim, p.head_dim_v)
    flags = (_block_d(p.head_dim), block_dv, p.varlen, p.softcap > 0, alibi_slopes is not None, prec)

    pre_m = preprocess_block_m(dev)
    if p.seqlen_q > 0:
        _PRE.launch(
            (triton.cdiv(p.seqlen_q, pre_m), p.num_heads_q, p.batch),
            (out, dout, delta, cu_q, *_strides(out, p.varlen), *_strides(dout, p.varlen), lse_sb, lse_sh, p.seqlen_q),
            (p.head_dim_v, pre_m, block_dv, p.varlen), 4,
        )
    bm, bn, warps, stages = _params(p, "bwd_kv", dev, params)
    if p.seqlen_k > 0:
        _DKDV.launch(
            (triton.cdiv(p.seqlen_k, bn), p.num_heads_k, p.batch),
            (q, k, v, dout, lse, delta, dk, dv, cu_q, cu_k, alibi,
             *_strides(q, p.varlen), *_strides(k, p.varlen), *_strides(v, p.varlen), *_strides(dout, p.varlen),
             *_strides(dk, p.varlen), *_strides(dv, p.varlen), lse_sb, lse_sh, alibi_sb, *common),
            (*consts, bm, bn, *flags), warps, stages,
        )
    bm, bn, warps, stages = _params(p, "bwd_q", dev, params)
    if p.seqlen_q > 0:
        _DQ.launch(
            (triton.cdiv(p.seqlen_q, bm), p.num_heads_q, p.batch),
            (q, k, v, dout, lse, delta, dq, cu_q, cu_k, alibi,
             *_strides(q, p.varlen), *_strides(k, p.varlen), *_strides(v, p.varlen), *_strides(dout, p.varlen),
             *_strides(dq, p.varlen), lse_sb, lse_sh, alibi_sb, *common),
            (*consts, bm, bn, *flags), warps, stages,
        )
    if p.varlen:
        _fill_tail(dq, dq.stride(0), dq.stride(1), p.num_heads_q, p.head_dim, cu_seqlens_q, p.batch, 0.0)
        _fill_tail(dk, dk.stride(0), dk.stride(1), p.num_heads_k, p.head_dim, cu_seqlens_k, p.batch, 0.0)
        _fill_tail(dv, dv.stride(0), dv.stride(1), p.num_heads_k, p.head_dim_v, cu_seqlens_k, p.batch, 0.0)
    return dq, dk, dv
