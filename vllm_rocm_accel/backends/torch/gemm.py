"""FP8 GEMMs in torch: ``torch._scaled_mm`` where the device has FP8 matrix cores, else
dequantize-and-matmul in float32 (any device, the CPU included).

``a`` (M, K) and ``w`` (N, K) are FP8; the result is ``(a * a_scale) @ (w * w_scale).T (+ bias)``
rounded once to ``out_dtype``. The float32 path applies the per-row / per-column scales after
the matmul (they factor out of the K sum), so it never materializes a dequantized copy of ``w``
beyond its float32 conversion.
"""

from __future__ import annotations

from typing import Optional

import torch

from ... import fp8, platform
from ...checks.gemm import BLOCK

# -- where torch._scaled_mm runs ------------------------------------------------


def _scaled_mm_format(device: torch.device) -> Optional[torch.dtype]:
    """The FP8 format ``torch._scaled_mm`` takes on ``device``, or None where it has none."""
    if device.type != "cuda":
        return None
    kind = platform.platform_kind()
    if kind == "cuda":
        return fp8.FN if torch.cuda.get_device_capability(device) >= (8, 9) else None
    if kind == "rocm":
        arch = platform.device_arch(platform.device_index(device))
        if arch.startswith("gfx94"):
            return fp8.FNUZ
        if arch.startswith("gfx95") or arch.startswith("gfx12"):
            return fp8.FN
    return None


_format_cache: dict[torch.device, Optional[torch.dtype]] = {}


def scaled_mm_format(device: torch.device) -> Optional[torch.dtype]:
    try:
        return _format_cache[device]
    except KeyError:
        fmt = _format_cache[device] = _scaled_mm_format(device)
        return fmt


def _blockwise_scaled_mm_device(device: torch.device) -> bool:
    """cuBLAS block-wise (1x128 / 128x128) scaling: Hopper (sm90) only, CUDA 12.9+ builds."""
    if device.type != "cuda" or platform.platform_kind() != "cuda":
        return False
    if torch.cuda.get_device_capability(device) != (9, 0):
        return False
    version = tuple(int(p) for p in (torch.version.cuda or "0.0").split(".")[:2])
    return version >= (12, 9)


def scaled_mm_refusal(a: torch.Tensor, w: torch.Tensor, a_kind: str, w_kind: str, out_dtype) -> Optional[str]:
    """Why ``torch._scaled_mm`` cannot take this gemm_a8w8 call, or None."""
    fmt = scaled_mm_format(a.device)
    if fmt is None:
        return f"torch._scaled_mm has no FP8 kernels on {a.device}"
    if a.dtype != fmt:
        return f"torch._scaled_mm on this device takes {fmt}, got {a.dtype}"
    n, k = w.shape
    if k % 16 or n % 16:
        return f"torch._scaled_mm needs K and N multiples of 16, got K={k}, N={n}"
    if (a_kind, w_kind) != ("tensor", "tensor") and out_dtype != torch.bfloat16:
        return "torch._scaled_mm's row-wise scaling writes bfloat16 only"
    if a.stride(0) % 16 or w.stride(0) % 16 or a.data_ptr() % 16 or w.data_ptr() % 16:
        return "torch._scaled_mm needs 16-byte aligned rows"
    return None


# -- gemm_a8w8 ---------------------------------------------------------------------


def _scaled_mm(a, w, a_scale, w_scale, a_kind, w_kind, bias, out_dtype):
    m, n = a.shape[0], w.shape[0]
    if (a_kind, w_kind) == ("tensor", "tensor"):
        # cuBLASLt adds a bias in its epilogue for 16-bit outputs of the bias's own dtype only.
        fused = bias is not None and out_dtype != torch.float32 and bias.dtype == out_dtype
        out = torch._scaled_mm(a, w.t(), scale_a=a_scale.reshape(()), scale_b=w_scale.reshape(()),
                               bias=bias if fused else None, out_dtype=out_dtype)
        if bias is not None and not fused:
            out += bias
        return out
    # Row-wise: cuBLASLt wants both operands scaled per row/column (M, 1) and (1, N), and has no
    # bias epilogue: the bias is added to the rounded product (two roundings).
    sa = a_scale.reshape(m, 1) if a_kind == "token" else a_scale.reshape(1, 1).expand(m, 1).contiguous()
    sw = w_scale.reshape(1, n) if w_kind == "channel" else w_scale.reshape(1, 1).expand(1, n).contiguous()
    out = torch._scaled_mm(a, w.t(), scale_a=sa, scale_b=sw, out_dtype=out_dtype)
    if bias is not None:
        out += bias
    return out


def _dequant_mm(a, w, a_scale, w_scale, a_kind, w_kind, bias, out_dtype):
    m, n = a.shape[0], w.shape[0]
    acc = a.to(torch.float32) @ w.to(torch.float32).t()
    acc *= a_scale.reshape(m, 1) if a_kind == "token" else a_scale.reshape(())
    acc *= w_scale.reshape(1, n) if w_kind == "channel" else w_scale.reshape(())
    if bias is not None:
        acc += bias.to(torch.float32)
    return acc.to(out_dtype)


