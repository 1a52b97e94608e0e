"""The attention family's contract: argument checks and the normalized problem every backend gets.

Layouts are FlashAttention's:

* dense: ``q`` (B, Sq, Hq, D), ``k`` (B, Sk, Hk, D), ``v`` (B, Sk, Hk, Dv) -> ``out``
  (B, Sq, Hq, Dv), ``lse`` (B, Hq, Sq) float32;
* varlen: ``q`` (Tq, Hq, D), ``k`` (Tk, Hk, D), ``v`` (Tk, Hk, Dv), sequence ``b`` holding
  rows ``cu_seqlens_q[b]:cu_seqlens_q[b+1]`` (and the same of ``cu_seqlens_k``), both int32 of
  length B + 1 -> ``out`` (Tq, Hq, Dv), ``lse`` (Hq, Tq) float32.

Masking, per sequence of ``sq`` queries and ``sk`` keys, query row ``i`` and key column ``j``
(0-based within the sequence), with the diagonal aligned to the bottom-right corner::

    visible(i, j) = (left  < 0 or j >= i + sk - sq - left)
                and (right < 0 or j <= i + sk - sq + right)

``causal`` is ``right = 0`` (``left`` kept; -1 = unbounded), as in FlashAttention. The score
of a visible pair is ``s = scale * q.k``, then ``s = softcap * tanh(s / softcap)`` when
``softcap > 0``, then ``s -= slope[b, h] * |i + sk - sq - j|`` with ALiBi. A query row that
sees no key gives zeros in ``out`` and ``+inf`` in ``lse`` (FlashAttention's convention, which
vLLM's ``merge_attn_states`` expects), never NaN.

GQA/MQA: query head ``h`` reads key/value head ``h // (Hq // Hk)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch

from . import check_float, check_same_device

ATTN_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
MAX_HEAD_DIM = 256


@dataclass(frozen=True)
class AttnProblem:
    """One attention call, normalized: what every backend's ``forward``/``backward`` reads.

    ``seqlen_q``/``seqlen_k`` are the dense sequence lengths, or ``max_seqlen_q``/``max_seqlen_k``
    for varlen. ``window_right`` is 0 whenever ``causal``. ``seed`` drives dropout (torch
    backend only) and is 0 without it.
    """

    varlen: bool
    batch: int
    seqlen_q: int
    seqlen_k: int
    total_q: int  # rows of q: B * Sq dense, Tq varlen
    total_k: int
    num_heads_q: int
    num_heads_k: int
    head_dim: int
    head_dim_v: int
    dtype: torch.dtype
    softmax_scale: float
    causal: bool
    window_left: int
    window_right: int
    softcap: float
    dropout_p: float
    seed: int
    has_alibi: bool
    # FlashAttention's ``deterministic``: the backward may not use a kernel with atomics
    # (cuDNN's); set by the op from its argument, False for every forward-only call.
    deterministic: bool = False

    @property
    def group(self) -> int:
        return self.num_heads_q // self.num_heads_k

    @property
    def windowed(self) -> bool:
        return self.window_left >= 0 or self.window_right >= 0

    @property
    def sees_nothing(self) -> bool:
        """No query row can see a key (no query rows, no keys, or a zero max length): out is all
        zeros and lse all +inf, gradients zeros, whatever the backend; no kernel needs to run."""
        return self.total_q == 0 or self.total_k == 0 or self.seqlen_q == 0 or self.seqlen_k == 0

    def __hash__(self) -> int:
        """The fields' hash, computed once: problems key the choice and launch caches, several
        lookups a call (the generated ``__hash__`` would rehash all twenty fields each time)."""
        h = self.__dict__.get("_hash")
        if h is None:
            h = hash(tuple(getattr(self, f) for f in _FIELDS))
            object.__setattr__(self, "_hash", h)
        return h

    def lse_shape(self) -> tuple[int, ...]:
        if self.varlen:
            return (self.num_heads_q, self.total_q)
        return (self.batch, self.num_heads_q, self.seqlen_q)

    def out_shape(self) -> tuple[int, ...]:
        if self.varlen:
            return (self.total_q, self.num_heads_q, self.head_dim_v)
        return (self.batch, self.seqlen_q, self.num_heads_q, self.head_dim_v)


_FIELDS = tuple(AttnProblem.__dataclass_fields__)


def _int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    return value


def normalize_window(window_size, causal: bool) -> tuple[int, int]:
    """FlashAttention's ``window_size=(left, right)``; -1 = unbounded; causal forces right = 0."""
    if not isinstance(window_size, (tuple, list)) or len(window_size) != 2:
        raise TypeError(f"window_size must be a (left, right) pair of ints, got {window_size!r}")
    left, right = (_int("window_size[0]", window_size[0]), _int("window_size[1]", window_size[1]))
    for side, val in (("window_size[0]", left), ("window_size[1]", right)):
        if val < -1:
            raise ValueError(f"{side} must be -1 (unbounded) or >= 0, got {val}")
    if causal:
        right = 0
    return left, right


