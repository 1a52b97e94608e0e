"""Where the host time of one eager attention backward goes (GPU needed).

    python3 benchmarks/attention_backward_host.py [--shape B,H,S,D]

bench_attention.py times the backward as ``torch.autograd.grad`` eagerly; on a small problem the
host cost of that call can exceed the GPU's. This probe, on a tiny causal problem (default
(1, 2, 128, 64) bf16, so the GPU never holds the loop back), reports host µs per call of:

* ``autograd.grad`` through our op (backend torch, i.e. cuDNN; and triton), with the backward's
  eager shortcut on (``ops/attention.py:_plain_eager_backward``) and forced off (the op through
  the dispatcher), and through SDPA's cuDNN kernel (a C++ autograd node);
* each of those with the autograd engine's device threads on (the default: a CUDA backward node
  runs on the engine's thread for that device) and off (``set_multithreading_enabled(False)``:
  on the calling thread);
* the time spent inside ``flash_attn_bwd_impl`` per call on each thread, and a cProfile of it on
  the engine's device thread (the profiler is switched on from inside the call, on that thread).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.append(ROOT)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="1,2,128,64", help="B,H,S,D")
    args = ap.parse_args()

    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from timing import interleaved_per_call
    from vllm_rocm_accel import rocm_accel_ops
    from vllm_rocm_accel.ops import attention as ao

    b, h, s, d = (int(x) for x in args.shape.split(","))
    gen = torch.Generator(device="cuda").manual_seed(0)
    base = [torch.randn(b, s, h, d, generator=gen, device="cuda").to(torch.bfloat16) for _ in range(3)]

    def leaf(t):
        return t.detach().clone().requires_grad_(True)

    cases = {}
    for backend in ("torch", "triton"):
        q, k, v = (leaf(t) for t in base)
        out = rocm_accel_ops.flash_attn_func(q, k, v, causal=True, backend=backend)
        cases[f"ours {backend}"] = (out, (q, k, v), torch.randn_like(out))
    qb, kb, vb = (leaf(t.transpose(1, 2)) for t in base)
    with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
        out_s = F.scaled_dot_product_attention(qb, kb, vb, is_causal=True)
    cases["SDPA cuDNN"] = (out_s, (qb, kb, vb), torch.randn_like(out_s))

    def grad_of(out, inputs, dout):
        return lambda: torch.autograd.grad(out, inputs, dout, retain_graph=True)

    shortcut = ao._plain_eager_backward
    calls = {}
    for name, c in cases.items():
        calls[name] = grad_of(*c)
        if name.startswith("ours"):
            g = grad_of(*c)

            def through_op(g=g):
                ao._plain_eager_backward = lambda *tensors: False
                try:
                    return g()
                finally:
                    ao._plain_eager_backward = shortcut
            calls[name + ", through the op"] = through_op

    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}: host us per autograd.grad, "
          f"(B,H,S,D)=({b},{h},{s},{d}) causal bf16")
    for threads in (True, False):
        with torch.autograd.set_multithreading_enabled(threads):
            res = interleaved_per_call(calls, 300, 7, include_device=False, warmup=50)
        where = "device thread (default)" if threads else "calling thread"
        for name, sec in res.items():
            print(f"  {name:34s} {where:24s} {sec * 1e6:8.1f}")

    # time inside flash_attn_bwd_impl, per thread
    impl = ao.flash_attn_bwd_impl
    spent = []

    def timed(*a):
        t0 = time.perf_counter()
        try:
            return impl(*a)
        finally:
            spent.append(time.perf_counter() - t0)

    ao.flash_attn_bwd_impl = timed
    try:
        for threads in (True, False):
            with torch.autograd.set_multithreading_enabled(threads):
                for backend in ("torch", "triton"):
                    g = calls[f"ours {backend}"]
                    for _ in range(50):
                        g()
                    spent.clear()
                    for _ in range(500):
                        g()
                    spent.sort()
                    where = "device thread" if threads else "calling thread"
                    print(f"  inside flash_attn_bwd_impl, {backend:6s} {where:14s} median "
                          f"{spent[len(spent) // 2] * 1e6:7.1f} us")
    finally:
        ao.flash_attn_bwd_impl = impl

    # cProfile of the impl on the engine's device thread
    for threads in (True, False):
        prof = cProfile.Profile()

        def profiled(*a):
            prof.enable()
            try:
                return impl(*a)
            finally:
                prof.disable()

        ao.flash_attn_bwd_impl = profiled
        try:
            with torch.autograd.set_multithreading_enabled(threads):
                g = calls["ours torch"]
                for _ in range(300):
                    g()
        finally:
            ao.flash_attn_bwd_impl = impl
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(14)
        where = "device thread" if threads else "calling thread"
        print(f"\ncProfile of 300 flash_attn_bwd_impl calls (backend torch) on the {where}:")
        print("\n".join(line for line in buf.getvalue().splitlines() if line.strip())[:3000])
    torch.cuda.synchronize()


if __name__ == "__main__":
    main()
