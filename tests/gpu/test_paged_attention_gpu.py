"""The Triton paged-attention backend on a real GPU (skipped without one): realistic shapes against float64.

One batch mixes decodes of 1, 17, 1000 and 20000 keys with prefill chunks (128 queries over
1000 keys; 64 queries over 300), Hq 32 / Hk 8 (GQA 4:1), D 128, bf16, in a shuffled
(non-contiguous) block table, block sizes 16 and 64, bf16 and FP8 caches; forced splits G = 1,
2, 16 must agree with each other (float32 rounding: a different summation order and the bf16
rounding of P against a different running max, hence the bf16 floor) and with the reference.

The reference gathers each sequence's keys through its table on the GPU and computes in float64
(as tests/ops/test_paged_attention_triton.py does on the CPU); tolerance ``atol = max(2 *
max|ref64 - ref_lowp|, FLOOR * max|ref64|)`` with ``ref_lowp`` the kernel's roundings (fp32
scores/softmax, P rounded to bf16, out rounded to bf16). ``out``/``lse`` and the backend's split
workspace are NaN-poisoned before every call.
"""

import math

import pytest
import torch

from helpers import assert_close_verbose, poison_torch_empty
from triton_attention_ref import FLOOR
from vllm_rocm_accel import fp8 as fp8_formats
from vllm_rocm_accel.backends.triton import paged_attention as tpa
from vllm_rocm_accel.checks.paged_attention import check_paged_args

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")]

LSE_ATOL = 1e-3  # fp32 lse over 20000 keys (summation order differs from float64)
SEQS = [(1, 1), (1, 17), (1, 1000), (1, 20000), (128, 1000), (64, 300), (1, 5)]
HQ, HK, D = 32, 8, 128
DEV = "cuda"


@pytest.fixture(autouse=True)
def poisoned_empty(monkeypatch):
    """The backend's torch.empty (its split workspace) returns NaN-filled tensors."""
    poison_torch_empty(monkeypatch, tpa)


def _batch(seed, block_size, dtype, fp8, seqs=SEQS):
    g = torch.Generator(device=DEV).manual_seed(seed)
    sqs = [s for s, _ in seqs]
    sks = [k for _, k in seqs]
    cu_q = torch.tensor([0] + torch.tensor(sqs).cumsum(0).tolist(), dtype=torch.int32, device=DEV)
    seqused = torch.tensor(sks, dtype=torch.int32, device=DEV)
    need = [math.ceil(k / block_size) for k in sks]
    num_blocks = sum(need) + 7
    perm = torch.randperm(num_blocks, generator=g, device=DEV).to(torch.int32)
    table = torch.full((len(seqs), max(need) + 2), 10**7, dtype=torch.int32, device=DEV)
    pos = 0
    for b, n in enumerate(need):
        table[b, :n] = perm[pos:pos + n]
        pos += n
    q = torch.randn(int(cu_q[-1]) + 3, HQ, D, generator=g, device=DEV).to(dtype)  # 3 tail rows
    shape = (num_blocks, block_size, HK, D)
    if fp8:
        fmt = fp8_formats.fp8_dtype(torch.device(DEV))
        fmax = fp8_formats.fp8_max(fmt)
        k_scale = torch.tensor([0.02], device=DEV)
        v_scale = torch.tensor([0.05], device=DEV)
        kc = (torch.randn(shape, generator=g, device=DEV) / k_scale).clamp(-fmax, fmax).to(fmt)
        vc = (torch.randn(shape, generator=g, device=DEV) / v_scale).clamp(-fmax, fmax).to(fmt)
    else:
        k_scale = v_scale = None
        kc = torch.randn(shape, generator=g, device=DEV).to(dtype)
        vc = torch.randn(shape, generator=g, device=DEV).to(dtype)
    return q, kc, vc, cu_q, seqused, table, k_scale, v_scale


