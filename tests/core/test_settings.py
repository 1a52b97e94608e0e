"""Settings: vLLM's names and defaults, strict parsing, master-flag gating, aliases, envs.md."""

import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from vllm_rocm_accel import settings

REPO = Path(__file__).resolve().parents[2]
ALL_VARS = list(settings.Settings.model_fields) + list(settings.RENAMED_FLAGS)


@pytest.fixture
def clean_env(monkeypatch, fresh_settings):
    for name in ALL_VARS:
        monkeypatch.delenv(name, raising=False)
    return fresh_settings


def test_feature_defaults_match_vllm(clean_env, monkeypatch):
    envs = pytest.importorskip("vllm.envs")
    s = clean_env()
    for f in settings.FEATURES:
        assert getattr(s, f.flag) == f.default, f.flag
        assert getattr(envs, f.flag) == f.default, f"{f.flag}: vLLM's default differs from ours"
    assert envs.VLLM_ROCM_USE_AITER is False and s.VLLM_ROCM_USE_AITER is False


@pytest.mark.parametrize("text", ["1", "0", "true", "True", "FALSE", "tRuE"])
def test_booleans_read_as_vllm_reads_them(clean_env, monkeypatch, text):
    envs = pytest.importorskip("vllm.envs")
    s = clean_env(VLLM_ROCM_USE_AITER=text, VLLM_ROCM_USE_AITER_MHA=text)
    assert s.VLLM_ROCM_USE_AITER == envs.VLLM_ROCM_USE_AITER == (text.lower() in ("1", "true"))
    assert s.VLLM_ROCM_USE_AITER_MHA == envs.VLLM_ROCM_USE_AITER_MHA


@pytest.mark.parametrize("bad", ["maybe", "yes", "", "2"])
def test_bad_boolean_names_variable_and_accepted_values(clean_env, bad):
    with pytest.raises(settings.SettingsError) as e:
        clean_env(VLLM_ROCM_USE_AITER_RMSNORM=bad)
    assert "VLLM_ROCM_USE_AITER_RMSNORM" in str(e.value)
    assert "1, 0, true, false" in str(e.value)


def test_bad_choice_is_rejected(clean_env):
    with pytest.raises(settings.SettingsError, match="VLLM_ROCM_AITER_MLA_ASM_PADDING"):
        clean_env(VLLM_ROCM_AITER_MLA_ASM_PADDING="fast")
    with pytest.raises(settings.SettingsError, match="VLLM_ROCM_AITER_MOE_DISPATCH_POLICY"):
        clean_env(VLLM_ROCM_AITER_MOE_DISPATCH_POLICY="7")
    assert clean_env(VLLM_ROCM_AITER_MLA_ASM_PADDING="ASM", VLLM_ROCM_AITER_MOE_DISPATCH_POLICY=None).VLLM_ROCM_AITER_MLA_ASM_PADDING == "asm"


