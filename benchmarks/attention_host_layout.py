"""Where the time of a short attention call goes (GPU needed): kernel time by layout, host time per call.

    python3 benchmarks/attention_host_layout.py [--shape B,H,S,D] [--dtype bf16|fp16]

bench_attention.py times each candidate eagerly with ``triton.testing.do_bench``; at
(16, 16, 1024, 64) a call's GPU time (~0.1-0.2 ms) is close to its host time, so that figure mixes
the two. This script separates them, for each causal flag:

* **GPU time** (``timing.graph_time_ms``: CUDA-graph replays, cold L2, no host cost) of cuDNN's
  aten forward / backward on contiguous (B, H, S, D) tensors (what bench_attention gives SDPA)
  and on (B, H, S, D) views of (B, S, H, D) memory (FlashAttention's layout, ours), SDPA-flash
  on both, and our ops with ``backend`` torch (cuDNN), triton and auto;
* **do_bench** (bench_attention's method) of the same calls, eager;
* **host time per call** (``timing.interleaved_per_call``, no synchronisation, on a (1, 2, 128, D)
  problem so the GPU never holds the loop back) of the op and of its layers (the backward's:
  ``attention_backward_host.py``).
"""

from __future__ import annotations

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.append(ROOT)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="16,16,1024,64", help="B,H,S,D (Sq = Sk, Hq = Hk)")
    ap.add_argument("--dtype", default="bf16", choices=("bf16", "fp16"))
    args = ap.parse_args()

    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from triton.testing import do_bench

    from timing import graph_time_ms, interleaved_per_call
    from vllm_rocm_accel import rocm_accel_ops
    from vllm_rocm_accel.checks.attention import check_dense

    b, h, s, d = (int(x) for x in args.shape.split(","))
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float16
    flush = torch.empty(256 << 20, dtype=torch.uint8, device="cuda")
    gen = torch.Generator(device="cuda").manual_seed(0)
    bshd = [torch.randn(b, s, h, d, generator=gen, device="cuda").to(dtype) for _ in range(4)]
    q, k, v, dout = bshd
    views = [t.transpose(1, 2) for t in bshd]  # (B, H, S, D) views of (B, S, H, D) memory
    contig = [t.contiguous() for t in views]
    aten = torch.ops.aten
    scale = d ** -0.5

    def cudnn_fwd(t, causal):
        return lambda: aten._scaled_dot_product_cudnn_attention(t[0], t[1], t[2], None, True, 0.0, causal, False,
                                                                 scale=scale)

    def cudnn_bwd(t, causal):
        res = cudnn_fwd(t, causal)()
        no_rng = torch.empty((), dtype=torch.int64, device="cuda")
        return lambda: aten._scaled_dot_product_cudnn_attention_backward(
            t[3], t[0], t[1], t[2], res[0], res[1], no_rng, no_rng, None, None, None, s, s, 0.0, causal, scale=scale)

    def flash_fwd(t, causal):
        def call():
            with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                return F.scaled_dot_product_attention(t[0], t[1], t[2], is_causal=causal)
        return call

    def ours_fwd(backend, causal):
        def call():
            with torch.no_grad():
                return rocm_accel_ops.flash_attn_func(q, k, v, causal=causal, backend=backend)
        return call

    def ours_bwd(backend, causal):
        out, lse = rocm_accel_ops.flash_attn_func(q, k, v, causal=causal, return_lse=True, backend="triton")
        p = check_dense(q, k, v, None, causal, (-1, -1), 0.0, None, 0.0)
        return lambda: torch.ops.rocm_accel.flash_attn_bwd(
            dout, q, k, v, out, lse, None, None, 0, 0, p.softmax_scale, causal, p.window_left, p.window_right,
            0.0, None, 0.0, 0, backend)

    fl = 4 * b * h * s * s * d
    print(f"(B,H,S,D) = ({b},{h},{s},{d}) {args.dtype}; GPU time = CUDA-graph replay, cold L2; "
          "do_bench = bench_attention's eager figure")
    for causal in (False, True):
        flops = fl / (2 if causal else 1)
        cases = {
            "fwd cudnn aten, contiguous BHSD": cudnn_fwd(contig, causal),
            "fwd cudnn aten, BSHD views": cudnn_fwd(views, causal),
            "fwd sdpa flash, contiguous BHSD": flash_fwd(contig, causal),
            "fwd sdpa flash, BSHD views": flash_fwd(views, causal),
            "fwd ours torch (cudnn)": ours_fwd("torch", causal),
            "fwd ours triton": ours_fwd("triton", causal),
            "fwd ours auto": ours_fwd("auto", causal),
            "bwd cudnn aten, contiguous BHSD": cudnn_bwd(contig, causal),
            "bwd cudnn aten, BSHD views": cudnn_bwd(views, causal),
            "bwd ours torch (cudnn)": ours_bwd("torch", causal),
            "bwd ours triton": ours_bwd("triton", causal),
        }
        print(f"\ncausal={causal}")
        print(f"| call | GPU ms | GPU TFLOP/s | do_bench ms | do_bench TFLOP/s |\n|---|---:|---:|---:|---:|")
        for name, fn in cases.items():
            f = flops * (2.5 if name.startswith("bwd") else 1.0)
            try:
                g = graph_time_ms(fn, flush)
                e = do_bench(fn, warmup=25, rep=100, return_mode="median")
                print(f"| {name} | {g:.4f} | {f / g / 1e9:.1f} | {e:.4f} | {f / e / 1e9:.1f} |")
            except Exception as exc:  # noqa: BLE001 - report and go on
                print(f"| {name} | n/a: {type(exc).__name__}: {str(exc).splitlines()[0][:120]} | | | |")

    # host time per call on a problem too small to hold the host back
    qs, ks, vs = (torch.randn(1, 128, 2, d, device="cuda").to(dtype) for _ in range(3))
    ps = check_dense(qs, ks, vs, None, True, (-1, -1), 0.0, None, 0.0)
    from vllm_rocm_accel.backends.torch import attention as torch_attn
    from vllm_rocm_accel.checks.attention import check_op_args
    from vllm_rocm_accel.backends.triton import attention as triton_attn
    from vllm_rocm_accel.backends.triton.tma import TensorDescriptor
    from vllm_rocm_accel.ops import attention as attn_ops

    def sdpa_cudnn():
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            return F.scaled_dot_product_attention(qs.transpose(1, 2), ks.transpose(1, 2), vs.transpose(1, 2),
                                                  is_causal=True)

    host = {
        "check_dense": lambda: check_dense(qs, ks, vs, None, True, (-1, -1), 0.0, None, 0.0),
        "check_op_args": lambda: check_op_args(qs, ks, vs, None, None, 0, 0, ps.softmax_scale, True, -1, 0, 0.0,
                                               None, 0.0, 0),
        "select auto": lambda: attn_ops.FLASH_ATTN_FWD.select("auto", (qs, ks, vs, None, None, None, ps)),
        "cudnn_serves": lambda: torch_attn.cudnn_serves(qs, ks, vs, ps),
        "cudnn aten fwd (BSHD views)": lambda: aten._scaled_dot_product_cudnn_attention(
            qs.transpose(1, 2), ks.transpose(1, 2), vs.transpose(1, 2), None, False, 0.0, True, False, scale=scale),
        "torch backend forward()": lambda: torch_attn.forward(qs, ks, vs, None, None, None, ps, False),
        "op flash_attn_fwd backend=torch": lambda: torch.ops.rocm_accel.flash_attn_fwd(
            qs, ks, vs, None, None, 0, 0, ps.softmax_scale, True, -1, 0, 0.0, None, 0.0, 0, False, "torch"),
        "op flash_attn_fwd backend=triton": lambda: torch.ops.rocm_accel.flash_attn_fwd(
            qs, ks, vs, None, None, 0, 0, ps.softmax_scale, True, -1, 0, 0.0, None, 0.0, 0, False, "triton"),
        "facade no_grad backend=torch": lambda: rocm_accel_ops.flash_attn_func(qs, ks, vs, causal=True,
                                                                               backend="torch"),
        "facade no_grad backend=triton": lambda: rocm_accel_ops.flash_attn_func(qs, ks, vs, causal=True,
                                                                                backend="triton"),
        "facade no_grad backend=auto": lambda: rocm_accel_ops.flash_attn_func(qs, ks, vs, causal=True),
        "sdpa cudnn (F.sdpa, BSHD views)": sdpa_cudnn,
        "triton: tma_reason": lambda: triton_attn.tma_reason(qs, ks, vs, ps),
        "triton: _choice": lambda: triton_attn._choice(ps, "fwd", "cuda", None, True),
        "triton: 4 TensorDescriptors": lambda: [
            TensorDescriptor(t, list(t.shape), list(t.stride()), [1, 64, 1, d]) for t in (qs, ks, vs, qs)],
        "triton: forward()": lambda: triton_attn.forward(qs, ks, vs, None, None, None, ps, False),
    }
    qg, kg, vg = (t.detach().clone().requires_grad_(True) for t in (qs, ks, vs))

    def grad_call():  # the autograd kernel's cost: inputs that require grad (no backward run)
        with torch.enable_grad():
            return rocm_accel_ops.flash_attn_func(qg, kg, vg, causal=True)

    host["facade grad backend=auto (no backward)"] = grad_call
    with torch.no_grad():
        res = interleaved_per_call(host, 300, 7, include_device=False, warmup=50)
    print("\nhost us per call, (1, 128, 2, D) causal, no synchronisation:")
    for name, sec in res.items():
        print(f"  {name:36s} {sec * 1e6:8.1f}")


if __name__ == "__main__":
    main()
