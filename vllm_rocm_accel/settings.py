"""All environment settings, read once through pydantic-settings.

Two families of variables:

* vLLM's own ROCm AITER flags (``VLLM_ROCM_USE_AITER`` and the per-feature
  ``VLLM_ROCM_USE_AITER_*`` flags), with vLLM 0.32's names and defaults, so a
  deployment's toggles mean the same here as in vLLM.  A feature is on only when
  the master flag and its own flag are both on.
* Our own, prefixed ``VLLM_ROCM_ACCEL_``.

Booleans accept ``1/0/true/false`` (any case), the values vLLM itself reads as
booleans; anything else fails at startup with a :class:`SettingsError` that
names the variable and the accepted values (vLLM would silently read ``yes`` as
false; we refuse it instead of disagreeing with vLLM).

The settings are read once and cached; :func:`refresh` re-reads them (tests)
and tells the registered listeners (dispatch caches) to forget what they knew.
"""

from __future__ import annotations

import os
import threading
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Literal, Optional

from pydantic import ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

BACKENDS = ("aiter", "triton", "torch")
BACKEND_CHOICES = ("auto",) + BACKENDS
TRUE_WORDS = ("1", "true")
FALSE_WORDS = ("0", "false")
MASTER_FLAG = "VLLM_ROCM_USE_AITER"


class SettingsError(ValueError):
    """An environment variable holds a value we cannot accept."""


@dataclass(frozen=True)
class Feature:
    """One AITER feature: its vLLM flag and whether the master flag gates it."""

    name: str
    flag: str
    default: Optional[bool]
    doc: str


# vLLM 0.32's per-feature AITER flags (vllm/envs.py), with vLLM's defaults.
FEATURES: tuple[Feature, ...] = (
    Feature("rmsnorm", "VLLM_ROCM_USE_AITER_RMSNORM", True, "AITER RMSNorm kernels"),
    Feature("linear", "VLLM_ROCM_USE_AITER_LINEAR", True, "AITER scaled GEMMs and tuned unquantized GEMMs"),
    Feature("linear_hipbmm", "VLLM_ROCM_USE_AITER_LINEAR_HIPBMM", False, "hipBLASLt batched GEMM for linear layers"),
    Feature("moe", "VLLM_ROCM_USE_AITER_MOE", True, "AITER fused MoE"),
    Feature("moe_a4w4_dsv4", "VLLM_ROCM_USE_AITER_MOE_A4W4_DSV4", None, "FP4-activation MoE on DeepSeek V4.1 (unset = model default)"),
    Feature("mla", "VLLM_ROCM_USE_AITER_MLA", True, "AITER multi-head latent attention"),
    Feature("mha", "VLLM_ROCM_USE_AITER_MHA", True, "AITER multi-head attention (flash_attn_func / varlen)"),
    Feature("fp4_asm_gemm", "VLLM_ROCM_USE_AITER_FP4_ASM_GEMM", False, "AITER FP4 ASM GEMM (gfx950)"),
    Feature("triton_sparse_mla", "VLLM_ROCM_USE_AITER_TRITON_SPARSE_MLA", False, "AITER Triton sparse MLA (gfx950)"),
    Feature("triton_rope", "VLLM_ROCM_USE_AITER_TRITON_ROPE", False, "AITER rotary embedding"),
    Feature("fp8bmm", "VLLM_ROCM_USE_AITER_FP8BMM", True, "AITER Triton FP8 batched GEMM"),
    Feature("fp4bmm", "VLLM_ROCM_USE_AITER_FP4BMM", True, "AITER Triton FP4 batched GEMM"),
    Feature("unified_attention", "VLLM_ROCM_USE_AITER_UNIFIED_ATTENTION", False, "AITER Triton unified attention"),
    Feature("fusion_shared_experts", "VLLM_ROCM_USE_AITER_FUSION_SHARED_EXPERTS", False, "fuse shared experts into AITER MoE"),
    Feature("mega_moe_fuse_shared_experts", "VLLM_ROCM_AITER_MEGA_MOE_FUSE_SHARED_EXPERTS", False, "fuse DeepSeek-V4's shared expert into AITER MegaMoE"),
    Feature("triton_gemm", "VLLM_ROCM_USE_AITER_TRITON_GEMM", True, "AITER Triton GEMMs"),
    Feature("custom_ar", "VLLM_ROCM_USE_AITER_CUSTOM_AR", True, "AITER custom all-reduce"),
)
FEATURES_BY_NAME = {f.name: f for f in FEATURES}

