"""Triton attention launchers under the Triton interpreter (CPU tensors), against a float64 reference.

The reference (tests/triton_attention_ref.py, shared with the GPU test) is a plain per-sequence
loop: scores = scale * q @ k^T, softcap, ALiBi, bottom-right causal/window mask, softmax, lse; a row
that sees no key gives out 0 and lse +inf; gradients by torch.autograd through the float64
computation.

Tolerances come from the precision: ``atol = max(2 * max|ref64 - ref_lowp|, FLOOR[dtype] * max|ref64|)``
where ``ref_lowp`` runs the same math as the kernel's roundings (fp32 scores and softmax, P rounded
to the input dtype before P @ V, outputs rounded to the dtype). FLOOR covers roundings the lowp
reference does not repeat (the kernel also rounds dS to the dtype before dS @ K / dS^T @ Q): two
units of the dtype's epsilon relative to the largest value (fp32: 2e-5). lse is float32 from
exact products of the inputs: 1e-4 absolute for every dtype.

Every test draws fresh ``torch.randn`` inputs from a new seed, named in any failure message
(``ATTN_TEST_SEED`` replays one). Outputs are allocated by the backend with ``torch.empty``; the
``poisoned_empty`` fixture makes those NaN so that an unwritten element fails.
Shapes are tiny (the interpreter runs on 2 CPU cores); blocks are 16 under the interpreter
(configs/attention.json), so 40-long sequences exercise all three loop phases.
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton (or the backend) is imported

import random

import pytest
import torch

from helpers import assert_close_verbose, interpreter_only, poison_torch_empty
from triton_attention_ref import ref_with_grads, rounding_atol
from vllm_rocm_accel.backends.triton import attention as ta
from vllm_rocm_accel.checks.attention import check_dense, check_varlen

pytestmark = interpreter_only()

LSE_ATOL = 1e-4


@pytest.fixture(autouse=True)
def poisoned_empty(monkeypatch):
    """The backend's torch.empty / empty_like return NaN-filled (float) or -7-filled (int) tensors."""
    poison_torch_empty(monkeypatch, ta, ("empty", "empty_like"))


def _generator():
    seed = int(os.environ.get("ATTN_TEST_SEED", random.randrange(2**31)))
    return torch.Generator().manual_seed(seed), seed


def _randn(gen, *shape, dtype):
    return torch.randn(*shape, generator=gen, dtype=torch.float32).to(dtype)


def _dense_case(gen, b, sq, sk, hq, hk, d, dtype, causal):
    """Fresh q (b, sq, hq, d), k and v (b, sk, hk, d), drawn in that order, and their checked problem."""
    q = _randn(gen, b, sq, hq, d, dtype=dtype)
    k = _randn(gen, b, sk, hk, d, dtype=dtype)
    v = _randn(gen, b, sk, hk, d, dtype=dtype)
    return q, k, v, check_dense(q, k, v, None, causal, (-1, -1), 0.0, None, 0.0)


# --- cases --------------------------------------------------------------------------------
def _case(name, *, b=1, sq=33, sk=33, hq=2, hk=1, d=16, dv=None, causal=False, window=(-1, -1), softcap=0.0,
          scale=None, alibi=None, dtype=torch.float16, lens=None, noncontig=False, extra_max_k=0, tail_q=0, tail_k=0):
    return pytest.param(dict(b=b, sq=sq, sk=sk, hq=hq, hk=hk, d=d, dv=dv or d, causal=causal, window=window,
                             softcap=softcap, scale=scale, alibi=alibi, dtype=dtype, lens=lens, noncontig=noncontig,
                             extra_max_k=extra_max_k, tail_q=tail_q, tail_k=tail_k), id=name)


