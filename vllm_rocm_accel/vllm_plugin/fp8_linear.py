"""vLLM's FP8 linear layers served by our quant + GEMM ops, through vLLM's public kernel registry.

vLLM 0.32 picks the kernel of an FP8 ``W8A8`` linear layer (``Fp8LinearMethod``, the online
``fp8_per_tensor`` / ``fp8_per_channel`` methods, compressed-tensors, quark, ModelOpt,
FBGEMM) in ``vllm.model_executor.kernels.linear.init_fp8_linear_kernel``: it walks the
platform's list of ``FP8ScaledMMLinearKernel`` classes in order and takes the first whose
``is_supported()`` and ``can_implement(config)`` both say yes and whose class name is not in
``VLLM_DISABLED_KERNELS``. The one public way in is ``register_linear_kernel(cls, platform,
"fp8")``, which *appends* to that list. So :class:`RocmAccelFP8ScaledMMLinearKernel` is
chosen only where every vLLM kernel ahead of it declines: on its own where none of vLLM's can
serve the layer, or when a deployment names the ones ahead in ``VLLM_DISABLED_KERNELS``
(:data:`KERNELS_AHEAD` lists them per platform; README, "FP8 linear layers in vLLM"). There is no public way to put it
first: ``--linear-backend`` takes a fixed list of names and filters by a private map our
class is not in, and ``init_fp8_linear_kernel``'s ``force_kernel`` is not reachable from
any quantization method.

What it does per call (``apply_weights``): quantize the activation with our
``per_token_quant`` (dynamic per token, ``input_scale_ub`` honoured) or ``per_tensor_quant``
(dynamic, or static with the layer's ``input_scale``) into the weight's FP8 format, then
``gemm_a8w8(a, w, a_scale, w_scale, bias, out_dtype)`` with the weight in (N, K) layout.
vLLM's FP8 methods leave ``layer.weight`` as a (K, N) view of (N, K) storage before calling
``process_weights_after_loading``; we keep that view on the layer (vLLM's batch-invariant
fallback reads it as (K, N)) and hand its transpose, a free (N, K) view, to the GEMM.

Block-scaled FP8 (1 x 128 activations, 128 x 128 weights) is chosen from a separate list,
``_POSSIBLE_FP8_BLOCK_KERNELS``, which ``register_linear_kernel`` cannot reach (its kernel
types are ``mp``, ``int8``, ``fp8``, ``mxfp8``, ``nvfp4``, ``mxfp4``, ``mxfp6``): vLLM 0.32
has no public point for it, so ``gemm_a8w8_blockscale`` is usable through the facade only.
"""

from __future__ import annotations

import threading
from typing import Optional

import torch
from vllm.model_executor.kernels.linear import (
    FP8ScaledMMLinearKernel,
    FP8ScaledMMLinearLayerConfig,
    register_linear_kernel,
)
from vllm.model_executor.utils import replace_parameter
from vllm.platforms import PlatformEnum, current_platform

from .. import fp8, settings
from ..facade import rocm_accel_ops

SETTING = "VLLM_ROCM_ACCEL_FP8_LINEAR"
# vLLM platforms our ops serve (torch everywhere, triton on CUDA/ROCm, aiter on ROCm gfx9).
PLATFORMS = (PlatformEnum.ROCM, PlatformEnum.CUDA, PlatformEnum.CPU)
OUT_DTYPES = (torch.bfloat16, torch.float16, torch.float32)
INPUT_DTYPES = (torch.bfloat16, torch.float16, torch.float32)

# vLLM 0.32's FP8 W8A8 kernels ahead of ours, per platform, in vLLM's order
# (``_POSSIBLE_FP8_KERNELS`` in vllm/model_executor/kernels/linear/__init__.py; a test checks
# this copy against it). Naming them in ``VLLM_DISABLED_KERNELS`` is how a deployment picks ours.
KERNELS_AHEAD: dict[str, tuple[str, ...]] = {
    "ROCM": (
        "AiterHipbMMPerTokenFp8ScaledMMLinearKernel",
        "AiterPreshuffledPerTokenFp8ScaledMMLinearKernel",
        "AiterPerTokenFp8ScaledMMLinearKernel",
        "ROCmFP8ScaledMMLinearKernel",
        "PerTensorTorchFP8ScaledMMLinearKernel",
        "RowWiseTorchFP8ScaledMMLinearKernel",
        "ChannelWiseTorchFP8ScaledMMLinearKernel",
    ),
    "CUDA": (
        "FlashInferFP8ScaledMMLinearKernel",
        "CutlassFP8ScaledMMLinearKernel",
        "B12xTensorFP8ScaledMMLinearKernel",
        "PerTensorTorchFP8ScaledMMLinearKernel",
        "ChannelWiseTorchFP8ScaledMMLinearKernel",
        "MarlinFP8ScaledMMLinearKernel",
        "HummingFP8ScaledMMLinearKernel",
    ),
    "CPU": (
        "CPUFP8W8A8ScaledMMLinearKernel",
        "CPUFp8PerTensorScaledMMLinearKernel",
        "PerTensorTorchFP8ScaledMMLinearKernel",
        "ChannelWiseTorchFP8ScaledMMLinearKernel",
    ),
}