# Flags vLLM renamed: old name -> new name. The old name still works, with a
# DeprecationWarning; both set to different values is an error.
RENAMED_FLAGS: dict[str, str] = {
    "VLLM_USE_AITER_UNIFIED_ATTENTION": "VLLM_ROCM_USE_AITER_UNIFIED_ATTENTION",
}


def _parse_bool(name: str, value: Any) -> Any:
    if not isinstance(value, str):
        return value
    word = value.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise SettingsError(
        f"{name}={value!r} is not a boolean; accepted values: 1, 0, true, false (any case)"
    )


class Settings(BaseSettings):
    """Every variable the package reads. Field names are the variable names."""

    model_config = SettingsConfigDict(case_sensitive=True, extra="ignore", frozen=True)

    # --- vLLM's AITER flags -------------------------------------------------
    VLLM_ROCM_USE_AITER: bool = False
    VLLM_ROCM_USE_AITER_RMSNORM: bool = True
    VLLM_ROCM_USE_AITER_LINEAR: bool = True
    VLLM_ROCM_USE_AITER_LINEAR_HIPBMM: bool = False
    VLLM_ROCM_USE_AITER_MOE: bool = True
    VLLM_ROCM_USE_AITER_MOE_A4W4_DSV4: Optional[bool] = None
    VLLM_ROCM_USE_AITER_MLA: bool = True
    VLLM_ROCM_USE_AITER_MHA: bool = True
    VLLM_ROCM_USE_AITER_FP4_ASM_GEMM: bool = False
    VLLM_ROCM_USE_AITER_TRITON_SPARSE_MLA: bool = False
    VLLM_ROCM_USE_AITER_TRITON_ROPE: bool = False
    VLLM_ROCM_USE_AITER_FP8BMM: bool = True
    VLLM_ROCM_USE_AITER_FP4BMM: bool = True
    VLLM_ROCM_USE_AITER_UNIFIED_ATTENTION: bool = False
    VLLM_ROCM_USE_AITER_FUSION_SHARED_EXPERTS: bool = False
    VLLM_ROCM_AITER_MEGA_MOE_FUSE_SHARED_EXPERTS: bool = False
    VLLM_ROCM_USE_AITER_TRITON_GEMM: bool = True
    VLLM_ROCM_USE_AITER_CUSTOM_AR: bool = True
    # vLLM's non-boolean AITER knobs: validated and shown by doctor, used by vLLM.
    VLLM_ROCM_AITER_MOE_DISPATCH_POLICY: Literal[0, 1, 2] = 0
    VLLM_ROCM_USE_AITER_MOE_SITUV2: Literal["auto", "a4w4", "a8w4", "a16w4", "0", "1"] = "auto"
    VLLM_ROCM_AITER_MLA_ASM_PADDING: Literal["auto", "gluon", "asm"] = "auto"
    VLLM_ROCM_AITER_MLA_DCP_VERIFY: Literal["auto", "asm", "segmented"] = "auto"

    # --- ours ---------------------------------------------------------------
    VLLM_ROCM_ACCEL_BACKEND: str = "auto"
    VLLM_ROCM_ACCEL_ROUTE_VLLM_LAYERS: bool = True
    VLLM_ROCM_ACCEL_POLICY_FILE: Optional[str] = None
    VLLM_ROCM_ACCEL_CHECK_POSITIONS: bool = False
    VLLM_ROCM_ACCEL_CHECK_SEQLENS: bool = True
    VLLM_ROCM_ACCEL_FP8_LINEAR: bool = True
    VLLM_ROCM_ACCEL_ATTENTION_BACKEND: bool = True

    @field_validator("*", mode="before")
    @classmethod
    def _strict_bools(cls, value: Any, info) -> Any:
        annotation = cls.model_fields[info.field_name].annotation
        if annotation in (bool, Optional[bool]):
            return _parse_bool(info.field_name, value)
        return value

    @field_validator(
        "VLLM_ROCM_USE_AITER_MOE_SITUV2", "VLLM_ROCM_AITER_MLA_ASM_PADDING",
        "VLLM_ROCM_AITER_MLA_DCP_VERIFY", mode="before",
    )
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @field_validator("VLLM_ROCM_AITER_MOE_DISPATCH_POLICY", mode="before")
    @classmethod
    def _int_choice(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
        return value

    @field_validator("VLLM_ROCM_ACCEL_BACKEND")
    @classmethod
    def _backend_spec(cls, value: str) -> str:
        parse_backend_spec(value)  # raises SettingsError with the details
        return value

    # --- derived views ------------------------------------------------------
    def feature_enabled(self, feature: str) -> bool:
        return feature_state(self, feature).enabled

    def backend_override(self, op: str) -> str:
        """The backend the environment forces for ``op`` ("auto" if none)."""
        spec = parse_backend_spec(self.VLLM_ROCM_ACCEL_BACKEND)
        return spec.get(op, spec.get("*", "auto"))


def parse_backend_spec(text: str) -> dict[str, str]:
    """``VLLM_ROCM_ACCEL_BACKEND``: ``auto``, one backend for every op, or a
    comma list of ``op=backend`` entries (``*=backend`` sets the default)."""
    from .ops.catalog import OP_NAMES  # the op names are data, no torch import

    out: dict[str, str] = {}
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        op, sep, backend = item.partition("=")
        if not sep:
            op, backend = "*", op
        op, backend = op.strip(), backend.strip().lower()
        if backend not in BACKEND_CHOICES:
            raise SettingsError(
                f"VLLM_ROCM_ACCEL_BACKEND={text!r}: backend {backend!r} is not one of "
                f"{', '.join(BACKEND_CHOICES)}"
            )
        if op != "*" and op not in OP_NAMES:
            raise SettingsError(
                f"VLLM_ROCM_ACCEL_BACKEND={text!r}: unknown op {op!r}; ops: {', '.join(OP_NAMES)}"
            )
        out[op] = backend
    return out


@dataclass(frozen=True)
class FeatureState:
    feature: str
    enabled: bool
    decided_by: str  # e.g. "VLLM_ROCM_USE_AITER=0 (default)"


def feature_state(settings: Settings, feature: str) -> FeatureState:
    """Whether an AITER feature is on, and the flag that decided it."""
    spec = FEATURES_BY_NAME[feature]
    master = settings.VLLM_ROCM_USE_AITER
    if not master:
        return FeatureState(feature, False, f"{MASTER_FLAG}=0 ({value_source(MASTER_FLAG)})")
    own = getattr(settings, spec.flag)
    if own is None:
        return FeatureState(feature, True, f"{spec.flag} unset: model default")
    return FeatureState(feature, bool(own), f"{spec.flag}={int(own)} ({value_source(spec.flag)})")


def value_source(name: str) -> str:
    """Where a variable's value came from: the environment, an old alias, or the default."""
    if name in os.environ:
        return "environment"
    for old, new in RENAMED_FLAGS.items():
        if new == name and old in os.environ:
            return f"deprecated alias {old}"
    return "default"


def _alias_values(environ: dict[str, str]) -> dict[str, Any]:
    """Values given under vLLM's old flag names, checked against the new names."""
    values: dict[str, Any] = {}
    for old, new in RENAMED_FLAGS.items():
        if old not in environ:
            continue
        old_value = _parse_bool(old, environ[old])
        if new in environ:
            new_value = _parse_bool(new, environ[new])
            if new_value != old_value:
                raise SettingsError(
                    f"{old}={environ[old]!r} (deprecated) and {new}={environ[new]!r} disagree; "
                    f"unset {old}"
                )
            continue
        warnings.warn(f"{old} is deprecated; use {new}", DeprecationWarning, stacklevel=3)
        values[new] = old_value
    return values


def _load() -> Settings:
    environ = dict(os.environ)
    try:
        return Settings(**_alias_values(environ))
    except ValidationError as err:
        problems = []
        for e in err.errors():
            name = ".".join(str(p) for p in e["loc"]) or "?"
            msg = e["msg"].removeprefix("Value error, ")
            if name in environ and name not in msg:
                msg = f"{name}={environ[name]!r}: {msg}"
            problems.append(msg)
        raise SettingsError("invalid environment: " + "; ".join(problems)) from None


_lock = threading.Lock()
_cached: Optional[Settings] = None
_listeners: list[Callable[[], None]] = []


def get_settings() -> Settings:
    """The settings, read from the environment on first use and cached."""
    global _cached
    s = _cached
    if s is None:
        with _lock:
            if _cached is None:
                _cached = _load()
            s = _cached
    return s


def refresh() -> Settings:
    """Re-read the environment (for tests) and clear every cache built on it."""
    global _cached
    with _lock:
        _cached = _load()
    for listener in list(_listeners):
        listener()
    return _cached


def on_refresh(listener: Callable[[], None]) -> Callable[[], None]:
    """Register a cache-clearing callback run by :func:`refresh`."""
    _listeners.append(listener)
    return listener