def _check_qkv(q, k, v, dims: int) -> None:
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != dims:
            layout = "(batch, seqlen, heads, head_dim)" if dims == 4 else "(total_tokens, heads, head_dim)"
            raise ValueError(f"{name} must be {dims}-D {layout}, got shape {tuple(t.shape)}")
        if t.dtype not in ATTN_DTYPES:
            raise TypeError(f"{name} has dtype {t.dtype}; expected float16, bfloat16 or float32")
    for name, t in (("k", k), ("v", v)):
        if t.dtype != q.dtype:
            raise ValueError(f"{name} has dtype {t.dtype} but q has {q.dtype}: q, k and v must share a dtype")
        check_same_device(name, t, "q", q)


def _check_heads(q, k, v) -> None:
    hq, hk, hv = q.shape[-2], k.shape[-2], v.shape[-2]
    if hk != hv:
        raise ValueError(f"k has {hk} heads but v has {hv}: they must match")
    if hk == 0 or hq % hk != 0:
        raise ValueError(f"q's {hq} heads must be a multiple of k's {hk} heads (GQA/MQA)")
    d, dk, dv = q.shape[-1], k.shape[-1], v.shape[-1]
    if dk != d:
        raise ValueError(f"k has head_dim {dk} but q has {d}: they must match")
    for name, val in (("q", d), ("v", dv)):
        if not 1 <= val <= MAX_HEAD_DIM:
            raise ValueError(f"{name}'s head_dim is {val}; supported: 1..{MAX_HEAD_DIM}")


def _check_scalars(softmax_scale, dropout_p, softcap, head_dim: int) -> float:
    check_float("dropout_p", dropout_p)
    if dropout_p >= 1.0:
        raise ValueError(f"dropout_p must be in [0, 1), got {dropout_p}")
    check_float("softcap", softcap)
    if softmax_scale is None:
        return 1.0 / math.sqrt(head_dim)
    check_float("softmax_scale", softmax_scale)
    if softmax_scale <= 0:
        raise ValueError(f"softmax_scale must be > 0, got {softmax_scale}")
    return float(softmax_scale)


def _check_alibi(alibi_slopes, batch: int, hq: int, q: torch.Tensor) -> None:
    if alibi_slopes is None:
        return
    if not isinstance(alibi_slopes, torch.Tensor):
        raise TypeError(f"alibi_slopes must be a torch.Tensor or None, got {type(alibi_slopes).__name__}")
    if alibi_slopes.dtype != torch.float32:
        raise ValueError(f"alibi_slopes has dtype {alibi_slopes.dtype}; expected float32")
    if tuple(alibi_slopes.shape) not in ((hq,), (batch, hq)):
        raise ValueError(
            f"alibi_slopes has shape {tuple(alibi_slopes.shape)}; expected ({hq},) or ({batch}, {hq})"
        )
    check_same_device("alibi_slopes", alibi_slopes, "q", q)


def _problem(q, k, v, *, varlen, batch, sq, sk, scale, causal, window, softcap, dropout_p, seed, alibi):
    left, right = window
    return AttnProblem(
        varlen=varlen, batch=batch, seqlen_q=sq, seqlen_k=sk, total_q=q.shape[0] if varlen else batch * sq,
        total_k=k.shape[0] if varlen else batch * sk, num_heads_q=q.shape[-2], num_heads_k=k.shape[-2],
        head_dim=q.shape[-1], head_dim_v=v.shape[-1], dtype=q.dtype, softmax_scale=scale, causal=bool(causal),
        window_left=left, window_right=right, softcap=float(softcap), dropout_p=float(dropout_p),
        seed=int(seed) if dropout_p > 0 else 0, has_alibi=alibi is not None,
    )


