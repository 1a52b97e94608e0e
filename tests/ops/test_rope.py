"""The rotary-embedding family through the facade, on every backend this machine runs, against float64."""

from __future__ import annotations

import pytest
import torch

from helpers import assert_close_verbose
from vllm_rocm_accel import rocm_accel_ops, settings
from vllm_rocm_accel.inputs_rope import cos_sin_cache, rope_inputs

BACKENDS = ["torch", "triton"]  # triton through TRITON_INTERPRET on the CPU
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
EPS = {dt: torch.finfo(dt).eps for dt in DTYPES}


def tol(backend: str, dtype: torch.dtype, x: torch.Tensor) -> tuple[float, float]:
    """(atol, rtol) against float64 on the same cache values.

    triton: fp32 arithmetic (two products and a sum, each <= 2^-24 relative to |x1| + |x2|
    <= 2 max|x|) and one rounding of the output (<= eps/2 relative): atol 2^-20 max|x|,
    rtol eps. torch (vLLM's flow): cos/sin rounded to the dtype (eps/2 each), both products
    and the sum rounded in the dtype: <= ~1.5 eps (|x1| + |x2|) + eps/2 |o|, so atol
    4 eps max|x| and rtol eps.
    """
    amax = float(x.detach().abs().max()) if x.numel() else 1.0
    if backend == "triton":
        return 2.0**-20 * amax, EPS[dtype]
    return 4 * EPS[dtype] * amax, EPS[dtype]


def ref_rope(positions, x, head_size, cache, is_neox):
    """float64 rotation with the cache's own values; NaN rows for out-of-range positions."""
    tokens = positions.shape[0]
    max_pos, rd = cache.shape
    half = rd // 2
    pos = positions.to(torch.int64)
    valid = (pos >= 0) & (pos < max_pos)
    rows = cache.to(torch.float64)[pos.clamp(0, max_pos - 1)]
    c, s = rows[:, None, :half], rows[:, None, half:]
    x3 = x.to(torch.float64).reshape(tokens, -1, head_size).clone()
    if is_neox:
        i1, i2 = slice(0, half), slice(half, rd)
    else:
        i1, i2 = slice(0, rd, 2), slice(1, rd, 2)
    x1, x2 = x3[..., i1].clone(), x3[..., i2].clone()
    x3[..., i1] = x1 * c - x2 * s
    x3[..., i2] = x2 * c + x1 * s
    x3[~valid] = float("nan")
    return x3.reshape(x.shape)


def _check(backend, positions, q, k, head_size, cache, is_neox, rotary_dim=None, msg=""):
    """Out of place (inputs intact), then in place on clones (same bits as out of place)."""
    q0, k0 = q.clone(), None if k is None else k.clone()
    qo, ko = rocm_accel_ops.rotary_embedding(positions, q, k, head_size, cache, is_neox, rotary_dim,
                                             inplace=False, backend=backend)
    assert torch.equal(q, q0) and (k is None or torch.equal(k, k0)), "out-of-place form changed its inputs"
    assert qo.shape == q.shape and qo.dtype == q.dtype and qo.data_ptr() != q.data_ptr()
    assert_close_verbose(qo, ref_rope(positions, q0, head_size, cache, is_neox), *tol(backend, q.dtype, q0), f"{msg} query")
    if k is None:
        assert ko is None
    else:
        assert ko.shape == k.shape and ko.data_ptr() != k.data_ptr()
        assert_close_verbose(ko, ref_rope(positions, k0, head_size, cache, is_neox), *tol(backend, k.dtype, k0), f"{msg} key")
    qi, ki = q.clone(), None if k is None else k.clone()
    rq, rk = rocm_accel_ops.rotary_embedding(positions, qi, ki, head_size, cache, is_neox, rotary_dim, backend=backend)
    assert rq is qi and rk is ki
    assert torch.equal(qi.view(torch.uint8), qo.view(torch.uint8)) if qi.is_contiguous() else torch.equal(qi, qo)
    if k is not None:
        assert torch.equal(ki, ko), "in-place key differs from out-of-place"
    return qo, ko