def per_tensor_fast_path(a, w, a_scale, w_scale, a_kind, w_kind, bias, out_dtype) -> bool:
    """Whether cuBLAS's per-tensor FP8 kernel (``torch._scaled_mm`` with two scalar scales)
    serves this call: the cuda policy prefers it for small M, where it streams an L2-resident
    weight faster than our Triton tiles (H100 gemm run 5: 5.3-7.2 vs 8.1-8.7 us at M <= 128,
    (4096, 4096); 25.1 vs 32.9 us at M = 128, K = 14336; docs/performance.md)."""
    return (a_kind, w_kind) == ("tensor", "tensor") and scaled_mm_refusal(a, w, a_kind, w_kind, out_dtype) is None


def gemm_a8w8(a, w, a_scale, w_scale, a_kind, w_kind, bias, out_dtype):
    if scaled_mm_refusal(a, w, a_kind, w_kind, out_dtype) is None:
        return _scaled_mm(a, w, a_scale, w_scale, a_kind, w_kind, bias, out_dtype)
    return _dequant_mm(a, w, a_scale, w_scale, a_kind, w_kind, bias, out_dtype)


# -- gemm_a8w8_blockscale ------------------------------------------------------------


def blockwise_scaled_mm_refusal(a: torch.Tensor, w: torch.Tensor) -> Optional[str]:
    if not _blockwise_scaled_mm_device(a.device):
        return "torch._scaled_mm block-wise scaling needs an sm90 GPU and CUDA 12.9+"
    if a.dtype != fp8.FN:
        return f"torch._scaled_mm block-wise scaling takes float8_e4m3fn, got {a.dtype}"
    n, k = w.shape
    if k % BLOCK or n % BLOCK:
        return f"torch._scaled_mm block-wise scaling needs K and N multiples of {BLOCK}, got K={k}, N={n}"
    if (k // BLOCK) % 4:
        # measured on an H200 (torch 2.11 + CUDA 13; benchmarks/results/exp_blockwise_ld_h200_s10.log): with
        # K / 128 = 5, 9, 65, 66 or 67 the sums came back wrong (max error 42-76% of max |out|), with no
        # error raised; a scale_b whose leading dim is padded to a multiple of 4 is refused by torch
        return (f"K / {BLOCK} = {k // BLOCK} is not a multiple of 4: torch._scaled_mm's block-wise scaling "
                "returns wrong sums there")
    return None


def blockwise_fast_path(a: torch.Tensor, w: torch.Tensor, a_scale, w_scale, out_dtype) -> bool:
    """Whether this backend's blockscale call is cuBLAS block-wise ``_scaled_mm`` (policy rules
    marked ``fast_path``), not the float32 dequantize-and-matmul fallback. Reads only the device,
    a's dtype, w's shape and out_dtype (the ops' choice cache key holds them)."""
    return out_dtype == torch.bfloat16 and blockwise_scaled_mm_refusal(a, w) is None


def _blockwise_scaled_mm(a, w, a_scale, w_scale, out_dtype):
    # cuBLAS reads the 1x128 scales of a "outer-dim major" (stride (1, M)); the 128x128 scales
    # of b = w.T (K, N) are w_scale transposed. M must be a multiple of 4 (measured on an H100,
    # torch 2.11 + CUDA 13: M = 1 and 4099 give CUBLAS_STATUS_NOT_SUPPORTED): pad with zero rows.
    m = a.shape[0]
    pad = -m % 4
    if pad:
        a = torch.cat([a, a.new_zeros(pad, a.shape[1])])
        a_scale = torch.cat([a_scale, a_scale.new_ones(pad, a_scale.shape[1])])
    sa = a_scale if a_scale.stride(0) == 1 else a_scale.t().contiguous().t()
    out = torch._scaled_mm(a, w.t(), scale_a=sa, scale_b=w_scale.t(), out_dtype=out_dtype)
    return out[:m] if pad else out


def expand_block_scales(a_scale: torch.Tensor, w_scale: torch.Tensor, m: int, n: int, k: int):
    """The per-element scales of a (M, K) and w (N, K) that the block scales stand for."""
    sa = a_scale.repeat_interleave(BLOCK, dim=1)[:, :k]
    sw = w_scale.repeat_interleave(BLOCK, dim=0)[:n].repeat_interleave(BLOCK, dim=1)[:, :k]
    return sa, sw


def _blockscale_dequant_mm(a, w, a_scale, w_scale, out_dtype):
    m, k = a.shape
    n = w.shape[0]
    sa, sw = expand_block_scales(a_scale, w_scale, m, n, k)
    return ((a.to(torch.float32) * sa) @ (w.to(torch.float32) * sw).t()).to(out_dtype)


def gemm_a8w8_blockscale(a, w, a_scale, w_scale, out_dtype):
    if out_dtype == torch.bfloat16 and blockwise_scaled_mm_refusal(a, w) is None:
        return _blockwise_scaled_mm(a, w, a_scale, w_scale, out_dtype)
    return _blockscale_dequant_mm(a, w, a_scale, w_scale, out_dtype)


def supports_args(*args, **kwargs) -> Optional[str]:
    return None
