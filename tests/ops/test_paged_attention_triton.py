"""Triton paged-attention backend under the Triton interpreter (CPU tensors), against a float64 reference.

The reference (below) gathers each sequence's keys through its block table in a Python loop,
dequantizes FP8 caches (``fp8 * scale`` in float64), and runs the contract's math in float64:
scores = scale * q @ k^T, softcap, ALiBi, bottom-right causal/window mask, softmax, lse; a row
that sees no key (and a row of q past cu_seqlens_q[-1]) gives out 0 and lse +inf.

Tolerances come from the precision: ``atol = max(2 * max|ref64 - ref_lowp|, FLOOR[dtype] *
max|ref64|)`` (``rounding_atol`` of tests/triton_attention_ref.py), ``ref_lowp`` running the
kernel's roundings (fp32 scores and softmax, P rounded to q's dtype before P @ V, out rounded to
the dtype); lse 1e-4 absolute. Forced splits G = 2 and 16 are compared with G = 1 in float32 at
1e-5 (fp32 rounding of a different summation order) as well as with the reference.

``out`` and ``lse`` are NaN before every call, and the backend's ``torch.empty`` (its split
workspace) returns NaN, so an element left unwritten or a workspace element read unwritten
fails. Every test draws fresh inputs from a new seed, named in failure messages
(``PAGED_TEST_SEED`` replays one). Shapes are tiny: the interpreter costs ~30 ms a program.
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton (or the backend) is imported

import math
import random

import pytest
import torch
import triton
import triton.language as tl

from helpers import assert_close_verbose, interpreter_only, poison_torch_empty
from triton_attention_ref import rounding_atol
from vllm_rocm_accel.backends.triton import paged_attention as tpa
from vllm_rocm_accel.checks.paged_attention import check_paged_args
from vllm_rocm_accel.kernels.triton.paged_attention import _fp8_to_f32

pytestmark = interpreter_only()

LSE_ATOL = 1e-4
SPLIT_TOL = 1e-5  # G > 1 vs G == 1, float32
INF = float("inf")


@pytest.fixture(autouse=True)
def poisoned_empty(monkeypatch):
    """The backend's torch.empty returns NaN-filled tensors (its split workspace)."""
    poison_torch_empty(monkeypatch, tpa)


@pytest.fixture
def gen():
    seed = int(os.environ.get("PAGED_TEST_SEED", random.randrange(2**31)))
    return torch.Generator().manual_seed(seed), seed


# --- inputs -----------------------------------------------------------------------------
class Case:
    """A paged batch: sequences of (sq queries, sk keys) in a shuffled block table."""

    def __init__(self, g, seqs, *, hq, hk, d, dv=None, block_size, dtype, fp8=False, tail=2, extra_blocks=3,
                 strided_cache=False):
        dv = d if dv is None else dv
        self.seqs, self.hq, self.hk, self.d, self.dv, self.bs, self.dtype = seqs, hq, hk, d, dv, block_size, dtype
        sqs = [s for s, _ in seqs]
        sks = [k for _, k in seqs]
        self.cu_q = torch.tensor([0] + torch.tensor(sqs).cumsum(0).tolist(), dtype=torch.int32)
        self.seqused_k = torch.tensor(sks, dtype=torch.int32)
        need = [math.ceil(k / block_size) for k in sks]
        max_blocks = max(need + [1]) + 1  # one spare column: entries past a sequence's keys are garbage
        num_blocks = sum(need) + extra_blocks
        perm = torch.randperm(num_blocks, generator=g).to(torch.int32)  # non-contiguous, random order
        table = torch.full((len(seqs), max_blocks), 10**6, dtype=torch.int32)  # unused entries: far off
        pos = 0
        for b, n in enumerate(need):
            table[b, :n] = perm[pos:pos + n]
            pos += n
        self.block_table = table
        self.q = torch.randn(int(self.cu_q[-1]) + tail, hq, d, generator=g).to(dtype)
        shape_k, shape_v = (num_blocks, block_size, hk, d), (num_blocks, block_size, hk, dv)
        if fp8:
            self.k_scale = torch.tensor([0.02], dtype=torch.float32)
            self.v_scale = torch.tensor([0.03], dtype=torch.float32)
            self.key_cache = (torch.randn(shape_k, generator=g) / 0.02).clamp(-448, 448).to(torch.float8_e4m3fn)
            self.value_cache = (torch.randn(shape_v, generator=g) / 0.03).clamp(-448, 448).to(torch.float8_e4m3fn)
        else:
            self.k_scale = self.v_scale = None
            if strided_cache:  # vLLM's (num_blocks, 2, block_size, Hk, D) cache unbound along dim 1
                both = torch.randn(num_blocks, 2, block_size, hk, d, generator=g).to(dtype)
                self.key_cache, self.value_cache = both.unbind(1)
            else:
                self.key_cache = torch.randn(shape_k, generator=g).to(dtype)
                self.value_cache = torch.randn(shape_v, generator=g).to(dtype)

    def problem(self, *, causal=True, window=(-1, -1), softcap=0.0, alibi=None, scale=None):
        scale = self.d ** -0.5 if scale is None else scale
        return check_paged_args(
            self.q, self.key_cache, self.value_cache, self.cu_q, self.seqused_k, self.block_table,
            max(s for s, _ in self.seqs), max(k for _, k in self.seqs), scale, causal, window[0], window[1],
            softcap, alibi, self.k_scale, self.v_scale, 1,
        )

    def run(self, p, splits, alibi=None, want_lse=True):
        out = torch.full((self.q.shape[0], self.hq, self.dv), float("nan"), dtype=self.dtype)
        lse = torch.full((self.hq, self.q.shape[0]), float("nan"), dtype=torch.float32) if want_lse else None
        assert tpa.supports_args(self.q, self.key_cache, self.value_cache, self.cu_q, self.seqused_k, self.block_table,
                                 alibi, self.k_scale, self.v_scale, p) is None
        tpa.forward(out, self.q, self.key_cache, self.value_cache, self.cu_q, self.seqused_k, self.block_table, alibi,
                    self.k_scale, self.v_scale, p, lse, splits)
        return out, lse


