"""The AITER rope adapter (``backends/aiter/rope.py``), checked without AMD hardware.

1. The adapter's ``_aiter().rope_cached_positions_2c_fwd_impl(...)`` call binds to the real
   amd-aiter wheel's signature argument by argument, and the torch model has the wheel's signature.
2. The model enforces the kernel's contract (shapes, dtypes, strides, positions, tables, aliasing).
3. On the model, the adapter rotates correctly in and out of place, passes views (no copies),
   contiguous int64 positions and (max_position [+1], 1, 1, rotary_dim // 2) tables in the query
   dtype, and sends out-of-range positions to a NaN row instead of outside the tables.
4. The cos/sin memo: reuse, eviction when the cache dies (never keeping it alive), no stale
   tables for a new cache at a reused address or a cache changed in place.
5. supports_args / arch guard, and auto on a simulated MI300 following the flags and the policy.
"""

from __future__ import annotations

import gc
import weakref

import numpy as np

import pytest
import torch

from aiter_model import model, model_rope, wheel
from helpers import assert_close_verbose, cuda_like
from vllm_rocm_accel import platform, policy
from vllm_rocm_accel.backends.aiter import rope as aiter_rope
from vllm_rocm_accel.inputs_rope import rope_inputs
from vllm_rocm_accel.ops import rope as ops_rope

FN = "rope_cached_positions_2c_fwd_impl"
DTYPES = [torch.float16, torch.bfloat16]


def ref_rope(positions, x, head_size, cache, is_neox):
    tokens = positions.shape[0]
    max_pos, rd = cache.shape
    half = rd // 2
    pos = positions.to(torch.int64)
    valid = (pos >= 0) & (pos < max_pos)
    rows = cache.double()[pos.clamp(0, max_pos - 1)]
    c, s = rows[:, None, :half], rows[:, None, half:]
    x3 = x.double().reshape(tokens, -1, head_size).clone()
    i1, i2 = (slice(0, half), slice(half, rd)) if is_neox else (slice(0, rd, 2), slice(1, rd, 2))
    x1, x2 = x3[..., i1].clone(), x3[..., i2].clone()
    x3[..., i1] = x1 * c - x2 * s
    x3[..., i2] = x2 * c + x1 * s
    x3[~valid] = float("nan")
    return x3.reshape(x.shape)


def tol(dtype, x):
    # The tables are rounded to the query dtype (eps/2 relative each), the rotation is done in
    # fp32 and rounded once (eps/2 of |o|): within eps (|x1| + |x2|) + eps/2 |o| <= 2 eps max|x|.
    return 2 * torch.finfo(dtype).eps * float(x.abs().max()), torch.finfo(dtype).eps


# ----------------------------------------------------------------------------
# 1. Signatures
# ----------------------------------------------------------------------------
def test_model_signature_matches_wheel():
    sig = wheel.resolve_public_function(FN)
    assert (sig.module, sig.relpath) == ("aiter.ops.rope", "aiter/ops/rope.py")
    assert wheel.signature_mismatches(model_rope.rope_cached_positions_2c_fwd_impl, sig) == []
    assert model_rope.MODELLED_ROPE == (FN,)


def test_adapter_call_lands_on_the_right_parameters():
    calls = wheel.scan_adapter_module("vllm_rocm_accel.backends.aiter.rope").calls
    assert [c.name for c in calls] == [FN]
    bound = wheel.check_call(FN, calls[0].args_count, calls[0].kwarg_names)
    assert list(bound.arguments) == [
        "output_x", "output_y", "input_x", "input_y", "cos", "sin", "positions",
        "rotate_style", "reuse_freqs_front_part", "nope_first",
    ]


