"""FastLauncher on a real GPU (skipped without one): a cached CompiledKernel serves exactly the
calls Triton would have served with it, and gives Triton's ordinary-launch results bit for bit."""

import pytest
import torch

from vllm_rocm_accel import rocm_accel_ops
from vllm_rocm_accel.backends.triton import activation as ta
from vllm_rocm_accel.backends.triton import fast_launch
from vllm_rocm_accel.backends.triton import rope as tr
from vllm_rocm_accel.inputs_rope import cos_sin_cache

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")]


def _both_ways(launcher, monkeypatch, fn):
    """fn() twice through the cache (fill, hit), then once through Triton's ordinary launch."""
    fast = [fn(), fn()]
    monkeypatch.setattr(launcher, "_on", False)
    slow = fn()
    monkeypatch.setattr(launcher, "_on", True)
    return fast, slow


@pytest.mark.skipif(not fast_launch.enabled(), reason="fast launch is off on this platform")
def test_activation_cache_tracks_alignment_and_divisibility(seed, monkeypatch):
    ta._ACT.clear()
    buf = torch.randn(7 * 4096 + 64, device="cuda", dtype=torch.bfloat16)
    seen = set()
    # (element offset, rows, row length): aligned / misaligned pointers, 1 row (specialized as
    # the constant 1), row strides divisible by 16 or not, odd widths
    for offset, rows, width in ((0, 7, 4096), (1, 7, 4096), (0, 1, 4096), (8, 7, 2000), (0, 7, 2002), (0, 7, 4096)):
        x = buf[offset:offset + rows * width].view(rows, width)
        fast, slow = _both_ways(ta._ACT, monkeypatch, lambda: rocm_accel_ops.silu_and_mul(x, backend="triton"))
        want = (torch.nn.functional.silu(x[:, :width // 2].float()).to(x.dtype).float() * x[:, width // 2:].float())
        torch.testing.assert_close(slow.float(), want, atol=1e-2, rtol=2**-7)
        assert torch.equal(fast[0], slow) and torch.equal(fast[1], slow), (offset, rows, width)
        seen.add(fast_launch.spec_key((x, width, slow, width // 2, rows, width // 2)))
    assert ta._ACT.cached() == len(seen) == 5, "one compiled kernel per distinct specialization"


@pytest.mark.skipif(not fast_launch.enabled(), reason="fast launch is off on this platform")
@pytest.mark.parametrize("inplace", [True, False])
def test_rope_cache_matches_ordinary_launch(seed, monkeypatch, inplace):
    tr._ROPE.clear()
    cache = cos_sin_cache(4096, 128, device="cuda")
    for tokens, q_off in ((37, 0), (37, 3), (1, 0), (64, 0), (37, 0)):
        qkv = torch.randn(tokens, 48 * 128 + q_off, device="cuda", dtype=torch.bfloat16)
        q, k = qkv[:, q_off:q_off + 32 * 128], qkv[:, q_off + 32 * 128:q_off + 40 * 128]
        pos = torch.randint(0, 4096, (tokens,), device="cuda")

        def call():
            qc, kc = q.clone(), k.clone()
            if inplace:
                rocm_accel_ops.rotary_embedding(pos, qc, kc, 128, cache, True, backend="triton")
                return qc, kc
            return rocm_accel_ops.rotary_embedding(pos, q, k, 128, cache, True, inplace=False, backend="triton")

        fast, slow = _both_ways(tr._ROPE, monkeypatch, call)
        want, _ = rocm_accel_ops.rotary_embedding(pos, q, k, 128, cache, True, inplace=False, backend="torch")
        torch.testing.assert_close(slow[0].float(), want.float(), atol=2e-2, rtol=2e-2)
        for f in fast:
            assert torch.equal(f[0], slow[0]) and torch.equal(f[1], slow[1]), (tokens, q_off)
    assert 1 <= tr._ROPE.cached() <= 4