# Accepted dense calls, by everything their checks read: shapes, dtypes, devices and the scalars
# (plain Python numbers only, so no key holds a tensor or a bool standing in for 1). The facade and
# the op both check a call, eagerly on every call: a hit costs a key instead of ~30 Python-level
# checks. Only accepted calls are stored, so a bad call always runs the checks and raises.
_DENSE_ACCEPTED: dict[tuple, AttnProblem] = {}
_MEMO_LIMIT = 1024
_PLAIN = (float, int)
_PLAIN_OR_NONE = (float, int, type(None))


def _dense_key(q, k, v, softmax_scale, causal, window_size, softcap, alibi_slopes, dropout_p, seed):
    """The memo key of a dense call, or None for calls the memo leaves to the checks (tensor
    subclasses, ALiBi, a window that is not a tuple of two ints, dropout: its seed changes per call)."""
    if (type(q) is not torch.Tensor or type(k) is not torch.Tensor or type(v) is not torch.Tensor
            or alibi_slopes is not None or type(window_size) is not tuple or len(window_size) != 2):
        return None
    left, right = window_size
    if (type(left) is not int or type(right) is not int or type(causal) is not bool
            or type(softmax_scale) not in _PLAIN_OR_NONE or type(softcap) not in _PLAIN
            or type(dropout_p) not in _PLAIN or dropout_p != 0 or seed != 0):
        return None
    return (q.shape, k.shape, v.shape, q.dtype, k.dtype, v.dtype, q.device, k.device, v.device,
            softmax_scale, causal, left, right, softcap)


def check_dense(q, k, v, softmax_scale, causal, window_size, softcap, alibi_slopes, dropout_p, seed=0) -> AttnProblem:
    """Checks a dense (B, S, H, D) call and returns its :class:`AttnProblem` (memoized for
    accepted calls, see ``_DENSE_ACCEPTED``)."""
    key = _dense_key(q, k, v, softmax_scale, causal, window_size, softcap, alibi_slopes, dropout_p, seed)
    if key is not None:
        hit = _DENSE_ACCEPTED.get(key)
        if hit is not None:
            return hit
    p = _check_dense(q, k, v, softmax_scale, causal, window_size, softcap, alibi_slopes, dropout_p, seed)
    if key is not None:
        if len(_DENSE_ACCEPTED) >= _MEMO_LIMIT:
            _DENSE_ACCEPTED.clear()
        _DENSE_ACCEPTED[key] = p
    return p


def _check_dense(q, k, v, softmax_scale, causal, window_size, softcap, alibi_slopes, dropout_p, seed) -> AttnProblem:
    _check_qkv(q, k, v, 4)
    b, sq = q.shape[0], q.shape[1]
    if k.shape[0] != b or v.shape[0] != b:
        raise ValueError(f"q, k and v must share the batch size: got {q.shape[0]}, {k.shape[0]}, {v.shape[0]}")
    if v.shape[1] != k.shape[1]:
        raise ValueError(f"v has seqlen {v.shape[1]} but k has {k.shape[1]}: they must match")
    _check_heads(q, k, v)
    scale = _check_scalars(softmax_scale, dropout_p, softcap, q.shape[-1])
    window = normalize_window(window_size, bool(causal))
    _check_alibi(alibi_slopes, b, q.shape[2], q)
    return _problem(q, k, v, varlen=False, batch=b, sq=sq, sk=k.shape[1], scale=scale, causal=causal,
                    window=window, softcap=softcap, dropout_p=dropout_p, seed=seed, alibi=alibi_slopes)


def _check_cu(name: str, cu, q: torch.Tensor) -> None:
    if not isinstance(cu, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(cu).__name__}")
    if cu.dtype != torch.int32:
        raise ValueError(f"{name} has dtype {cu.dtype}; expected int32")
    if cu.dim() != 1 or cu.shape[0] < 2:
        raise ValueError(f"{name} must be 1-D with batch + 1 >= 2 entries, got shape {tuple(cu.shape)}")
    check_same_device(name, cu, "q", q)