# ----------------------------------------------------------------------------
# 2. The model's contract
# ----------------------------------------------------------------------------
def test_model_enforces_the_kernels_contract(fake_aiter, seed):
    import aiter

    assert aiter.rope_cached_positions_2c_fwd_impl is model_rope.rope_cached_positions_2c_fwd_impl
    T, D = 4, 64
    x = torch.randn(1, T, 4, D, dtype=torch.float16)
    y = torch.randn(1, T, 2, D, dtype=torch.float16)
    ox, oy = torch.empty_like(x), torch.empty_like(y)
    cos = torch.randn(10, 1, 1, D // 2, dtype=torch.float16)
    sin = torch.randn(10, 1, 1, D // 2, dtype=torch.float16)
    pos = torch.randint(0, 10, (1, T))
    f = aiter.rope_cached_positions_2c_fwd_impl
    f(ox, oy, x, y, cos, sin, pos, 0, True, False)  # fine
    f(x, y, x, y, cos, sin, pos, 1, True, False)  # in place, exactly on its inputs: fine
    bad = [
        (lambda: f(ox, oy, x, y, cos, sin, pos.to(torch.int32), 0, True, False), "positions has dtype torch.int32"),
        (lambda: f(ox, oy, x, y, cos, sin, torch.randint(0, 10, (1, 2 * T))[:, ::2], 0, True, False), "strided positions"),
        (lambda: f(ox, oy, x, y, cos, sin, pos.view(T), 0, True, False), r"positions has shape \(4,\)"),
        (lambda: f(ox, oy, x, y, cos, sin, pos + 10, 0, True, False), "read outside"),
        (lambda: f(ox, oy, x, y, cos.view(10, D // 2), sin, pos, 0, True, False), "cos has shape"),
        (lambda: f(ox, oy, x, y, cos.float(), sin, pos, 0, True, False), "cos has dtype torch.float32"),
        (lambda: f(ox, oy, x, y, cos.repeat(1, 1, 1, 2)[..., ::2], sin, pos, 0, True, False), "cos must be contiguous"),
        (lambda: f(ox, oy, x.float(), y, cos, sin, pos, 0, True, False), "float16/bfloat16"),
        (lambda: f(ox, oy, x, y.bfloat16(), cos, sin, pos, 0, True, False), "input_y has dtype"),
        (lambda: f(ox, oy, x.view(T, 4, D), y, cos, sin, pos, 0, True, False), "must be 4-D"),
        (lambda: f(ox, oy, x.transpose(2, 3).contiguous().transpose(2, 3), y, cos, sin, pos, 0, True, False), "last-dim stride"),
        (lambda: f(ox[:, :2], oy, x, y, cos, sin, pos, 0, True, False), "output_x has shape"),
        (lambda: f(ox, oy[:, :2], x, y[:, :2], cos, sin, pos, 0, True, False), "input_y has shape"),
        (lambda: f(ox[..., :16], oy[..., :16], x[..., :16], y[..., :16], cos, sin, pos, 0, True, False), "exceeds the head dim"),
        (lambda: f(ox, oy, x, y, cos, sin, pos, 2, True, False), "rotate_style"),
        (lambda: f(ox, ox[:, :, :2], x, y, cos, sin, pos, 0, True, False), "output_x shares memory with output_y"),
    ]
    for call, message in bad:
        with pytest.raises(model.AiterContractError, match=message):
            call()
    # partial overlap of an output with an input is refused
    buf = torch.randn(1, T, 5, D, dtype=torch.float16)
    with pytest.raises(model.AiterContractError, match="output_x shares memory with input_x"):
        f(buf[:, :, 1:], oy, buf[:, :, :4], y, cos, sin, pos, 0, True, False)
    with pytest.raises(model.AiterContractError, match="output_y shares memory with input_x"):
        f(ox, x[:, :, :2], x, y, cos, sin, pos, 0, True, False)
    with pytest.raises(NotImplementedError):
        f(ox, oy, x, y, cos, sin, pos, 0, True, True)
    assert all(c.name == FN for c in model.CALLS)


def test_model_rotates_the_leading_part_and_copies_the_rest(fake_aiter, seed):
    T, D = 3, 64
    x = torch.randn(1, T, 2, D, dtype=torch.bfloat16)
    y = torch.randn(1, T, 1, D, dtype=torch.bfloat16)
    angles = torch.rand(7, 8)
    cos, sin = angles.cos().to(torch.bfloat16).view(7, 1, 1, 8), angles.sin().to(torch.bfloat16).view(7, 1, 1, 8)
    pos = torch.randint(0, 7, (1, T))
    ox, oy = torch.empty_like(x), torch.empty_like(y)
    model_rope.rope_cached_positions_2c_fwd_impl(ox, oy, x, y, cos, sin, pos, 0, True, False)
    c, s = cos[pos[0]].float().view(T, 1, 8), sin[pos[0]].float().view(T, 1, 8)
    xf = x[0].float()
    assert torch.equal(ox[0, ..., :8], (xf[..., :8] * c - xf[..., 8:16] * s).to(torch.bfloat16))
    assert torch.equal(ox[0, ..., 8:16], (xf[..., 8:16] * c + xf[..., :8] * s).to(torch.bfloat16))
    assert torch.equal(ox[..., 16:], x[..., 16:])


# ----------------------------------------------------------------------------
# 3. The adapter on the model
# ----------------------------------------------------------------------------
def _layout(layout, tokens, hq, hk, head, dtype):
    if layout == "2d":
        return torch.randn(tokens, hq * head).to(dtype), torch.randn(tokens, hk * head).to(dtype), None
    if layout == "3d":
        return torch.randn(tokens, hq, head).to(dtype), torch.randn(tokens, hk, head).to(dtype), None
    qkv = torch.randn(tokens, (hq + 2 * hk) * head).to(dtype)  # vLLM's split of a fused qkv
    q, k, _ = qkv.split([hq * head, hk * head, hk * head], dim=-1)
    return q, k, qkv


@pytest.mark.parametrize("inplace", [False, True], ids=["out_of_place", "inplace"])
@pytest.mark.parametrize("layout", ["2d", "3d", "qkv_split"])
@pytest.mark.parametrize("rd", [64, 32], ids=["full", "partial"])
@pytest.mark.parametrize("is_neox", [True, False], ids=["neox", "gptj"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_adapter(fake_aiter, seed, dtype, is_neox, rd, layout, inplace):
    tokens, hq, hk, head, max_pos = 7, 4, 2, 64, 100
    q, k, qkv = _layout(layout, tokens, hq, hk, head, dtype)
    pos = torch.randint(0, max_pos, (2 * tokens,))[::2]  # strided: must reach aiter contiguous
    pos = pos.to(torch.int32) if layout == "3d" else pos
    angles = torch.rand(max_pos, rd // 2) * 6.28
    cache = torch.cat((angles.cos(), angles.sin()), dim=-1)
    q0, k0 = q.clone(), k.clone()
    qkv0 = None if qkv is None else qkv.clone()
    assert aiter_rope.supports_args(pos, q, k, head, cache, is_neox, None) is None

    qo, ko = aiter_rope.rotary_embedding(pos, q, k, head, cache, is_neox, inplace)

    assert_close_verbose(qo, ref_rope(pos, q0, head, cache, is_neox), *tol(dtype, q0), msg="query")
    assert_close_verbose(ko, ref_rope(pos, k0, head, cache, is_neox), *tol(dtype, k0), msg="key")
    if inplace:
        assert qo is q and ko is k
        if qkv is not None:
            assert torch.equal(qkv[:, (hq + hk) * head:], qkv0[:, (hq + hk) * head:]), "v was touched"
    else:
        assert torch.equal(q, q0) and torch.equal(k, k0), "out-of-place changed its inputs"
        assert qo.shape == q.shape and ko.shape == k.shape
        assert qo.data_ptr() != q.data_ptr() and ko.data_ptr() != k.data_ptr()

    [call] = fake_aiter.CALLS
    assert call.name == FN
    t = {n: call.tensor(n) for n in ("output_x", "output_y", "input_x", "input_y", "cos", "sin", "positions")}
    assert t["input_x"].shape == (1, tokens, hq, rd) and t["input_y"].shape == (1, tokens, hk, rd)
    assert t["input_x"].data_ptr == q.data_ptr() and t["input_y"].data_ptr == k.data_ptr(), "the adapter copied q/k"
    assert t["input_x"].stride[1] == q.stride(0)
    if inplace:
        assert t["output_x"] == t["input_x"] and t["output_y"] == t["input_y"]
    else:
        assert t["output_x"].data_ptr == qo.data_ptr() and t["output_y"].data_ptr == ko.data_ptr()
    assert t["positions"].shape == (1, tokens) and t["positions"].dtype == torch.int64
    assert t["positions"].stride == (tokens, 1)
    assert t["cos"].shape == (max_pos + 1, 1, 1, rd // 2) and t["cos"].dtype == dtype
    assert call.args["rotate_style"] == (0 if is_neox else 1)
    assert call.args["reuse_freqs_front_part"] is True and call.args["nope_first"] is False


@pytest.mark.parametrize("inplace", [False, True], ids=["out_of_place", "inplace"])
@pytest.mark.parametrize("rd", [64, 32], ids=["full", "partial"])
def test_adapter_out_of_range_positions_read_a_nan_row(fake_aiter, seed, rd, inplace):
    pos, q, k, cache = rope_inputs(6, 2, 1, 64, torch.float16, rotary_dim=rd, max_position=50, random_cache=True)
    pos[2], pos[5] = -7, 1 << 40
    q0, k0 = q.clone(), k.clone()
    qo, ko = aiter_rope.rotary_embedding(pos, q, k, 64, cache, True, inplace)  # the model refuses reads outside
    for out, x in ((qo, q0), (ko, k0)):
        assert torch.isnan(out[[2, 5]]).all() and not torch.isnan(out[[0, 1, 3, 4]]).any()
        assert_close_verbose(out, ref_rope(pos, x, 64, cache, True), *tol(torch.float16, x))


# ----------------------------------------------------------------------------
# 4. The memo
# ----------------------------------------------------------------------------
def _cache(max_pos=20, rd=16, seed_value=0.0):
    angles = torch.rand(max_pos, rd // 2) + seed_value
    return torch.cat((angles.cos(), angles.sin()), dim=-1)


def test_memo_reuses_tables_per_cache_and_dtype():
    memo = aiter_rope.CosSinMemo()
    cache = _cache()
    a = memo.get(cache, torch.float16)
    assert memo.get(cache, torch.float16)[0] is a[0]
    b = memo.get(cache, torch.bfloat16)
    assert b[0].dtype == torch.bfloat16 and memo.get(cache, torch.bfloat16)[1] is b[1]
    assert len(memo) == 1
    cos, sin = a
    assert cos.shape == (21, 1, 1, 8) and cos.is_contiguous() and sin.is_contiguous()
    assert torch.equal(cos[:20, 0, 0], cache[:, :8].half()) and torch.equal(sin[:20, 0, 0], cache[:, 8:].half())
    assert torch.isnan(cos[20]).all() and torch.isnan(sin[20]).all()


def test_memo_does_not_keep_the_cache_alive_and_evicts():
    memo = aiter_rope.CosSinMemo()
    cache = _cache()
    memo.get(cache, torch.float16)
    alive = weakref.ref(cache)
    del cache
    gc.collect()
    assert alive() is None, "the memo kept the cache alive"
    assert len(memo) == 0, "the entry outlived its cache"


def test_memo_never_serves_stale_tables():
    """New caches at the very address (and version 0, shape, dtype) of a dead one get their own tables."""
    memo = aiter_rope.CosSinMemo()
    buffer = np.empty((20, 16), dtype=np.float32)  # every cache below lives at this address
    same_id = 0
    last_id = None
    for i in range(20):
        buffer[:] = _cache(seed_value=float(i)).numpy()  # new contents, written behind torch's back
        cache = torch.from_numpy(buffer)  # a new tensor: same data_ptr, version 0, shape, dtype
        assert cache.data_ptr() == buffer.ctypes.data and cache._version == 0
        same_id += id(cache) == last_id
        cos, sin = memo.get(cache, torch.float16)
        assert torch.equal(cos[:20, 0, 0], cache[:, :8].half()), f"stale tables at iteration {i}"
        assert torch.equal(sin[:20, 0, 0], cache[:, 8:].half())
        last_id = id(cache)
        del cache, cos, sin
        assert len(memo) == 0, "the entry outlived its cache"
    print(f"id reused {same_id} of 19 times at the same address")


def test_memo_refreshes_a_cache_changed_in_place():
    memo = aiter_rope.CosSinMemo()
    cache = _cache()
    old = memo.get(cache, torch.float16)[0]
    cache.mul_(0.5)
    new = memo.get(cache, torch.float16)[0]
    assert new is not old and torch.equal(new[:20, 0, 0], cache[:, :8].half())
    assert len(memo) == 1


def test_memo_refuses_an_entry_whose_tensor_is_gone(monkeypatch):
    """Even if an id were reused before the finalizer ran, the weak reference must point at the asked tensor."""
    memo = aiter_rope.CosSinMemo()
    a, b = _cache(seed_value=1.0), _cache(seed_value=2.0)
    memo.get(a, torch.float16)
    entry = memo._entries.pop(id(a))
    memo._entries[id(b)] = entry  # as if b had a's id and fingerprint
    monkeypatch.setattr(aiter_rope.CosSinMemo, "_fingerprint", staticmethod(lambda cache: entry[1]))
    cos, _ = memo.get(b, torch.float16)
    assert torch.equal(cos[:20, 0, 0], b[:, :8].half())


# ----------------------------------------------------------------------------
# 5. Guards, gate and policy
# ----------------------------------------------------------------------------
def test_supports_args():
    pos, q, k, cache = rope_inputs(3, 4, 2, 64, torch.float16)
    assert aiter_rope.supports_args(pos, q, k, 64, cache, True, None) is None
    assert "float16/bfloat16" in aiter_rope.supports_args(pos, q.float(), k.float(), 64, cache, True, None)
    assert "needs a key" in aiter_rope.supports_args(pos, q, None, 64, cache, True, None)
    assert "one dtype" in aiter_rope.supports_args(pos, q, k.bfloat16(), 64, cache, True, None)
    strided = torch.randn(3, 4, 128).half()[..., ::2]
    assert "unit element stride" in aiter_rope.supports_args(pos, strided, k, 64, cache, True, None)


@pytest.fixture
def mi300(monkeypatch, fresh_settings):
    install = platform.AiterInstall(True, True, "/opt/aiter", "amd-aiter", "0.1.7", "AMD aiter (simulated)")
    arch = {"name": "gfx942"}
    monkeypatch.setattr(platform, "platform_kind", lambda: "rocm")
    monkeypatch.setattr(platform, "device_arch", lambda index=0: arch["name"])
    monkeypatch.setattr(platform, "aiter_install", lambda: install)
    monkeypatch.setattr(platform, "triton_unavailable_reason", lambda device: None)
    monkeypatch.setattr(platform, "device_index", lambda device: 0)

    def apply(arch_name="gfx942", **env):
        arch["name"] = arch_name
        return fresh_settings(**env)

    return apply


def _args(tokens, dtype=torch.float16, key_dtype=None):
    return (cuda_like(tokens, dtype=torch.int64), cuda_like(tokens, 32 * 128, dtype=dtype),
            cuda_like(tokens, 8 * 128, dtype=key_dtype or dtype), 128, cuda_like(4096, 128, dtype=torch.float32),
            True, None)


def test_auto_on_simulated_mi300(mi300):
    disp = ops_rope.ROTARY_EMBEDDING
    mi300(VLLM_ROCM_USE_AITER="1", VLLM_ROCM_USE_AITER_TRITON_ROPE="1")
    assert policy.family_of(torch.device("cuda", 0)) == "rocm_gfx9"
    assert disp.auto(_args(4096)).name == "aiter"
    assert disp.auto(_args(2048)).name == "aiter"
    assert disp.auto(_args(2047)).name == "triton"  # AMD's crossover: aiter loses below ~2048 tokens
    assert disp.auto(_args(8192, torch.bfloat16)).name == "triton"  # bf16 stays off aiter (precision)
    assert disp.auto(_args(8192, torch.float16, torch.bfloat16)).name == "triton"  # q/k mismatch: falls back
    assert disp.auto(_args(8192, torch.float32)).name == "triton"
    mi300(VLLM_ROCM_USE_AITER="1", VLLM_ROCM_USE_AITER_TRITON_ROPE=None)  # vLLM's default: the rope flag is off
    assert disp.auto(_args(4096)).name == "triton"
    assert "VLLM_ROCM_USE_AITER_TRITON_ROPE" in dict(disp.explain(_args(4096)))["aiter"]
    mi300(VLLM_ROCM_USE_AITER="0", VLLM_ROCM_USE_AITER_TRITON_ROPE="1")
    assert disp.auto(_args(4096)).name == "triton"
    mi300("gfx90a", VLLM_ROCM_USE_AITER="1", VLLM_ROCM_USE_AITER_TRITON_ROPE="1")
    assert disp.auto(_args(4096)).name == "triton"
    assert "gfx942/gfx950" in dict(disp.explain(_args(4096)))["aiter"]
    mi300("gfx950", VLLM_ROCM_USE_AITER="1", VLLM_ROCM_USE_AITER_TRITON_ROPE="1")
    assert disp.auto(_args(4096)).name == "aiter"
