"""The Triton attention backend's TMA forward (``"kernel": "tma"`` in a fwd config rule), run by
Triton's interpreter on the CPU.

1. With the interpreter's fwd rules switched to the TMA kernel (or the tuner's override), the
   forward's out and lse agree with the float64 reference of tests/triton_attention_ref.py
   (tolerances from the precision: :func:`rounding_atol` for out, 1e-4 for lse, as the pointer
   kernel's tests) at B = 2, H = 2, D = 64 and 128, sequences of 1..130 rows (multiples of the
   blocks and not), causal and not (and seqlen_q != seqlen_k without a mask), GQA, strided views, BLOCK_N above and below BLOCK_M, and the
   conditional rescale (``rescale_threshold``) on scores whose row max keeps growing; the TMA
   kernel is what ran, and every output element was written (outputs start as NaN).
2. Calls the TMA kernel cannot take (varlen, softcap, ALiBi, windows, causal with seqlen_q !=
   seqlen_k, other head dims, float32, misaligned pointers or strides) run the pointer kernel
   with the same params, bit for bit what the pointer kernel gives; :func:`tma_reason` says why.
3. The shipped configs never select the TMA kernel; a rule it cannot serve is a ValueError.
"""

from __future__ import annotations

import os
import random

import pytest
import torch

from helpers import assert_close_verbose, edited_config, interpreter_only, poison_torch_empty
from triton_attention_ref import ref_attention, ref_with_grads, rounding_atol
from vllm_rocm_accel.backends.triton import attention as ta
from vllm_rocm_accel.checks.attention import check_dense, check_varlen

pytestmark = interpreter_only()

LSE_ATOL = 1e-4


# --- fixtures -------------------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def poisoned_empty(monkeypatch):
    """The backend's torch.empty returns NaN-filled tensors: an unwritten out/lse element fails."""
    poison_torch_empty(monkeypatch, ta, ("empty", "empty_like"))


@pytest.fixture
def config(monkeypatch):
    """Edit the launch config for one test: ``config["interpret"]["fwd"][...]``."""
    yield from edited_config(monkeypatch, ta)


@pytest.fixture
def launches(monkeypatch):
    """(grid, constexprs) of every TMA ('tma') and pointer ('pointer') forward launch."""
    seen = {"tma": [], "pointer": []}

    def spy(launcher, name):
        real = launcher.launch

        def launch(grid, args, constexprs, *rest, **kwargs):
            seen[name].append((grid, constexprs))
            return real(grid, args, constexprs, *rest, **kwargs)

        monkeypatch.setattr(launcher, "launch", launch)

    for launcher in ta._FWD_TMA.values():
        spy(launcher, "tma")
    spy(ta._FWD, "pointer")
    return seen


def _generator():
    seed = int(os.environ.get("ATTN_TEST_SEED", random.randrange(2**31)))
    return torch.Generator().manual_seed(seed), seed


def _randn(gen, *shape, dtype):
    return torch.randn(*shape, generator=gen, dtype=torch.float32).to(dtype)


def _qkv(gen, b, s, hq, hk, d, dtype, strided=False, sk=None):
    """q (b, s, hq, d), k and v (b, sk, hk, d); ``strided``: q's heads strided by two inside
    padded rows, k and v views of one packed (b, s, 2, hk, d) tensor (all strides 16-byte multiples)."""
    sk = s if sk is None else sk
    if strided:
        q = _randn(gen, b, s, 2 * hq, d + 8, dtype=dtype)[:, :, 1::2, :d]
        kv = _randn(gen, b, sk, 2, hk, d, dtype=dtype)
        k, v = kv[:, :, 0], kv[:, :, 1]
        assert not q.is_contiguous() and not k.is_contiguous()
        return q, k, v
    return (_randn(gen, b, s, hq, d, dtype=dtype), _randn(gen, b, sk, hk, d, dtype=dtype),
            _randn(gen, b, sk, hk, d, dtype=dtype))