def check_varlen(
    q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, softmax_scale, causal, window_size,
    softcap, alibi_slopes, dropout_p, seed=0,
) -> AttnProblem:
    """Checks a packed varlen call (shapes, dtypes, devices; not the cu_seqlens values, see
    :func:`check_seqlens_values`) and returns its :class:`AttnProblem`."""
    _check_qkv(q, k, v, 3)
    if v.shape[0] != k.shape[0]:
        raise ValueError(f"v has {v.shape[0]} tokens but k has {k.shape[0]}: they must match")
    _check_heads(q, k, v)
    _check_cu("cu_seqlens_q", cu_seqlens_q, q)
    _check_cu("cu_seqlens_k", cu_seqlens_k, q)
    if cu_seqlens_q.shape[0] != cu_seqlens_k.shape[0]:
        raise ValueError(
            f"cu_seqlens_q has {cu_seqlens_q.shape[0]} entries but cu_seqlens_k has {cu_seqlens_k.shape[0]}: "
            "both must be batch + 1 long"
        )
    for name, val in (("max_seqlen_q", max_seqlen_q), ("max_seqlen_k", max_seqlen_k)):
        if _int(name, val) < 0:
            raise ValueError(f"{name} must be >= 0, got {val}")
    batch = cu_seqlens_q.shape[0] - 1
    scale = _check_scalars(softmax_scale, dropout_p, softcap, q.shape[-1])
    window = normalize_window(window_size, bool(causal))
    _check_alibi(alibi_slopes, batch, q.shape[1], q)
    return _problem(q, k, v, varlen=True, batch=batch, sq=max_seqlen_q, sk=max_seqlen_k, scale=scale,
                    causal=causal, window=window, softcap=softcap, dropout_p=dropout_p, seed=seed,
                    alibi=alibi_slopes)


def check_seqlens_values(cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, total_q, total_k) -> None:
    """The cu_seqlens values: start at 0, non-decreasing, end within the packed tensors, and no
    sequence longer than its max_seqlen. Reads both tensors to the host (one small copy each)."""
    check_cu_values("cu_seqlens_q", cu_seqlens_q, max_seqlen_q, total_q, "q")
    check_cu_values("cu_seqlens_k", cu_seqlens_k, max_seqlen_k, total_k, "k")


def check_cu_values(name: str, cu: torch.Tensor, max_len: int, total: int, what: str) -> None:
    """One cu_seqlens tensor's values (see :func:`check_seqlens_values`); ``what`` names the
    packed tensor ("q" or "k"). One small device-to-host copy."""
    vals = cu.tolist()
    if vals[0] != 0:
        raise ValueError(f"{name}[0] must be 0, got {vals[0]}")
    lens = [b - a for a, b in zip(vals, vals[1:])]
    bad = next((i for i, n in enumerate(lens) if n < 0), None)
    if bad is not None:
        raise ValueError(f"{name} must be non-decreasing: {name}[{bad + 1}] = {vals[bad + 1]} < {vals[bad]}")
    if vals[-1] > total:
        raise ValueError(f"{name}[-1] = {vals[-1]} is past the {total} rows of {what}")
    longest = max(lens)
    if longest > max_len:
        i = lens.index(longest)
        raise ValueError(
            f"sequence {i} has {longest} {what} rows but max_seqlen_{what} is {max_len}: "
            f"max_seqlen_{what} must be >= every sequence's length"
        )


def check_op_args(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, softmax_scale, causal,
                  window_left, window_right, softcap, alibi_slopes, dropout_p, seed) -> AttnProblem:
    """The registered ops' arguments (dense when both cu_seqlens are None) -> :class:`AttnProblem`."""
    window = (window_left, window_right)
    if cu_seqlens_q is None and cu_seqlens_k is None:
        return check_dense(q, k, v, softmax_scale, causal, window, softcap, alibi_slopes, dropout_p, seed)
    if cu_seqlens_q is None or cu_seqlens_k is None:
        raise ValueError("cu_seqlens_q and cu_seqlens_k must both be given (varlen) or both be None (dense)")
    return check_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, softmax_scale, causal,
                        window, softcap, alibi_slopes, dropout_p, seed)


def check_backward(dout: torch.Tensor, out: torch.Tensor, lse: torch.Tensor, p: AttnProblem) -> None:
    if tuple(dout.shape) != p.out_shape():
        raise ValueError(f"dout has shape {tuple(dout.shape)}; expected {p.out_shape()}")
    if tuple(lse.shape) != p.lse_shape():
        raise ValueError(f"lse has shape {tuple(lse.shape)}; expected {p.lse_shape()}")
    if lse.dtype != torch.float32:
        raise ValueError(f"lse has dtype {lse.dtype}; expected float32")