def _problem(args, seqs=SEQS):
    """check_paged_args for a :func:`_batch` of ``seqs``: causal, scale D ** -0.5, no softcap/ALiBi."""
    q, kc, vc, cu_q, seqused, table, k_scale, v_scale = args
    return check_paged_args(q, kc, vc, cu_q, seqused, table, max(s for s, _ in seqs), max(k for _, k in seqs),
                            D ** -0.5, True, -1, -1, 0.0, None, k_scale, v_scale, 1)


def _reference(q, kc, vc, cu_q, table, k_scale, v_scale, p, lowp, seqs=SEQS):
    tq = q.shape[0]
    work = torch.float32 if lowp else torch.float64
    out = torch.zeros(tq, HQ, D, dtype=torch.float64, device=DEV)
    lse = torch.full((HQ, tq), math.inf, dtype=torch.float64, device=DEV)
    bs = kc.shape[1]
    flat_k, flat_v = kc.reshape(-1, HK, D), vc.reshape(-1, HK, D)
    for b, (sq, sk) in enumerate(seqs):
        q0 = int(cu_q[b])
        j = torch.arange(sk, device=DEV)
        slots = table[b, j // bs].long() * bs + j % bs  # through the block table
        k = flat_k[slots].to(torch.float64)
        v = flat_v[slots].to(torch.float64)
        if k_scale is not None:
            k, v = k * float(k_scale), v * float(v_scale)
        k = k.repeat_interleave(HQ // HK, 1).to(work)
        v = v.repeat_interleave(HQ // HK, 1).to(work)
        s = torch.einsum("ihd,jhd->hij", q[q0:q0 + sq].to(work), k) * p.softmax_scale
        rel = torch.arange(sq, device=DEV)[:, None] + sk - sq - j[None, :]
        vis = -rel <= 0  # causal, bottom-right
        seen = vis.any(-1)
        s = torch.where(seen[:, None], s.masked_fill(~vis, -math.inf), torch.zeros_like(s))
        prob = torch.softmax(s, -1) * seen[None, :, None]
        if lowp:
            prob = prob.to(q.dtype).to(work)
        o = torch.einsum("hij,jhd->ihd", prob, v)
        out[q0:q0 + sq] = o.to(q.dtype).to(torch.float64) if lowp else o
        lse[:, q0:q0 + sq] = torch.where(seen[None, :], torch.logsumexp(s, -1), math.inf)
    return out, lse


def _run(q, kc, vc, cu_q, seqused, table, k_scale, v_scale, p, splits):
    out = torch.full((q.shape[0], HQ, D), float("nan"), dtype=q.dtype, device=DEV)
    lse = torch.full((HQ, q.shape[0]), float("nan"), dtype=torch.float32, device=DEV)
    assert tpa.supports_args(q, kc, vc, cu_q, seqused, table, None, k_scale, v_scale, p) is None
    tpa.forward(out, q, kc, vc, cu_q, seqused, table, None, k_scale, v_scale, p, lse, splits)
    torch.cuda.synchronize()
    return out, lse


@pytest.mark.parametrize("fp8", [False, True], ids=["bf16-cache", "fp8-cache"])
@pytest.mark.parametrize("block_size", [16, 64])
def test_mixed_batch_splits(block_size, fp8):
    seed = 1234 + block_size + fp8
    args = _batch(seed, block_size, torch.bfloat16, fp8)
    q, kc, vc, cu_q, seqused, table, k_scale, v_scale = args
    p = _problem(args)
    ref, ref_lse = _reference(q, kc, vc, cu_q, table, k_scale, v_scale, p, lowp=False)
    low, _ = _reference(q, kc, vc, cu_q, table, k_scale, v_scale, p, lowp=True)
    atol = max(2 * (ref - low).abs().max().item(), FLOOR[torch.bfloat16] * ref.abs().max().item())
    results = {}
    for splits in (1, 2, 16):
        out, lse = _run(*args, p, splits)
        msg = f"bs={block_size} fp8={fp8} G={splits} seed={seed}"
        assert_close_verbose(out, ref, atol=atol, rtol=0, msg=msg)
        assert_close_verbose(lse, ref_lse, atol=LSE_ATOL, rtol=0, msg=msg)
        results[splits] = (out, lse)
    for splits in (2, 16):
        # out is bf16: the splits may round P against another running max and out once more
        assert_close_verbose(results[splits][0], results[1][0], atol=FLOOR[torch.bfloat16] * ref.abs().max().item(),
                             rtol=0, msg=f"G={splits} vs G=1")
        assert_close_verbose(results[splits][1], results[1][1], atol=1e-5, rtol=1e-5, msg=f"lse G={splits} vs G=1")


def test_fp8_bit_decoder_on_gpu(monkeypatch):
    """The same FP8 batch through the kernel's bit decoder (the path for formats Triton cannot
    convert here) and through Triton's conversion (on GPUs that have it): identical values."""
    args = _batch(99, 16, torch.bfloat16, True)
    p = _problem(args)
    native, native_lse = _run(*args, p, 4)
    monkeypatch.setattr(tpa, "_native_fp8", lambda *a: False)
    tpa._FWD.clear()
    sw, sw_lse = _run(*args, p, 4)
    # the same values enter the same dots: equal up to code-generation differences (one bf16 ulp)
    tol = 2.0**-8 * native.float().abs().max().item()
    assert_close_verbose(sw, native, atol=tol, rtol=0, msg="bit decoder vs native")
    assert_close_verbose(sw_lse, native_lse, atol=1e-5, rtol=0, msg="bit decoder vs native lse")


def test_float32_splits_exact_to_fp32():
    """In float32 (no bf16 rounding of P), G = 2 and 16 match G = 1 to fp32 rounding."""
    args = _batch(7, 16, torch.float32, False)
    p = _problem(args)
    base, base_lse = _run(*args, p, 1)
    for splits in (2, 16):
        out, lse = _run(*args, p, splits)
        assert_close_verbose(out, base, atol=1e-5, rtol=1e-5, msg=f"fp32 G={splits} vs G=1")
        assert_close_verbose(lse, base_lse, atol=1e-5, rtol=1e-5, msg=f"fp32 lse G={splits} vs G=1")


DECODE_SEQS = [(1, 1), (1, 37), (1, 1000), (1, 4099), (1, 300), (1, 8192)]


@pytest.mark.parametrize("dtype,fp8", [(torch.bfloat16, False), (torch.bfloat16, True), (torch.float16, False),
                                       (torch.float32, False)], ids=["bf16", "bf16-fp8-cache", "fp16", "fp32"])
def test_decode_only_batch(dtype, fp8):
    """A batch of decodes only (max_seqlen_q == 1): the configs' decode rules (cuda: 128-key tiles,
    measured on an H200; float32: 64-key tiles) for each dtype, forced G = 1 / 4 and the heuristic's
    G (num_splits resolved as the op does), against float64."""
    from vllm_rocm_accel import split_k

    args = _batch(4321 + fp8, 16, dtype, fp8, seqs=DECODE_SEQS)
    q, kc, vc, cu_q, seqused, table, k_scale, v_scale = args
    p = _problem(args, seqs=DECODE_SEQS)  # max_seqlen_q = 1: every sequence has one query
    ref, ref_lse = _reference(q, kc, vc, cu_q, table, k_scale, v_scale, p, lowp=False, seqs=DECODE_SEQS)
    low, _ = _reference(q, kc, vc, cu_q, table, k_scale, v_scale, p, lowp=True, seqs=DECODE_SEQS)
    atol = max(2 * (ref - low).abs().max().item(), FLOOR[dtype] * ref.abs().max().item())
    heuristic = split_k.choose_num_splits(len(DECODE_SEQS), HK, 1, max(k for _, k in DECODE_SEQS), q.device)
    for splits in sorted({1, 4, heuristic}):
        out, lse = _run(*args, p, splits)
        msg = f"decode {dtype} fp8={fp8} G={splits}"
        assert_close_verbose(out, ref, atol=atol, rtol=0, msg=msg)
        assert_close_verbose(lse, ref_lse, atol=LSE_ATOL, rtol=0, msg=msg)
