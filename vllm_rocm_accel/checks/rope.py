"""Checks for the rotary-embedding family (shared by the ops and their fakes).

The contract is vLLM 0.32's ``RotaryEmbedding`` (``forward_static`` / ``ops.rotary_embedding``):

* ``positions``: 1-D int32/int64 of length T (any stride);
* ``query``: (T, Hq * head_size) or (T, Hq, head_size), float32/float16/bfloat16;
* ``key``: None, or (T, Hk * head_size) / (T, Hk, head_size) (GQA: any Hk >= 1);
* ``cos_sin_cache``: (max_position, rotary_dim) as cos || sin, float32 (vLLM's buffer) or
  float16/bfloat16 (vLLM converts it to the query dtype before calling its kernels);
  ``rotary_dim`` (the cache width) is even and ``<= head_size``; a given ``rotary_dim``
  argument must equal it.
"""

from __future__ import annotations

from . import FLOAT_DTYPES, check_same_device, check_tensor



def _int_arg(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        # SymInts (torch.compile with dynamic shapes) are ints for our purposes
        if type(value).__name__ != "SymInt":
            raise TypeError(f"{name} must be an int, got {type(value).__name__}")


def _heads(name: str, t, head_size: int, tokens) -> None:
    if t.dim() not in (2, 3):
        raise ValueError(
            f"{name} has shape {tuple(t.shape)}; expected (num_tokens, num_heads * head_size) "
            "or (num_tokens, num_heads, head_size)"
        )
    if t.shape[0] != tokens:
        raise ValueError(f"{name} has {t.shape[0]} tokens (shape {tuple(t.shape)}); positions has {tokens}")
    if t.dim() == 3:
        if t.shape[2] != head_size:
            raise ValueError(f"{name} has head dim {t.shape[2]} (shape {tuple(t.shape)}); expected head_size={head_size}")
        if t.shape[1] == 0:
            raise ValueError(f"{name} has 0 heads (shape {tuple(t.shape)})")
    else:
        if t.shape[1] == 0 or t.shape[1] % head_size != 0:
            raise ValueError(
                f"{name} has last dim {t.shape[1]} (shape {tuple(t.shape)}); expected a positive multiple "
                f"of head_size={head_size}"
            )


def check_rope_args(positions, query, key, head_size, cos_sin_cache, is_neox, rotary_dim) -> None:
    import torch

    check_tensor("positions", positions, (torch.int32, torch.int64))
    if positions.dim() != 1:
        raise ValueError(f"positions has shape {tuple(positions.shape)}; expected 1-D (num_tokens,)")
    check_tensor("query", query)
    _int_arg("head_size", head_size)
    if head_size <= 0:
        raise ValueError(f"head_size must be positive, got {head_size}")
    tokens = positions.shape[0]
    _heads("query", query, head_size, tokens)
    check_same_device("positions", positions, "query", query)
    if key is not None:
        check_tensor("key", key)
        _heads("key", key, head_size, tokens)
        check_same_device("key", key, "query", query)
    check_tensor("cos_sin_cache", cos_sin_cache, FLOAT_DTYPES)
    if cos_sin_cache.dim() != 2:
        raise ValueError(
            f"cos_sin_cache has shape {tuple(cos_sin_cache.shape)}; expected (max_position, rotary_dim)"
        )
    check_same_device("cos_sin_cache", cos_sin_cache, "query", query)
    if cos_sin_cache.shape[0] == 0:
        raise ValueError("cos_sin_cache has 0 positions")
    width = cos_sin_cache.shape[1]
    if width == 0 or width % 2 or width > head_size:
        raise ValueError(
            f"cos_sin_cache has width {width} (shape {tuple(cos_sin_cache.shape)}); expected an even "
            f"rotary_dim in [2, head_size={head_size}]"
        )
    if not isinstance(is_neox, bool):
        raise TypeError(f"is_neox must be a bool, got {type(is_neox).__name__}")
    if rotary_dim is not None:
        _int_arg("rotary_dim", rotary_dim)
        if rotary_dim != width:
            raise ValueError(
                f"rotary_dim={rotary_dim} does not match cos_sin_cache's width {width} "
                "(the cache is (max_position, rotary_dim) as cos || sin)"
            )


def check_positions_in_range(positions, max_position: int) -> None:
    """VLLM_ROCM_ACCEL_CHECK_POSITIONS: ValueError naming the first position outside [0, max_position).

    Reads the positions on the host (a device sync): a debugging switch.
    """
    if positions.numel() == 0:
        return
    bad = (positions < 0) | (positions >= max_position)
    if bool(bad.any()):
        index = int(bad.nonzero()[0, 0])
        raise ValueError(
            f"positions[{index}] = {int(positions[index])} is outside the cos_sin_cache's range "
            f"[0, {max_position}) (VLLM_ROCM_ACCEL_CHECK_POSITIONS=1)"
        )