def _check_against_reference(q, k, v, p, out, lse, msg):
    out64, lse64 = ref_attention(q, k, v, p)
    outlo, _ = ref_attention(q, k, v, p, lowp=True)
    assert out.shape == p.out_shape() and out.dtype == q.dtype and out.is_contiguous()
    assert_close_verbose(out, out64, atol=rounding_atol(out64, outlo, q.dtype), rtol=0, msg=f"out {msg}")
    if lse is not None:
        assert lse.shape == p.lse_shape() and lse.dtype == torch.float32
        assert_close_verbose(lse, lse64, atol=LSE_ATOL, rtol=0, msg=f"lse {msg}")


def use_tma(cfg: dict, threshold: float = 0.0) -> None:
    """Every interpreter fwd rule: the TMA kernel, same tiles."""
    for rule in cfg["interpret"]["fwd"]:
        rule["kernel"] = "tma"
        if threshold:
            rule["rescale_threshold"] = threshold


# --- 1. the TMA forward against float64 -----------------------------------------------------------
# (seqlen, causal, hq, hk, head dim, dtype, strided): the interpreter's 16 x 16 tiles
RULE_CASES = [
    pytest.param(40, False, 2, 2, 64, torch.float16, False, id="s40-fp16"),
    pytest.param(40, True, 2, 2, 64, torch.bfloat16, False, id="s40-causal-bf16"),
    pytest.param(1, True, 2, 2, 64, torch.float16, False, id="s1-causal"),
    pytest.param(33, True, 4, 2, 64, torch.float16, True, id="s33-causal-gqa2-strided"),
    pytest.param(130, False, 2, 1, 64, torch.bfloat16, False, id="s130-gqa2-bf16"),
    pytest.param(23, True, 2, 2, 128, torch.float16, False, id="s23-causal-d128"),
]


@pytest.mark.parametrize("sq,sk", [(20, 37), (40, 17)])
def test_tma_noncausal_sq_ne_sk_matches_float64(config, launches, sq, sk):
    use_tma(config)
    gen, seed = _generator()
    q, k, v = _qkv(gen, 2, sq, 2, 2, 64, torch.float16, sk=sk)
    p = check_dense(q, k, v, None, False, (-1, -1), 0.0, None, 0.0)
    assert ta.tma_reason(q, k, v, p) is None
    out, lse = ta.forward(q, k, v, None, None, None, p, True)
    _check_against_reference(q, k, v, p, out, lse, f"seed={seed} p={p}")
    assert len(launches["tma"]) == 1 and not launches["pointer"]


