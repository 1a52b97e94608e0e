"""Triton FP8 GEMM launchers: tile configs and grids for ``kernels/triton/gemm.py``.

The launchers write into the (M, N) output they are given; the op layer allocates it,
validates, and asks :func:`supports_args_gemm_a8w8` / :func:`supports_args_blockscale` first.

Accumulation: ``promote_every`` (config, per family) is how many K elements the tensor cores
sum before a float32 add (Triton's ``max_num_imprecise_acc``); 0 / absent leaves Triton's
default, which on Hopper never promotes: the fast accumulation that vLLM's CUTLASS FP8
kernels for sm90 also use. Promoting every 128 cost 25-35% at large M on the H100
(docs/performance.md), so the cuda config leaves it off.

Tile configs are data (``configs/gemm.json``), per device family: a list of rules, the first
whose ``max_m`` (and, when given, ``min_n`` / ``min_k`` / ``max_n`` / ``max_k``) admits the
call wins. A rule's ``split_k`` deals the K blocks of each output tile to that many programs
when the tile grid alone would leave multiprocessors idle (small M): the split is cut to what
puts two programs on each multiprocessor (``2 * multiprocessors // tiles``) and to at least ``min_k_per_split`` K
elements per program, and never applied where it would not pay.

A rule's ``"kernel"`` picks the gemm_a8w8 kernel: ``"tiled"`` (absent: the default, every
shipped rule) is :func:`~vllm_rocm_accel.kernels.triton.gemm.gemm_a8w8_kernel`;
``"persistent"`` is :func:`~vllm_rocm_accel.kernels.triton.gemm.gemm_a8w8_persistent_kernel`
(TMA descriptors, one program per multiprocessor; no ``split_k``, tiles of at most 256 per
edge, the TMA box limit). The persistent kernel needs what TMA needs (:func:`tma_reason`):
a Hopper-or-later NVIDIA GPU (or the interpreter), Triton's host-side tensor descriptors,
16-byte aligned data pointers and row strides of ``a`` and ``w`` and unit K stride; a call
that misses any of it runs the tiled kernel with the same tiles, warps and stages.
gemm_a8w8_blockscale's rules take ``"kernel"`` too: ``"persistent"`` is
:func:`~vllm_rocm_accel.kernels.triton.gemm.gemm_a8w8_blockscale_persistent_kernel`, with the
same TMA needs and fallback, and BLOCK_N dividing 128 (one W block a tile).
"""

from __future__ import annotations

import functools
from typing import Optional

import torch

from ... import fp8
from ...checks.gemm import BLOCK
from ...kernels.triton import gemm as _k
from . import config_data, tma
from .config_data import family as _family
from .fast_launch import FastLauncher

_config = config_data.loader("gemm")  # a module attribute: tests and tuners replace it
_GEMM = FastLauncher(_k.gemm_a8w8_kernel)
_EPILOGUE = FastLauncher(_k.splitk_epilogue_kernel)
_BLOCKSCALE = FastLauncher(_k.gemm_a8w8_blockscale_kernel)
# One launcher per FP8 format: Triton specializes a host descriptor on its base dtype and block
# shape ("tensordesc<fp8e4nv[128, 128]>"), FastLauncher's key sees a descriptor only by its type,
# and the block shape is in the constexprs.
_PERSISTENT = {fmt: FastLauncher(_k.gemm_a8w8_persistent_kernel) for fmt in fp8.FP8_DTYPES}
_BLOCKSCALE_PERSISTENT = {fmt: FastLauncher(_k.gemm_a8w8_blockscale_persistent_kernel) for fmt in fp8.FP8_DTYPES}
_LAUNCHERS = (_GEMM, _EPILOGUE, _BLOCKSCALE, *_PERSISTENT.values(), *_BLOCKSCALE_PERSISTENT.values())
KERNELS = ("tiled", "persistent")
_I32 = 2**31
_PARAMS = ("BLOCK_M", "BLOCK_N", "BLOCK_K", "GROUP_M", "num_warps", "num_stages")


def _section(device_type: str, name: str) -> dict:
    return config_data.section(_config(), _family(device_type))[name]