# --- reference --------------------------------------------------------------------------
def _gather(cache, table_row, n, bs, scale):
    rows = [cache[int(table_row[j // bs]), j % bs] for j in range(n)]  # slot j of the sequence
    x = torch.stack(rows) if rows else cache.new_zeros((0,) + tuple(cache.shape[2:]))
    x = x.to(torch.float64)
    return x * float(scale) if scale is not None else x


def reference(c: Case, p, alibi=None, lowp=False):
    """(out, lse): float64, or with the kernel's roundings (lowp: out in q's dtype)."""
    tq = c.q.shape[0]
    out = torch.zeros(tq, c.hq, c.dv, dtype=torch.float64)
    lse = torch.full((c.hq, tq), INF, dtype=torch.float64)
    work = torch.float32 if lowp else torch.float64
    group = c.hq // c.hk
    for b, (sq, sk) in enumerate(c.seqs):
        q0 = int(c.cu_q[b])
        k = _gather(c.key_cache, c.block_table[b], sk, c.bs, c.k_scale).repeat_interleave(group, 1).to(work)
        v = _gather(c.value_cache, c.block_table[b], sk, c.bs, c.v_scale).repeat_interleave(group, 1).to(work)
        q = c.q[q0:q0 + sq].to(work)
        s = torch.einsum("ihd,jhd->hij", q, k) * p.softmax_scale
        if p.softcap > 0:
            s = p.softcap * torch.tanh(s / p.softcap)
        rel = torch.arange(sq)[:, None] + sk - sq - torch.arange(sk)[None, :]
        if alibi is not None:
            slopes = alibi[b] if alibi.dim() == 2 else alibi
            s = s - slopes.to(work)[:, None, None] * rel.abs().to(work)
        vis = torch.ones(sq, sk, dtype=torch.bool)
        if p.window_left >= 0:
            vis &= rel <= p.window_left
        if p.window_right >= 0:
            vis &= -rel <= p.window_right
        seen = vis.any(-1)
        s = torch.where(seen[:, None], s.masked_fill(~vis, -INF), torch.zeros_like(s))
        prob = torch.softmax(s, -1) * seen[None, :, None]
        if lowp:
            prob = prob.to(c.dtype).to(work)
        o = torch.einsum("hij,jhd->ihd", prob, v)
        out[q0:q0 + sq] = o.to(c.dtype).to(torch.float64) if lowp else o
        lse[:, q0:q0 + sq] = torch.where(seen[None, :], torch.logsumexp(s, -1), INF)
    return out, lse


def check(c: Case, p, out, lse, seed, alibi=None, msg=""):
    ref, ref_lse = reference(c, p, alibi)
    low, _ = reference(c, p, alibi, lowp=True)
    atol = rounding_atol(ref, low, c.dtype)
    assert_close_verbose(out, ref, atol=atol, rtol=0, msg=f"out {msg} seed={seed}")
    if lse is not None:
        assert_close_verbose(lse, ref_lse, atol=LSE_ATOL, rtol=0, msg=f"lse {msg} seed={seed}")


# --- tests --------------------------------------------------------------------------------
MIXED = [(1, 1), (1, 17), (1, 100), (5, 40), (17, 17)]  # decodes of 1/17/100 keys; prefill chunks


@pytest.mark.parametrize("block_size", [16, 64])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_mixed_batch_gqa(gen, block_size, dtype):
    """Decodes and prefill chunks in one batch, GQA 4:1, causal, lse; block 16 (tiles span blocks:
    per-key lookup) and 64 (one block per tile); rows of q past the batch."""
    g, seed = gen
    c = Case(g, MIXED, hq=8, hk=2, d=32, block_size=block_size, dtype=dtype)
    p = c.problem()
    out, lse = c.run(p, 1)
    check(c, p, out, lse, seed, msg=f"bs={block_size} {dtype}")


def test_splits_agree(gen):
    """Forced G = 1, 2, 16 agree to fp32 rounding and with the reference; G = 16 leaves most splits
    of short sequences empty (lse_s = -inf, weight 0)."""
    g, seed = gen
    c = Case(g, [(1, 1), (1, 17), (1, 100), (3, 30)], hq=4, hk=1, d=16, block_size=16, dtype=torch.float32)
    p = c.problem()
    base, base_lse = c.run(p, 1)
    check(c, p, base, base_lse, seed, msg="G=1")
    for splits in (2, 16):
        out, lse = c.run(p, splits)
        check(c, p, out, lse, seed, msg=f"G={splits}")
        assert_close_verbose(out, base, atol=SPLIT_TOL, rtol=SPLIT_TOL, msg=f"G={splits} vs G=1 seed={seed}")
        assert_close_verbose(lse, base_lse, atol=SPLIT_TOL, rtol=SPLIT_TOL, msg=f"lse G={splits} vs G=1 seed={seed}")


@pytest.mark.parametrize("block_size", [16, 64])
def test_fp8_cache(gen, block_size):
    """e4m3fn caches with per-tensor scales (decoded from their bits in the interpreter), G = 1 and 3."""
    g, seed = gen
    c = Case(g, [(1, 17), (1, 100), (4, 20)], hq=8, hk=2, d=16, block_size=block_size, dtype=torch.bfloat16,
             fp8=True)
    p = c.problem()
    assert p.fp8
    for splits in (1, 3):
        out, lse = c.run(p, splits)
        check(c, p, out, lse, seed, msg=f"fp8 bs={block_size} G={splits}")


def test_fp8_uint8_view(gen):
    """A uint8 cache holding the device's format (e4m3fn on the CPU) reads like the float8 one."""
    g, seed = gen
    c = Case(g, [(1, 33), (2, 9)], hq=4, hk=2, d=16, block_size=16, dtype=torch.float32, fp8=True)
    p8 = c.problem()
    ref_out, ref_lse = c.run(p8, 2)
    c.key_cache, c.value_cache = c.key_cache.view(torch.uint8), c.value_cache.view(torch.uint8)
    p = c.problem()
    assert p.cache_dtype == torch.float8_e4m3fn
    out, lse = c.run(p, 2)
    assert torch.equal(out, ref_out) and torch.equal(lse, ref_lse), f"seed={seed}"


@pytest.mark.parametrize("splits", [1, 2])
def test_window_softcap_alibi(gen, splits):
    """Sliding window (left 7, causal), softcap and per-sequence ALiBi; strided cache views."""
    g, seed = gen
    c = Case(g, [(1, 100), (6, 50), (1, 5)], hq=4, hk=2, d=16, block_size=16, dtype=torch.float32,
             strided_cache=True)
    alibi = torch.rand(3, 4, generator=g) * 0.3
    p = c.problem(window=(7, -1), softcap=5.0, alibi=alibi)
    out, lse = c.run(p, splits, alibi=alibi)
    check(c, p, out, lse, seed, alibi=alibi, msg=f"window/softcap/alibi G={splits}")


def test_noncausal_window_both_sides(gen):
    """Non-causal with a two-sided window, Dv != D, no lse requested."""
    g, seed = gen
    c = Case(g, [(4, 40), (1, 23)], hq=2, hk=2, d=16, dv=32, block_size=16, dtype=torch.float32)
    p = c.problem(causal=False, window=(5, 3))
    out, _ = c.run(p, 2, want_lse=False)
    check(c, p, out, None, seed, msg="two-sided window")


@pytest.mark.parametrize("splits", [1, 4])
def test_empty_rows(gen, splits):
    """A sequence with no keys, and window rows that see none (sq > sk): out 0, lse +inf."""
    g, seed = gen
    c = Case(g, [(1, 0), (3, 1), (1, 20)], hq=2, hk=1, d=16, block_size=16, dtype=torch.float32)
    p = c.problem()
    out, lse = c.run(p, splits)
    check(c, p, out, lse, seed, msg=f"empty G={splits}")
    assert torch.isinf(lse[:, 0]).all() and (out[0] == 0).all()
    assert torch.isinf(lse[:, 1:3]).all()  # rows 0 and 1 of the 3-query chunk over 1 key see nothing


@triton.jit
def _decode_all(X, Y, FNUZ: tl.constexpr):
    i = tl.arange(0, 256)
    tl.store(Y + i, _fp8_to_f32(tl.load(X + i), FNUZ))


def test_fp8_decoder_all_codes():
    """The bit decoder is exact on every e4m3fn and e4m3fnuz code (NaN codes excluded)."""
    codes = torch.arange(256, dtype=torch.int32).to(torch.uint8)
    for fmt, fnuz, nan in ((torch.float8_e4m3fn, False, (0x7F, 0xFF)), (torch.float8_e4m3fnuz, True, (0x80,))):
        y = torch.empty(256, dtype=torch.float32)
        _decode_all[(1,)](codes, y, fnuz)
        want = codes.view(fmt).to(torch.float32)
        keep = torch.ones(256, dtype=torch.bool)
        keep[list(nan)] = False
        assert torch.equal(y[keep], want[keep]), fmt


@pytest.mark.parametrize("hq,hk", [(8, 2), (6, 2)])
def test_decode_only_gqa(gen, hq, hk):
    """A decode-only batch (one program per kv head group: BLOCK_M packs the group's heads), GQA 4:1
    and 3:1 (a group not dividing BLOCK_M leaves padding rows), G = 1 and 16 in float32."""
    g, seed = gen
    c = Case(g, [(1, 1), (1, 17), (1, 100), (1, 64)], hq=hq, hk=hk, d=16, block_size=16, dtype=torch.float32)
    p = c.problem()
    base, base_lse = c.run(p, 1)
    check(c, p, base, base_lse, seed, msg=f"decode {hq}:{hk}")
    out, lse = c.run(p, 16)
    assert_close_verbose(out, base, atol=SPLIT_TOL, rtol=SPLIT_TOL, msg=f"decode G=16 vs G=1 seed={seed}")
    assert_close_verbose(lse, base_lse, atol=SPLIT_TOL, rtol=SPLIT_TOL, msg=f"decode lse G=16 vs G=1 seed={seed}")


def test_odd_block_size(gen):
    """A block size that is not a power of two (24: every tile looks its keys' blocks up)."""
    g, seed = gen
    c = Case(g, [(1, 50), (7, 30)], hq=4, hk=2, d=16, block_size=24, dtype=torch.bfloat16)
    p = c.problem()
    out, lse = c.run(p, 2)
    check(c, p, out, lse, seed, msg="block_size=24")


# --- launch config (no kernel runs) -----------------------------------------------------
@pytest.fixture
def cuda_family(monkeypatch):
    """configs/paged_attention.json read as on an NVIDIA GPU (the ``cuda`` family)."""
    monkeypatch.setattr(tpa, "_family", lambda device_type: "cuda")
    tpa.clear_caches()
    yield
    monkeypatch.undo()
    tpa.clear_caches()


def test_cuda_decode_rule_is_the_h200_tuned_one(cuda_family):
    """The cuda decode rule for head dims <= 128: BLOCK_N 128, 4 warps, 2 stages (measured on an
    H200 with benchmarks/tune_decode.py, 2026-12-01); BLOCK_N still shrinks to short contexts."""
    assert tpa.launch_config("cuda", 128, True, False, "bfloat16") == (16, 128, 4, 2)
    assert tpa.launch_config("cuda", 128, True, True, "bfloat16") == (16, 128, 4, 2)  # FP8 cache: same row
    assert tpa.launch_config("cuda", 256, True, False, "bfloat16") == (16, 32, 4, 2)  # untuned row
    assert tpa.launch_config("cuda", 128, False, False, "bfloat16") == (64, 64, 4, 2)  # prefill: untuned row
    g = torch.Generator().manual_seed(0)
    c = Case(g, [(1, 4096), (1, 100)], hq=32, hk=8, d=128, block_size=16, dtype=torch.bfloat16)
    assert tpa.block_params(c.problem(), "cuda") == (16, 128, 4, 2)
    c = Case(g, [(1, 50), (1, 3)], hq=32, hk=8, d=128, block_size=16, dtype=torch.bfloat16)
    assert tpa.block_params(c.problem(), "cuda") == (16, 64, 4, 2)  # next_pow2(50 keys)
