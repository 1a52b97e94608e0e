"""The attention family, part 1: FlashAttention's ``flash_attn_func`` / ``flash_attn_varlen_func``.

Custom ops (``torch.ops.rocm_accel.*``), one pair for the dense and the varlen layouts alike
(``cu_seqlens_q`` is None for dense):

* ``flash_attn_fwd(q, k, v, cu_seqlens_q?, cu_seqlens_k?, max_seqlen_q, max_seqlen_k,
  softmax_scale, causal, window_left, window_right, softcap, alibi_slopes?, dropout_p, seed,
  return_lse, backend="auto", deterministic=False) -> (out, lse)``; ``lse`` is empty (numel 0)
  unless ``return_lse``; ``deterministic`` only travels to the backward;
* ``flash_attn_bwd(dout, q, k, v, out, lse, ...same options..., backend, deterministic) -> (dq, dk, dv)``.

``flash_attn_fwd`` is differentiable through ``torch.library.register_autograd``: its
backward calls ``flash_attn_bwd``, so eager training, ``torch.compile`` and AOT autograd all
see two registered ops with fake implementations. ``lse`` is not differentiable (as in
FlashAttention). The layouts and the masking rules are in :mod:`vllm_rocm_accel.checks.attention`.

The public functions here (:func:`flash_attn_func`, :func:`flash_attn_varlen_func`, used by
the facade) validate, pad head dims that are not multiples of 8 with zeros (sliced off after,
so gradients flow through the pad), ask for the LSE whenever a backward may need it, and draw
the dropout seed from torch's generator.

Argument checks run before any backend (nothing is written on a bad call); for varlen the
``cu_seqlens`` values are checked too (one small device-to-host copy each), unless
``VLLM_ROCM_ACCEL_CHECK_SEQLENS=0`` or a CUDA graph is being captured.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import torch
import torch.nn.functional as F

from .. import dispatch
from ..backends.aiter import attention as aiter_attn
from ..backends.torch import attention as torch_attn
from ..checks.attention import AttnProblem, check_backward, check_dense, check_seqlens_values, check_varlen
from ..checks.attention import check_op_args as problem_of
from ..fake_impls import attention as fake
from ..registry import register_op
from . import paged_attention as paged
from .call_prep import grad_needed, host_value_checks_on, unit_last
from .stats import count

FWD = "flash_attn_fwd"
BWD = "flash_attn_bwd"
HEAD_DIM_MULTIPLE = 8

# --- backends ---------------------------------------------------------------
_triton_mod = None


def _triton():
    global _triton_mod
    if _triton_mod is None:
        from ..backends.triton import attention as triton_attn  # imports triton: only on first use

        _triton_mod = triton_attn
    return _triton_mod


def _triton_forward(*args):
    return _triton().forward(*args)


def _triton_backward(*args):
    return _triton().backward(*args)


def _triton_supports(*args):
    return _triton().supports_args(*args)


def _call_shape(q, k, v, cu_q, cu_k, alibi, p: AttnProblem) -> dispatch.CallShape:
    """Policy rows are the (max) key length, columns the head dim."""
    return dispatch.CallShape(q.device, q.dtype, p.seqlen_k, p.head_dim)


_aiter_gate = dispatch.aiter_supported_for("mha")  # vLLM gates AITER's MHA with VLLM_ROCM_USE_AITER_MHA


def _aiter_supported(device: torch.device) -> Optional[str]:
    return _aiter_gate(device) or aiter_attn.arch_unsupported_reason(device)


def _dispatch(op: str, runs: dict) -> dispatch.OpDispatch:
    return dispatch.OpDispatch(
        op,
        [
            dispatch.Backend("aiter", runs["aiter"], _aiter_supported, aiter_attn.supports_args),
            dispatch.Backend("triton", runs["triton"], dispatch.triton_supported, _triton_supports),
            dispatch.Backend("torch", runs["torch"], dispatch.torch_supported, torch_attn.supports_args,
                             fast_path=torch_attn.fast_path if op == FWD else torch_attn.fast_backward),
        ],
        _call_shape,
    )


FLASH_ATTN_FWD = _dispatch(FWD, {"aiter": aiter_attn.forward, "triton": _triton_forward, "torch": torch_attn.forward})
FLASH_ATTN_BWD = _dispatch(BWD, {"aiter": aiter_attn.backward, "triton": _triton_backward, "torch": torch_attn.backward})


# --- the checks shared by impls and fakes -------------------------------------
def _check_values(p: AttnProblem, cu_seqlens_q, cu_seqlens_k) -> None:
    if p.varlen and host_value_checks_on(cu_seqlens_q):
        check_seqlens_values(cu_seqlens_q, cu_seqlens_k, p.seqlen_q, p.seqlen_k, p.total_q, p.total_k)


def _empty_result(q, p: AttnProblem, return_lse: bool):
    """Calls no backend needs to see (``p.sees_nothing``)."""
    out = torch.zeros(p.out_shape(), dtype=q.dtype, device=q.device)
    lse = torch.full(p.lse_shape() if return_lse else (0,), float("inf"), dtype=torch.float32, device=q.device)
    return out, lse


def _choice_key(backend: str, q, k, v, alibi, p: AttnProblem) -> Optional[tuple]:
    """Cache key for the backend choice of a dense call without dropout (varlen and dropout calls,
    whose problems change every call, take the full path): everything the policy rules and the
    backends' predicates read -- the problem (shapes, dtype, options), the device, the strides, the
    ALiBi layout and the switches torch's cuDNN eligibility reads (``_cudnn_accepts``)."""
    if p.varlen or p.dropout_p > 0:
        return None
    return (backend, p, q.device, q.stride(), k.stride(), v.stride(), None if alibi is None else alibi.shape,
            torch.backends.cuda.cudnn_sdp_enabled(), torch.are_deterministic_algorithms_enabled())


