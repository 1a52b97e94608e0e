"""``rocm_accel_ops``: the one entry point, shaped like vLLM's ``rocm_aiter_ops``.

Every method calls a registered ``torch.ops.rocm_accel.*`` op, so the calls are
traceable by ``torch.compile`` with no graph break. ``backend`` is ``None``
(``auto``, or the ``VLLM_ROCM_ACCEL_BACKEND`` override) or one of
``aiter``/``triton``/``torch``; an explicit backend that cannot serve the call
raises ``ValueError`` saying why.
"""

from __future__ import annotations

from typing import Optional

import torch

from . import fp8, platform, settings
from .checks.norm import check_rms_norm_args
from .ops import attention as _attention, kv_cache as _kv_cache, register_all
from .ops.stats import call_counts, reset as reset_call_counts

_OPS = register_all()
_rms_norm = _OPS["rms_norm"]
_fused_add_rms_norm = _OPS["fused_add_rms_norm"]
_fused_add_rms_norm_ = _OPS["fused_add_rms_norm_"]
_Tensor = torch.Tensor


def _python_types_ok(x, weight, epsilon, residual=None) -> bool:
    """The dispatcher rejects wrong Python types with a RuntimeError before our
    checks run; this cheap test lets the facade raise the clear TypeError instead."""
    return (
        isinstance(x, _Tensor)
        and (weight is None or isinstance(weight, _Tensor))
        and (residual is None or isinstance(residual, _Tensor))
        and isinstance(epsilon, (float, int))
        and not isinstance(epsilon, bool)
    )


