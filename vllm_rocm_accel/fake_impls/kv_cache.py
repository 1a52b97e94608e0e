"""Fake for the KV-cache family: the checks; the op writes its caches in place and returns nothing."""

from __future__ import annotations

import torch

from ..checks.kv_cache import check_reshape_and_cache_flash_args


def reshape_and_cache_flash(
    key: torch.Tensor,
    value: torch.Tensor,
    key_cache: torch.Tensor,
    value_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
    kv_cache_dtype: str,
    k_scale: torch.Tensor,
    v_scale: torch.Tensor,
    backend: str = "auto",
    check_values: bool = True,
) -> None:
    check_reshape_and_cache_flash_args(key, value, key_cache, value_cache, slot_mapping, kv_cache_dtype, k_scale,
                                       v_scale)