# --- op implementations -----------------------------------------------------
def flash_attn_fwd_impl(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens_q: Optional[torch.Tensor],
    cu_seqlens_k: Optional[torch.Tensor],
    max_seqlen_q: int,
    max_seqlen_k: int,
    softmax_scale: float,
    causal: bool,
    window_left: int,
    window_right: int,
    softcap: float,
    alibi_slopes: Optional[torch.Tensor],
    dropout_p: float,
    seed: int,
    return_lse: bool,
    backend: str = "auto",
    deterministic: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    p = problem_of(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, softmax_scale, causal,
                   window_left, window_right, softcap, alibi_slopes, dropout_p, seed)
    _check_values(p, cu_seqlens_q, cu_seqlens_k)
    q, k, v = unit_last(q), unit_last(k), unit_last(v)
    alibi = None if alibi_slopes is None else alibi_slopes.contiguous()
    args = (q, k, v, cu_seqlens_q, cu_seqlens_k, alibi, p)
    impl = FLASH_ATTN_FWD.select(backend, args, _choice_key(backend, q, k, v, alibi, p))
    count(FWD, impl.name)
    if p.sees_nothing:
        return _empty_result(q, p, return_lse)
    out, lse = impl.run(q, k, v, cu_seqlens_q, cu_seqlens_k, alibi, p, return_lse)
    if not return_lse:
        lse = torch.empty(0, dtype=torch.float32, device=q.device)
    return out, lse


def flash_attn_bwd_impl(
    dout: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    cu_seqlens_q: Optional[torch.Tensor],
    cu_seqlens_k: Optional[torch.Tensor],
    max_seqlen_q: int,
    max_seqlen_k: int,
    softmax_scale: float,
    causal: bool,
    window_left: int,
    window_right: int,
    softcap: float,
    alibi_slopes: Optional[torch.Tensor],
    dropout_p: float,
    seed: int,
    backend: str = "auto",
    deterministic: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of ``flash_attn_fwd``'s ``out``. An empty ``lse`` (the forward ran without
    ``return_lse``) goes to the backend as it is: the triton and aiter backwards recompute it with
    one forward of their own, as does the torch backend's cuDNN path; its math path recomputes the
    probabilities anyway. ``deterministic`` keeps auto off backwards with atomics (cuDNN's)."""
    p = problem_of(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, softmax_scale, causal,
                   window_left, window_right, softcap, alibi_slopes, dropout_p, seed)
    if deterministic:
        p = dataclasses.replace(p, deterministic=True)
    lse_given = lse.numel() > 0 or p.sees_nothing
    if lse_given:
        check_backward(dout, out, lse, p)
    else:
        check_backward(dout, out, torch.empty(p.lse_shape(), dtype=torch.float32, device="meta"), p)
    _check_values(p, cu_seqlens_q, cu_seqlens_k)
    dout, q, k, v, out = (unit_last(t) for t in (dout, q, k, v, out))
    alibi = None if alibi_slopes is None else alibi_slopes.contiguous()
    args = (q, k, v, cu_seqlens_q, cu_seqlens_k, alibi, p)
    impl = FLASH_ATTN_BWD.select(backend, args, _choice_key(backend, q, k, v, alibi, p))
    count(BWD, impl.name)
    if p.sees_nothing:
        return torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
    return impl.run(dout, q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k, alibi, p)


# --- autograd -----------------------------------------------------------------
_FWD_ARGS = ("q", "k", "v", "cu_seqlens_q", "cu_seqlens_k", "max_seqlen_q", "max_seqlen_k", "softmax_scale",
             "causal", "window_left", "window_right", "softcap", "alibi_slopes", "dropout_p", "seed",
             "return_lse", "backend", "deterministic")


def _setup_context(ctx, inputs, output) -> None:
    named = dict(zip(_FWD_ARGS, inputs))
    out, lse = output
    ctx.save_for_backward(named["q"], named["k"], named["v"], out, lse, named["cu_seqlens_q"],
                          named["cu_seqlens_k"], named["alibi_slopes"])
    ctx.options = tuple(named[n] for n in ("max_seqlen_q", "max_seqlen_k", "softmax_scale", "causal",
                                           "window_left", "window_right", "softcap"))
    ctx.dropout = (named["dropout_p"], named["seed"])
    ctx.backend = named["backend"]
    ctx.deterministic = named["deterministic"]
    ctx.mark_non_differentiable(lse)


_REAL_OR_NONE = (torch.Tensor, type(None))


def _plain_eager(*tensors) -> bool:
    """Whether a call of the op with these tensor arguments (None for an absent optional one) may
    run the op's implementation directly: real tensors only (no subclass, no fake or functional
    wrapper), no dispatch or function mode (no tracer), no functorch transform, no profiler (whose
    trace should show the op); the caller has ruled out compiling. The op's CPU / CUDA kernel is
    that same Python function, so the results are the same; the dispatcher's boxing of the op's
    18-20 arguments is what is skipped (~15-40 us a call)."""
    for t in tensors:
        if type(t) not in _REAL_OR_NONE:
            return False
    return (not torch._C._len_torch_dispatch_stack() and not torch._C._is_torch_function_mode_enabled()
            and not torch._C._are_functorch_transforms_active() and not torch.autograd._profiler_enabled())


def _plain_eager_backward(*tensors) -> bool:
    """:func:`_plain_eager`, not compiling, and no ``create_graph`` (grad mode is off in a backward
    without it)."""
    return not torch.is_grad_enabled() and not torch.compiler.is_compiling() and _plain_eager(*tensors)


def _backward(ctx, dout, _dlse):
    """``flash_attn_bwd`` of the saved forward. In plain eager autograd its implementation is
    called directly, skipping the dispatcher's boxing of the op's 20 arguments (~20 us a call;
    the op's CPU/CUDA kernel is that same Python function): the op is what a tracer, a mode, a
    profiler or a double backward sees, and those take it."""
    q, k, v, out, lse, cu_q, cu_k, alibi = ctx.saved_tensors
    args = (dout, q, k, v, out, lse, cu_q, cu_k, *ctx.options, alibi, *ctx.dropout, ctx.backend, ctx.deterministic)
    if _plain_eager_backward(dout, q, k, v, out, lse, cu_q, cu_k, alibi):
        dq, dk, dv = flash_attn_bwd_impl(*args)
    else:
        dq, dk, dv = torch.ops.rocm_accel.flash_attn_bwd(*args)
    return (dq, dk, dv) + (None,) * (len(_FWD_ARGS) - 3)


# --- the public functions (facade) ------------------------------------------------
def _pad_to(t: torch.Tensor, multiple: int) -> torch.Tensor:
    extra = -t.shape[-1] % multiple
    return F.pad(t, (0, extra)) if extra else t


def _prepare(q, k, v):
    """Head dims that are not multiples of 8 get zero columns (q.k and p@v unchanged)."""
    dv = v.shape[-1]
    if q.shape[-1] % HEAD_DIM_MULTIPLE or dv % HEAD_DIM_MULTIPLE:
        q, k, v = (_pad_to(t, HEAD_DIM_MULTIPLE) for t in (q, k, v))
    return q, k, v, dv


def _seed(dropout_p: float) -> int:
    if dropout_p <= 0:
        return 0
    return int(torch.empty((), dtype=torch.int64).random_(0, 2**62).item())  # torch's generator: manual_seed replays


def _forward_op(needs_grad: bool, *args):
    """``torch.ops.rocm_accel.flash_attn_fwd(*args)``. When no gradient is needed (inference) in
    plain eager mode (:func:`_plain_eager`), the op's implementation is called directly; otherwise
    without a gradient below the autograd dispatch key, as the registered autograd kernel itself
    does then (``torch._library.autograd``'s ``forward_no_grad``), without that kernel's Python.
    With a gradient, or under ``torch.compile`` (for Dynamo to trace), the op is called plainly."""
    if needs_grad or torch.compiler.is_compiling():
        return torch.ops.rocm_accel.flash_attn_fwd(*args)
    if _plain_eager(*args[:5], args[12]):  # q, k, v, cu_seqlens_q, cu_seqlens_k, alibi_slopes
        return flash_attn_fwd_impl(*args)
    with torch._C._AutoDispatchBelowAutograd():
        return torch.ops.rocm_accel.flash_attn_fwd(*args)


def _finish(out, lse, dv, return_lse):
    if out.shape[-1] != dv:
        out = out[..., :dv]
    return (out, lse) if return_lse else out


def flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0,
                    alibi_slopes=None, deterministic=False, return_lse=False, backend="auto"):
    """FlashAttention's ``flash_attn_func`` on (B, S, H, D) tensors; ``(out, lse)`` with ``return_lse``.

    ``deterministic`` (FlashAttention's): with True, auto's backward never takes a kernel with
    atomics (the torch backend's cuDNN path); ours (triton) is atomic-free either way. AITER's
    backward is called in its non-deterministic mode regardless (see backends/aiter/attention.py)."""
    p = check_dense(q, k, v, softmax_scale, causal, window_size, softcap, alibi_slopes, dropout_p)
    seed = _seed(p.dropout_p)
    q, k, v, dv = _prepare(q, k, v)
    needs_grad = grad_needed(q, k, v)
    out, lse = _forward_op(
        needs_grad, q, k, v, None, None, 0, 0, p.softmax_scale, p.causal, p.window_left, p.window_right,
        p.softcap, alibi_slopes, p.dropout_p, seed, bool(return_lse) or needs_grad, backend or "auto",
        bool(deterministic),
    )
    return _finish(out, lse, dv, return_lse)


def flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p=0.0,
                           softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0, alibi_slopes=None,
                           deterministic=False, return_lse=False, backend="auto", *, block_table=None,
                           seqused_k=None, num_splits=0, k_descale=None, v_descale=None, out=None,
                           check_values=True):
    """FlashAttention's ``flash_attn_varlen_func`` on packed (T, H, D) tensors; lse is (H, Tq).

    With ``block_table`` (B, max_blocks) and ``seqused_k`` (B,), ``k`` / ``v`` are vLLM's paged
    caches (num_blocks, block_size, Hk, D) and ``cu_seqlens_k`` must be None: the paged forward
    (:func:`vllm_rocm_accel.ops.paged_attention.flash_attn_varlen_paged`; forward-only, FP8 caches
    with ``k_descale`` / ``v_descale``, ``num_splits`` 0 = heuristic, 1 = off, G = forced, ``out``
    written in place, ``check_values=False`` skips the index values' checks for a caller that
    validated them itself). The paged-only arguments are refused without ``block_table``."""
    if block_table is not None:
        if cu_seqlens_k is not None:
            raise ValueError("cu_seqlens_k must be None with block_table: the paged cache's lengths are seqused_k")
        return paged.flash_attn_varlen_paged(
            q, k, v, cu_seqlens_q, max_seqlen_q, max_seqlen_k, seqused_k=seqused_k, block_table=block_table,
            dropout_p=dropout_p, softmax_scale=softmax_scale, causal=causal, window_size=window_size,
            softcap=softcap, alibi_slopes=alibi_slopes, return_lse=return_lse, num_splits=num_splits,
            k_descale=k_descale, v_descale=v_descale, out=out, backend=backend, check_values=check_values,
        )
    for name, given in (("seqused_k", seqused_k), ("k_descale", k_descale), ("v_descale", v_descale), ("out", out)):
        if given is not None:
            raise ValueError(f"{name} is only supported with block_table (the paged forward)")
    if not check_values:
        raise ValueError("check_values=False is only supported with block_table (the paged forward)")
    if isinstance(num_splits, bool) or not isinstance(num_splits, int) or num_splits < 0:
        raise ValueError(f"num_splits must be an int >= 0, got {num_splits!r}")
    p = check_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, softmax_scale, causal,
                     window_size, softcap, alibi_slopes, dropout_p)
    seed = _seed(p.dropout_p)
    q, k, v, dv = _prepare(q, k, v)
    needs_grad = grad_needed(q, k, v)
    out, lse = _forward_op(
        needs_grad, q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, p.softmax_scale,
        p.causal, p.window_left, p.window_right, p.softcap, alibi_slopes, p.dropout_p, seed,
        bool(return_lse) or needs_grad, backend or "auto", bool(deterministic),
    )
    return _finish(out, lse, dv, return_lse)


