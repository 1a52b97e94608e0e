"""The AITER KV-cache adapter (``backends/aiter/kv_cache.py``), checked without AMD hardware.

1. Its ``_aiter().reshape_and_cache_flash(...)`` call binds to the real amd-aiter wheel's signature,
   argument by argument, the torch model has the wheel's signature, and the kernel facts the
   adapter rests on are still in the wheel's HIP source.
2. The torch model enforces the kernel's contract.
3. With the model installed as ``aiter``, the adapter agrees with the torch backend (the reference):
   bitwise for unquantized caches, within one FP8 ulp for FP8 ones (AITER multiplies by 1 / scale),
   with padded key rows, int32 slot mappings, slot -1 and vLLM's strided cache views.
4. ``supports_args`` refuses what the kernel cannot take; the arch guard.
"""

from __future__ import annotations

import re

import pytest
import torch

from aiter_model import model, model_kv_cache, wheel
from kv_ref import make_caches, random_slots
from vllm_rocm_accel import fp8
from vllm_rocm_accel.backends.aiter import kv_cache as aiter_kv
from vllm_rocm_accel.backends.torch import kv_cache as torch_kv
from vllm_rocm_accel.checks.kv_cache import check_reshape_and_cache_flash_args

MODULE = "vllm_rocm_accel.backends.aiter.kv_cache"


# ----------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------
def rows(n: int, h: int, d: int, dtype: torch.dtype):
    scale = torch.exp(torch.randn(n, 1, 1))
    return (torch.randn(n, h, d) * scale).to(dtype), (torch.randn(n, h, d) * scale).to(dtype)


def args_of(key, value, kc, vc, slots, kv_dtype, ks, vs):
    p = check_reshape_and_cache_flash_args(key, value, kc, vc, slots, kv_dtype, ks, vs)
    return (key, value, kc, vc, slots, ks, vs, p)


# ----------------------------------------------------------------------------
# 1. The wheel
# ----------------------------------------------------------------------------
def test_model_signature_matches_wheel():
    sig = wheel.resolve_public_function("reshape_and_cache_flash")
    assert (sig.module, sig.relpath) == ("aiter.ops.cache", "aiter/ops/cache.py")
    assert sig.decorators == ("compile_ops('module_cache')",)
    assert wheel.signature_mismatches(model_kv_cache.reshape_and_cache_flash, sig) == []


def test_adapter_calls_bind_to_wheel():
    calls = wheel.check_adapter_module(MODULE)
    assert {c.name for c in calls} == set(model_kv_cache.MODELLED_KV_CACHE)


def test_adapter_call_lands_on_the_right_parameters():
    [c] = wheel.scan_adapter_module(MODULE).calls
    bound = wheel.check_call(c.name, c.args_count, c.kwarg_names)
    assert list(bound.arguments) == ["key", "value", "key_cache", "value_cache", "slot_mapping", "kv_cache_dtype",
                                     "k_scale", "v_scale"]
    assert "key[:t], value[:t], key_cache, value_cache, slots, p.kv_cache_dtype," in c.source


def test_kernel_facts_the_adapter_relies_on():
    cu = wheel.squash(wheel.wheel_member("aiter_meta/csrc/kernels/cache_kernels.cu"))
    host = cu[cu.index("void reshape_and_cache_flash( torch::Tensor& key,"):]
    host = host[:host.index("} // namespace aiter")]
    assert "int num_tokens = key.size(0);" in host  # tokens from key, not from slot_mapping
    assert "int key_stride = key.stride(0); int value_stride = value.stride(0);" in host
    assert "int block_stride = key_cache.stride(0); TORCH_CHECK(key_cache.stride(0) == value_cache.stride(0));" in host
    assert "int head_size = key.size(2);" in host and "value.size(2)" not in host  # value uses key's head size
    kernel = cu[cu.index("__global__ void reshape_and_cache_flash_kernel("):]
    kernel = kernel[:kernel.index("namespace impl")]
    assert "if(slot_idx < 0) { return; }" in kernel
    assert ("block_idx * block_stride + block_offset * num_heads * head_size + head_idx * head_size + head_offset"
            in kernel)
    assert "const int64_t src_key_idx = token_idx * key_stride + i;" in kernel
    assert "const float inverted_kscale = 1 / (*k_scale);" in kernel
    assert "ck_tile::type_convert<float>(tgt_key) * inverted_kscale" in kernel
    assert "slot_mapping.data_ptr<int64_t>()" in cu and "k_scale.data_ptr<float>()" in cu
    qu = wheel.squash(wheel.wheel_member("aiter_meta/csrc/include/quant_utils.cuh"))
    assert 'if(KV_DTYPE == "fp8" || KV_DTYPE == "fp8_e4m3")' in qu and 'if(KV_DTYPE == "auto")' in qu
    f8 = wheel.squash(wheel.wheel_member("aiter_meta/3rdparty/composable_kernel/include/ck_tile/core/numeric/float8.hpp"))
    assert "__builtin_amdgcn_fmed3f(val.fval, 240.0, -240.0)" in f8 and "__builtin_amdgcn_fmed3f(val.fval, 448.0, -448.0)" in f8


