"""End to end: vLLM (CPU build) serves a tiny random Llama with our RMSNorm routing.

Four runs, each in a fresh subprocess, one after the other: routing on/off x
eager/compiled. Routing on must send every RMSNorm call of the model through
``rocm_accel_ops`` (counted inside our ops, so compiled graphs count too);
routing off must leave vLLM's layers alone; and the generated tokens must not
change (float32, and our torch backend repeats vLLM's native op order).

Needs the package installed (``pip install -e .``): vLLM only loads the
``vllm.general_plugins`` entry points of installed distributions.
"""

from __future__ import annotations

import pytest

pytest.importorskip("vllm")
pytest.importorskip("transformers")

from vllm_rocm_accel.demo import (  # noqa: E402
    TINY_LLAMA,
    default_prompts,
    entry_point_installed,
    make_tiny_llama,
    run_generation,
)

pytestmark = pytest.mark.e2e

MAX_TOKENS = 8
LAYERS = TINY_LLAMA["num_hidden_layers"]
# Llama: input + post-attention norm per layer, plus the final norm.
NORMS = 2 * LAYERS + 1
MODES = ("eager", "compiled")


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory) -> str:
    return make_tiny_llama(str(tmp_path_factory.mktemp("tiny-llama")), seed=0)


@pytest.fixture(scope="module")
def runs(tiny_llama, tmp_path_factory):
    """``runs(route, mode)``: the worker's result for that configuration, run once."""
    done: dict[tuple[bool, str], object] = {}

    def get(route: bool, mode: str) -> dict:
        key = (route, mode)
        if key not in done:
            tag = f"{mode}-route-{'on' if route else 'off'}"
            env = {
                # A private compile cache per run: vLLM's AOT cache key does not
                # include our routing switch, so runs must never share one.
                "VLLM_CACHE_ROOT": str(tmp_path_factory.mktemp(f"vllm-cache-{tag}")),
                "VLLM_ROCM_ACCEL_BACKEND": "auto",  # whatever the caller's shell says
                "TRITON_INTERPRET": None,  # tests/conftest.py sets it for the unit tests
            }
            try:
                result = run_generation(
                    tiny_llama, enforce_eager=(mode == "eager"), route=route,
                    max_tokens=MAX_TOKENS, prompts=default_prompts(), env=env,
                )
            except Exception as err:  # remembered: a failed run is not retried per test
                done[key] = err
            else:
                done[key] = result
                print(
                    f"\n[e2e] {tag}: {result['seconds']:.1f} s in the engine "
                    f"(load {result['load_seconds']:.1f} s, generate {result['generate_seconds']:.1f} s), "
                    f"{result['wall_seconds']:.1f} s wall; calls {result['call_counts'] or '{}'}; "
                    f"norms {result['norm_classes']}"
                )
        out = done[key]
        if isinstance(out, Exception):
            raise out
        return out

    return get


def _count(result: dict, op: str) -> int:
    return sum(n for key, n in result["call_counts"].items() if key.split("/")[0] == op)


def _check_common(result: dict) -> None:
    assert result["entry_point_installed"], (
        "the 'rocm_accel' vllm.general_plugins entry point is not installed; run: pip install -e ."
    )
    assert result["plugin_loaded_by"] == "entry point", result["plugin_loaded_by"]
    assert result["model_in_process"], "the model ran in another process: its op calls were not counted"
    prompts = default_prompts()
    assert len(result["tokens"]) == len(prompts)
    for i, toks in enumerate(result["tokens"]):
        assert len(toks) == MAX_TOKENS, f"prompt {i} produced {len(toks)} tokens, expected {MAX_TOKENS}"


def test_entry_point_installed():
    assert entry_point_installed(), (
        "vllm_rocm_accel.plugin:register is not a 'vllm.general_plugins' entry point here; "
        "vLLM will not load the plugin. Install the package: pip install -e ."
    )


@pytest.mark.parametrize("mode", MODES)
def test_routing_on_sends_rms_norm_through_our_ops(runs, mode):
    r = runs(True, mode)
    _check_common(r)
    assert "RMSNorm" in r["routed_layers"], r["routed_layers"]
    assert r["norm_classes"] == {"RocmAccelRMSNorm": NORMS}, r["norm_classes"]
    rms, fused = _count(r, "rms_norm"), _count(r, "fused_add_rms_norm")
    assert rms > 0 and fused > 0, r["call_counts"]
    # CPU policy: torch serves every call.
    assert all(key.endswith("/torch") for key in r["call_counts"]), r["call_counts"]
    # Each forward pass: layer 0's input norm has no residual (rms_norm); the
    # other 2 * LAYERS norms add the residual. At least one pass per token.
    assert fused == 2 * LAYERS * rms, r["call_counts"]
    assert rms >= MAX_TOKENS, r["call_counts"]
    # RoPE: vLLM's RotaryEmbedding routed too, one rotary_embedding call per layer per pass.
    assert "RotaryEmbedding" in r["routed_layers"], r["routed_layers"]
    assert _count(r, "rotary_embedding") == LAYERS * rms > 0, r["call_counts"]
    # Activation: the MLP's SiluAndMul routed too, one silu_and_mul call per layer per pass.
    assert "SiluAndMul" in r["routed_layers"], r["routed_layers"]
    assert _count(r, "silu_and_mul") == LAYERS * rms > 0, r["call_counts"]
    if mode == "eager":
        assert rms + fused >= 2 * LAYERS * MAX_TOKENS, r["call_counts"]


@pytest.mark.parametrize("mode", MODES)
def test_routing_off_leaves_vllm_layers_alone(runs, mode):
    r = runs(False, mode)
    _check_common(r)
    assert r["routed_layers"] == [], r["routed_layers"]
    assert r["norm_classes"] == {"RMSNorm": NORMS}, r["norm_classes"]
    assert _count(r, "rms_norm") == 0 and _count(r, "fused_add_rms_norm") == 0, r["call_counts"]
    assert _count(r, "rotary_embedding") == 0, r["call_counts"]
    assert _count(r, "silu_and_mul") == 0, r["call_counts"]


@pytest.mark.parametrize("mode", MODES)
def test_routing_does_not_change_tokens(runs, mode):
    on, off = runs(True, mode), runs(False, mode)
    assert on["tokens"] == off["tokens"], f"{mode}: routed {on['tokens']} != native {off['tokens']}"