# --- registration ---------------------------------------------------------------
def example_args(op: str, rows: int, hidden: int, dtype: torch.dtype, device: torch.device) -> tuple:
    """A typical call for doctor: ``rows`` tokens of one sequence, 32 query / 8 kv heads, D = 128."""
    q = torch.empty(1, rows, 32, 128, dtype=dtype, device=device)
    k = torch.empty(1, rows, 8, 128, dtype=dtype, device=device)
    v = torch.empty(1, rows, 8, 128, dtype=dtype, device=device)
    p = check_dense(q, k, v, None, True, (-1, -1), 0.0, None, 0.0)
    return (q, k, v, None, None, None, p)


DISPATCHERS = {FWD: FLASH_ATTN_FWD, BWD: FLASH_ATTN_BWD}
_autograd_registered = False


def register() -> dict[str, torch._ops.OpOverload]:
    global _autograd_registered
    ops = {
        FWD: register_op(FWD, flash_attn_fwd_impl, fake.flash_attn_fwd),
        BWD: register_op(BWD, flash_attn_bwd_impl, fake.flash_attn_bwd),
    }
    if not _autograd_registered:
        torch.library.register_autograd(f"rocm_accel::{FWD}", _backward, setup_context=_setup_context)
        _autograd_registered = True
    return ops