# ----------------------------------------------------------------------------
# 2. The model's contract
# ----------------------------------------------------------------------------
def test_model_enforces_the_kernels_contract(fake_aiter, seed):
    import aiter

    kc, vc = make_caches("unbind0", 2, 16, 2, 8, 8, torch.bfloat16)
    key, value = rows(4, 2, 8, torch.bfloat16)
    ikc, ivc = make_caches("interleaved", 2, 16, 2, 8, 8, torch.bfloat16)
    s = torch.tensor([0, 1, -1, 5])
    one = torch.ones(1)
    f = aiter.reshape_and_cache_flash
    bad = [
        (lambda: f(key, value, kc, vc, s.int(), "auto", one, one), "int64"),
        (lambda: f(key, value, kc, vc, s[:3], "auto", one, one), "one per key row"),
        (lambda: f(key, value[..., :4], kc, vc, s, "auto", one, one), "value has shape"),
        (lambda: f(torch.randn(4, 2, 16).bfloat16()[..., :8], value, kc, vc, s, "auto", one, one), "read densely"),
        (lambda: f(key, value, ikc, ivc.contiguous(), s, "auto", one, one), "stride\\(0\\) == value_cache"),
        (lambda: f(key, value, kc, vc, s, "fp8_e5m2", one, one), "Unsupported data type"),
        (lambda: f(key, value, kc, vc, torch.tensor([0, 1, 2, 32]), "auto", one, one), "past the caches"),
        (lambda: f(key, value, kc, vc, s, "auto", one.double(), one), "float32"),
        (lambda: f(key, value, kc.float(), vc.float(), s, "auto", one, one), "written as key's"),
    ]
    for call, message in bad:
        with pytest.raises(model.AiterContractError, match=message):
            call()
    assert len(model.CALLS) == len(bad)


# ----------------------------------------------------------------------------
# 3. The adapter on the model, against the torch backend
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["unbind0", "interleaved"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32], ids=str)
@pytest.mark.parametrize("block_size", [16, 64])
def test_unquantized_matches_reference(fake_aiter, seed, layout, dtype, block_size):
    kc, vc = make_caches(layout, 3, block_size, 4, 16, 16, dtype)
    key, value = rows(13, 4, 16, dtype)  # 13 rows, 10 tokens: vLLM's padded key
    slots = random_slots(10, 3 * block_size, pad=3, dtype=torch.int32)
    one = torch.ones(1)
    want = kc.clone(), vc.clone()
    torch_kv.write(*args_of(key, value, *want, slots, "auto", one, one))
    args = args_of(key, value, kc, vc, slots, "auto", one, one)
    assert aiter_kv.supports_args(*args) is None
    aiter_kv.write(*args)
    assert torch.equal(kc.view(torch.uint8), want[0].view(torch.uint8))
    assert torch.equal(vc.view(torch.uint8), want[1].view(torch.uint8))
    [call] = fake_aiter.CALLS
    assert call.tensor("key").shape == (10, 4, 16) and call.tensor("key").data_ptr == key.data_ptr()
    assert call.tensor("slot_mapping").dtype == torch.int64
    assert call.tensor("key_cache").data_ptr == kc.data_ptr() and call.args["kv_cache_dtype"] == "auto"


