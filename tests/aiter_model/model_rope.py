"""A torch model of amd-aiter 0.1.7's ``rope_cached_positions_2c_fwd_impl`` (tests only).

The signature mirrors the wheel's (``aiter/ops/rope.py``; a test compares them) and the
function enforces the kernel's contract as its docstring and AITER's own callers
(``aiter/rotary_embedding.py``, ``rope_cached_positions_2c_fwd{,_inplace}``) define it,
raising :class:`~aiter_model.model.AiterContractError` where the real kernel would fail
or read/write the wrong memory:

* inputs and outputs are 4-D "sbhd" tensors of float16/bfloat16 with unit last-dim
  stride (other strides are honoured, as for AITER's own sliced ``query[..., :rotary_dim]``);
  ``input_x``/``output_x`` and ``input_y``/``output_y`` have equal shapes, x and y share
  s, b and d, and all four one dtype and device;
* ``positions`` is a contiguous int64 [s, b] tensor (a strided one aborts the process
  inside AITER) whose every value indexes a row of the tables (the kernel does not check);
* ``cos``/``sin`` are contiguous [max_position, 1, 1, d_rot // 2] tables in the inputs'
  dtype (``reuse_freqs_front_part=True``: rotated width d_rot = 2 * cos.shape[-1] <= d);
* each output is either exactly its input (same pointer, shape and strides: the in-place
  use of the wheel's ``*_inplace`` wrappers) or shares no element with any input; the two
  outputs share no element (checked exactly: query and key may be interleaved row-strided
  views of one fused qkv, as vLLM passes them).

Numerics: float32 arithmetic on the loaded values (cos/sin as stored, in the input
dtype), one rounding on store; with d > d_rot the trailing d - d_rot elements are copied
(``nope_first=False``). ``reuse_freqs_front_part=False`` and ``nope_first=True`` are not
modelled (NotImplementedError).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .model import DTYPES, AiterContractError, _byte_range, _record, _require  # noqa: F401

__all__ = ["rope_cached_positions_2c_fwd_impl", "MODELLED_ROPE"]
MODELLED_ROPE = ("rope_cached_positions_2c_fwd_impl",)


def _check_sbhd(fn: str, name: str, t, like: Optional[Tensor] = None) -> None:
    _require(isinstance(t, torch.Tensor), fn, f"{name} must be a Tensor, got {type(t).__name__}")
    _require(t.dim() == 4, fn, f"{name} must be 4-D sbhd [s, b, h, d], got shape {tuple(t.shape)}")
    _require(t.dtype in DTYPES, fn, f"{name} has dtype {t.dtype}; the rope kernels take float16/bfloat16")
    _require(t.stride(3) == 1 or t.shape[3] == 1, fn, f"{name} has last-dim stride {t.stride(3)}; the kernel reads unit-stride heads")
    if like is not None:
        _require(t.dtype == like.dtype, fn, f"{name} has dtype {t.dtype}, input_x has {like.dtype} (one precision for all)")
        _require(t.device == like.device, fn, f"{name} is on {t.device}, input_x on {like.device}")


def _same_view(a: Tensor, b: Tensor) -> bool:
    return a.data_ptr() == b.data_ptr() and a.shape == b.shape and a.stride() == b.stride()


def _elements(t: Tensor) -> Tensor:
    """The storage offsets (in elements) that ``t`` covers."""
    index = torch.arange(t.storage_offset() + 1 + sum((n - 1) * st for n, st in zip(t.shape, t.stride())))
    return index.as_strided(t.shape, t.stride(), t.storage_offset()).reshape(-1)


def _overlap(a: Tensor, b: Tensor) -> bool:
    """Whether ``a`` and ``b`` share an element. Exact, so the interleaved rows of vLLM's query and
    key (views of one fused qkv) are distinct; byte ranges decide only across element sizes."""
    ra, rb = _byte_range(a), _byte_range(b)
    if ra is None or rb is None or not (ra[0] < rb[1] and rb[0] < ra[1]):
        return False
    if a.untyped_storage().data_ptr() != b.untyped_storage().data_ptr() or a.element_size() != b.element_size():
        return True
    return bool(torch.isin(_elements(a), _elements(b)).any())


def _rotate(x: Tensor, cos: Tensor, sin: Tensor, rotate_style: int) -> Tensor:
    """float32 rotation of the first 2 * cos.shape[-1] elements of x; the rest copied."""
    half = cos.shape[-1]
    rot = 2 * half
    xf = x.float()
    if rotate_style == 0:
        x1, x2 = xf[..., :half], xf[..., half:rot]
    else:
        x1, x2 = xf[..., 0:rot:2], xf[..., 1:rot:2]
    o1 = x1 * cos - x2 * sin
    o2 = x2 * cos + x1 * sin
    out = xf.clone()
    if rotate_style == 0:
        out[..., :half], out[..., half:rot] = o1, o2
    else:
        out[..., 0:rot:2], out[..., 1:rot:2] = o1, o2
    return out.to(x.dtype)


def rope_cached_positions_2c_fwd_impl(
    output_x: Tensor,
    output_y: Tensor,
    input_x: Tensor,
    input_y: Tensor,
    cos: Tensor,
    sin: Tensor,
    positions: Tensor,
    rotate_style: int,
    reuse_freqs_front_part: bool,
    nope_first: bool,
) -> None:
    fn = "rope_cached_positions_2c_fwd_impl"
    _record(
        fn, output_x=output_x, output_y=output_y, input_x=input_x, input_y=input_y, cos=cos, sin=sin,
        positions=positions, rotate_style=rotate_style, reuse_freqs_front_part=reuse_freqs_front_part,
        nope_first=nope_first,
    )
    _check_sbhd(fn, "input_x", input_x)
    for name, t in (("input_y", input_y), ("output_x", output_x), ("output_y", output_y)):
        _check_sbhd(fn, name, t, like=input_x)
    s, b, _, d = input_x.shape
    _require(output_x.shape == input_x.shape, fn, f"output_x has shape {tuple(output_x.shape)}, input_x has {tuple(input_x.shape)}")
    _require(output_y.shape == input_y.shape, fn, f"output_y has shape {tuple(output_y.shape)}, input_y has {tuple(input_y.shape)}")
    _require(input_y.shape[0] == s and input_y.shape[1] == b and input_y.shape[3] == d, fn,
             f"input_y has shape {tuple(input_y.shape)}; expected [{s}, {b}, h_y, {d}] like input_x")
    _require(rotate_style in (0, 1) and not isinstance(rotate_style, bool), fn, f"rotate_style must be 0 (NeoX) or 1 (GPT-J), got {rotate_style!r}")
    _require(isinstance(reuse_freqs_front_part, bool) and isinstance(nope_first, bool), fn,
             "reuse_freqs_front_part and nope_first must be bools")
    if not reuse_freqs_front_part or nope_first:
        raise NotImplementedError("the model covers reuse_freqs_front_part=True, nope_first=False only")

    _require(isinstance(positions, torch.Tensor), fn, "positions must be a Tensor")
    _require(positions.dtype == torch.int64, fn, f"positions has dtype {positions.dtype}; the kernel reads int64")
    _require(tuple(positions.shape) == (s, b), fn, f"positions has shape {tuple(positions.shape)}; expected [s, b] = [{s}, {b}]")
    _require(positions.is_contiguous(), fn, f"positions has stride {positions.stride()}; a strided positions tensor aborts inside AITER")
    _require(positions.device == input_x.device, fn, f"positions is on {positions.device}, input_x on {input_x.device}")

    for name, t in (("cos", cos), ("sin", sin)):
        _require(isinstance(t, torch.Tensor), fn, f"{name} must be a Tensor")
        _require(t.dim() == 4 and t.shape[1] == 1 and t.shape[2] == 1, fn,
                 f"{name} has shape {tuple(t.shape)}; expected [max_position, 1, 1, rotary_dim // 2]")
        _require(t.dtype == input_x.dtype, fn, f"{name} has dtype {t.dtype}; expected the inputs' dtype {input_x.dtype}")
        _require(t.is_contiguous(), fn, f"{name} must be contiguous, got stride {t.stride()}")
        _require(t.device == input_x.device, fn, f"{name} is on {t.device}, input_x on {input_x.device}")
    _require(cos.shape == sin.shape, fn, f"cos {tuple(cos.shape)} and sin {tuple(sin.shape)} differ")
    _require(2 * cos.shape[-1] <= d, fn, f"rotated width 2 * {cos.shape[-1]} exceeds the head dim {d}")
    if positions.numel():
        lo, hi = int(positions.min()), int(positions.max())
        _require(lo >= 0 and hi < cos.shape[0], fn,
                 f"positions span [{lo}, {hi}] but the tables have {cos.shape[0]} rows (the kernel would read outside them)")

    inputs = {"input_x": input_x, "input_y": input_y, "cos": cos, "sin": sin, "positions": positions}
    for out_name, out, in_name in (("output_x", output_x, "input_x"), ("output_y", output_y, "input_y")):
        for name, t in inputs.items():
            if name == in_name and _same_view(out, t):
                continue  # in place on exactly its own input
            _require(not _overlap(out, t), fn,
                     f"{out_name} shares memory with {name}; an output is either exactly its input or distinct from every input")
    _require(not _overlap(output_x, output_y), fn, "output_x shares memory with output_y")

    c = cos[positions].float().view(s, b, 1, -1)
    sn = sin[positions].float().view(s, b, 1, -1)
    rx = _rotate(input_x, c, sn, rotate_style)
    ry = _rotate(input_y, c, sn, rotate_style)
    output_x.copy_(rx)
    output_y.copy_(ry)