# (tokens, q heads, k heads (None: no key), head_size, rotary_dim, (T, H, D) layout)
SHAPES = [
    (1, 4, 2, 64, 64, False),
    (7, 3, 1, 80, 80, True),      # head 80: half 40, not a power of two
    (7, 4, 4, 128, 64, False),    # partial rotary
    (5, 2, 1, 256, 256, False),
    (3, 2, None, 128, 32, True),  # no key, partial
    (4099, 2, 1, 64, 48, False),  # many tokens, partial
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("is_neox", [True, False], ids=["neox", "gptj"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_matches_float64(seed, backend, dtype, is_neox, shape):
    tokens, hq, hk, head, rd, three_d = shape
    pos, q, k, cache = rope_inputs(tokens, hq, hk, head, dtype, rotary_dim=rd, max_position=5000, three_d=three_d,
                                   random_cache=True)
    _check(backend, pos, q, k, head, cache, is_neox, msg=f"{backend} {dtype} {shape}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cache_dtype", [torch.float16, torch.bfloat16], ids=str)
def test_cache_in_16_bit(seed, backend, cache_dtype):
    """vLLM converts the cache to the query dtype before its kernels: 16-bit caches are accepted."""
    pos, q, k, cache = rope_inputs(9, 4, 2, 64, cache_dtype, cache_dtype=cache_dtype, random_cache=True)
    _check(backend, pos, q, k, 64, cache, True, rotary_dim=64)


@pytest.mark.parametrize("backend", BACKENDS)
def test_positions_int32_and_strided(seed, backend):
    pos, q, k, cache = rope_inputs(6, 4, 2, 64, torch.bfloat16, max_position=300, random_cache=True)
    _check(backend, pos.to(torch.int32), q, k, 64, cache, False)
    wide = torch.randint(0, 300, (2, 12))
    strided = wide[1, ::2]  # stride 2
    assert strided.stride(0) == 2
    _check(backend, strided, q, k, 64, cache, True)
    _check(backend, strided.to(torch.int32), q, k, 64, cache, True)
    _check(backend, torch.tensor([17]).expand(6), q, k, 64, cache, True)  # stride 0


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("is_neox", [True, False], ids=["neox", "gptj"])
def test_strided_qkv_views_in_place(seed, backend, is_neox):
    """vLLM splits a fused qkv: query and key are row-strided views, rotated where they are."""
    tokens, hq, hk, head = 5, 4, 2, 64
    qkv = torch.randn(tokens, (hq + 2 * hk) * head).to(torch.float16)
    before = qkv.clone()
    q, k, v = qkv.split([hq * head, hk * head, hk * head], dim=-1)
    pos = torch.randint(0, 100, (tokens,))
    cache = cos_sin_cache(100, 32)
    want_q = ref_rope(pos, before[:, : hq * head], head, cache, is_neox)
    want_k = ref_rope(pos, before[:, hq * head: (hq + hk) * head], head, cache, is_neox)
    qo, ko = rocm_accel_ops.rotary_embedding(pos, q, k, head, cache, is_neox, inplace=False, backend=backend)
    assert torch.equal(qkv, before)
    assert_close_verbose(qo, want_q, *tol(backend, torch.float16, q))
    rocm_accel_ops.rotary_embedding(pos, q, k, head, cache, is_neox, backend=backend)
    assert_close_verbose(q, want_q, *tol(backend, torch.float16, before))
    assert_close_verbose(k, want_k, *tol(backend, torch.float16, before))
    assert torch.equal(v, before[:, (hq + hk) * head:]), "v (next to k in qkv) was touched"
    # 3-D head views with a padded head stride
    padded = torch.randn(tokens, hq, head + 16).to(torch.float16)
    q3 = padded[..., :head]
    want = ref_rope(pos, q3, head, cache, is_neox)
    rocm_accel_ops.rotary_embedding(pos, q3, None, head, cache, is_neox, backend=backend)
    assert_close_verbose(q3, want, *tol(backend, torch.float16, want.nan_to_num()))


def test_torch_backend_is_bit_identical_to_vllm(seed):
    """Routing vLLM's RotaryEmbedding through the torch backend must not change a bit."""
    base = pytest.importorskip("vllm.model_executor.layers.rotary_embedding.base")
    for dtype in DTYPES:
        for is_neox in (True, False):
            for head, rd, three_d in ((64, 64, False), (128, 32, True), (80, 80, False)):
                pos, q, k, cache = rope_inputs(11, 4, 2, head, dtype, rotary_dim=rd, three_d=three_d)
                cache = cache.to(dtype)  # vLLM's _match_cos_sin_cache_dtype
                want_q, want_k = base.RotaryEmbedding.forward_static(pos, q, k, head, rd, cache, is_neox)
                got_q, got_k = rocm_accel_ops.rotary_embedding(pos, q, k, head, cache, is_neox, inplace=False,
                                                               backend="torch")
                assert torch.equal(got_q, want_q) and torch.equal(got_k, want_k), (dtype, is_neox, head, rd)
                qi, ki = q.clone(), k.clone()
                rocm_accel_ops.rotary_embedding(pos, qi, ki, head, cache, is_neox, backend="torch")
                assert torch.equal(qi, want_q) and torch.equal(ki, want_k)


# --- item 5: out-of-range positions ---------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("rd", [64, 32], ids=["full", "partial"])
def test_out_of_range_positions_give_nan_rows(seed, backend, rd):
    pos, q, k, cache = rope_inputs(6, 2, 1, 64, torch.bfloat16, rotary_dim=rd, max_position=50, random_cache=True)
    pos[1], pos[4] = -3, 50
    for inplace in (False, True):
        qi, ki = q.clone(), k.clone()
        qo, ko = rocm_accel_ops.rotary_embedding(pos, qi, ki, 64, cache, True, inplace=inplace, backend=backend)
        for out, x in ((qo, q), (ko, k)):
            assert torch.isnan(out[[1, 4]]).all(), "rows of out-of-range positions must be all NaN"
            assert not torch.isnan(out[[0, 2, 3, 5]]).any()
            assert_close_verbose(out, ref_rope(pos, x, 64, cache, True), *tol(backend, torch.bfloat16, x))


@pytest.mark.parametrize("backend", BACKENDS)
def test_check_positions_switch_raises_before_writing(seed, backend, fresh_settings):
    fresh_settings(VLLM_ROCM_ACCEL_CHECK_POSITIONS="1")
    assert settings.get_settings().VLLM_ROCM_ACCEL_CHECK_POSITIONS
    pos, q, k, cache = rope_inputs(5, 2, 1, 64, torch.float32, max_position=40)
    pos[3] = 40
    q0, k0 = q.clone(), k.clone()
    with pytest.raises(ValueError, match=r"positions\[3\] = 40 is outside .*\[0, 40\)"):
        rocm_accel_ops.rotary_embedding(pos, q, k, 64, cache, True, backend=backend)
    assert torch.equal(q, q0) and torch.equal(k, k0)
    pos[3], pos[1] = 39, -1
    with pytest.raises(ValueError, match=r"positions\[1\] = -1"):
        rocm_accel_ops.rotary_embedding(pos, q, k, 64, cache, True, inplace=False, backend=backend)
    pos[1] = 0
    rocm_accel_ops.rotary_embedding(pos, q, k, 64, cache, True, backend=backend)  # all in range: runs


@pytest.mark.parametrize("backend", BACKENDS)
def test_zero_tokens(backend):
    pos = torch.empty(0, dtype=torch.int64)
    q, k = torch.empty(0, 4 * 64), torch.empty(0, 2, 64)
    cache = cos_sin_cache(16, 64)
    qo, ko = rocm_accel_ops.rotary_embedding(pos, q, k, 64, cache, True, inplace=False, backend=backend)
    assert qo.shape == q.shape and ko.shape == k.shape
    assert rocm_accel_ops.rotary_embedding(pos, q, None, 64, cache, True, backend=backend) == (q, None)


def test_auto_never_raises_and_counts(seed):
    rocm_accel_ops.reset_call_counts()
    pos, q, k, cache = rope_inputs(3, 2, 1, 64, torch.float16)
    rocm_accel_ops.rotary_embedding(pos, q, k.to(torch.bfloat16), 64, cache, True)  # q/k dtype mismatch
    rocm_accel_ops.rotary_embedding(pos, q, None, 64, cache, False, inplace=False)
    counts = rocm_accel_ops.call_counts()
    assert sum(n for (op, _), n in counts.items() if op == "rotary_embedding") == 2, counts
    with pytest.raises(ValueError, match="backend 'aiter' cannot serve"):
        rocm_accel_ops.rotary_embedding(pos, q, k, 64, cache, True, backend="aiter")


# --- schema, opcheck, compile ------------------------------------------------------------------
def test_schemas():
    inplace = torch.ops.rocm_accel.rotary_embedding_.default._schema
    out = torch.ops.rocm_accel.rotary_embedding.default._schema
    # infer_schema names alias sets a1/a2 and writes ints as SymInt: the same schema as
    # "Tensor(a!) query, Tensor(b!)? key, int head_size, ..., int? rotary_dim=None".
    assert str(inplace) == (
        "rocm_accel::rotary_embedding_(Tensor positions, Tensor(a1!) query, Tensor(a2!)? key, SymInt head_size, "
        'Tensor cos_sin_cache, bool is_neox, SymInt? rotary_dim=None, str backend="auto") -> ()'
    )
    assert str(out) == (
        "rocm_accel::rotary_embedding(Tensor positions, Tensor query, Tensor? key, SymInt head_size, "
        'Tensor cos_sin_cache, bool is_neox, SymInt? rotary_dim=None, str backend="auto") -> (Tensor, Tensor)'
    )
    mutated = [a.name for a in inplace.arguments if a.alias_info is not None and a.alias_info.is_write]
    assert mutated == ["query", "key"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("with_key", [True, False], ids=["key", "no_key"])
def test_opcheck(seed, backend, with_key):
    pos, q, k, cache = rope_inputs(5, 4, 2, 64, torch.float32, rotary_dim=32)
    k = k if with_key else None
    for op in (torch.ops.rocm_accel.rotary_embedding.default, torch.ops.rocm_accel.rotary_embedding_.default):
        torch.library.opcheck(op, (pos, q.clone(), None if k is None else k.clone(), 64, cache, True, None, backend))


def test_compile_fullgraph_no_graph_break(seed):
    def layer(pos, qkv, cache):
        q, k, v = qkv.split([4 * 64, 2 * 64, 2 * 64], dim=-1)
        q2, k2 = rocm_accel_ops.rotary_embedding(pos, q, k, 64, cache, True, inplace=False)
        q3 = q2.clone()
        k3 = k2.clone()
        rocm_accel_ops.rotary_embedding(pos, q3, k3, 64, cache, False)
        q4, none = rocm_accel_ops.rotary_embedding(pos, q3 * 2, None, 64, cache, True, inplace=False)
        return q4 + 1, k3, v * 1

    torch._dynamo.reset()
    compiled = torch.compile(layer, fullgraph=True, dynamic=True)
    cache = cos_sin_cache(64, 64)
    for tokens in (5, 9):
        pos = torch.randint(0, 64, (tokens,))
        qkv = torch.randn(tokens, 8 * 64)
        got = compiled(pos, qkv.clone(), cache)
        want = layer(pos, qkv.clone(), cache)
        for g, e in zip(got, want):
            torch.testing.assert_close(g, e, atol=1e-5, rtol=1e-5)
    explain = torch._dynamo.explain(layer)(pos, qkv.clone(), cache)
    assert explain.graph_break_count == 0


# --- bad input: clear errors naming the argument, nothing mutated -----------------------------
BAD = [
    (lambda p, q, k, c: (p.float(), q, k, 64, c, True, None), TypeError, "positions has dtype torch.float32"),
    (lambda p, q, k, c: (p.view(1, -1), q, k, 64, c, True, None), ValueError, "positions has shape"),
    (lambda p, q, k, c: (p[:-1], q, k, 64, c, True, None), ValueError, "query has 4 tokens .*positions has 3"),
    (lambda p, q, k, c: (p, q.to(torch.int32), k, 64, c, True, None), TypeError, "query has dtype torch.int32"),
    (lambda p, q, k, c: ("p", q, k, 64, c, True, None), TypeError, "positions must be a torch.Tensor"),
    (lambda p, q, k, c: (p, q, k, 48, c, True, None), ValueError, "query has last dim 256 .*head_size=48"),
    (lambda p, q, k, c: (p, q.view(4, 4, 64), k, 32, c, True, None), ValueError, "query has head dim 64"),
    (lambda p, q, k, c: (p, q[0], k, 64, c, True, None), ValueError, "query has shape"),
    (lambda p, q, k, c: (p, q, k[:, :100], 64, c, True, None), ValueError, "key has last dim 100"),
    (lambda p, q, k, c: (p, q, k.to("meta"), 64, c, True, None), ValueError, "key is on meta"),
    (lambda p, q, k, c: (p, q, k, 64, c[:, :31], True, None), ValueError, "cos_sin_cache has width 31"),
    (lambda p, q, k, c: (p, q, k, 64, torch.ones(10, 66), True, None), ValueError, "cos_sin_cache has width 66"),
    (lambda p, q, k, c: (p, q, k, 64, c[0], True, None), ValueError, "cos_sin_cache has shape"),
    (lambda p, q, k, c: (p, q, k, 64, c.to(torch.int64), True, None), TypeError, "cos_sin_cache has dtype"),
    (lambda p, q, k, c: (p, q, k, 64, c, 1, None), TypeError, "is_neox must be a bool"),
    (lambda p, q, k, c: (p, q, k, 64, c, True, 32), ValueError, "rotary_dim=32 does not match"),
    (lambda p, q, k, c: (p, q, k, 64.0, c, True, None), TypeError, "head_size must be an int"),
    (lambda p, q, k, c: (p, q, k, 0, c, True, None), ValueError, "head_size must be positive"),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("make,exc,msg", BAD)
def test_bad_input_mutates_nothing(seed, backend, make, exc, msg):
    pos, q, k, cache = rope_inputs(4, 4, 2, 64, torch.float32, max_position=32)
    args = make(pos, q, k, cache)
    before = [a.clone() if isinstance(a, torch.Tensor) and a.device.type != "meta" else a for a in args]
    for inplace in (True, False):
        with pytest.raises(exc, match=msg):
            rocm_accel_ops.rotary_embedding(*args, inplace=inplace, backend=backend)
    for a, b in zip(args, before):
        if isinstance(a, torch.Tensor) and a.device.type != "meta":
            assert torch.equal(a, b), "a rejected call changed its input"


def test_triton_launch_params_spread_small_calls():
    """The GPU launch plan (config 'cuda'): big tiles for many tokens, head groups for few."""
    from vllm_rocm_accel.backends.triton import rope as tr

    block_t, groups, q_per, k_per, bhq, bhk, block_r, warps = tr.launch_params("cuda", 32768, 32, 8, 64)
    assert (block_t, groups, q_per, k_per, bhq, bhk, block_r) == (2, 1, 32, 8, 32, 8, 64)
    block_t, groups, q_per, k_per, *_ = tr.launch_params("cuda", 1, 32, 8, 64)
    assert block_t == 1 and groups * q_per >= 32 and groups * k_per >= 8 and groups > 1
    for tokens in (1, 3, 100, 1000, 5000):
        for hq, hk, half in ((32, 8, 64), (5, 1, 40), (64, 64, 128), (1, 1, 16)):
            block_t, groups, q_per, k_per, bhq, bhk, block_r, warps = tr.launch_params("cuda", tokens, hq, hk, half)
            assert groups * q_per >= hq and groups * k_per >= hk and bhq >= q_per and bhk >= k_per
            assert block_r >= half and block_t & (block_t - 1) == 0


@pytest.mark.parametrize("is_neox", [True, False], ids=["neox", "gptj"])
def test_triton_with_gpu_launch_plan(seed, monkeypatch, is_neox):
    """Run the interpreter with the GPU family's plan (small token blocks, split head groups)."""
    from vllm_rocm_accel.backends.triton import rope as tr

    monkeypatch.setattr(tr, "_family", lambda device_type: "cuda")
    for tokens, hq, hk, head, rd in ((1, 32, 8, 128, 128), (3, 5, 1, 80, 80), (2, 6, 3, 64, 32)):
        pos, q, k, cache = rope_inputs(tokens, hq, hk, head, torch.bfloat16, rotary_dim=rd, random_cache=True)
        _check("triton", pos, q, k, head, cache, is_neox, msg=f"{tokens} {hq} {hk} {head} {rd}")


# --- vLLM routing ------------------------------------------------------------------------------
@pytest.mark.parametrize("is_neox", [True, False], ids=["neox", "gptj"])
def test_vllm_rotary_embedding_is_routed_and_bit_identical(seed, is_neox):
    pytest.importorskip("vllm")
    from vllm.config import VllmConfig, set_current_vllm_config
    from vllm.model_executor.custom_op import op_registry_oot
    from vllm.model_executor.layers.rotary_embedding.base import RotaryEmbedding
    from vllm.model_executor.layers.rotary_embedding.llama3_rope import Llama3RotaryEmbedding

    from vllm_rocm_accel import plugin

    plugin.register()
    assert "RotaryEmbedding" in plugin.state()["routed"]
    assert op_registry_oot["RotaryEmbedding"].__name__ == "RocmAccelRotaryEmbedding"
    with set_current_vllm_config(VllmConfig()):
        rope = RotaryEmbedding(64, 32, 128, 10000.0, is_neox, torch.float32)
        llama3 = Llama3RotaryEmbedding(64, 64, 128, 10000.0, is_neox, torch.bfloat16, 8.0, 1.0, 4.0, 64)
    assert type(rope).__name__ == "RocmAccelRotaryEmbedding"
    assert type(llama3).__name__ == "RocmAccelLlama3RotaryEmbedding"
    for layer, dtype in ((rope, torch.float32), (llama3, torch.bfloat16)):
        pos = torch.randint(0, 128, (7,))
        q, k = torch.randn(7, 4 * 64).to(dtype), torch.randn(7, 2, 64).to(dtype)
        want = RotaryEmbedding.forward_static(pos, q, k, 64, layer.rotary_dim, layer.cos_sin_cache.to(dtype), is_neox)
        rocm_accel_ops.reset_call_counts()
        got = layer(pos, q.clone(), k.clone())
        assert rocm_accel_ops.call_counts() == {("rotary_embedding", "torch"): 1}
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
        got = layer.forward_native(pos.view(1, 7), q.clone(), k.clone())  # not servable: vLLM's own code
        assert torch.equal(got[0], want[0]) and rocm_accel_ops.call_counts() == {("rotary_embedding", "torch"): 1}
