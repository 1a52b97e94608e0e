"""Where the host time of one small norm call goes (GPU needed).

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
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(3000):
        rocm_accel_ops.rms_norm(x, w, 1e-6, backend="triton")
    prof.disable()
    torch.cuda.synchronize()
    pstats.Stats(prof).sort_stats("tottime").print_stats(18)


if __name__ == "__main__":
    main()