def test_bad_value_fails_at_plugin_startup():
    env = {**os.environ, "VLLM_ROCM_USE_AITER": "maybe"}
    proc = subprocess.run(
        [sys.executable, "-c", "from vllm_rocm_accel import plugin; plugin.register()"],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode != 0
    assert "VLLM_ROCM_USE_AITER='maybe'" in proc.stderr and "accepted values" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "vllm_rocm_accel.cli", "doctor"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "VLLM_ROCM_USE_AITER='maybe'" in proc.stderr


def test_feature_needs_master_flag_and_says_which_flag_decided(clean_env):
    s = clean_env(VLLM_ROCM_USE_AITER_RMSNORM="1")
    state = settings.feature_state(s, "rmsnorm")
    assert not state.enabled and state.decided_by == "VLLM_ROCM_USE_AITER=0 (default)"
    s = clean_env(VLLM_ROCM_USE_AITER="1", VLLM_ROCM_USE_AITER_RMSNORM="0")
    state = settings.feature_state(s, "rmsnorm")
    assert not state.enabled and state.decided_by == "VLLM_ROCM_USE_AITER_RMSNORM=0 (environment)"
    s = clean_env(VLLM_ROCM_USE_AITER="1", VLLM_ROCM_USE_AITER_RMSNORM=None)
    state = settings.feature_state(s, "rmsnorm")
    assert state.enabled and state.decided_by == "VLLM_ROCM_USE_AITER_RMSNORM=1 (default)"
    # default-off features stay off under the master flag until asked for
    assert not s.feature_enabled("triton_rope")


def test_renamed_flag_alias(clean_env):
    with pytest.warns(DeprecationWarning, match="VLLM_USE_AITER_UNIFIED_ATTENTION"):
        s = clean_env(VLLM_USE_AITER_UNIFIED_ATTENTION="1")
    assert s.VLLM_ROCM_USE_AITER_UNIFIED_ATTENTION is True
    assert settings.value_source("VLLM_ROCM_USE_AITER_UNIFIED_ATTENTION") == "deprecated alias VLLM_USE_AITER_UNIFIED_ATTENTION"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # agreeing values: no warning, no error
        s = clean_env(VLLM_USE_AITER_UNIFIED_ATTENTION="1", VLLM_ROCM_USE_AITER_UNIFIED_ATTENTION="true")
    assert s.VLLM_ROCM_USE_AITER_UNIFIED_ATTENTION is True
    with pytest.raises(settings.SettingsError, match="disagree"):
        clean_env(VLLM_USE_AITER_UNIFIED_ATTENTION="1", VLLM_ROCM_USE_AITER_UNIFIED_ATTENTION="0")


def test_backend_override_spec(clean_env):
    s = clean_env(VLLM_ROCM_ACCEL_BACKEND="triton")
    assert s.backend_override("rms_norm") == "triton"
    s = clean_env(VLLM_ROCM_ACCEL_BACKEND="rms_norm=torch, *=triton")
    assert s.backend_override("rms_norm") == "torch"
    assert s.backend_override("fused_add_rms_norm") == "triton"
    s = clean_env(VLLM_ROCM_ACCEL_BACKEND="fused_add_rms_norm=aiter")
    assert s.backend_override("rms_norm") == "auto"
    with pytest.raises(settings.SettingsError, match="unknown op 'rmsnorm'"):
        clean_env(VLLM_ROCM_ACCEL_BACKEND="rmsnorm=torch")
    with pytest.raises(settings.SettingsError, match="'cuda' is not one of"):
        clean_env(VLLM_ROCM_ACCEL_BACKEND="cuda")


def test_read_once_until_refresh(clean_env, monkeypatch):
    first = clean_env(VLLM_ROCM_USE_AITER="0")
    monkeypatch.setenv("VLLM_ROCM_USE_AITER", "1")
    assert settings.get_settings() is first and first.VLLM_ROCM_USE_AITER is False
    assert settings.refresh().VLLM_ROCM_USE_AITER is True


def _documented_names() -> set[str]:
    text = (REPO / "envs.md").read_text()
    return set(re.findall(r"^\| `([A-Z0-9_]+)` \|", text, flags=re.M))


def test_envs_md_documents_every_setting():
    documented = _documented_names()
    missing = set(settings.Settings.model_fields) - documented
    assert not missing, f"envs.md lacks: {sorted(missing)}"
    for old in settings.RENAMED_FLAGS:
        assert old in (REPO / "envs.md").read_text(), f"envs.md lacks the renamed flag {old}"


def test_envs_md_documents_every_variable_named_in_code():
    """Any VLLM_* name in the package or tests' source must be in envs.md (or be vLLM's own)."""
    text = (REPO / "envs.md").read_text()
    names = set()
    for path in list((REPO / "vllm_rocm_accel").rglob("*.py")) + list((REPO / "tests").rglob("*.py")):
        names |= set(re.findall(r"\bVLLM_ROCM_[A-Z0-9_]*[A-Z0-9]\b", path.read_text()))
    missing = sorted(n for n in names if f"`{n}`" not in text)
    assert not missing, f"envs.md lacks: {missing}"


def test_envs_md_rows_are_complete():
    for line in (REPO / "envs.md").read_text().splitlines():
        if line.startswith("| `VLLM"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            assert len(cells) == 4 and all(cells), f"row needs name, default, effect, example: {line}"