@pytest.mark.parametrize("s,causal,hq,hk,d,dtype,strided", RULE_CASES)
def test_tma_rule_matches_float64(config, launches, s, causal, hq, hk, d, dtype, strided):
    use_tma(config)
    gen, seed = _generator()
    q, k, v = _qkv(gen, 2, s, hq, hk, d, dtype, strided)
    p = check_dense(q, k, v, None, causal, (-1, -1), 0.0, None, 0.0)
    assert ta.tma_reason(q, k, v, p) is None
    out, lse = ta.forward(q, k, v, None, None, None, p, True)
    _check_against_reference(q, k, v, p, out, lse, f"seed={seed} p={p}")
    assert len(launches["tma"]) == 1 and not launches["pointer"], launches
    grid, constexprs = launches["tma"][0]
    assert grid == (-(-s // 16), hq, 2) and constexprs[3] == causal and constexprs[4] is True


# override tiles (BLOCK_M, BLOCK_N): BLOCK_N below, equal to and above BLOCK_M
@pytest.mark.parametrize("tiles", [(32, 16), (64, 64), (16, 32), (128, 64)])
@pytest.mark.parametrize("causal", [False, True])
def test_tma_override_tiles_match_float64(launches, tiles, causal):
    gen, seed = _generator()
    s = 130 if tiles[0] >= 64 else 71
    q, k, v = _qkv(gen, 2, s, 2, 2, 64, torch.float16)
    p = check_dense(q, k, v, None, causal, (-1, -1), 0.0, None, 0.0)
    params = {"fwd": (*tiles, 4, 1), "fwd_kernel": "tma"}
    out, lse = ta.forward(q, k, v, None, None, None, p, True, params=params)
    _check_against_reference(q, k, v, p, out, lse, f"seed={seed} tiles={tiles} causal={causal}")
    assert len(launches["tma"]) == 1 and not launches["pointer"]
    assert launches["tma"][0][1][1:3] == tiles


@pytest.mark.parametrize("causal", [False, True])
def test_conditional_rescale_matches_float64(config, launches, causal):
    """Scores whose row max grows along the keys by steps below and above the threshold: the
    skipped rescales (stale max, p up to 2**8) and the taken ones both give the reference."""
    use_tma(config, threshold=8.0)
    gen, seed = _generator()
    s = 80
    q, k, v = _qkv(gen, 2, s, 2, 2, 64, torch.float16)
    growth = torch.linspace(0.2, 3.0, s).view(1, s, 1, 1)  # key j's scores scale with growth[j]
    k = (k.float() * growth).to(torch.float16)
    q = (q.float() * 2.0).to(torch.float16)
    p = check_dense(q, k, v, None, causal, (-1, -1), 0.0, None, 0.0)
    out, lse = ta.forward(q, k, v, None, None, None, p, True)
    _check_against_reference(q, k, v, p, out, lse, f"seed={seed} threshold 8 causal={causal}")
    assert len(launches["tma"]) == 1 and launches["tma"][0][1][5] == 8.0
    ref_out, ref_lse = ta.forward(q, k, v, None, None, None, p, True,
                                  params={"fwd": (16, 16, 4, 1), "fwd_kernel": "tma", "fwd_rescale_threshold": 0.0})
    assert launches["tma"][1][1][5] == 0.0
    assert_close_verbose(lse, ref_lse, atol=LSE_ATOL, rtol=0, msg=f"seed={seed} lse th=8 vs th=0")


def test_need_lse_false_gives_same_out(config):
    use_tma(config)
    gen, seed = _generator()
    q, k, v = _qkv(gen, 2, 37, 2, 2, 64, torch.bfloat16)
    p = check_dense(q, k, v, None, True, (-1, -1), 0.0, None, 0.0)
    out1, lse1 = ta.forward(q, k, v, None, None, None, p, False)
    out2, lse2 = ta.forward(q, k, v, None, None, None, p, True)
    assert lse1 is None and lse2 is not None
    assert torch.equal(out1, out2), f"seed={seed}"


def test_backward_takes_the_tma_forwards_lse(config):
    use_tma(config)
    gen, seed = _generator()
    q, k, v = _qkv(gen, 2, 24, 2, 2, 64, torch.float16)
    p = check_dense(q, k, v, None, True, (-1, -1), 0.0, None, 0.0)
    out, lse = ta.forward(q, k, v, None, None, None, p, True)
    dout = _randn(gen, *p.out_shape(), dtype=q.dtype)
    grads = ta.backward(dout, q, k, v, out, lse, None, None, None, p)
    _, _, grads64 = ref_with_grads(q, k, v, dout, p, None, None, None, lowp=False)
    _, _, gradslo = ref_with_grads(q, k, v, dout, p, None, None, None, lowp=True)
    for name, g, g64, glo in zip(("dq", "dk", "dv"), grads, grads64, gradslo):
        assert_close_verbose(g, g64, atol=rounding_atol(g64, glo, q.dtype), rtol=0, msg=f"{name} seed={seed}")


# --- 2. calls the TMA kernel cannot take: the pointer kernel, same params ------------------------
def _fallback_cases(gen):
    dt = torch.float16

    def dense(s=24, sk=None, d=64, dv=None, dtype=dt, causal=False, window=(-1, -1), softcap=0.0, alibi=None):
        q, k, v = _qkv(gen, 2, s, 2, 2, d, dtype, sk=sk)
        if dv is not None:
            v = _randn(gen, 2, s if sk is None else sk, 2, dv, dtype=dtype)
        return dict(q=q, k=k, v=v, cu=(None, None), alibi=alibi,
                    p=check_dense(q, k, v, None, causal, window, softcap, alibi, 0.0))

    cases = {
        "softcap": (dense(softcap=2.0), "softcap"),
        "alibi": (dense(alibi=torch.rand(2) * 0.5), "ALiBi"),
        "window": (dense(window=(5, 3)), "window"),
        "causal-sq<sk": (dense(s=20, sk=36, causal=True), "seqlen_q 20 != seqlen_k 36"),
        "d32": (dense(d=32), "head dims 32/32"),
        "dv-ne-d": (dense(dv=32), "head dims 64/32"),
        "fp32": (dense(dtype=torch.float32), "float32"),
    }
    q, k, v = _qkv(gen, 2, 24, 2, 2, 68, dt)  # row strides of 136 bytes
    q, k, v = q[..., :64], k[..., :64], v[..., :64]
    cases["stride-not-16B"] = (dict(q=q, k=k, v=v, cu=(None, None), alibi=None,
                                    p=check_dense(q, k, v, None, False, (-1, -1), 0.0, None, 0.0)),
                               "stride 2 (68 elements) is not a multiple of 16 bytes")
    buf = _randn(gen, 2 * 24 * 2 * 64 + 1, dtype=dt)
    qm = buf[1:].view(2, 24, 2, 64)
    k, v = _qkv(gen, 2, 24, 2, 2, 64, dt)[1:]
    cases["pointer-misaligned"] = (dict(q=qm, k=k, v=v, cu=(None, None), alibi=None,
                                        p=check_dense(qm, k, v, None, True, (-1, -1), 0.0, None, 0.0)),
                                   "q's data pointer is not 16-byte aligned")
    qv, kv, vv = (_randn(gen, 30, 2, 64, dtype=dt) for _ in range(3))
    cu = torch.tensor([0, 10, 30], dtype=torch.int32)
    cases["varlen"] = (dict(q=qv, k=kv, v=vv, cu=(cu, cu), alibi=None,
                            p=check_varlen(qv, kv, vv, cu, cu, 20, 20, None, True, (-1, -1), 0.0, None, 0.0)),
                       "varlen")
    return cases


FALLBACKS = ["softcap", "alibi", "window", "causal-sq<sk", "d32", "dv-ne-d", "fp32", "stride-not-16B",
             "pointer-misaligned", "varlen"]


@pytest.mark.parametrize("name", FALLBACKS)
def test_falls_back_to_the_pointer_kernel(config, launches, name):
    use_tma(config)
    gen, seed = _generator()
    c, reason = _fallback_cases(gen)[name]
    q, k, v, p, alibi = c["q"], c["k"], c["v"], c["p"], c["alibi"]
    got = ta.tma_reason(q, k, v, p)
    assert got is not None and reason in got, (name, got)
    out, lse = ta.forward(q, k, v, *c["cu"], alibi, p, True)
    assert not launches["tma"] and len(launches["pointer"]) == 1, launches
    params = {"fwd": ta._choice(p, "fwd", q.device.type, tma_ok=False)[0]}  # the next rule's tiles: tma rules passed over
    out2, lse2 = ta.forward(q, k, v, *c["cu"], alibi, p, True, params=params)
    assert launches["pointer"][0][1][2:4] == launches["pointer"][1][1][2:4]  # BLOCK_M, BLOCK_N
    assert torch.equal(out, out2) and torch.equal(lse, lse2), f"{name} seed={seed}"


def test_tma_reason_needs_hopper_or_the_interpreter(monkeypatch):
    gen, _ = _generator()
    q, k, v = _qkv(gen, 1, 16, 2, 2, 64, torch.float16)
    p = check_dense(q, k, v, None, False, (-1, -1), 0.0, None, 0.0)
    assert ta.tma_reason(q, k, v, p) is None
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert "cpu" in ta.tma_reason(q, k, v, p)
    from vllm_rocm_accel.backends.triton import tma

    monkeypatch.setattr(tma, "TensorDescriptor", None)
    assert "tensor descriptors" in ta.tma_reason(q, k, v, p)


# --- 3. selection ------------------------------------------------------------------------------------
def test_shipped_configs_select_the_tma_kernel_for_cuda_16_bit_d64_d128_only():
    """The H200 sweep (tune_attention.py --fwd-tma) put tma rules first on cuda for 16-bit head-dim
    buckets 64 and 128; float32, d256, rocm and the interpreter stay on the pointer kernel, and a
    call the tma forward cannot take passes over the tma rules to the pointer rule tuned for it."""
    ta.clear_caches()
    for family in ("cuda", "rocm", "interpret"):
        for bucket in (16, 32, 64, 128, 256):
            for masked in (False, True):
                for dt in ("float16", "bfloat16", "float32"):
                    # rule level: buckets 16 / 32 fall under the max_d 64 rules (tma_reason then declines
                    # their head dims at call time: the pointer rule below serves them)
                    want = "tma" if (family == "cuda" and bucket <= 128 and dt != "float32") else "pointer"
                    got = ta.fwd_kernel(family, bucket, masked, dt)
                    assert got == (want, 0.0), (family, bucket, masked, dt)
    assert ta._rule("cuda", "fwd", 128, False, "bfloat16") == ((128, 128, 8, 3), "tma", 0.0)
    assert ta._rule("cuda", "fwd", 128, False, "bfloat16", False) == ((128, 128, 8, 3), "pointer", 0.0)
    assert ta._rule("cuda", "fwd", 64, False, "bfloat16", False) == ((64, 64, 4, 3), "pointer", 0.0)
    assert ta._rule("cuda", "fwd", 64, True, "bfloat16", False) == ((128, 64, 8, 3), "pointer", 0.0)


def test_selection_key_is_honoured_per_rule(config, launches):
    """A tma rule only for causal calls: the causal call runs the TMA kernel, the other the pointer one."""
    config["interpret"]["fwd"] = [{"causal": True, "kernel": "tma", "BLOCK_M": 32, "BLOCK_N": 16, "num_warps": 4,
                                   "num_stages": 1}] + config["interpret"]["fwd"]
    assert ta.fwd_kernel("interpret", 64, True, "float16") == ("tma", 0.0)
    assert ta.fwd_kernel("interpret", 64, False, "float16") == ("pointer", 0.0)
    gen, seed = _generator()
    q, k, v = _qkv(gen, 2, 40, 2, 2, 64, torch.float16)
    for causal in (True, False):
        p = check_dense(q, k, v, None, causal, (-1, -1), 0.0, None, 0.0)
        out, lse = ta.forward(q, k, v, None, None, None, p, True)
        _check_against_reference(q, k, v, p, out, lse, f"seed={seed} causal={causal}")
    assert [c[1:3] for _, c in launches["tma"]] == [(32, 16)] and len(launches["pointer"]) == 1


@pytest.mark.parametrize("rule,match", [
    ({"kernel": "fancy"}, "kernel must be one of"),
    ({"kernel": "pointer", "rescale_threshold": 8}, "rescale_threshold"),
    ({"kernel": "tma", "rescale_threshold": -1}, "rescale_threshold"),
    ({"kernel": "tma", "BLOCK_M": 512}, "at most 256"),
])
def test_bad_rules_are_value_errors(config, rule, match):
    config["interpret"]["fwd"][0].update(rule)
    with pytest.raises(ValueError, match=match):
        ta.fwd_kernel("interpret", 64, False, "float16")


def test_a_kernel_key_on_a_backward_rule_is_a_value_error(config):
    config["interpret"]["bwd_q"][0]["kernel"] = "tma"
    with pytest.raises(ValueError, match="bwd_q rule's kernel"):
        ta.launch_config("interpret", "bwd_q", 64, False, "float16")


def test_unknown_override_kernel_is_a_value_error():
    gen, _ = _generator()
    q, k, v = _qkv(gen, 1, 16, 2, 2, 64, torch.float16)
    p = check_dense(q, k, v, None, False, (-1, -1), 0.0, None, 0.0)
    with pytest.raises(ValueError, match="kernel must be one of"):
        ta.forward(q, k, v, None, None, None, p, True, params={"fwd": (16, 16, 4, 1), "fwd_kernel": "fancy"})
