"""Where the host time of one small call goes (GPU needed): norm in detail, activation and RoPE profiled.

    python benchmarks/profile_host.py

Times each layer of a 1x4096 bf16 rms_norm call in isolation (interleaved trials,
medians), then prints a cProfile of the whole facade call.
"""

from __future__ import annotations

import cProfile
import pstats

import torch
from triton.runtime import driver

from timing import interleaved_per_call
from vllm_rocm_accel import rocm_accel_ops
from vllm_rocm_accel.backends.triton import norm as tn
from vllm_rocm_accel.inputs import norm_inputs
from vllm_rocm_accel.kernels.triton import norm as k


def interleaved_us(cases: dict, n=2000, trials=7) -> dict:
    return {k: v * 1e6 for k, v in interleaved_per_call(cases, n, trials, include_device=False, warmup=200).items()}


def main():
    x, _, w = norm_inputs((1, 4096), torch.bfloat16, "cuda")
    out = torch.empty_like(x)
    args = (x, 4096, x, 0, out, 4096, out, 0, w, 1, 4096, 1e-6)
    cexpr = (False, True, 1, 4096, False)  # HAS_RESIDUAL, HAS_WEIGHT, ROWS, BLOCK_N, IDX64
    compiled = k.rms_norm_rows_kernel[(1,)](*args, *cexpr, num_warps=8)  # returns the CompiledKernel
    runner = compiled[(1, 1, 1)]
    dev = torch.cuda.current_device()
    from vllm_rocm_accel.checks.norm import check_rms_norm_args
    from vllm_rocm_accel.ops import norm as norm_ops
    from vllm_rocm_accel.ops.stats import count

    nargs = (x, w, 1e-6)
    cases = {
        "check_rms_norm_args": lambda: check_rms_norm_args(x, w, 1e-6),
        "choice key + cached select": lambda: norm_ops.RMS_NORM.select(
            "triton", nargs, norm_ops._choice_key(norm_ops.RMS_NORM, "triton", x, w)),
        "count()": lambda: count("rms_norm", "triton"),
        "torch.empty(x.shape, dtype, device)": lambda: torch.empty(x.shape, dtype=x.dtype, device=x.device),
        "torch.empty_like(x)": lambda: torch.empty_like(x),
        "torch.empty_like(x, memory_format=contiguous)": lambda: torch.empty_like(
            x, memory_format=torch.contiguous_format),
        "driver.active.get_current_stream(dev)": lambda: driver.active.get_current_stream(dev),
        "a Python specialization key over the 12 args": lambda: tuple(
            (a.dtype, a.data_ptr() % 16 == 0) if isinstance(a, torch.Tensor) else (a == 1, a % 16 == 0)
            for a in args[:-1]),
        "runner(*args) (prebuilt CompiledKernel runner)": lambda: runner(*args, *cexpr),
        "compiled[grid](*args)": lambda: compiled[(1, 1, 1)](*args, *cexpr),
        "JITFunction kernel[grid](...)": lambda: k.rms_norm_rows_kernel[(1,)](*args, *cexpr, num_warps=8),
        "tn.rms_norm launcher": lambda: tn.rms_norm(out, x, w, 1e-6),
        "facade rms_norm(backend='triton')": lambda: rocm_accel_ops.rms_norm(x, w, 1e-6, backend="triton"),
        "facade fused_add_rms_norm in place": lambda: rocm_accel_ops.fused_add_rms_norm(x, out, w, 1e-6),
    }
    for name, us in interleaved_us(cases).items():
        print(f"{us:8.2f} us  {name}")
    profile("rms_norm(backend='triton'), 1x4096 bf16", lambda: rocm_accel_ops.rms_norm(x, w, 1e-6, backend="triton"))
    from vllm_rocm_accel.backends.triton import activation as ta
    from vllm_rocm_accel.backends.triton import fast_launch
    from vllm_rocm_accel.backends.triton import rope as tr
    from vllm_rocm_accel.inputs_activation import act_and_mul_inputs
    from vllm_rocm_accel.inputs_rope import rope_inputs

    xa = act_and_mul_inputs(1, 14336, torch.bfloat16, "cuda")
    oa = torch.empty(1, 14336, dtype=torch.bfloat16, device="cuda")
    pos, q, kk, cache = rope_inputs(1, 32, 8, 128, torch.bfloat16, "cuda")
    rope_args = (pos, 1, q, 4096, 128, q, 4096, 128, kk, 1024, 128, kk, 1024, 128, cache, 128, 1, 4096, 32, 8, 32, 8)

    def ordinary(launcher, fn):
        def run():
            launcher._on = False
            try:
                fn()
            finally:
                launcher._on = fast_launch.enabled()
        return run

    cases = {
        "spec_key over RoPE's 22 args": lambda: fast_launch.spec_key(rope_args),
        "act launcher, cached kernel": lambda: ta.act_and_mul(oa, xa, "silu"),
        "act launcher, ordinary Triton launch": ordinary(ta._ACT, lambda: ta.act_and_mul(oa, xa, "silu")),
        "facade silu_and_mul(backend='triton')": lambda: rocm_accel_ops.silu_and_mul(xa, backend="triton"),
        "rope launcher, cached kernel": lambda: tr.rotary_embedding(pos, q, kk, q, kk, 128, cache, True),
        "rope launcher, ordinary Triton launch": ordinary(
            tr._ROPE, lambda: tr.rotary_embedding(pos, q, kk, q, kk, 128, cache, True)),
        "facade rotary_embedding(backend='triton')": lambda: rocm_accel_ops.rotary_embedding(
            pos, q, kk, 128, cache, True, backend="triton"),
    }
    print()
    for name, us in interleaved_us(cases).items():
        print(f"{us:8.2f} us  {name}")
    profile("silu_and_mul(backend='triton'), 1x2*14336 bf16",
            lambda: rocm_accel_ops.silu_and_mul(xa, backend="triton"))
    profile("rotary_embedding(backend='triton'), 1 token q32/k8/d128 bf16",
            lambda: rocm_accel_ops.rotary_embedding(pos, q, kk, 128, cache, True, backend="triton"))


def profile(title, fn, n=3000):
    print(f"\n=== cProfile: {title}, {n} calls")
    for _ in range(100):
        fn()
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(n):
        fn()
    prof.disable()
    torch.cuda.synchronize()
    pstats.Stats(prof).sort_stats("tottime").print_stats(14)


if __name__ == "__main__":
    main()
