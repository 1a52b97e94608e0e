"""Triton paged-attention backend: launchers for ``kernels/triton/paged_attention.py``.

``supports_args`` / ``forward`` follow the paged contract (``vllm_rocm_accel/checks/paged_attention.py``
for :class:`PagedProblem` and the semantics):

* one forward kernel for mixed batches (prefill chunks and decodes packed by cu_seqlens_q):
  programs over (BLOCK_M // group query rows x the group's query heads, kv head, sequence,
  split), K/V fetched through the block table, FP8 caches dequantized in the kernel;
* ``num_splits`` G (resolved by the op layer, >= 1): G == 1 writes out/lse directly; G > 1
  writes G float32 partials (normalized output + lse) to a workspace from ``torch.empty`` (the
  caching allocator), then the combine kernel merges them with LSE weights;
* rows of q past ``cu_seqlens_q[-1]``: out 0, lse +inf, by part 1's fill kernel (their count is
  on the device: no host read anywhere in ``forward``).

Launch parameters are data: ``configs/attention.json``'s sibling ``configs/paged_attention.json``
(cuda / rocm / interpret).
"""

from __future__ import annotations

import functools
from typing import Optional

import torch
import triton

from ...kernels.triton import paged_attention as _k
from ...split_k import choose_num_splits
from . import config_data
from .attention import _MAX_GRID_YZ, _DTYPES, _block_d, _fill_tail, _prec, head_bucket
from .config_data import interpreting as _interpreting
from .config_data import family as _family
from .config_data import pow2
from .fast_launch import FastLauncher

_config = config_data.loader("paged_attention")  # a module attribute: tests and tuners replace it
_LOG2E = 1.4426950408889634
_UNBOUNDED = 1 << 30  # a window no |i + sk - sq - j| reaches (int32 arithmetic stays in range)
_MAX_GROUP = 128  # BLOCK_M >= group: larger groups would not fit a program's registers

_FWD = FastLauncher(_k.paged_attn_fwd_kernel)
_COMBINE = FastLauncher(_k.paged_attn_combine_kernel)


# --- launch parameters --------------------------------------------------------------
def _family_config(device_type: str) -> dict:
    return config_data.section(_config(), _family(device_type))


@functools.lru_cache(maxsize=1024)
def launch_config(device_type: str, bucket: int, decode: bool, fp8: bool, dtype_name: str) -> tuple:
    """(BLOCK_M, BLOCK_N, num_warps, num_stages) from the first matching ``fwd`` rule."""
    for rule in _family_config(device_type)["fwd"]:
        if bucket > rule.get("max_d", 1 << 30):
            continue
        if "decode" in rule and bool(rule["decode"]) != decode:
            continue
        if "fp8" in rule and bool(rule["fp8"]) != fp8:
            continue
        if "dtypes" in rule and dtype_name not in rule["dtypes"]:
            continue
        return (pow2("BLOCK_M", int(rule["BLOCK_M"]), "paged_attention.json", 16),
                pow2("BLOCK_N", int(rule["BLOCK_N"]), "paged_attention.json", 16),
                int(rule["num_warps"]), int(rule["num_stages"]))
    raise ValueError(f"paged_attention.json has no fwd rule for head-dim bucket {bucket} "
                     f"(decode={decode}, fp8={fp8}, {dtype_name})")


def _combine_params(device_type: str) -> tuple:
    c = _family_config(device_type).get("combine", {})
    return int(c.get("BLOCK_R", 16)), int(c.get("num_warps", 4))


@functools.lru_cache(maxsize=None)
def _native_fp8(device_type: str, device_index: Optional[int], fmt: torch.dtype) -> bool:
    """Whether Triton converts the cache format itself here (else the kernel decodes bits)."""
    family = _family(device_type)
    if str(fmt).removeprefix("torch.") not in _family_config(device_type).get("native_fp8", []):
        return False
    if family == "cuda":  # e4m3 conversions need sm_89+ (Ada, Hopper)
        return torch.cuda.get_device_capability(device_index) >= (8, 9)
    return True


def clear_caches() -> None:
    """Forget the loaded config and cached choices (for tests and retuning)."""
    _config.cache_clear()
    launch_config.cache_clear()
    _native_fp8.cache_clear()
    _FWD.clear()
    _COMBINE.clear()


