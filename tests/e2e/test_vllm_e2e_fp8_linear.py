"""End to end: vLLM (CPU build) serves the tiny random Llama FP8-quantized, its linear layers
on our FP8 kernel (``RocmAccelFP8ScaledMMLinearKernel``: our ``per_token_quant`` +
``gemm_a8w8``).

The model is quantized online by vLLM (``quantization="fp8_per_channel"``: per-channel FP8
weights, dynamic per-token FP8 activations) and served in bfloat16. Our kernel sits at the
end of vLLM's FP8 kernel list (``register_linear_kernel``), so a run picks it only with the
kernels ahead of it named in ``VLLM_DISABLED_KERNELS`` (which the runs here set). Without
that, vLLM keeps its own ``ChannelWiseTorchFP8ScaledMMLinearKernel`` for these layers;
tests/core/test_vllm_fp8_linear.py checks that through vLLM's selection function, which
saves this file an engine start.

Generated tokens are not compared with vLLM's kernel: in bfloat16 this tiny random model has
near-ties (vLLM's own kernel gives two tokens the same logprob at the second step of the
first prompt), so two correct FP8 GEMMs with different rounding may pick different tokens
(they do, from the third token of that prompt). The numerics are checked against float64
in tests/core/test_vllm_fp8_linear.py.

Needs the package installed (``pip install -e .``), as tests/e2e/test_vllm_tiny_llama.py.
"""

from __future__ import annotations

import pytest

pytest.importorskip("vllm")
pytest.importorskip("transformers")

from vllm_rocm_accel.demo import (  # noqa: E402
    TINY_LLAMA,
    default_prompts,
    make_tiny_llama,
    run_generation,
)
from vllm_rocm_accel.vllm_plugin import fp8_linear  # noqa: E402

pytestmark = pytest.mark.e2e

MAX_TOKENS = 8
LAYERS = TINY_LLAMA["num_hidden_layers"]
LINEARS = 4 * LAYERS  # qkv_proj, o_proj, gate_up_proj, down_proj per layer (lm_head stays unquantized)
QUANTIZATION = "fp8_per_channel"
OURS = "RocmAccelFP8ScaledMMLinearKernel"
MODES = ("eager", "compiled")


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory) -> str:
    return make_tiny_llama(str(tmp_path_factory.mktemp("tiny-llama-fp8")), seed=0)


@pytest.fixture(scope="module")
def runs(tiny_llama, tmp_path_factory):
    done: dict[str, object] = {}

    def get(mode: str) -> dict:
        name = f"fp8-{mode}"
        if name not in done:
            env = {
                "VLLM_CACHE_ROOT": str(tmp_path_factory.mktemp(f"vllm-cache-{name}")),
                "VLLM_ROCM_ACCEL_BACKEND": "auto",
                "VLLM_ROCM_ACCEL_FP8_LINEAR": "1",
                "VLLM_DISABLED_KERNELS": fp8_linear.disabled_kernels_value("CPU"),
                "TRITON_INTERPRET": None,
            }
            try:
                result = run_generation(
                    tiny_llama, enforce_eager=(mode == "eager"), route=True, max_tokens=MAX_TOKENS,
                    prompts=default_prompts(), env=env, quantization=QUANTIZATION,
                )
            except Exception as err:
                done[name] = err
            else:
                done[name] = result
                print(
                    f"\n[e2e fp8] {name}: {result['seconds']:.1f} s in the engine, {result['wall_seconds']:.1f} s wall; "
                    f"kernels {result['linear_kernels']}; calls {result['call_counts']}"
                )
        out = done[name]
        if isinstance(out, Exception):
            raise out
        return out

    return get


def _count(result: dict, op: str) -> int:
    return sum(n for key, n in result["call_counts"].items() if key.split("/")[0] == op)


def _check_served(result: dict) -> None:
    assert result["entry_point_installed"] and result["plugin_loaded_by"] == "entry point", result["plugin_loaded_by"]
    assert result["model_in_process"], "the model ran in another process: its op calls were not counted"
    assert result["quantization"] == QUANTIZATION
    assert [len(t) for t in result["tokens"]] == [MAX_TOKENS] * len(default_prompts()), result["tokens"]


@pytest.mark.parametrize("mode", MODES)
def test_fp8_linear_layers_run_on_our_kernel(runs, mode):
    r = runs(mode)
    _check_served(r)
    assert r["linear_kernels"] == {OURS: LINEARS}, r["linear_kernels"]
    passes = _count(r, "rms_norm")  # one un-fused norm (layer 0's input) per forward pass
    assert passes >= MAX_TOKENS, r["call_counts"]
    # Every linear layer of every pass: one per-token quant, one GEMM, on this CPU's torch backend.
    assert _count(r, "gemm_a8w8") == _count(r, "per_token_quant") == LINEARS * passes, r["call_counts"]
    assert _count(r, "per_tensor_quant") == 0, r["call_counts"]
    assert r["call_counts"]["gemm_a8w8/torch"] == LINEARS * passes, r["call_counts"]