CASES = [
    _case("dense-d64-gqa2-fp16", d=64, sq=33, sk=40, b=2, hq=4, hk=2),
    _case("causal-sq<sk-gqa4-bf16", hq=4, hk=1, sq=20, sk=37, causal=True, dtype=torch.bfloat16),
    _case("causal-sq>sk-d24-fp16", hq=2, hk=2, sq=40, sk=17, d=24, causal=True),
    _case("window-5-3-bf16", sq=40, sk=40, window=(5, 3), dtype=torch.bfloat16),
    _case("window-left7-sq<sk", sq=23, sk=40, window=(7, -1)),
    _case("window-right2-causal-left9", sq=40, sk=29, window=(9, 2), causal=True),  # causal forces right = 0
    _case("window-right2-only", sq=35, sk=35, window=(-1, 2), d=24),
    _case("softcap", sq=30, sk=38, softcap=2.0, scale=1.0, dtype=torch.bfloat16),
    _case("softcap-causal-alibi-h", sq=33, sk=33, softcap=3.0, scale=0.8, causal=True, alibi="h"),
    _case("alibi-bh-window", b=2, sq=36, sk=31, alibi="bh", window=(10, 4), dtype=torch.bfloat16),
    _case("dv-ne-d", d=24, dv=40, sq=34, sk=21),
    _case("dv-lt-d-causal", d=64, dv=16, sq=18, sk=40, causal=True, hq=2, hk=1),
    _case("decode-sq1", sq=1, sk=37, causal=True, b=3, hq=4, hk=1),
    _case("fp32-causal", sq=33, sk=40, causal=True, dtype=torch.float32, d=24),
    _case("noncontig", sq=33, sk=35, noncontig=True, causal=True, dtype=torch.bfloat16),
    _case("varlen-fixed", lens=([1, 7, 20, 0], [5, 7, 20, 3]), tail_q=3, tail_k=2),
    _case("varlen-fixed-causal-bh", lens=([1, 7, 20, 0], [1, 0, 33, 9]), causal=True, alibi="bh",
          dtype=torch.bfloat16, extra_max_k=3),
    _case("varlen-random-window", lens="random", window=(6, 6), d=24, tail_q=5),
    _case("varlen-random-causal-softcap-fp32", lens="random", causal=True, softcap=2.5, dtype=torch.float32, hq=4,
          hk=1, noncontig=True),
]


def _inputs(c, gen):
    dtype, hq, hk, d, dv = c["dtype"], c["hq"], c["hk"], c["d"], c["dv"]
    cu_q = cu_k = None
    if c["lens"] is None:
        lead_q, lead_k = (c["b"], c["sq"]), (c["b"], c["sk"])
    else:
        if c["lens"] == "random":
            n = 3
            lq = torch.randint(0, 41, (n,), generator=gen).tolist()
            lk = torch.randint(0, 41, (n,), generator=gen).tolist()
            lq[0] = max(lq[0], 1)
        else:
            lq, lk = c["lens"]
        cu_q = torch.tensor([0] + lq, dtype=torch.int32).cumsum(0).to(torch.int32)
        cu_k = torch.tensor([0] + lk, dtype=torch.int32).cumsum(0).to(torch.int32)
        lead_q, lead_k = (int(cu_q[-1]) + c["tail_q"],), (int(cu_k[-1]) + c["tail_k"],)
    if c["noncontig"]:  # heads strided by two, rows padded; k and v are views of one packed kv tensor
        q = _randn(gen, *lead_q, 2 * hq, d + 8, dtype=dtype)[..., 1::2, 3:3 + d]
        kv = _randn(gen, *lead_k, 2, hk, max(d, dv), dtype=dtype)
        k, v = kv[..., 0, :, :d], kv[..., 1, :, :dv]
        assert not q.is_contiguous() and not k.is_contiguous()
    else:
        q = _randn(gen, *lead_q, hq, d, dtype=dtype)
        k = _randn(gen, *lead_k, hk, d, dtype=dtype)
        v = _randn(gen, *lead_k, hk, dv, dtype=dtype)
    batch = c["b"] if cu_q is None else cu_q.shape[0] - 1
    alibi = None
    if c["alibi"] == "h":
        alibi = torch.rand(hq, generator=gen) * 0.5 + 0.05
    elif c["alibi"] == "bh":
        alibi = torch.rand(batch, hq, generator=gen) * 0.5 + 0.05
    if cu_q is None:
        p = check_dense(q, k, v, c["scale"], c["causal"], c["window"], c["softcap"], alibi, 0.0)
    else:
        lq = (cu_q[1:] - cu_q[:-1]).tolist()
        lk = (cu_k[1:] - cu_k[:-1]).tolist()
        p = check_varlen(q, k, v, cu_q, cu_k, max(lq), max(lk) + c["extra_max_k"], c["scale"], c["causal"],
                         c["window"], c["softcap"], alibi, 0.0)
    return q, k, v, cu_q, cu_k, alibi, p