def block_params(p, device_type: str, override: Optional[tuple] = None) -> tuple:
    """(BLOCK_M, BLOCK_N, num_warps, num_stages) for ``p``: BLOCK_M holds >= one query row of the
    whole group and shrinks to the queries there are; BLOCK_N shrinks to short key ranges.
    ``override`` (the tuner's) replaces the json's choice before those adjustments."""
    decode = p.max_seqlen_q <= 1
    if override is not None:
        bm, bn, warps, stages = override
    else:
        bm, bn, warps, stages = launch_config(device_type, head_bucket(p.head_dim, p.head_dim_v), decode, p.fp8,
                                              str(p.dtype).removeprefix("torch."))
    need = max(16, triton.next_power_of_2(p.group))
    bm = max(need, min(bm, max(16, triton.next_power_of_2(max(p.group * p.max_seqlen_q, 1)))))
    bn = min(bn, max(16, triton.next_power_of_2(max(p.max_seqlen_k, 1))))
    return bm, bn, warps, stages


def _windows(p) -> tuple[int, int, float, float]:
    """(win_left, win_right, qk_scale, cap2): unbounded sides as _UNBOUNDED, log2(e) folded in."""
    left = _UNBOUNDED if p.window_left < 0 else min(p.window_left, _UNBOUNDED)
    right = _UNBOUNDED if p.window_right < 0 else min(p.window_right, _UNBOUNDED)
    if p.softcap > 0:
        return left, right, p.softmax_scale / p.softcap, p.softcap * _LOG2E
    return left, right, p.softmax_scale * _LOG2E, 0.0


def supports_args(q, key_cache, value_cache, cu_seqlens_q, seqused_k, block_table, alibi_slopes,
                  k_scale, v_scale, p) -> Optional[str]:
    """None when this backend can run the call, else the reason."""
    if q.device.type != "cuda" and not _interpreting():
        return f"tensors are on {q.device.type}; the triton backend needs a GPU (or TRITON_INTERPRET=1)"
    if q.dtype not in _DTYPES:
        return f"dtype {q.dtype} is not float16/bfloat16/float32"
    for name, t in (("q", q), ("key_cache", key_cache), ("value_cache", value_cache)):
        if t.stride(-1) != 1 and t.shape[-1] > 1:
            return f"{name} has a last-dim stride of {t.stride(-1)}; the kernels read unit-stride rows"
    if not 1 <= p.head_dim <= 256 or not 1 <= p.head_dim_v <= 256:
        return f"head dims {p.head_dim}/{p.head_dim_v} are outside 1..256"
    if p.group > _MAX_GROUP:
        return f"{p.group} query heads per kv head exceed the {_MAX_GROUP} one program packs"
    if p.num_heads_k > _MAX_GRID_YZ or p.batch > _MAX_GRID_YZ:
        return f"{p.num_heads_k} kv heads x {p.batch} sequences exceed the grid's {_MAX_GRID_YZ} per dimension"
    if alibi_slopes is not None and (alibi_slopes.dtype != torch.float32 or not alibi_slopes.is_contiguous()):
        return "alibi_slopes must be contiguous float32"
    for name, t in (("cu_seqlens_q", cu_seqlens_q), ("seqused_k", seqused_k)):
        if t.dtype != torch.int32 or not t.is_contiguous():
            return f"{name} must be contiguous int32"
    if block_table.dtype != torch.int32:
        return "block_table must be int32"
    if p.fp8 and p.cache_dtype not in (torch.float8_e4m3fn, torch.float8_e4m3fnuz):
        return f"FP8 cache format {p.cache_dtype} is not e4m3fn/e4m3fnuz"
    return None


# --- launch ------------------------------------------------------------------------------
def _cache_view(cache: torch.Tensor, p, sw_fp8: bool) -> torch.Tensor:
    """The cache as the kernel reads it: q's dtype, the FP8 dtype (native), or its bytes (SW_FP8)."""
    if not p.fp8:
        return cache
    want = torch.uint8 if sw_fp8 else p.cache_dtype
    return cache if cache.dtype == want else cache.view(want)


