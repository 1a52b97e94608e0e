"""Backend selection for one op: explicit backends, and ``auto`` from the policy table.

Each op has up to three :class:`Backend` entries (``aiter``, ``triton``,
``torch``). A backend answers two questions with ``None`` (yes) or a reason
(no): ``supported(device)`` about the platform, arch, library and flags, cached
per device; ``supports_args(*args)`` about this call's dtypes, shapes and
strides. ``auto`` walks the device family's policy rules (data, see
:mod:`vllm_rocm_accel.policy`) and takes the first backend whose rule matches
and which says yes to both; ``torch`` closes every list, so ``auto`` never
raises. An explicit backend that says no raises ``ValueError`` with its reason.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from typing import Callable, NamedTuple, Optional

import torch

from . import platform, policy, settings

Reason = Optional[str]
CHOICE_CACHE_LIMIT = 4096  # cached backend choices per op


class CallShape(NamedTuple):
    """What the policy rules look at: the device, the dtype and a 2-D view of the work."""

    device: torch.device
    dtype: torch.dtype
    rows: int
    cols: int


@dataclass(frozen=True)
class Backend:
    name: str
    run: Callable
    supported: Callable[[torch.device], Reason]
    supports_args: Callable[..., Reason]
    # fast_path(*args): whether this backend's fast kernel serves the call (policy rules marked
    # "fast_path" apply only then); None: the backend has no such distinction.
    fast_path: Optional[Callable[..., bool]] = None


class OpDispatch:
    """The backends of one op and the logic that picks among them."""

    def __init__(self, op: str, backends: list[Backend], call_shape: Callable[..., CallShape]):
        self.op = op
        self.backends = {b.name: b for b in backends}
        self.call_shape = call_shape
        self._supported: dict[tuple[str, torch.device], Reason] = {}
        self._chosen: dict[tuple, Backend] = {}  # call signature -> backend (see select)
        settings.on_refresh(self.clear_caches)

    def clear_caches(self) -> None:
        self._supported.clear()
        self._chosen.clear()

    def row_bracket(self, rows: int) -> int:
        """Which of the policy's row ranges ``rows`` falls in (part of the choice cache key)."""
        return bisect_right(policy.row_bounds(self.op), rows)

    # -- predicates ----------------------------------------------------------
    def unsupported_reason(self, backend: Backend, device: torch.device) -> Reason:
        key = (backend.name, device)
        try:
            return self._supported[key]
        except KeyError:
            reason = backend.supported(device)
            self._supported[key] = reason
            return reason

    def refusal(self, name: str, args: tuple) -> Reason:
        """Why backend ``name`` cannot serve this call, or None if it can."""
        backend = self.backends.get(name)
        if backend is None:
            return f"no {name} backend for {self.op} (backends: {', '.join(self.backends)})"
        shape = self.call_shape(*args)
        return self.unsupported_reason(backend, shape.device) or backend.supports_args(*args)

    # -- selection -----------------------------------------------------------
    def _rule_applies(self, rule: policy.Rule, backend: Backend, shape: CallShape, args: tuple) -> bool:
        """The rule's shape conditions, and for a ``fast_path`` rule the backend's own predicate."""
        if not rule.matches(shape):
            return False
        return not rule.fast_path or (backend.fast_path is not None and bool(backend.fast_path(*args)))

    def select(self, backend: str, args: tuple, key: Optional[tuple] = None) -> Backend:
        """The backend that runs this call. Explicit names raise if they cannot serve.

        ``key``, when the op passes one, holds everything the choice depends on (backend
        name, dtypes, device, hidden size, the policy's row bracket, dense layout); the
        choice is then cached under it, so repeated calls skip the predicates (a backend's
        ``fast_path`` predicate must then depend only on what the key holds).
        """
        if key is not None:
            hit = self._chosen.get(key)
            if hit is not None:
                return hit
            chosen = self._select(backend, args)
            if len(self._chosen) >= CHOICE_CACHE_LIMIT:  # keys holding call sizes must not pile up
                self._chosen.clear()
            self._chosen[key] = chosen
            return chosen
        return self._select(backend, args)

    def _select(self, backend: str, args: tuple) -> Backend:
        if backend == "auto":
            backend = settings.get_settings().backend_override(self.op)
        if backend != "auto":
            if backend not in settings.BACKENDS:
                raise ValueError(
                    f"{self.op}: backend={backend!r} is not one of {', '.join(settings.BACKEND_CHOICES)}"
                )
            reason = self.refusal(backend, args)
            if reason is not None:
                raise ValueError(f"{self.op}: backend {backend!r} cannot serve this call: {reason}")
            return self.backends[backend]
        return self.auto(args)

    def auto(self, args: tuple) -> Backend:
        shape = self.call_shape(*args)
        for rule in policy.rules_for(self.op, shape.device):
            backend = self.backends.get(rule.backend)
            if backend is None or not self._rule_applies(rule, backend, shape, args):
                continue
            if self.unsupported_reason(backend, shape.device) is None and backend.supports_args(*args) is None:
                return backend
        return self.backends["torch"]

    def explain(self, args: tuple) -> list[tuple[str, str]]:
        """For doctor: each backend with 'chosen' or the reason auto passed it over."""
        chosen = self.auto(args).name
        shape = self.call_shape(*args)
        rules = policy.rules_for(self.op, shape.device)
        out = []
        for name in settings.BACKENDS:
            if name not in self.backends:
                out.append((name, "no implementation"))
                continue
            if name == chosen:
                rule = next((r for r in rules if r.backend == name
                             and self._rule_applies(r, self.backends[name], shape, args)), None)
                out.append((name, "chosen" + (f" (policy: {rule.describe()})" if rule else " (fallback)")))
                continue
            reason = self.refusal(name, args)
            if reason is None:
                ranked = [r for r in rules if r.backend == name
                          and self._rule_applies(r, self.backends[name], shape, args)]
                reason = (
                    f"ranked below {chosen} by the {policy.family_of(shape.device)} policy"
                    if ranked else f"the {policy.family_of(shape.device)} policy does not use it for this shape"
                )
            out.append((name, reason))
        return out


def torch_supported(device: torch.device) -> Reason:
    return None


def triton_supported(device: torch.device) -> Reason:
    return platform.triton_unavailable_reason(device)


def aiter_supported_for(feature: Optional[str]) -> Callable[[torch.device], Reason]:
    """The aiter backends' platform predicate: ROCm gfx9, AMD aiter, and the flags.

    ``feature`` names the vLLM AITER feature whose flag (with the master flag) gates the op;
    ``None`` for ops vLLM has no per-feature flag for: the master flag alone decides.
    """

    def supported(device: torch.device) -> Reason:
        if device.type != "cuda":
            return f"tensor on {device.type}, aiter runs on ROCm GPUs"
        reason = platform.aiter_unavailable_reason(platform.device_index(device))
        if reason is not None:
            return reason
        cfg = settings.get_settings()
        if feature is None:
            if not cfg.VLLM_ROCM_USE_AITER:
                return f"AITER is off: {settings.MASTER_FLAG}=0 ({settings.value_source(settings.MASTER_FLAG)})"
            return None
        state = settings.feature_state(cfg, feature)
        if not state.enabled:
            return f"AITER feature {feature} is off: {state.decided_by}"
        return None

    return supported
