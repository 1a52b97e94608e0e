"""Checks for the norm family."""

from __future__ import annotations

from . import check_float, check_like, check_same_device, check_tensor


def check_rms_norm_args(x, weight, epsilon, residual=None) -> None:
    check_tensor("x", x)
    if x.dim() == 0:
        raise ValueError("x is 0-d; expected shape (..., hidden_size)")
    hidden = x.shape[-1]
    if hidden == 0:
        raise ValueError(f"x has hidden size 0 (shape {tuple(x.shape)}); expected a non-empty last dim")
    if weight is not None:
        check_tensor("weight", weight)
        if weight.dim() != 1 or weight.shape[0] != hidden:
            raise ValueError(f"weight has shape {tuple(weight.shape)}; expected ({hidden},) to match x's last dim")
        check_same_device("weight", weight, "x", x)
    if residual is not None:
        check_tensor("residual", residual)
        check_like("residual", residual, "x", x)
    check_float("epsilon", epsilon)