@pytest.mark.parametrize("c", CASES)
def test_forward_backward_match_reference(c):
    gen, seed = _generator()
    q, k, v, cu_q, cu_k, alibi, p = _inputs(c, gen)
    msg = f"seed={seed} p={p}"
    assert ta.supports_args(q, k, v, cu_q, cu_k, alibi, p) is None
    dout = _randn(gen, *p.out_shape(), dtype=q.dtype)

    out, lse = ta.forward(q, k, v, cu_q, cu_k, alibi, p, True)
    assert out.shape == p.out_shape() and out.dtype == q.dtype and out.is_contiguous()
    assert lse.shape == p.lse_shape() and lse.dtype == torch.float32 and lse.is_contiguous()

    out64, lse64, grads64 = ref_with_grads(q, k, v, dout, p, cu_q, cu_k, alibi, lowp=False)
    outlo, _, gradslo = ref_with_grads(q, k, v, dout, p, cu_q, cu_k, alibi, lowp=True)
    assert_close_verbose(out, out64, atol=rounding_atol(out64, outlo, q.dtype), rtol=0, msg=f"out {msg}")
    assert_close_verbose(lse, lse64, atol=LSE_ATOL, rtol=0, msg=f"lse {msg}")

    dq, dk, dv = ta.backward(dout, q, k, v, out, lse, cu_q, cu_k, alibi, p)
    for name, g, g64, glo, x in zip(("dq", "dk", "dv"), (dq, dk, dv), grads64, gradslo, (q, k, v)):
        assert g.shape == x.shape and g.dtype == x.dtype and g.is_contiguous(), name
        assert_close_verbose(g, g64, atol=rounding_atol(g64, glo, q.dtype), rtol=0, msg=f"{name} {msg}")


def test_empty_rows_are_zero_and_inf():
    """Causal with Sq > Sk: the first Sq - Sk rows see no key (exactly 0 and +inf, zero gradients)."""
    gen, seed = _generator()
    q, k, v, p = _dense_case(gen, 1, 24, 8, 2, 2, 16, torch.float16, causal=True)
    out, lse = ta.forward(q, k, v, None, None, None, p, True)
    assert torch.equal(out[:, :16], torch.zeros_like(out[:, :16])), f"seed={seed}"
    assert bool(torch.isinf(lse[:, :, :16]).all()) and bool((lse[:, :, :16] > 0).all())
    assert bool(torch.isfinite(lse[:, :, 16:]).all())
    dq, dk, dv = ta.backward(_randn(gen, *out.shape, dtype=out.dtype), q, k, v, out, lse, None, None, None, p)
    assert torch.equal(dq[:, :16], torch.zeros_like(dq[:, :16]))
    assert bool(torch.isfinite(dq).all() and torch.isfinite(dk).all() and torch.isfinite(dv).all())


def test_need_lse_false_gives_same_out():
    gen, seed = _generator()
    q, k, v, p = _dense_case(gen, 2, 20, 20, 2, 1, 16, torch.bfloat16, causal=True)
    out1, lse = ta.forward(q, k, v, None, None, None, p, False)
    out2, lse2 = ta.forward(q, k, v, None, None, None, p, True)
    assert lse is None and lse2 is not None
    assert torch.equal(out1, out2), f"seed={seed}"


def test_backward_is_deterministic():
    gen, seed = _generator()
    q, k, v, p = _dense_case(gen, 1, 33, 33, 4, 1, 16, torch.float16, causal=False)
    out, lse = ta.forward(q, k, v, None, None, None, p, True)
    dout = _randn(gen, *out.shape, dtype=out.dtype)
    first = ta.backward(dout, q, k, v, out, lse, None, None, None, p)
    second = ta.backward(dout, q, k, v, out, lse, None, None, None, p)
    for a, b in zip(first, second):
        assert torch.equal(a, b), f"seed={seed}"


def test_supports_args_declines_dropout_and_cpu_without_interpreter(monkeypatch):
    gen, _ = _generator()
    q = _randn(gen, 1, 4, 2, 16, dtype=torch.float16)
    k = _randn(gen, 1, 4, 2, 16, dtype=torch.float16)
    p = check_dense(q, k, k, None, False, (-1, -1), 0.0, None, 0.1)
    assert "dropout" in ta.supports_args(q, k, k, None, None, None, p)
    p = check_dense(q, k, k, None, False, (-1, -1), 0.0, None, 0.0)
    assert ta.supports_args(q, k, k, None, None, None, p) is None
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert "GPU" in ta.supports_args(q, k, k, None, None, None, p)


def test_config_rules_resolve_for_every_bucket():
    ta.clear_caches()
    for dev in ("cuda", "rocm", "interpret"):
        for pass_ in ("fwd", "bwd_kv", "bwd_q"):
            for bucket in (16, 32, 64, 128, 256):
                for masked in (False, True):
                    for dt in ("float16", "bfloat16", "float32"):
                        bm, bn, warps, stages = ta.launch_config(dev, pass_, bucket, masked, dt)
                        assert bm >= 16 and bn >= 16 and warps >= 1 and stages >= 1
