"""End-to-end demo: a tiny random Llama served by vLLM with our RMSNorm routing.

``python -m vllm_rocm_accel.demo`` writes a 2-layer random Llama (no download,
no tokenizer) to a temporary directory, runs vLLM on it in a fresh subprocess
with ``VLLM_ROCM_ACCEL_ROUTE_VLLM_LAYERS=1`` and prints the generated token ids,
the vLLM layers we routed and how many times each (op, backend) ran.

The generation always runs in a child process (``--worker`` mode) so that each
run reads its own environment (routing on/off, eager/compiled) and starts from
zero call counts; the child runs vLLM's engine in its own process
(``VLLM_ENABLE_V1_MULTIPROCESSING=0``), so the counters it reads are the ones
the model's forward passes incremented. It prints one ``RESULT_JSON:`` line,
which :func:`run_generation` parses out of vLLM's logs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Optional, Sequence

RESULT_MARKER = "RESULT_JSON:"
ENTRY_POINT_GROUP = "vllm.general_plugins"
ENTRY_POINT_VALUE = "vllm_rocm_accel.plugin:register"
TIMEOUT_S = 600

# The tiny model: small enough for ~1 s of CPU work per generation. vLLM's CPU
# attention needs a head size of 32 or more (16 fails: "Unsupported CPU
# attention configuration"), hence hidden 128 over 4 heads.
TINY_LLAMA = dict(
    hidden_size=128,
    intermediate_size=256,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=512,
    max_position_embeddings=256,
)
PROMPT_LENGTHS = (5, 11, 17)
PROMPT_SEED = 1234

# Defaults for the child; the user's own values win, except routing (the point).
_CHILD_ENV_DEFAULTS = {
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    "VLLM_CPU_KVCACHE_SPACE": "1",
}


# --- model -----------------------------------------------------------------
def make_tiny_llama(path: str, seed: int = 0) -> str:
    """Write a random 2-layer Llama (safetensors, float32) to ``path``; returns ``path``.

    Idempotent: a directory that already holds ``config.json`` is left alone.
    """
    if os.path.exists(os.path.join(path, "config.json")):
        return path
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    os.makedirs(path, exist_ok=True)
    config = LlamaConfig(
        **TINY_LLAMA,
        rms_norm_eps=1e-6,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        torch_dtype="float32",
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(torch.float32).eval()
    # The default init leaves the logits nearly flat; widen the weights so greedy
    # decoding is not decided by rounding-level differences, and give the norms
    # non-trivial weights so a norm that dropped its weight would change tokens.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            else:
                p.normal_(0.0, 0.2)
    # Write to a scratch name and rename, so a half-written model is never "done".
    tmp = tempfile.mkdtemp(prefix=".tiny-llama-", dir=os.path.dirname(os.path.abspath(path)) or ".")
    model.save_pretrained(tmp, safe_serialization=True)
    for name in os.listdir(tmp):
        os.replace(os.path.join(tmp, name), os.path.join(path, name))
    os.rmdir(tmp)
    return path


def default_prompts(vocab_size: int = TINY_LLAMA["vocab_size"]) -> list[list[int]]:
    """Three token-id prompts of different lengths from a fixed-seed RNG (ids 3..vocab-1)."""
    import random

    rng = random.Random(PROMPT_SEED)
    return [[rng.randrange(3, vocab_size) for _ in range(n)] for n in PROMPT_LENGTHS]


# --- parent side -------------------------------------------------------------
def run_generation(
    model_dir: str,
    *,
    enforce_eager: bool,
    route: bool,
    max_tokens: int = 8,
    prompts: Optional[Sequence[Sequence[int]]] = None,
    timeout: float = TIMEOUT_S,
    env: Optional[dict[str, Optional[str]]] = None,
    quantization: Optional[str] = None,
) -> dict:
    """Generate greedily with vLLM in a fresh subprocess; returns the worker's result.

    Result keys: ``tokens`` (one list of generated ids per prompt),
    ``call_counts`` (``{"op/backend": n}``), ``routed_layers``,
    ``entry_point_installed``, ``seconds`` (engine start + generation, in the
    child) plus diagnostics (``norm_classes``, ``model_in_process``,
    ``plugin_loaded_by``, ``wall_seconds`` measured here).

    The child inherits this environment, with ``VLLM_ENABLE_V1_MULTIPROCESSING=0``
    and ``VLLM_CPU_KVCACHE_SPACE=1`` unless already set; ``env`` adds, replaces
    or (value ``None``) removes variables (the tests give each run a private
    ``VLLM_CACHE_ROOT``); ``VLLM_ROCM_ACCEL_ROUTE_VLLM_LAYERS`` always follows
    ``route``. ``quantization`` (e.g. ``fp8_per_channel``, vLLM's online FP8 with per-channel
    weights and per-token activations) serves the model quantized, in bfloat16 (vLLM's FP8
    methods take no float32); ``linear_kernels`` then counts the FP8 kernel of each layer.
    """
    child_env = dict(os.environ)
    for key, value in _CHILD_ENV_DEFAULTS.items():
        child_env.setdefault(key, value)
    for key, value in (env or {}).items():
        if value is None:
            child_env.pop(key, None)
        else:
            child_env[key] = value
    child_env["VLLM_ROCM_ACCEL_ROUTE_VLLM_LAYERS"] = "1" if route else "0"
    # The child must import this package the same way we did.
    pkg_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    child_env["PYTHONPATH"] = os.pathsep.join(p for p in (pkg_root, child_env.get("PYTHONPATH", "")) if p)

    cmd = [
        sys.executable, "-m", "vllm_rocm_accel.demo", "--worker",
        "--model", str(model_dir),
        "--eager", "1" if enforce_eager else "0",
        "--max-tokens", str(max_tokens),
    ]
    if prompts is not None:
        cmd += ["--prompts", json.dumps([list(map(int, p)) for p in prompts])]
    if quantization:
        cmd += ["--quantization", quantization]

    start = time.monotonic()
    try:
        proc = subprocess.run(cmd, env=child_env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as err:
        stderr = err.stderr.decode(errors="replace") if isinstance(err.stderr, bytes) else (err.stderr or "")
        raise RuntimeError(
            f"vLLM worker timed out after {timeout:.0f} s ({' '.join(cmd)}); stderr tail:\n{stderr[-3000:]}"
        ) from None
    wall = time.monotonic() - start

    result = None
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_MARKER):
            result = json.loads(line[len(RESULT_MARKER):])
    if proc.returncode != 0 or result is None:
        raise RuntimeError(
            f"vLLM worker failed (exit code {proc.returncode}, "
            f"{'no' if result is None else 'a'} {RESULT_MARKER} line; {' '.join(cmd)}); "
            f"stderr tail:\n{proc.stderr[-3000:]}"
        )
    result["wall_seconds"] = round(wall, 2)
    return result


# --- child side --------------------------------------------------------------
def entry_point_installed() -> bool:
    """Whether our ``vllm.general_plugins`` entry point is installed (what vLLM loads)."""
    from importlib.metadata import entry_points

    return any(ep.value == ENTRY_POINT_VALUE for ep in entry_points(group=ENTRY_POINT_GROUP))


def _num_layers(model_dir: str) -> Optional[int]:
    try:
        with open(os.path.join(model_dir, "config.json")) as f:
            return int(json.load(f)["num_hidden_layers"])
    except (OSError, KeyError, ValueError):
        return None


def _inspect_model(model) -> dict:
    """Runs next to the model (via ``LLM.apply_model``): which classes its norms are."""
    import collections

    classes = collections.Counter(
        type(m).__name__ for m in model.modules() if type(m).__name__.endswith("RMSNorm")
    )
    # The FP8 kernel vLLM chose for each quantized linear layer (on its method or its scheme).
    kernels = collections.Counter()
    for m in model.modules():
        owner = getattr(m, "scheme", None) or getattr(m, "quant_method", None)
        if owner is not None and getattr(owner, "fp8_linear", None) is not None:
            kernels[type(owner.fp8_linear).__name__] += 1
    return {"pid": os.getpid(), "norm_classes": dict(sorted(classes.items())),
            "linear_kernels": dict(sorted(kernels.items()))}


def _worker(model_dir: str, enforce_eager: bool, max_tokens: int, prompts: list[list[int]],
            quantization: Optional[str] = None) -> dict:
    from . import plugin

    installed = entry_point_installed()
    if not installed:
        # vLLM only loads installed entry points: register by hand so the demo
        # still shows the routing, and say so loudly (the result records it too).
        print(
            "WARNING: the 'vllm.general_plugins' entry point of vllm-rocm-accel is NOT installed; "
            "registering the plugin explicitly. Install the package (pip install -e .) so vLLM loads it.",
            file=sys.stderr, flush=True,
        )
        plugin.register()

    from vllm import LLM, SamplingParams

    from .facade import rocm_accel_ops

    rocm_accel_ops.reset_call_counts()
    start = time.monotonic()
    llm = LLM(
        model=model_dir,
        skip_tokenizer_init=True,
        dtype="bfloat16" if quantization else "float32",
        quantization=quantization,
        enforce_eager=enforce_eager,
        gpu_memory_utilization=0.3,
        max_model_len=256,
        max_num_seqs=4,
        seed=0,
    )
    load_seconds = time.monotonic() - start
    # The plugin's state in *this* process: set when vLLM (or we) called register().
    state = plugin.state()
    try:
        inspected = llm.apply_model(_inspect_model)[0]
    except Exception as err:  # diagnostics only
        inspected = {"pid": None, "norm_classes": {}, "error": repr(err)}

    params = SamplingParams(temperature=0.0, max_tokens=max_tokens, detokenize=False, ignore_eos=True)
    gen_start = time.monotonic()
    outputs = llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
    gen_seconds = time.monotonic() - gen_start

    counts = {f"{op}/{backend}": n for (op, backend), n in sorted(rocm_accel_ops.call_counts().items())}
    return {
        "tokens": [list(o.outputs[0].token_ids) for o in outputs],
        "call_counts": counts,
        "routed_layers": list(state.get("routed", [])),
        "entry_point_installed": installed,
        "plugin_loaded_by": ("entry point" if installed else "explicit register()") if state else "nobody",
        "model_in_process": inspected.get("pid") == os.getpid(),
        "norm_classes": inspected.get("norm_classes", {}),
        "linear_kernels": inspected.get("linear_kernels", {}),
        "quantization": quantization,
        "num_layers": _num_layers(model_dir),
        "enforce_eager": enforce_eager,
        "num_prompts": len(prompts),
        "max_tokens": max_tokens,
        "load_seconds": round(load_seconds, 2),
        "generate_seconds": round(gen_seconds, 2),
        "seconds": round(time.monotonic() - start, 2),
    }


# --- command line --------------------------------------------------------------
def _format(result: dict, prompts: Sequence[Sequence[int]], mode: str) -> str:
    lines = [f"vllm-rocm-accel demo: tiny random Llama on vLLM ({mode}), {result['seconds']:.1f} s in the engine"]
    if not result.get("model_in_process", True):
        lines.append("  WARNING: the model ran in another process (VLLM_ENABLE_V1_MULTIPROCESSING=1?): counts are not its calls")
    if not result["entry_point_installed"]:
        lines.append("  WARNING: entry point not installed; the plugin was registered explicitly")
    for i, (prompt, toks) in enumerate(zip(prompts, result["tokens"])):
        lines.append(f"  prompt {i} ({len(prompt)} tokens) -> {toks}")
    lines.append(f"  routed vLLM layers: {', '.join(result['routed_layers']) or 'none'}")
    if result.get("linear_kernels"):
        lines.append("  FP8 linear kernels: " + ", ".join(f"{k} x{v}" for k, v in result["linear_kernels"].items()))
    if result.get("norm_classes"):
        lines.append("  norm modules in the model: " + ", ".join(f"{k} x{v}" for k, v in result["norm_classes"].items()))
    lines.append("  calls per (op, backend):")
    for key, n in result["call_counts"].items() or [("(none)", 0)]:
        lines.append(f"    {key:<32} {n}")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vllm_rocm_accel.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--compile", action="store_true", help="run vLLM compiled (torch.compile) instead of eager")
    parser.add_argument("--no-route", action="store_true", help="leave vLLM's layers alone (VLLM_ROCM_ACCEL_ROUTE_VLLM_LAYERS=0)")
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--quantization", help="serve quantized with this vLLM method, e.g. fp8_per_channel (bfloat16)")
    parser.add_argument("--model-dir", help="where to write/read the tiny model (default: a temporary directory)")
    # Child mode, used by run_generation().
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--eager", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--prompts", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        if not args.model:
            parser.error("--worker needs --model")
        prompts = json.loads(args.prompts) if args.prompts else default_prompts()
        result = _worker(args.model, bool(args.eager), args.max_tokens, prompts, args.quantization)
        print(RESULT_MARKER + json.dumps(result), flush=True)
        return 0

    prompts = default_prompts()
    mode = "compiled" if args.compile else "eager"
    with tempfile.TemporaryDirectory(prefix="vllm-rocm-accel-demo-") as tmp:
        model_dir = make_tiny_llama(args.model_dir or os.path.join(tmp, "tiny-llama"))
        result = run_generation(
            model_dir, enforce_eager=not args.compile, route=not args.no_route,
            max_tokens=args.max_tokens, prompts=prompts, quantization=args.quantization,
        )
    print(_format(result, prompts, mode))
    return 0


if __name__ == "__main__":
    sys.exit(main())
