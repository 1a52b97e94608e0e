"""Small steps the attention, paged-attention and KV-cache op bodies share before a backend runs.

* :func:`host_value_checks_on`: whether index tensors' *values* may be read on the host now
  (``VLLM_ROCM_ACCEL_CHECK_SEQLENS`` on, and no CUDA graph being captured: a host read would
  break the capture; graphs replay metadata validated before capture);
* :func:`unit_last`: the tensor, or a contiguous copy where its last dim is strided (the kernels
  read unit-stride rows);
* :func:`grad_needed`: whether autograd will want gradients of any of the tensors.
"""

from __future__ import annotations

from typing import Optional

import torch

from .. import settings


def host_value_checks_on(index: torch.Tensor) -> bool:
    if not settings.get_settings().VLLM_ROCM_ACCEL_CHECK_SEQLENS:
        return False
    return not (index.is_cuda and torch.cuda.is_current_stream_capturing())


def unit_last(t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    return t if t is None or t.numel() == 0 or t.stride(-1) == 1 else t.contiguous()


def grad_needed(*tensors) -> bool:
    return torch.is_grad_enabled() and any(isinstance(t, torch.Tensor) and t.requires_grad for t in tensors)