@pytest.mark.parametrize("fmt", [fp8.FN, fp8.FNUZ], ids=str)
@pytest.mark.parametrize("as_uint8", [False, True])
def test_fp8_within_one_ulp_of_reference(fake_aiter, seed, monkeypatch, fmt, as_uint8):
    monkeypatch.setattr(model_kv_cache, "CK_FP8", fmt)
    monkeypatch.setattr(fp8, "fp8_dtype", lambda device=None: fmt)  # the device's format, for uint8 caches
    kc, vc = make_caches("unbind0", 2, 16, 2, 64, 64, torch.uint8 if as_uint8 else fmt)
    key, value = rows(20, 2, 64, torch.bfloat16)
    slots = random_slots(20, 32, pad=4)
    ks = (key.float().abs().amax() / fp8.fp8_max(fmt) * 0.7).reshape(1)
    vs = torch.tensor([0.0123])
    want = kc.clone(), vc.clone()
    torch_kv.write(*args_of(key, value, *want, slots, "fp8", ks, vs))
    args = args_of(key, value, kc, vc, slots, "fp8", ks, vs)
    assert args[-1].cache_dtype == fmt and aiter_kv.supports_args(*args) is None
    aiter_kv.write(*args)
    live = slots >= 0
    b, o = slots[live] // 16, slots[live] % 16
    for got, ref, scale in ((kc, want[0], ks), (vc, want[1], vs)):
        g, r = got.view(fmt)[b, o].double(), ref.view(fmt)[b, o].double()
        ulp = torch.exp2(torch.floor(torch.log2(r.abs().clamp(min=torch.finfo(fmt).smallest_normal))) - 3)
        assert ((g - r).abs() <= ulp).all(), f"{int(((g - r).abs() > ulp).sum())} codes off by more than one ulp"
        dead = torch.ones(got.shape[:2], dtype=torch.bool)
        dead[b, o] = False
        assert torch.equal(got.view(torch.uint8)[dead], ref.view(torch.uint8)[dead])  # untouched slots
    assert fake_aiter.CALLS[-1].args["kv_cache_dtype"] == "fp8"


def test_empty_mapping_calls_nothing(fake_aiter):
    kc, vc = make_caches("unbind0", 1, 16, 1, 8, 8, torch.float16)
    key, value = rows(3, 1, 8, torch.float16)
    aiter_kv.write(*args_of(key, value, kc, vc, torch.empty(0, dtype=torch.int64), "auto", torch.ones(1),
                            torch.ones(1)))
    assert fake_aiter.CALLS == []


# ----------------------------------------------------------------------------
# 4. What it refuses
# ----------------------------------------------------------------------------
def test_supports_args_refuses_what_the_kernel_cannot_take(monkeypatch):
    one = torch.ones(1)
    key, value = rows(4, 2, 16, torch.bfloat16)
    kc, vc = make_caches("unbind0", 2, 16, 2, 16, 16, torch.bfloat16)
    ikc, ivc = make_caches("interleaved", 2, 16, 2, 16, 16, torch.bfloat16)
    s = torch.arange(4)
    ok = args_of(key, value, kc, vc, s, "auto", one, one)
    assert aiter_kv.supports_args(*ok) is None
    dv_kc, dv_vc = torch.empty(2, 16, 2, 16, dtype=torch.bfloat16), torch.empty(2, 16, 2, 8, dtype=torch.bfloat16)
    padded = torch.empty(2, 16, 2, 24, dtype=torch.bfloat16)[..., :16]
    strided_key = torch.randn(4, 2, 24).bfloat16()[..., :16]
    cases = [
        (args_of(key, value[..., :8], dv_kc, dv_vc, s, "auto", one, one), "Dv 8 != D 16"),
        (args_of(key, value, padded, padded.clone(), s, "auto", one, one), "dense \\(block_size, heads, head_dim\\)"),
        (args_of(strided_key, value, kc, vc, s, "auto", one, one), "dense \\(heads, head_dim\\) rows"),
        (args_of(key, value, ikc, ivc.contiguous(), s, "auto", one, one), "block strides differ"),
    ]
    for args, why in cases:
        assert re.search(why, aiter_kv.supports_args(*args) or ""), (why, aiter_kv.supports_args(*args))
    fkc, fvc = make_caches("unbind0", 2, 16, 2, 16, 16, fp8.FN)
    fp8_args = args_of(key, value, fkc, fvc, s, "fp8", one, one)
    monkeypatch.setattr(aiter_kv, "_device_arch", lambda device: "gfx942")
    assert "writes torch.float8_e4m3fnuz FP8 caches on gfx942" in aiter_kv.supports_args(*fp8_args)
    monkeypatch.setattr(aiter_kv, "_device_arch", lambda device: "gfx950")
    assert aiter_kv.supports_args(*fp8_args) is None
    monkeypatch.setattr(aiter_kv, "_device_arch", lambda device: "gfx90a")
    assert "need gfx942/gfx950" in aiter_kv.supports_args(*fp8_args)
    assert aiter_kv.supports_args(*ok) is None  # unquantized caches on gfx90a are fine


def test_arch_guard(monkeypatch):
    monkeypatch.setattr(aiter_kv, "_device_arch", lambda device: "gfx1100")
    assert "gfx90a/gfx942/gfx950" in aiter_kv.arch_unsupported_reason(torch.device("cpu"))
    monkeypatch.setattr(aiter_kv, "_device_arch", lambda device: "gfx942")
    assert aiter_kv.arch_unsupported_reason(torch.device("cpu")) is None
    assert aiter_kv.kernel_fp8_dtype("gfx942") == fp8.FNUZ and aiter_kv.kernel_fp8_dtype("gfx950") == fp8.FN
