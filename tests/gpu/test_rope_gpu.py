"""The rotary-embedding family on a real GPU (skipped without one): the Triton kernel compiled for the device."""

import pytest
import torch

from helpers import assert_close_verbose
from vllm_rocm_accel import rocm_accel_ops
from vllm_rocm_accel.inputs_rope import cos_sin_cache, rope_inputs

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")]


def ref(positions, x, head_size, cache, is_neox):
    tokens = positions.shape[0]
    max_pos, rd = cache.shape
    half = rd // 2
    pos = positions.long()
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


def tol(backend, dtype, x):
    # triton: fp32 math, one rounding; torch: vLLM's flow in the dtype (see tests/ops/test_rope.py)
    eps = torch.finfo(dtype).eps
    amax = float(x.abs().max())
    return (2.0**-20 * amax if backend in ("triton", None) else 4 * eps * amax), eps


# (tokens, q heads, k heads, head_size, rotary_dim): Llama-3 8B, GQA 64/8, partial rotary, odd sizes
SHAPES = [(1, 32, 8, 128, 128), (7, 32, 8, 128, 128), (4099, 32, 8, 128, 128), (33, 64, 8, 128, 128),
          (257, 16, 16, 64, 64), (129, 12, 4, 80, 80), (77, 8, 1, 256, 256), (300, 32, 8, 128, 64),
          (5000, 6, 2, 96, 48)]


@pytest.mark.parametrize("backend", ["triton", "torch", None])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("is_neox", [True, False], ids=["neox", "gptj"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_numerics_on_gpu(seed, backend, dtype, is_neox, shape):
    tokens, hq, hk, head, rd = shape
    pos, q, k, cache = rope_inputs(tokens, hq, hk, head, dtype, "cuda", rotary_dim=rd, random_cache=True,
                                   positions_dtype=torch.int32 if tokens % 2 else torch.int64)
    q0, k0 = q.clone(), k.clone()
    qo, ko = rocm_accel_ops.rotary_embedding(pos, q, k, head, cache, is_neox, inplace=False, backend=backend)
    assert torch.equal(q, q0) and torch.equal(k, k0)
    assert_close_verbose(qo, ref(pos, q0, head, cache, is_neox), *tol(backend, dtype, q0), "query")
    assert_close_verbose(ko, ref(pos, k0, head, cache, is_neox), *tol(backend, dtype, k0), "key")
    rocm_accel_ops.rotary_embedding(pos, q, k, head, cache, is_neox, backend=backend)
    assert torch.equal(q, qo) and torch.equal(k, ko)


def test_auto_picks_triton_on_cuda(seed):
    rocm_accel_ops.reset_call_counts()
    pos, q, k, cache = rope_inputs(64, 32, 8, 128, torch.bfloat16, "cuda")
    rocm_accel_ops.rotary_embedding(pos, q, k, 128, cache, True)
    assert rocm_accel_ops.call_counts() == {("rotary_embedding", "triton"): 1}


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_qkv_split_in_place_strided_positions_and_nan_rows(seed, backend):
    tokens, hq, hk, head = 1000, 32, 8, 128
    qkv = torch.randn(tokens, (hq + 2 * hk) * head, device="cuda", dtype=torch.bfloat16)
    before = qkv.clone()
    q, k, v = qkv.split([hq * head, hk * head, hk * head], dim=-1)
    cache = cos_sin_cache(4096, head, device="cuda")
    pos = torch.randint(0, 4096, (2 * tokens,), device="cuda")[::2]
    pos[10], pos[500] = -1, 4096
    rocm_accel_ops.rotary_embedding(pos, q, k, head, cache, False, backend=backend)
    want_q = ref(pos, before[:, : hq * head], head, cache, False)
    assert_close_verbose(q, want_q, *tol(backend, torch.bfloat16, before))
    assert torch.isnan(q[[10, 500]]).all() and torch.isnan(k[[10, 500]]).all()
    assert torch.equal(v, before[:, (hq + hk) * head:])


def test_cuda_graph_capture(seed):
    pos, q, k, cache = rope_inputs(256, 32, 8, 128, torch.bfloat16, "cuda")
    want = rocm_accel_ops.rotary_embedding(pos, q, k, 128, cache, True, inplace=False, backend="triton")
    qo, ko = torch.empty_like(q), torch.empty_like(k)
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        for _ in range(2):  # warm up (JIT) outside the graph
            qo.copy_(q), ko.copy_(k)
            rocm_accel_ops.rotary_embedding(pos, qo, ko, 128, cache, True, backend="triton")
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        qo.copy_(q)
        ko.copy_(k)
        rocm_accel_ops.rotary_embedding(pos, qo, ko, 128, cache, True, backend="triton")
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(qo, want[0]) and torch.equal(ko, want[1])