def forward(out, q, key_cache, value_cache, cu_seqlens_q, seqused_k, block_table, alibi_slopes,
            k_scale, v_scale, p, lse, num_splits: int, *, params: Optional[tuple] = None) -> None:
    """Writes every element of ``out`` (Tq, Hq, Dv) and, if given, ``lse`` (Hq, Tq) float32; both
    with a unit last stride (the op layer hands over such views).

    ``num_splits``: 0 = :func:`vllm_rocm_accel.split_k.choose_num_splits` (only this backend
    splits, so the heuristic runs here), G >= 1 = that many. ``params`` (tuning only): (BLOCK_M,
    BLOCK_N, num_warps, num_stages) instead of the json's row."""
    splits = num_splits or choose_num_splits(p.batch, p.num_heads_k, p.max_seqlen_q, p.max_seqlen_k, q.device)
    _launch(out, q, key_cache, value_cache, cu_seqlens_q, seqused_k, block_table, alibi_slopes, k_scale, v_scale,
            p, lse, splits, params)
    if p.total_q > 0:
        _fill_tail(out, out.stride(0), out.stride(1), p.num_heads_q, p.head_dim_v, cu_seqlens_q, p.batch, 0.0)
        if lse is not None:
            _fill_tail(lse, 1, lse.stride(0), p.num_heads_q, 1, cu_seqlens_q, p.batch, float("inf"))


def _launch(out, q, key_cache, value_cache, cu_seqlens_q, seqused_k, block_table, alibi_slopes, k_scale, v_scale,
            p, lse, splits: int, params) -> None:
    dev = q.device
    if p.total_q == 0 or p.batch == 0 or p.max_seqlen_q == 0:
        return  # every row is a tail row (the fill writes it)
    bm, bn, warps, stages = block_params(p, dev.type, params)
    left, right, qk_scale, cap2 = _windows(p)
    sw_fp8 = p.fp8 and not _native_fp8(dev.type, dev.index if dev.type == "cuda" else None, p.cache_dtype)
    kc = _cache_view(key_cache, p, sw_fp8)
    vc = _cache_view(value_cache, p, sw_fp8)
    alibi = alibi_slopes if alibi_slopes is not None else q
    alibi_sb = alibi_slopes.stride(0) if alibi_slopes is not None and alibi_slopes.dim() == 2 else 0
    ks = k_scale if p.fp8 else q
    vs = v_scale if p.fp8 else q
    hq, dv = p.num_heads_q, p.head_dim_v
    if splits > 1:  # float32 partials: (G, Tq, Hq, Dv) and (G, Hq, Tq)
        o_t = torch.empty((splits, p.total_q, hq, dv), dtype=torch.float32, device=dev)
        l_t = torch.empty((splits, hq, p.total_q), dtype=torch.float32, device=dev)
        o_strides = (o_t.stride(0), o_t.stride(1), o_t.stride(2))
        l_strides = (l_t.stride(0), l_t.stride(1))
    else:
        o_t = out
        l_t = lse if lse is not None else out
        o_strides = (0, out.stride(0), out.stride(1))
        l_strides = (0, lse.stride(0) if lse is not None else 0)
    block_q = bm // p.group
    grid = (triton.cdiv(p.max_seqlen_q, block_q) * splits, p.num_heads_k, p.batch)
    _FWD.launch(
        grid,
        (q, kc, vc, o_t, l_t, cu_seqlens_q, seqused_k, block_table, alibi, ks, vs,
         q.stride(0), q.stride(1),
         kc.stride(0), kc.stride(1), kc.stride(2),
         vc.stride(0), vc.stride(1), vc.stride(2),
         *o_strides, *l_strides,
         block_table.stride(0), block_table.stride(1),
         alibi_sb,
         p.block_size, splits, left, right, qk_scale, cap2),
        (p.group, p.head_dim, dv, bm, bn, _block_d(p.head_dim), _block_d(dv), p.softcap > 0,
         alibi_slopes is not None, p.fp8, sw_fp8, p.cache_dtype == torch.float8_e4m3fnuz,
         p.block_size % bn == 0, splits > 1, lse is not None, _prec(q.dtype)),
        warps, stages,
    )
    if splits > 1:
        block_r, cwarps = _combine_params(dev.type)
        lse_t = lse if lse is not None else l_t
        _COMBINE.launch(
            (triton.cdiv(p.total_q, block_r), hq),
            (o_t, l_t, out, lse_t, cu_seqlens_q, p.batch,
             o_t.stride(0), o_t.stride(1), o_t.stride(2),
             l_t.stride(0), l_t.stride(1),
             out.stride(0), out.stride(1), lse.stride(0) if lse is not None else 0,
             splits),
            (dv, block_r, _block_d(dv), lse is not None),
            cwarps,
        )