def disabled_kernels_value(platform: str) -> str:
    """The ``VLLM_DISABLED_KERNELS`` value that makes vLLM 0.32 pick our kernel on ``platform``
    (``ROCM``, ``CUDA`` or ``CPU``) for every FP8 W8A8 layer our kernel can implement."""
    return ",".join(KERNELS_AHEAD[platform.upper()])


def _scale_problem(desc, what: str) -> Optional[str]:
    """Why a vLLM ``ScaleDesc`` is not one our ops take (None: it is)."""
    if desc.dtype != torch.float32:
        return f"{what} scales are {desc.dtype}; ours are float32"
    return None


class RocmAccelFP8ScaledMMLinearKernel(FP8ScaledMMLinearKernel):
    """FP8 W8A8 linear: our ``per_token_quant`` / ``per_tensor_quant`` then ``gemm_a8w8``.

    Takes: activations dynamic per token, dynamic per tensor or static per tensor;
    weights static per tensor or per output channel (vLLM's per-channel or, as fbgemm_fp8 labels
    them, per-token weight scales); symmetric; float32 scales; input and
    output dtypes bfloat16, float16 or float32. Everything else is declined with a reason,
    so vLLM goes on to the next kernel or reports why none fits.
    """

    @classmethod
    def is_supported(cls, compute_capability: Optional[int] = None) -> tuple[bool, Optional[str]]:
        if not settings.get_settings().VLLM_ROCM_ACCEL_FP8_LINEAR:
            return False, f"turned off by {SETTING}=0"
        if not (current_platform.is_rocm() or current_platform.is_cuda() or current_platform.is_cpu()):
            return False, "vllm-rocm-accel's ops serve ROCm, CUDA and CPU only"
        return True, None

    @classmethod
    def can_implement(cls, c: FP8ScaledMMLinearLayerConfig) -> tuple[bool, Optional[str]]:
        act, wq = c.activation_quant_key, c.weight_quant_key
        for key, what in ((act, "activation"), (wq, "weight")):
            if key.dtype not in fp8.FP8_DTYPES:
                return False, f"{what} dtype {key.dtype} is not float8_e4m3fn / float8_e4m3fnuz"
            if not key.symmetric or key.scale2 is not None:
                return False, f"{what} quantization must be symmetric with one scale level"
            problem = _scale_problem(key.scale, what)
            if problem:
                return False, problem
        a_shape, w_shape = act.scale.group_shape, wq.scale.group_shape
        if a_shape.is_per_token():
            if act.scale.static:
                return False, "static per-token activation scales are not supported (dynamic per token is)"
        elif not a_shape.is_per_tensor():
            return False, (
                f"activation scales {tuple(a_shape)} are neither per tensor nor per token "
                "(block-scaled FP8 has no public registration point in vLLM 0.32)"
            )
        if not wq.scale.static:
            return False, "weight scales must be static"
        # One scale per output channel is labelled per channel (compressed-tensors) or per token
        # (fbgemm_fp8: one per row of the (N, K) weight); both are (N, 1) scales to gemm_a8w8.
        if not (w_shape.is_per_tensor() or w_shape.is_per_channel() or w_shape.is_per_token()):
            return False, f"weight scales {tuple(w_shape)} are neither per tensor nor per output channel"
        if c.out_dtype is not None and c.out_dtype not in OUT_DTYPES:
            return False, f"output dtype {c.out_dtype} is not bfloat16, float16 or float32"
        if c.input_dtype is not None and c.input_dtype not in INPUT_DTYPES:
            return False, f"input dtype {c.input_dtype} is not bfloat16, float16 or float32"
        if c.weight_shape is None or len(c.weight_shape) != 2:
            return False, "needs the (N, K) weight shape"
        return True, None

    # -- weights -----------------------------------------------------------------
    def process_weights_after_loading(self, layer: torch.nn.Module) -> None:
        """Check the layout and normalize the scales once; the weight stays vLLM's (K, N) view.

        * ``weight`` (K, N): if its transpose is not a row-major (N, K) view, it is
          re-stored so that it is (still a (K, N) view, of (N, K) storage).
        * ``weight_scale``: one element, or one per output channel. One per fused shard
          (QKV / gate-up with per-tensor scales left per shard) becomes per channel.
        * ``input_scale`` (static): must be one element.
        """
        w_name, ws_name, xs_name, _ = self.layer_param_names
        w = getattr(layer, w_name)
        n, k = self.config.weight_shape
        if tuple(w.shape) != (k, n):
            raise ValueError(
                f"{type(self).__name__}: layer.{w_name} has shape {tuple(w.shape)}; expected vLLM's (K, N) = "
                f"({k}, {n}) view of an (N, K) FP8 weight"
            )
        if w.dtype not in fp8.FP8_DTYPES:
            raise ValueError(f"{type(self).__name__}: layer.{w_name} has dtype {w.dtype}; expected an FP8 format")
        if w.t().stride(-1) != 1:
            replace_parameter(layer, w_name, torch.nn.Parameter(w.t().contiguous().t(), requires_grad=False))

        ws = getattr(layer, ws_name)
        widths = list(getattr(layer, "logical_widths", None) or [])
        if ws.numel() == 1 or (ws.numel() == n and tuple(ws.shape) in ((n,), (n, 1))):
            want = None  # already a shape gemm_a8w8 takes
        elif ws.numel() == n:
            want = ws.detach().reshape(n, 1)
        elif len(widths) > 1 and ws.numel() == len(widths) and sum(widths) == n:
            shards = torch.tensor(widths, device=ws.device)
            want = torch.repeat_interleave(ws.detach().reshape(-1), shards).reshape(n, 1)
        else:
            raise ValueError(
                f"{type(self).__name__}: layer.{ws_name} has shape {tuple(ws.shape)}; expected one element or one "
                f"per output channel (N = {n})"
            )
        if want is not None or ws.dtype != torch.float32:
            want = ws.detach() if want is None else want
            replace_parameter(layer, ws_name, torch.nn.Parameter(want.to(torch.float32), requires_grad=False))

        if self.config.activation_quant_key.scale.static:
            xs = getattr(layer, xs_name, None)
            if xs is None or xs.numel() != 1:
                raise ValueError(
                    f"{type(self).__name__}: static activation quantization needs layer.{xs_name} with one "
                    f"element, got {None if xs is None else tuple(xs.shape)}"
                )
            if xs.dtype != torch.float32:
                xs32 = torch.nn.Parameter(xs.detach().to(torch.float32), requires_grad=False)
                replace_parameter(layer, xs_name, xs32)

    # -- forward -----------------------------------------------------------------
    def apply_weights(self, layer: torch.nn.Module, x, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            # A pre-quantized activation: we never advertise an input_quant_key, so
            # vLLM's fusion passes should not hand us one.
            raise TypeError(f"{type(self).__name__} quantizes its own input; got {type(x).__name__}")
        w, w_s, x_s, x_s_ub = self._get_layer_params(layer)
        w_nk = w.t()  # (N, K), a view
        out_dtype = self.config.out_dtype or x.dtype
        x_2d = x.reshape(-1, x.shape[-1])
        scale = self.config.activation_quant_key.scale
        if scale.group_shape.is_per_token():
            a, a_s = rocm_accel_ops.per_token_quant(x_2d, w.dtype, x_s_ub)
        else:
            a, a_s = rocm_accel_ops.per_tensor_quant(x_2d, x_s if scale.static else None, w.dtype)
        out = rocm_accel_ops.gemm_a8w8(a, w_nk, a_s, w_s, bias, out_dtype)
        return out.view(*x.shape[:-1], w_nk.shape[0])

    def apply_scaled_mm(
        self,
        *,
        A: torch.Tensor,
        B: torch.Tensor,
        out_dtype: torch.dtype,
        As: torch.Tensor,
        Bs: torch.Tensor,
        bias: Optional[torch.Tensor],
        output_shape: list,
    ) -> torch.Tensor:
        """vLLM's GEMM hook (``B`` in its (K, N) layout); ``apply_weights`` does not go through it."""
        return rocm_accel_ops.gemm_a8w8(A, B.t(), As, Bs, bias, out_dtype).view(*output_shape)


# --- registration -------------------------------------------------------------------
_lock = threading.Lock()
_registered: list[str] = []


def register() -> list[str]:
    """Append our kernel to vLLM's FP8 kernel list of each platform in :data:`PLATFORMS`,
    once per process. Returns the platform names it is registered for."""
    with _lock:
        if not _registered:
            for plat in PLATFORMS:
                register_linear_kernel(RocmAccelFP8ScaledMMLinearKernel, plat, kernel_type="fp8")
                _registered.append(plat.name)
        return list(_registered)


def registered_platforms() -> list[str]:
    return list(_registered)
