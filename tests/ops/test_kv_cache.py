"""The KV-cache family (``reshape_and_cache_flash``) on the torch and Triton backends.

The reference below writes token by token in Python (no shared code with the backends): for
unquantized caches the rows themselves, for FP8 caches ``fp8(clamp(x / scale, +-fp8_max))`` in
float32 (the rule of ``vllm_rocm_accel/fp8.py``), itself checked against float64 (each code
within half an FP8 ulp of the clamped float64 quotient). Caches are poisoned with random bytes
first and compared bitwise (uint8 views), so slot -1 padding, rows past ``slot_mapping``'s
length and every slot nobody maps must come out untouched.
"""

from __future__ import annotations

import pytest
import torch

from kv_ref import make_caches, random_slots
from vllm_rocm_accel import fp8, rocm_accel_ops
from vllm_rocm_accel.ops import kv_cache as kv_ops

BACKENDS = ["torch", "triton"]
DTYPES = [torch.bfloat16, torch.float16, torch.float32]


# ----------------------------------------------------------------------------
# Inputs and the reference
# ----------------------------------------------------------------------------
def kv_rows(rows: int, heads: int, d: int, dv: int, dtype: torch.dtype, strided: bool):
    """key (rows, H, D), value (rows, H, Dv) with spread magnitudes; ``strided``: slices of one fused
    QKV projection buffer (row stride > H * D), as vLLM's attention layers pass them."""
    def spread(*shape):
        return torch.randn(*shape) * torch.exp(torch.randn(shape[0], 1, 1) * 1.5)

    if not strided:
        return spread(rows, heads, d).to(dtype), spread(rows, heads, dv).to(dtype)
    qkv = torch.randn(rows, 2 * heads * d + heads * d + heads * dv).to(dtype)
    k = qkv[:, 2 * heads * d:3 * heads * d].view(rows, heads, d)
    v = qkv[:, 3 * heads * d:].view(rows, heads, dv)
    k.copy_(spread(rows, heads, d))
    v.copy_(spread(rows, heads, dv))
    return k, v