class rocm_accel_ops:  # noqa: N801 - named like vLLM's rocm_aiter_ops
    """Facade over the ``rocm_accel`` ops and the AITER feature switches."""

    # -- registration and switches -------------------------------------------
    @staticmethod
    def register_ops_once() -> dict[str, torch._ops.OpOverload]:
        return register_all()

    @staticmethod
    def is_enabled() -> bool:
        """AITER can run here (ROCm gfx9 + AMD aiter) and ``VLLM_ROCM_USE_AITER`` is on."""
        return platform.aiter_supported() and settings.get_settings().VLLM_ROCM_USE_AITER

    @staticmethod
    def is_feature_enabled(feature: str) -> bool:
        return platform.aiter_supported() and settings.get_settings().feature_enabled(feature)

    @staticmethod
    def is_rmsnorm_enabled() -> bool:
        return rocm_accel_ops.is_feature_enabled("rmsnorm")

    # -- norm family --------------------------------------------------------
    @staticmethod
    def rms_norm(
        x: torch.Tensor, weight: Optional[torch.Tensor], epsilon: float, backend: Optional[str] = None
    ) -> torch.Tensor:
        if not _python_types_ok(x, weight, epsilon):
            check_rms_norm_args(x, weight, epsilon)
        return _rms_norm(x, weight, epsilon, backend or "auto")

    @staticmethod
    def fused_add_rms_norm(
        x: torch.Tensor,
        residual: torch.Tensor,
        weight: Optional[torch.Tensor],
        epsilon: float,
        *,
        inplace: bool = True,
        backend: Optional[str] = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(rms_norm(x + residual), x + residual)``. In place by default, as vLLM's:
        ``residual`` gets the sum and ``x`` the normalized rows; both are returned."""
        if not _python_types_ok(x, weight, epsilon, residual):
            check_rms_norm_args(x, weight, epsilon, residual)
        if inplace:
            _fused_add_rms_norm_(x, residual, weight, epsilon, backend or "auto")
            return x, residual
        return _fused_add_rms_norm(x, residual, weight, epsilon, backend or "auto")

    # -- activation family ----------------------------------------------------
    @staticmethod
    def silu_and_mul(
        x: torch.Tensor, out: Optional[torch.Tensor] = None, backend: Optional[str] = None
    ) -> torch.Tensor:
        """``silu(x[..., :d]) * x[..., d:]`` with ``d = x.shape[-1] // 2``; into ``out`` if given."""
        if not isinstance(x, _Tensor) or (out is not None and not isinstance(out, _Tensor)):
            from .checks.activation import check_act_and_mul_args

            check_act_and_mul_args(x, out)
        if out is None:
            return _OPS["silu_and_mul"](x, backend or "auto")
        _OPS["silu_and_mul_out"](out, x, backend or "auto")
        return out

    @staticmethod
    def gelu_and_mul(
        x: torch.Tensor,
        approximate: str = "none",
        out: Optional[torch.Tensor] = None,
        backend: Optional[str] = None,
    ) -> torch.Tensor:
        """``gelu(x[..., :d], approximate) * x[..., d:]``; ``approximate`` is ``"none"`` or ``"tanh"``."""
        if not isinstance(x, _Tensor) or (out is not None and not isinstance(out, _Tensor)) or not isinstance(
            approximate, str
        ):
            from .checks.activation import check_act_and_mul_args

            check_act_and_mul_args(x, out, approximate)
        if out is None:
            return _OPS["gelu_and_mul"](x, approximate, backend or "auto")
        _OPS["gelu_and_mul_out"](out, x, approximate, backend or "auto")
        return out

    # -- rotary embedding -----------------------------------------------------
    @staticmethod
    def rotary_embedding(
        positions: torch.Tensor,
        query: torch.Tensor,
        key: Optional[torch.Tensor],
        head_size: int,
        cos_sin_cache: torch.Tensor,
        is_neox: bool,
        rotary_dim: Optional[int] = None,
        inplace: bool = True,
        backend: Optional[str] = None,
    ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """vLLM's rotary embedding with a (max_position, rotary_dim) cos||sin cache.

        In place by default (query and key rotated where they are, and returned); with
        ``inplace=False`` new tensors come back and the inputs are left intact.
        """
        if not (isinstance(positions, _Tensor) and isinstance(query, _Tensor)
                and (key is None or isinstance(key, _Tensor)) and isinstance(cos_sin_cache, _Tensor)
                and isinstance(head_size, int) and isinstance(is_neox, bool)
                and (rotary_dim is None or isinstance(rotary_dim, int))):
            from .checks.rope import check_rope_args

            check_rope_args(positions, query, key, head_size, cos_sin_cache, is_neox, rotary_dim)
        if inplace:
            _OPS["rotary_embedding_"](positions, query, key, head_size, cos_sin_cache, is_neox, rotary_dim,
                                      backend or "auto")
            return query, key
        q, k = _OPS["rotary_embedding"](positions, query, key, head_size, cos_sin_cache, is_neox, rotary_dim,
                                        backend or "auto")
        return q, (k if key is not None else None)

    # -- FP8 quantization -----------------------------------------------------
    @staticmethod
    def is_linear_enabled() -> bool:
        return rocm_accel_ops.is_feature_enabled("linear")

    @staticmethod
    def fp8_dtype(device=None) -> torch.dtype:
        """This device's FP8 format: float8_e4m3fnuz on gfx94x (MI300), float8_e4m3fn elsewhere."""
        return fp8.fp8_dtype(device)

    @staticmethod
    def per_tensor_quant(
        x: torch.Tensor,
        scale: Optional[torch.Tensor] = None,
        dtype: Optional[torch.dtype] = None,
        backend: Optional[str] = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(q, scale (1,)): dynamic when ``scale`` is None, static otherwise."""
        if not (isinstance(x, _Tensor) and (scale is None or isinstance(scale, _Tensor))
                and (dtype is None or isinstance(dtype, torch.dtype))):
            from .checks.quant import check_per_tensor_args

            check_per_tensor_args(x, scale, dtype)
        return _OPS["per_tensor_quant"](x, scale, dtype, backend or "auto")

    @staticmethod
    def per_token_quant(
        x: torch.Tensor,
        dtype: Optional[torch.dtype] = None,
        scale_ub: Optional[torch.Tensor] = None,
        backend: Optional[str] = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(q, scales (..., 1)); ``scale_ub`` caps each row's max |x|."""
        if not (isinstance(x, _Tensor) and (scale_ub is None or isinstance(scale_ub, _Tensor))
                and (dtype is None or isinstance(dtype, torch.dtype))):
            from .checks.quant import check_per_token_args

            check_per_token_args(x, dtype, scale_ub)
        return _OPS["per_token_quant"](x, dtype, scale_ub, backend or "auto")

    @staticmethod
    def per_token_group_quant(
        x: torch.Tensor,
        group_size: int = 128,
        column_major_scales: bool = False,
        dtype: Optional[torch.dtype] = None,
        backend: Optional[str] = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(q, scales (..., H // group_size)), column-major scales when asked."""
        if not (isinstance(x, _Tensor) and isinstance(group_size, int) and not isinstance(group_size, bool)
                and isinstance(column_major_scales, bool) and (dtype is None or isinstance(dtype, torch.dtype))):
            from .checks.quant import check_per_token_group_args

            check_per_token_group_args(x, group_size, column_major_scales, dtype)
        return _OPS["per_token_group_quant"](x, group_size, column_major_scales, dtype, backend or "auto")

    # -- fused norm / activation + FP8 quant ------------------------------------
    @staticmethod
    def rms_norm_dynamic_quant(
        x: torch.Tensor,
        weight: Optional[torch.Tensor],
        epsilon: float,
        dtype: Optional[torch.dtype] = None,
        backend: Optional[str] = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(q, scales (..., 1)) = per_token_quant(rms_norm(x, weight, epsilon)), in one pass."""
        if not (_python_types_ok(x, weight, epsilon) and (dtype is None or isinstance(dtype, torch.dtype))):
            from .checks.fused_quant import check_rms_norm_quant_args

            check_rms_norm_quant_args(x, weight, epsilon, dtype)
        return _OPS["rms_norm_dynamic_quant"](x, weight, epsilon, dtype, backend or "auto")

    @staticmethod
    def fused_add_rms_norm_dynamic_quant(
        x: torch.Tensor,
        residual: torch.Tensor,
        weight: Optional[torch.Tensor],
        epsilon: float,
        dtype: Optional[torch.dtype] = None,
        backend: Optional[str] = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``residual <- x + residual`` in place (as ``fused_add_rms_norm``; x is only read), and
        (q, scales (..., 1)) = per_token_quant(rms_norm(x + residual, weight, epsilon)), in one pass."""
        if not (_python_types_ok(x, weight, epsilon, residual) and isinstance(residual, _Tensor)
                and (dtype is None or isinstance(dtype, torch.dtype))):
            from .checks import check_tensor
            from .checks.fused_quant import check_rms_norm_quant_args

            check_tensor("residual", residual)
            check_rms_norm_quant_args(x, weight, epsilon, dtype, residual)
        return _OPS["fused_add_rms_norm_dynamic_quant"](x, residual, weight, epsilon, dtype, backend or "auto")

    @staticmethod
    def silu_and_mul_group_quant(
        x: torch.Tensor,
        group_size: int = 128,
        column_major_scales: bool = False,
        dtype: Optional[torch.dtype] = None,
        backend: Optional[str] = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(q (..., d), scales (..., d // group_size)) = per_token_group_quant(silu_and_mul(x), group_size,
        column_major_scales), in one pass; ``d = x.shape[-1] // 2``."""
        if not (isinstance(x, _Tensor) and isinstance(group_size, int) and not isinstance(group_size, bool)
                and isinstance(column_major_scales, bool) and (dtype is None or isinstance(dtype, torch.dtype))):
            from .checks.fused_quant import check_silu_and_mul_group_quant_args

            check_silu_and_mul_group_quant_args(x, group_size, column_major_scales, dtype)
        return _OPS["silu_and_mul_group_quant"](x, group_size, column_major_scales, dtype, backend or "auto")

    # -- FP8 GEMMs ------------------------------------------------------------
    @staticmethod
    def gemm_a8w8(
        a: torch.Tensor,
        w: torch.Tensor,
        a_scale: torch.Tensor,
        w_scale: torch.Tensor,
        bias: Optional[torch.Tensor] = None,
        out_dtype: torch.dtype = torch.bfloat16,
        backend: Optional[str] = None,
    ) -> torch.Tensor:
        """(a * a_scale) @ (w * w_scale).T (+ bias): a (M, K), w (N, K) FP8; a_scale per tensor
        or (M, 1); w_scale per tensor or (N, 1). -> (M, N) in out_dtype."""
        if not (isinstance(a, _Tensor) and isinstance(w, _Tensor) and isinstance(a_scale, _Tensor)
                and isinstance(w_scale, _Tensor) and (bias is None or isinstance(bias, _Tensor))
                and isinstance(out_dtype, torch.dtype)):
            from .checks.gemm import check_gemm_a8w8_args

            check_gemm_a8w8_args(a, w, a_scale, w_scale, bias, out_dtype)
        return _OPS["gemm_a8w8"](a, w, a_scale, w_scale, bias, out_dtype, backend or "auto")

    @staticmethod
    def gemm_a8w8_blockscale(
        a: torch.Tensor,
        w: torch.Tensor,
        a_scale: torch.Tensor,
        w_scale: torch.Tensor,
        out_dtype: torch.dtype = torch.bfloat16,
        backend: Optional[str] = None,
    ) -> torch.Tensor:
        """Block-scaled a @ w.T: a_scale (M, ceil(K/128)) per 1x128 group, w_scale
        (ceil(N/128), ceil(K/128)) per 128x128 block. -> (M, N) in out_dtype."""
        if not (isinstance(a, _Tensor) and isinstance(w, _Tensor) and isinstance(a_scale, _Tensor)
                and isinstance(w_scale, _Tensor) and isinstance(out_dtype, torch.dtype)):
            from .checks.gemm import check_gemm_a8w8_blockscale_args

            check_gemm_a8w8_blockscale_args(a, w, a_scale, w_scale, out_dtype)
        return _OPS["gemm_a8w8_blockscale"](a, w, a_scale, w_scale, out_dtype, backend or "auto")

    # -- attention family -------------------------------------------------------
    @staticmethod
    def is_mha_enabled() -> bool:
        return rocm_accel_ops.is_feature_enabled("mha")

    @staticmethod
    def flash_attn_func(
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        dropout_p: float = 0.0,
        softmax_scale: Optional[float] = None,
        causal: bool = False,
        window_size: tuple[int, int] = (-1, -1),
        softcap: float = 0.0,
        alibi_slopes: Optional[torch.Tensor] = None,
        deterministic: bool = False,
        return_lse: bool = False,
        backend: Optional[str] = None,
    ):
        """FlashAttention's ``flash_attn_func``: q (B, Sq, Hq, D), k (B, Sk, Hk, D), v (B, Sk, Hk, Dv)
        -> out (B, Sq, Hq, Dv), plus lse (B, Hq, Sq) float32 with ``return_lse``. Differentiable.
        Causal is aligned to the bottom-right corner; rows that see no key give zeros (lse +inf)."""
        return _attention.flash_attn_func(q, k, v, dropout_p, softmax_scale, causal, window_size, softcap,
                                          alibi_slopes, deterministic, return_lse, backend or "auto")

    @staticmethod
    def flash_attn_varlen_func(
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        cu_seqlens_q: torch.Tensor,
        cu_seqlens_k: Optional[torch.Tensor],
        max_seqlen_q: int,
        max_seqlen_k: int,
        dropout_p: float = 0.0,
        softmax_scale: Optional[float] = None,
        causal: bool = False,
        window_size: tuple[int, int] = (-1, -1),
        softcap: float = 0.0,
        alibi_slopes: Optional[torch.Tensor] = None,
        deterministic: bool = False,
        return_lse: bool = False,
        backend: Optional[str] = None,
        *,
        block_table: Optional[torch.Tensor] = None,
        seqused_k: Optional[torch.Tensor] = None,
        num_splits: int = 0,
        k_descale: Optional[torch.Tensor] = None,
        v_descale: Optional[torch.Tensor] = None,
        out: Optional[torch.Tensor] = None,
        check_values: bool = True,
    ):
        """FlashAttention's ``flash_attn_varlen_func`` on packed (T, H, D) tensors with int32
        ``cu_seqlens`` (B + 1,); lse is (Hq, Tq). Differentiable.

        Paged (serving, forward-only): ``block_table`` (B, max_blocks) int32 and ``seqused_k`` (B,)
        int32 with ``k`` / ``v`` vLLM's caches (num_blocks, block_size, Hk, D) and ``cu_seqlens_k``
        None; FP8 caches take ``k_descale`` / ``v_descale`` (float32, 1 element); ``num_splits`` 0 =
        heuristic, 1 = off, G >= 2 = forced; ``out`` is written in place. ``check_values=False``
        skips the host read of the index tensors' values (``VLLM_ROCM_ACCEL_CHECK_SEQLENS``) for a
        caller that validated them itself."""
        return _attention.flash_attn_varlen_func(
            q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p, softmax_scale, causal,
            window_size, softcap, alibi_slopes, deterministic, return_lse, backend or "auto",
            block_table=block_table, seqused_k=seqused_k, num_splits=num_splits, k_descale=k_descale,
            v_descale=v_descale, out=out, check_values=check_values,
        )

    # -- kv cache -----------------------------------------------------------------
    @staticmethod
    def reshape_and_cache_flash(
        key: torch.Tensor,
        value: torch.Tensor,
        key_cache: torch.Tensor,
        value_cache: torch.Tensor,
        slot_mapping: torch.Tensor,
        kv_cache_dtype: str,
        k_scale: torch.Tensor,
        v_scale: torch.Tensor,
        backend: Optional[str] = None,
        check_values: bool = True,
    ) -> None:
        """vLLM's ``reshape_and_cache_flash``: rows ``t < slot_mapping.shape[0]`` of key (N, Hk, D) and
        value (N, Hk, Dv) into ``key_cache``/``value_cache`` (num_blocks, block_size, Hk, D/Dv) at
        block ``s // block_size``, offset ``s % block_size`` (``s = slot_mapping[t]``; -1 skipped).
        ``kv_cache_dtype`` "auto" (caches of key's dtype) or "fp8" (FP8 or uint8 caches holding
        ``fp8(x / k_scale)`` / ``fp8(x / v_scale)``, float32 one-element scales). In place.
        ``check_values=False`` skips the host read of the slot values (``VLLM_ROCM_ACCEL_CHECK_SEQLENS``)."""
        _kv_cache.reshape_and_cache_flash(key, value, key_cache, value_cache, slot_mapping, kv_cache_dtype, k_scale,
                                          v_scale, backend, check_values)

    # -- introspection --------------------------------------------------------
    call_counts = staticmethod(call_counts)
    reset_call_counts = staticmethod(reset_call_counts)