@functools.lru_cache(maxsize=None)
def _multiprocessors(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def _sm_count(device: torch.device) -> int:
    if device.type != "cuda":
        return 4  # the interpreter: small, so that tests exercise split-K
    return _multiprocessors(device.index if device.index is not None else torch.cuda.current_device())


@functools.lru_cache(maxsize=None)
def _promote_every(device_type: str) -> int:
    return int(_section(device_type, "gemm_a8w8").get("promote_every") or 0)


def _promote(device: torch.device, block_k: int):
    """``max_num_imprecise_acc`` for the kernel: None (Triton's default: never promote, the
    fast accumulation vLLM's CUTLASS FP8 kernels use on Hopper) or the config's stretch."""
    every = _promote_every(device.type)
    return min(every, block_k) if every else None


def _admits(rule: dict, m: int, n: int, k: int) -> bool:
    return (m <= rule.get("max_m", 1 << 62) and n >= rule.get("min_n", 0) and k >= rule.get("min_k", 0)
            and n <= rule.get("max_n", 1 << 62) and k <= rule.get("max_k", 1 << 62))


@functools.lru_cache(maxsize=4096)
def _gemm_choice(device: torch.device, m: int, n: int, k: int) -> tuple[tuple, str]:
    """(:func:`gemm_params`, :func:`gemm_kernel`) of an (M, N, K) call: one cache lookup per call."""
    rules = _section(device.type, "gemm_a8w8")["rules"]
    rule = next((r for r in rules if _admits(r, m, n, k)), rules[-1])
    kernel = rule.get("kernel", "tiled")
    if kernel not in KERNELS:
        raise ValueError(f"gemm.json: a gemm_a8w8 rule's kernel must be one of {KERNELS}, got {rule}")
    bm, bn, bk, gm, warps, stages = (int(rule[p]) for p in _PARAMS)
    if kernel == "persistent":
        if int(rule.get("split_k", 1)) > 1:
            raise ValueError(f"gemm.json: the persistent gemm_a8w8 kernel takes no split_k, got {rule}")
        _check_tma_tiles(bm, bn, bk, source=f"gemm.json: {rule}")
    split = 1
    max_split = int(rule.get("split_k", 1))
    if max_split > 1:
        tiles = -(-m // bm) * -(-n // bn)
        fill = 2 * _sm_count(device) // max(tiles, 1)  # up to two programs per multiprocessor
        by_k = k // max(int(rule.get("min_k_per_split", bk)), bk)
        split = max(1, min(max_split, fill, by_k))
        split = 1 << (split.bit_length() - 1)  # a power of two
    return (bm, bn, bk, gm, warps, stages, split), kernel


def gemm_params(device: torch.device, m: int, n: int, k: int) -> tuple:
    """(BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M, num_warps, num_stages, SPLIT_K) for an (M, N, K) call."""
    return _gemm_choice(device, m, n, k)[0]


def gemm_kernel(device: torch.device, m: int, n: int, k: int) -> str:
    """The gemm_a8w8 kernel the config's rule for an (M, N, K) call names: one of :data:`KERNELS`."""
    return _gemm_choice(device, m, n, k)[1]


def _check_tma_tiles(bm: int, bn: int, bk: int, source: str) -> None:
    """TMA boxes: at most 256 elements per dim, and 16 bytes or more along K (FP8: BLOCK_K >= 16)."""
    if max(bm, bn, bk) > tma.BOX or bk < 16:
        raise ValueError(f"{source}: the persistent kernel's tiles must be at most {tma.BOX} per edge and BLOCK_K "
                         f">= 16 (TMA boxes), got BLOCK_M={bm}, BLOCK_N={bn}, BLOCK_K={bk}")


def _check_blockscale_tiles(params: tuple, kernel: str, source: str) -> None:
    bn, bk = params[1], params[2]
    if bk != BLOCK or not (bn % BLOCK == 0 or BLOCK % bn == 0):
        raise ValueError(f"{source}: blockscale BLOCK_K must be {BLOCK} and BLOCK_N divide or be a multiple of it, "
                         f"got BLOCK_N={bn}, BLOCK_K={bk}")
    if kernel == "persistent":
        _check_tma_tiles(*params[:3], source=source)
        if BLOCK % bn:
            raise ValueError(f"{source}: the persistent blockscale kernel's BLOCK_N must divide {BLOCK} (one W "
                             f"block a tile), got {bn}")


@functools.lru_cache(maxsize=4096)
def _blockscale_choice(device: torch.device, m: int, n: int, k: int) -> tuple[tuple, str]:
    rules = _section(device.type, "gemm_a8w8_blockscale")["rules"]
    rule = next((r for r in rules if _admits(r, m, n, k)), rules[-1])
    kernel = rule.get("kernel", "tiled")
    if kernel not in KERNELS:
        raise ValueError(f"gemm.json: a blockscale rule's kernel must be one of {KERNELS}, got {rule}")
    params = tuple(int(rule[p]) for p in _PARAMS)
    _check_blockscale_tiles(params, kernel, source=f"gemm.json: {rule}")
    return params, kernel


def blockscale_params(device: torch.device, m: int, n: int, k: int) -> tuple:
    """(BLOCK_M, BLOCK_N, BLOCK_K = 128, GROUP_M, num_warps, num_stages) for an (M, N, K) call."""
    return _blockscale_choice(device, m, n, k)[0]


def blockscale_kernel(device: torch.device, m: int, n: int, k: int) -> str:
    """The blockscale kernel the config's rule for an (M, N, K) call names: one of :data:`KERNELS`."""
    return _blockscale_choice(device, m, n, k)[1]


def clear_caches() -> None:
    """Forget the loaded config and every cached launch choice (for tests and retuning)."""
    _config.cache_clear()
    _gemm_choice.cache_clear()
    _blockscale_choice.cache_clear()
    _promote_every.cache_clear()
    for launcher in _LAUNCHERS:
        launcher.clear()


# --- what the kernels take ------------------------------------------------------------
def _native_formats(device: torch.device) -> tuple[torch.dtype, ...]:
    """FP8 formats whose dot this device's Triton runs natively."""
    if device.type != "cuda":
        return fp8.FP8_DTYPES  # the interpreter decodes both exactly
    if torch.version.hip:
        from ... import platform

        arch = platform.device_arch(platform.device_index(device))
        return (fp8.FNUZ,) if fp8.arch_uses_fnuz(arch) else (fp8.FN,)
    return (fp8.FN,) if torch.cuda.get_device_capability(device) >= (8, 9) else ()


def _operand_reason(a: torch.Tensor, w: torch.Tensor) -> Optional[str]:
    if a.dtype not in _native_formats(a.device):
        return f"Triton has no native {a.dtype} dot on this device"
    return None


def tma_reason(a: torch.Tensor, w: torch.Tensor) -> Optional[str]:
    """Why the persistent (TMA) kernel cannot take ``a`` and ``w``, or None when it can."""
    reason = tma.device_reason(a.device, "the persistent kernel")
    if reason is not None:
        return reason
    for name, t in (("a", a), ("w", w)):
        if t.data_ptr() % 16:
            return f"{name}'s data pointer is not 16-byte aligned"
        if t.stride(1) != 1:
            return f"{name}'s K stride is {t.stride(1)}, not 1"
        if t.stride(0) * t.element_size() % 16:
            return f"{name}'s row stride ({t.stride(0)} elements) is not a multiple of 16 bytes"
        if 0 in t.shape:
            return f"{name} is empty"
    return None


def supports_args_gemm_a8w8(a, w, a_scale, w_scale, a_kind, w_kind, bias, out_dtype) -> Optional[str]:
    return _operand_reason(a, w)


def supports_args_blockscale(a, w, a_scale, w_scale, out_dtype) -> Optional[str]:
    return _operand_reason(a, w)


# --- launchers ------------------------------------------------------------------------
def _idx64(*extents: int) -> bool:
    return max(extents) >= _I32


def _scale_stride(t: torch.Tensor) -> int:
    return t.stride(0) if t.dim() else 0


def _persistent_descriptors(a: torch.Tensor, w: torch.Tensor, out: torch.Tensor, bm: int, bn: int, bk: int):
    """TMA descriptors of ``a`` ([bm, bk] blocks) and ``w`` ([bn, bk]) for a persistent kernel, or
    None where the tiled kernel takes the call: :func:`tma_reason` says no, or ``out`` is float32
    (it doubles the epilogue's shared-memory tile: 128 x 256 x 4 B with 3 stages of operands is
    272 KB > the H200's 227 KB, measured)."""
    if tma_reason(a, w) is not None or out.element_size() > 2:
        return None
    (m, k), n = a.shape, w.shape[0]
    return (tma.TensorDescriptor(a, [m, k], [a.stride(0), 1], [bm, bk]),
            tma.TensorDescriptor(w, [n, k], [w.stride(0), 1], [bn, bk]))


def gemm_a8w8(out: torch.Tensor, a: torch.Tensor, w: torch.Tensor, a_scale: torch.Tensor, w_scale: torch.Tensor,
              a_kind: str, w_kind: str, bias: Optional[torch.Tensor], params: Optional[tuple] = None,
              kernel: Optional[str] = None) -> None:
    """``out <- (a * a_scale) @ (w * w_scale).T (+ bias)``, out (M, N) with unit last-dim stride.
    ``params`` overrides the config's (BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M, num_warps, num_stages,
    SPLIT_K) and ``kernel`` its kernel (one of :data:`KERNELS`) (for tuning); ``"persistent"``
    runs the tiled kernel with the same params where :func:`tma_reason` says no or ``out`` is
    float32."""
    m, k = a.shape
    n = w.shape[0]
    chosen_params, chosen_kernel = _gemm_choice(a.device, m, n, k)  # one cached lookup
    bm, bn, bk, gm, warps, stages, split = params or chosen_params
    kernel = kernel or chosen_kernel
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
    sa_stride = _scale_stride(a_scale) if a_kind == "token" else 0  # stride 0: one scale for every row
    sw_stride = _scale_stride(w_scale) if w_kind == "channel" else 0
    has_bias = bias is not None
    bias_arg = bias if has_bias else out
    tiles = -(-m // bm) * -(-n // bn)
    if kernel == "persistent":
        if split != 1:
            raise ValueError(f"the persistent gemm_a8w8 kernel takes no split-K, got SPLIT_K={split}")
        _check_tma_tiles(bm, bn, bk, source="gemm_a8w8 params")
        descs = _persistent_descriptors(a, w, out, bm, bn, bk)
        if descs is not None:
            a_desc, w_desc = descs
            # constexprs: HAS_BIAS, BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M, IDX64, PROMOTE
            _PERSISTENT[a.dtype].launch((min(_sm_count(a.device), tiles),),
                                        (a_desc, w_desc, out, a_scale, sa_stride, w_scale, sw_stride, bias_arg, m, n,
                                         k, out.stride(0)),
                                        (has_bias, bm, bn, bk, gm, _idx64(m * out.stride(0)),
                                         _promote(a.device, bk)), warps, stages)
            return
    idx64 = _idx64(m * a.stride(0), n * w.stride(0), m * out.stride(0), split * m * n)
    ws = out if split == 1 else torch.empty((split, m, n), dtype=torch.float32, device=a.device)
    # constexprs: HAS_BIAS, BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M, SPLIT_K, EVEN_K, IDX64, PROMOTE
    _GEMM.launch((tiles, split), (a, w, out, ws, a_scale, sa_stride, w_scale, sw_stride, bias_arg, m, n, k,
                                  a.stride(0), w.stride(0), out.stride(0)),
                 (has_bias, bm, bn, bk, gm, split, k % bk == 0, idx64, _promote(a.device, bk)), warps, stages)
    if split > 1:
        ebm, ebn = 32, 128
        # constexprs: HAS_BIAS, SPLIT_K, BLOCK_M, BLOCK_N
        _EPILOGUE.launch((-(-m // ebm), -(-n // ebn)), (ws, out, a_scale, sa_stride, w_scale, sw_stride, bias_arg, m,
                                                        n, out.stride(0)),
                         (has_bias, split, ebm, ebn), 4)


def gemm_a8w8_blockscale(out: torch.Tensor, a: torch.Tensor, w: torch.Tensor, a_scale: torch.Tensor,
                         w_scale: torch.Tensor, params: Optional[tuple] = None, kernel: Optional[str] = None) -> None:
    """``out <- sum over K blocks of (a_blk @ w_blk.T) * a_scale[:, kb] * w_scale[n // 128, kb]``;
    ``params`` overrides the config's (BLOCK_M, BLOCK_N, 128, GROUP_M, num_warps, num_stages) and
    ``kernel`` its kernel (for tuning). ``"persistent"`` (TMA) runs the tiled kernel with the same
    params where :func:`tma_reason` says no or ``out`` is float32, as for gemm_a8w8."""
    m, k = a.shape
    n = w.shape[0]
    chosen_params, chosen_kernel = _blockscale_choice(a.device, m, n, k)
    bm, bn, bk, gm, warps, stages = params or chosen_params
    kernel = kernel or chosen_kernel
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
    tiles = -(-m // bm) * -(-n // bn)
    if kernel == "persistent":
        if params is not None or kernel != chosen_kernel:  # the config's own choice was checked when read
            _check_blockscale_tiles((bm, bn, bk), kernel, source="gemm_a8w8_blockscale params")
        descs = _persistent_descriptors(a, w, out, bm, bn, bk)
        if descs is not None:
            a_desc, w_desc = descs
            # constexprs: BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M, IDX64
            _BLOCKSCALE_PERSISTENT[a.dtype].launch(
                (min(_sm_count(a.device), tiles),),
                (a_desc, w_desc, out, a_scale, w_scale, m, n, k, out.stride(0), a_scale.stride(0), a_scale.stride(1),
                 w_scale.stride(0), w_scale.stride(1)),
                (bm, bn, bk, gm, _idx64(m * out.stride(0), m * a_scale.stride(0))),
                warps, stages)
            return
    idx64 = _idx64(m * a.stride(0), n * w.stride(0), m * out.stride(0))
    # constexprs: BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M, EVEN_K, IDX64
    _BLOCKSCALE.launch((tiles,), (a, w, out, a_scale, w_scale, m, n, k, a.stride(0), w.stride(0), out.stride(0),
                                  a_scale.stride(0), a_scale.stride(1), w_scale.stride(0), w_scale.stride(1)),
                       (bm, bn, bk, gm, k % bk == 0, idx64), warps, stages)
