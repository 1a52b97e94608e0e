"""Host time of one backward through a Python autograd node vs a C++ one, on CUDA tensors (GPU needed).

    python3 benchmarks/autograd_node_host.py

Why: our attention op's backward is registered with ``torch.library.register_autograd``, so eager
autograd runs it as a Python node, which for CUDA tensors the engine runs on its device thread.
This measures that mechanism's own cost, with a trivial node (identity, one tiny tensor), against
a C++ node of the same graph size (``x * 2``), with and without the engine's worker threads.
"""

from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from timing import interleaved_per_call  # noqa: E402


class Identity(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return g


def main() -> None:
    x = torch.randn(1024, device="cuda", requires_grad=True)
    y_py, y_cpp = Identity.apply(x), x * 2
    g = torch.ones_like(x)

    def grad_of(y, threads: bool):
        def call():
            with torch.autograd.set_multithreading_enabled(threads):
                return torch.autograd.grad(y, x, g, retain_graph=True)
        return call

    cases = {
        "python node, device thread (default)": grad_of(y_py, True),
        "python node, calling thread": grad_of(y_py, False),
        "C++ node, device thread (default)": grad_of(y_cpp, True),
        "C++ node, calling thread": grad_of(y_cpp, False),
    }
    res = interleaved_per_call(cases, 300, 7, include_device=False, warmup=50)
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}: host us per autograd.grad call")
    for name, sec in res.items():
        print(f"  {name:40s} {sec * 1e6:8.1f}")


if __name__ == "__main__":
    main()
