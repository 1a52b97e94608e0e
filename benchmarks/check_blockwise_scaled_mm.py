"""Check torch._scaled_mm's cuBLAS block-wise scaling (1x128 A groups, 128x128 W blocks) against
float64 for K / 128 multiples of 4 and not, and the layouts tried as workarounds.

    python benchmarks/check_blockwise_scaled_mm.py      # needs an sm90 GPU, torch with CUDA 12.9+

Prints, per (M, N, K), max |out - ref| / max |ref| for: the torch backend's call ("current"),
scale_b with its leading dim padded to a multiple of 4 ("ld_pad_b"), scale_b row-major
("b_rowmajor"), and K zero-padded to a multiple of 512 ("k_pad"); or the error torch raised.
On an H200 with torch 2.11 + CUDA 13 (benchmarks/results/exp_blockwise_ld_h200_s10.log) "current"
was wrong (0.42-0.76) wherever K / 128 is not a multiple of 4, which is why
backends/torch/gemm.py refuses the block-wise path there.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from vllm_rocm_accel.backends.torch import gemm as torch_gemm  # noqa: E402

SHAPES = [(256, 512, 8192), (300, 512, 8320), (256, 512, 8448), (256, 512, 8576), (128, 256, 640), (128, 384, 1152)]


def _rel(fn, ref) -> str:
    try:
        out = fn()
    except Exception as e:  # torch refuses the layout
        return f"ERR {str(e).splitlines()[0][:60]}"
    return f"{float((out.double() - ref).abs().max() / ref.abs().max()):.2e}"


def main() -> int:
    torch.manual_seed(0)
    fmt, dev, bf16 = torch.float8_e4m3fn, "cuda", torch.bfloat16
    for m, n, k in SHAPES:
        kb, nb = k // 128, n // 128
        kb4 = -(-kb // 4) * 4
        a, w = torch.randn(m, k, device=dev).to(fmt), torch.randn(n, k, device=dev).to(fmt)
        sa, sw = torch.rand(m, kb, device=dev) + 0.25, torch.rand(nb, kb, device=dev) + 0.25
        sa_f, sw_f = torch_gemm.expand_block_scales(sa.double(), sw.double(), m, n, k)
        ref = (a.double() * sa_f) @ (w.double() * sw_f).t()
        sa_cm = sa.t().contiguous().t()
        ld = torch.ones(nb, kb4, device=dev)
        ld[:, :kb] = sw
        ap, wp = torch.zeros(m, kb4 * 128, device=dev).to(fmt), torch.zeros(n, kb4 * 128, device=dev).to(fmt)
        ap[:, :k], wp[:, :k] = a, w
        sap, swp = torch.ones(m, kb4, device=dev), torch.ones(nb, kb4, device=dev)
        sap[:, :kb], swp[:, :kb] = sa, sw
        res = {
            "current": _rel(lambda: torch_gemm._blockwise_scaled_mm(a, w, sa, sw, bf16), ref),
            "ld_pad_b": _rel(lambda: torch._scaled_mm(a, w.t(), scale_a=sa_cm, scale_b=ld[:, :kb].t(), out_dtype=bf16),
                             ref),
            "b_rowmajor": _rel(lambda: torch._scaled_mm(a, w.t(), scale_a=sa_cm, scale_b=sw.t().contiguous(),
                                                        out_dtype=bf16), ref),
            "k_pad": _rel(lambda: torch._scaled_mm(ap, wp.t(), scale_a=sap.t().contiguous().t(), scale_b=swp.t(),
                                                   out_dtype=bf16), ref),
        }
        print(m, n, k, "kb", kb, res, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