def reference(key, value, key_cache, value_cache, slots, fmt, k_scale, v_scale):
    """Fresh copies of the caches with the write done token by token."""
    kc, vc = key_cache.clone(), value_cache.clone()
    bs = kc.shape[1]
    for t, s in enumerate(slots.tolist()):
        if s < 0:
            continue
        for cache, rows, scale in ((kc, key, k_scale), (vc, value, v_scale)):
            x = rows[t]
            if fmt is not None:
                m = fp8.fp8_max(fmt)
                code = (x.float() / scale.float().reshape(())).clamp(-m, m).to(fmt)
                check_code_against_float64(code, x, scale, fmt)
                cache.view(torch.uint8)[s // bs, s % bs] = code.view(torch.uint8)
            else:
                cache[s // bs, s % bs] = x
    return kc, vc


def check_code_against_float64(code, x, scale, fmt):
    """The float32 rule's code is the float64 quotient rounded to the format (within the float32 step)."""
    m = fp8.fp8_max(fmt)
    exact = (x.double() / scale.double().reshape(())).clamp(-m, m)
    a = exact.abs().clamp(min=torch.finfo(fmt).smallest_normal)
    half_ulp = torch.exp2(torch.floor(torch.log2(a)) - 4)
    err = (code.double() - exact).abs()
    # the rule rounds the quotient to float32 first: a tie there may sit 2**-24 relative off the float64 one
    assert (err <= half_ulp + exact.abs() * 2.0**-24).all(), f"fp8 code off by {float((err / half_ulp).max())} half-ulps"


def assert_bitwise(got: torch.Tensor, want: torch.Tensor, msg: str = ""):
    g, w = got.view(torch.uint8), want.view(torch.uint8)
    if not torch.equal(g, w):
        bad = (g != w).nonzero()
        raise AssertionError(f"{msg}: {bad.shape[0]} bytes differ, first at {tuple(bad[0].tolist())} "
                             f"(got {int(g[tuple(bad[0])])}, want {int(w[tuple(bad[0])])})")


def run(backend, key, value, kc, vc, slots, kv_dtype, k_scale, v_scale):
    rocm_accel_ops.reshape_and_cache_flash(key, value, kc, vc, slots, kv_dtype, k_scale, v_scale, backend=backend)


def scales_for(key, value, fmt):
    """Per-tensor scales that make ~10% of values clamp."""
    m = fp8.fp8_max(fmt)
    return ((key.float().abs().amax() / m * 0.6).reshape(1), (value.float().abs().amax() / m * 0.6).reshape(1))


# ----------------------------------------------------------------------------
# Correctness
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("block_size", [16, 64])
@pytest.mark.parametrize("layout", ["unbind0", "interleaved", "padded"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_unquantized_matches_reference(seed, backend, block_size, layout, dtype):
    heads, d = 3, 32
    num_blocks, tokens = 4, 23
    kc, vc = make_caches(layout, num_blocks, block_size, heads, d, d, dtype)
    key, value = kv_rows(tokens + 3, heads, d, d, dtype, strided=layout == "interleaved")  # 3 rows past T
    slots = random_slots(tokens, num_blocks * block_size, pad=5)
    one = torch.ones(1)
    want = reference(key, value, kc, vc, slots, None, one, one)
    k0, v0 = key.clone(), value.clone()
    run(backend, key, value, kc, vc, slots, "auto", one, one)
    assert_bitwise(kc, want[0], "key_cache")
    assert_bitwise(vc, want[1], "value_cache")
    assert torch.equal(key, k0) and torch.equal(value, v0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cache_dtype", [torch.uint8, fp8.FN, fp8.FNUZ], ids=str)
@pytest.mark.parametrize("kv_dtype", ["fp8", "fp8_e4m3"])
@pytest.mark.parametrize("block_size", [16, 64])
def test_fp8_matches_reference(seed, backend, cache_dtype, kv_dtype, block_size):
    heads, d = 2, 64
    num_blocks, tokens = 3, 19
    kc, vc = make_caches("unbind0", num_blocks, block_size, heads, d, d, cache_dtype)
    key, value = kv_rows(tokens, heads, d, d, torch.bfloat16, strided=True)
    key[0, 0, :4] = 0.0  # zeros, and values at the clamp
    slots = random_slots(tokens, num_blocks * block_size, pad=4, dtype=torch.int32)
    live = slots >= 0
    ks, vs = scales_for(key[live], value[live], fp8.FN)  # from the rows written
    fmt = fp8.fp8_dtype(kc.device) if cache_dtype == torch.uint8 else cache_dtype
    want = reference(key, value, kc, vc, slots, fmt, ks, vs)
    run(backend, key, value, kc, vc, slots, kv_dtype, ks, vs)
    assert_bitwise(kc, want[0], "key_cache")
    assert_bitwise(vc, want[1], "value_cache")
    written = kc.view(fmt)[slots[slots >= 0].long() // block_size, slots[slots >= 0].long() % block_size]
    assert written.float().abs().max().item() == fp8.fp8_max(fmt)  # some values clamped


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("fp8_cache", [False, True])
def test_value_head_dim_differs(seed, backend, fp8_cache):
    heads, d, dv, block_size = 4, 16, 8, 16
    dtype = torch.uint8 if fp8_cache else torch.float16
    kc, vc = make_caches("separate", 5, block_size, heads, d, dv, dtype)
    key, value = kv_rows(11, heads, d, dv, torch.float16, strided=True)
    slots = random_slots(11, 5 * block_size, pad=2)
    ks, vs = (torch.tensor([0.02]), torch.tensor([0.03])) if fp8_cache else (torch.ones(1), torch.ones(1))
    fmt = fp8.fp8_dtype(kc.device) if fp8_cache else None
    want = reference(key, value, kc, vc, slots, fmt, ks, vs)
    run(backend, key, value, kc, vc, slots, "fp8" if fp8_cache else "auto", ks, vs)
    assert_bitwise(kc, want[0], "key_cache")
    assert_bitwise(vc, want[1], "value_cache")


@pytest.mark.parametrize("backend", BACKENDS)
def test_all_padding_and_empty_write_nothing(seed, backend):
    kc, vc = make_caches("unbind0", 2, 16, 2, 16, 16, torch.bfloat16)
    k0, v0 = kc.clone(), vc.clone()
    key, value = kv_rows(6, 2, 16, 16, torch.bfloat16, strided=False)
    one = torch.ones(1)
    run(backend, key, value, kc, vc, torch.full((6,), -1, dtype=torch.int64), "auto", one, one)
    run(backend, key, value, kc, vc, torch.empty(0, dtype=torch.int64), "auto", one, one)
    assert_bitwise(kc, k0, "key_cache")
    assert_bitwise(vc, v0, "value_cache")


@pytest.mark.parametrize("backend", BACKENDS)
def test_unchecked_negative_slots_are_skipped(seed, backend, fresh_settings):
    """With the value check off, any negative slot is padding (vLLM's kernels test slot < 0)."""
    fresh_settings(VLLM_ROCM_ACCEL_CHECK_SEQLENS="0")
    kc, vc = make_caches("unbind0", 2, 16, 2, 16, 16, torch.float32)
    key, value = kv_rows(4, 2, 16, 16, torch.float32, strided=False)
    slots = torch.tensor([3, -7, 30, -2])
    one = torch.ones(1)
    want = reference(key, value, kc, vc, slots, None, one, one)
    run(backend, key, value, kc, vc, slots, "auto", one, one)
    assert_bitwise(kc, want[0], "key_cache")
    assert_bitwise(vc, want[1], "value_cache")


def test_check_values_false_skips_the_slot_check(seed, fresh_settings, monkeypatch):
    """check_values=False (the vLLM backend's call: vLLM computes the slots) skips the slot values'
    host read with the setting on: a slot below -1, refused with the check, is padding without it."""
    fresh_settings(VLLM_ROCM_ACCEL_CHECK_SEQLENS="1")
    calls = []
    real = kv_ops.check_slot_values
    monkeypatch.setattr(kv_ops, "check_slot_values", lambda *a: (calls.append(a), real(*a)))
    kc, vc = make_caches("unbind0", 2, 16, 2, 16, 16, torch.float32)
    key, value = kv_rows(4, 2, 16, 16, torch.float32, strided=False)
    slots = torch.tensor([3, -7, 30, -2])
    one = torch.ones(1)
    with pytest.raises(ValueError, match="padding"):
        rocm_accel_ops.reshape_and_cache_flash(key, value, kc, vc, slots, "auto", one, one, backend="torch")
    assert len(calls) == 1
    want = reference(key, value, kc, vc, slots, None, one, one)
    rocm_accel_ops.reshape_and_cache_flash(key, value, kc, vc, slots, "auto", one, one, backend="torch",
                                           check_values=False)
    torch.ops.rocm_accel.reshape_and_cache_flash(key, value, kc, vc, slots, "auto", one, one, "torch", False)
    assert len(calls) == 1, "check_values=False still ran the slot check"
    assert_bitwise(kc, want[0], "key_cache")
    assert_bitwise(vc, want[1], "value_cache")
    with pytest.raises(TypeError, match="slot_mapping has dtype"):  # argument checks are not affected
        rocm_accel_ops.reshape_and_cache_flash(key, value, kc, vc, slots.float(), "auto", one, one,
                                               check_values=False)


def test_opcheck_without_value_checks(seed):
    op = kv_ops.register()[kv_ops.OP]
    kc, vc = make_caches("unbind0", 2, 16, 2, 16, 16, torch.bfloat16)
    kc.zero_(), vc.zero_()
    key, value = kv_rows(6, 2, 16, 16, torch.bfloat16, strided=True)
    one = torch.ones(1)
    torch.library.opcheck(op, (key, value, kc, vc, random_slots(6, 32, pad=2), "auto", one, one, "torch", False))


def test_auto_choice_on_cpu_is_torch():
    args = kv_ops.example_args(kv_ops.OP, 4, 0, torch.bfloat16, torch.device("cpu"))
    assert kv_ops.RESHAPE_AND_CACHE_FLASH.auto(args).name == "torch"


def test_triton_launch_params_split_heads():
    from vllm_rocm_accel.backends.triton import kv_cache as triton_kv

    block_h, block_d, block_dv, _ = triton_kv.launch_params("cpu", 3, 16, 8)  # interpreter: 64-element tiles
    assert (block_h, block_d, block_dv) == (4, 16, 8)
    assert triton_kv.launch_params("cpu", 3, 64, 64)[0] == 1


# ----------------------------------------------------------------------------
# Bad inputs: a clear error and nothing written
# ----------------------------------------------------------------------------
def _good():
    kc, vc = make_caches("unbind0", 2, 16, 2, 16, 16, torch.bfloat16)
    key, value = kv_rows(5, 2, 16, 16, torch.bfloat16, strided=False)
    slots = random_slots(5, 32, pad=1)
    return dict(key=key, value=value, key_cache=kc, value_cache=vc, slot_mapping=slots, kv_cache_dtype="auto",
                k_scale=torch.ones(1), v_scale=torch.ones(1))


BAD = [
    ("slot past the cache", lambda a: a["slot_mapping"].__setitem__(2, 32), ValueError, "points past the cache"),
    ("slot below -1", lambda a: a["slot_mapping"].__setitem__(0, -2), ValueError, "padding"),
    ("slot dtype", lambda a: a.update(slot_mapping=a["slot_mapping"].float()), TypeError, "slot_mapping has dtype"),
    ("slots longer than key", lambda a: a.update(slot_mapping=torch.arange(6)), ValueError, "only 5 rows"),
    ("value dtype", lambda a: a.update(value=a["value"].half()), ValueError, "value has dtype"),
    ("cache dtype for auto", lambda a: a.update(key_cache=a["key_cache"].float(), value_cache=a["value_cache"].float()),
     ValueError, "unconverted"),
    ("fp8 on a bf16 cache", lambda a: a.update(kv_cache_dtype="fp8"), ValueError, "needs FP8 caches"),
    ("e5m2", lambda a: a.update(kv_cache_dtype="fp8_e5m2"), ValueError, "not supported"),
    ("kv_cache_dtype type", lambda a: a.update(kv_cache_dtype=None), TypeError, "must be a str"),
    ("scale dtype", lambda a: a.update(k_scale=torch.ones(1, dtype=torch.float64)), TypeError, "k_scale has dtype"),
    ("scale numel", lambda a: a.update(v_scale=torch.ones(2)), ValueError, "v_scale has shape"),
    ("scale type", lambda a: a.update(k_scale=1.0), TypeError, "k_scale must be a torch.Tensor"),
    ("heads mismatch", lambda a: a.update(key=a["key"][:, :1]), ValueError, "value has shape|key_cache has shape"),
    ("head dim mismatch", lambda a: a.update(key=a["key"][..., :8], value=a["value"][..., :8]), ValueError,
     "key_cache has shape"),
    ("value cache blocks", lambda a: a.update(value_cache=a["value_cache"][:1]), ValueError, "value_cache has shape"),
    ("3-d cache", lambda a: a.update(key_cache=a["key_cache"][0]), ValueError, "expected 4 dims"),
    ("2-d slots", lambda a: a.update(slot_mapping=a["slot_mapping"].view(5, 1)), ValueError, "expected 1 dims"),
    ("device", lambda a: a.update(k_scale=torch.ones(1, device="meta")), ValueError, "is on meta"),
    ("key type", lambda a: a.update(key=a["key"].tolist()), TypeError, "key must be a torch.Tensor"),
]


@pytest.mark.parametrize("backend", BACKENDS + ["auto"])
@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_inputs_raise_before_any_write(seed, backend, case):
    _, mutate, exc, match = case
    args = _good()
    mutate(args)
    snapshot = {n: args[n].clone() for n in ("key_cache", "value_cache")}
    with pytest.raises(exc, match=match):
        rocm_accel_ops.reshape_and_cache_flash(**args, backend=backend)
    for name, before in snapshot.items():
        assert_bitwise(args[name], before, name)


def test_bad_backend_name():
    with pytest.raises(ValueError, match="not one of"):
        rocm_accel_ops.reshape_and_cache_flash(**_good(), backend="cuda")


# ----------------------------------------------------------------------------
# opcheck and torch.compile
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("fp8_cache", [False, True])
def test_opcheck(seed, backend, fp8_cache):
    op = kv_ops.register()[kv_ops.OP]
    dtype = torch.uint8 if fp8_cache else torch.bfloat16
    kc, vc = make_caches("unbind0", 2, 16, 2, 16, 16, dtype)
    if not fp8_cache:
        kc.zero_(), vc.zero_()  # opcheck compares caches with allclose: no NaN poison
    key, value = kv_rows(6, 2, 16, 16, torch.bfloat16, strided=True)
    slots = random_slots(6, 32, pad=2)
    scales = (torch.tensor([0.05]), torch.tensor([0.07]))
    torch.library.opcheck(op, (key, value, kc, vc, slots, "fp8" if fp8_cache else "auto", *scales, backend))


def test_compile_fullgraph_no_graph_break(seed):
    def step(key, value, kc, vc, slots, ks, vs):
        rocm_accel_ops.reshape_and_cache_flash(key, value, kc, vc, slots, "auto", ks, vs)
        return kc.float().sum(dim=(1, 2, 3)) + vc.float().sum(dim=(1, 2, 3))

    torch._dynamo.reset()
    compiled = torch.compile(step, fullgraph=True)
    for tokens in (5, 9):
        key, value = kv_rows(tokens, 2, 16, 16, torch.bfloat16, strided=False)
        slots = random_slots(tokens, 48, pad=1)
        one = torch.ones(1)
        caches = [torch.zeros(2, 3, 16, 2, 16, dtype=torch.bfloat16).unbind(0) for _ in range(2)]
        got = compiled(key, value, *caches[0], slots, one, one)
        want = step(key, value, *caches[1], slots, one, one)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-6)  # Inductor sums in another order
        assert_bitwise(caches[0][0], caches[1][0], "key_cache under compile")
        assert_bitwise(caches[0][1], caches[1][1], "value_cache under compile")
    explain = torch._dynamo.explain(step)(key, value, *caches[1], slots, one, one)
    assert explain.graph_break_count == 0
