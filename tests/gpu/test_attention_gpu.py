"""The Triton attention backend on a real GPU (skipped without one), realistic shapes, against float64.

The reference (tests/triton_attention_ref.py, shared with tests/ops/test_attention_triton_kernels.py)
is computed on the GPU per sequence in float64 (gradients by autograd); tolerance ``atol = max(2 *
max|ref64 - ref_lowp|, FLOOR[dtype] * max|ref64|)`` with ``ref_lowp`` the kernel's roundings (fp32
scores/softmax, P and out rounded to the dtype). Sizes keep the float64 score tensors at <= ~1 GB.
"""

import pytest
import torch

from helpers import assert_close_verbose
from triton_attention_ref import ref_attention, ref_with_grads, rounding_atol
from vllm_rocm_accel.backends.torch import attention as torch_attn
from vllm_rocm_accel.backends.triton import attention as ta
from vllm_rocm_accel.checks.attention import check_dense, check_varlen

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")]

LSE_ATOL = 1e-3  # fp32 lse of thousands of keys (summation order differs from float64)


# (name, dict): dense (b, sq, sk) or varlen (lens_q, lens_k); hq, hk, d, dv, options
CASES = [
    ("d128-gqa8-causal-bf16", dict(b=2, sq=1024, sk=1024, hq=16, hk=2, d=128, causal=True, dtype=torch.bfloat16)),
    ("d64-gqa8-dense-fp16", dict(b=1, sq=2048, sk=2048, hq=8, hk=1, d=64, dtype=torch.float16)),
    ("d256-window-bf16", dict(b=1, sq=1000, sk=1000, hq=8, hk=1, d=256, window=(128, 64), dtype=torch.bfloat16)),
    ("d128-softcap-alibi-bh-causal-sq<sk", dict(b=2, sq=1000, sk=1536, hq=8, hk=1, d=128, causal=True, softcap=30.0,
                                               alibi="bh", dtype=torch.bfloat16)),
    ("d64-causal-sq>sk-alibi-h", dict(b=1, sq=1536, sk=1000, hq=8, hk=8, d=64, causal=True, alibi="h",
                                      dtype=torch.float16)),
    ("d192-dv128-causal", dict(b=1, sq=1200, sk=1200, hq=8, hk=1, d=192, dv=128, causal=True, dtype=torch.bfloat16)),
    ("d96-noncontig", dict(b=2, sq=1100, sk=1100, hq=8, hk=2, d=96, noncontig=True, dtype=torch.bfloat16)),
    ("fp32-d64-causal", dict(b=1, sq=1024, sk=1024, hq=4, hk=1, d=64, causal=True, dtype=torch.float32)),
    ("varlen-gqa8-causal", dict(lens=([1, 7, 128, 1000], [1000, 7, 128, 1]), hq=16, hk=2, d=128, causal=True,
                                dtype=torch.bfloat16, tail_q=5)),
    ("varlen-window-softcap", dict(lens=([1000, 1, 128, 7], [1000, 300, 128, 7]), hq=8, hk=1, d=128,
                                   window=(256, 16), softcap=20.0, dtype=torch.float16, tail_k=3)),
    ("varlen-d256-alibi-h", dict(lens=([7, 1000, 1, 128], [7, 1000, 0, 128]), hq=8, hk=1, d=256, alibi="h",
                                 dtype=torch.bfloat16)),
]


def _inputs(c, gen):
    dev = "cuda"
    dtype, hq, hk, d = c["dtype"], c["hq"], c["hk"], c["d"]
    dv = c.get("dv", d)
    randn = lambda *shape: torch.randn(*shape, generator=gen, device=dev, dtype=torch.float32).to(dtype)  # noqa: E731
    cu_q = cu_k = None
    if "lens" in c:
        lq, lk = c["lens"]
        cu_q = torch.tensor([0] + lq, device=dev).cumsum(0).to(torch.int32)
        cu_k = torch.tensor([0] + lk, device=dev).cumsum(0).to(torch.int32)
        lead_q, lead_k = (sum(lq) + c.get("tail_q", 0),), (sum(lk) + c.get("tail_k", 0),)
        batch = len(lq)
    else:
        lead_q, lead_k = (c["b"], c["sq"]), (c["b"], c["sk"])
        batch = c["b"]
    if c.get("noncontig"):
        q = randn(*lead_q, 2 * hq, d)[..., ::2, :]
        kv = randn(*lead_k, 2, hk, max(d, dv))
        k, v = kv[..., 0, :, :d], kv[..., 1, :, :dv]
    else:
        q, k, v = randn(*lead_q, hq, d), randn(*lead_k, hk, d), randn(*lead_k, hk, dv)
    alibi = None
    if c.get("alibi") == "h":
        alibi = torch.rand(hq, generator=gen, device=dev) * 0.1
    elif c.get("alibi") == "bh":
        alibi = torch.rand(batch, hq, generator=gen, device=dev) * 0.1
    opts = (None, c.get("causal", False), c.get("window", (-1, -1)), c.get("softcap", 0.0), alibi, 0.0)
    if cu_q is None:
        p = check_dense(q, k, v, *opts)
    else:
        p = check_varlen(q, k, v, cu_q, cu_k, max(c["lens"][0]), max(c["lens"][1]), *opts)
    return q, k, v, cu_q, cu_k, alibi, p


@pytest.mark.parametrize("name,c", CASES, ids=[n for n, _ in CASES])
def test_forward_backward_on_gpu(seed, name, c):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    q, k, v, cu_q, cu_k, alibi, p = _inputs(c, gen)
    assert ta.supports_args(q, k, v, cu_q, cu_k, alibi, p) is None
    msg = f"{name} seed={seed}"
    dout = torch.randn(p.out_shape(), generator=gen, device="cuda", dtype=torch.float32).to(q.dtype)
    out, lse = ta.forward(q, k, v, cu_q, cu_k, alibi, p, True)
    dq, dk, dv = ta.backward(dout, q, k, v, out, lse, cu_q, cu_k, alibi, p)
    torch.cuda.synchronize()

    out64, lse64, g64 = ref_with_grads(q, k, v, dout, p, cu_q, cu_k, alibi, lowp=False)
    outlo, _, glo = ref_with_grads(q, k, v, dout, p, cu_q, cu_k, alibi, lowp=True)
    assert_close_verbose(out, out64, atol=rounding_atol(out64, outlo, q.dtype), rtol=0, msg=f"out {msg}")
    assert_close_verbose(lse, lse64, atol=LSE_ATOL, rtol=0, msg=f"lse {msg}")
    for gname, g, r64, rlo, x in zip(("dq", "dk", "dv"), (dq, dk, dv), g64, glo, (q, k, v)):
        assert g.shape == x.shape and g.dtype == x.dtype, gname
        assert_close_verbose(g, r64, atol=rounding_atol(r64, rlo, q.dtype), rtol=0, msg=f"{gname} {msg}")


def test_backward_deterministic_on_gpu(seed):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    c = dict(b=2, sq=1024, sk=1024, hq=16, hk=2, d=128, causal=True, dtype=torch.bfloat16)
    q, k, v, cu_q, cu_k, alibi, p = _inputs(c, gen)
    out, lse = ta.forward(q, k, v, None, None, None, p, True)
    dout = torch.randn_like(out)
    first = ta.backward(dout, q, k, v, out, lse, None, None, None, p)
    for _ in range(3):
        again = ta.backward(dout, q, k, v, out, lse, None, None, None, p)
        for a, b in zip(first, again):
            assert torch.equal(a, b)


def test_decode_and_empty_rows_on_gpu(seed):
    """Sq = 1 (decode) and causal Sq > Sk (rows with no key: exact 0 / +inf)."""
    gen = torch.Generator(device="cuda").manual_seed(seed)
    q = torch.randn(4, 1, 32, 128, generator=gen, device="cuda").bfloat16()
    k = torch.randn(4, 1500, 8, 128, generator=gen, device="cuda").bfloat16()
    v = torch.randn(4, 1500, 8, 128, generator=gen, device="cuda").bfloat16()
    p = check_dense(q, k, v, None, True, (-1, -1), 0.0, None, 0.0)
    out, lse = ta.forward(q, k, v, None, None, None, p, True)
    out64, lse64 = ref_attention(q.double(), k.double(), v.double(), p, None, None, None, lowp=False)
    outlo, _ = ref_attention(q, k, v, p, None, None, None, lowp=True)
    assert_close_verbose(out, out64, atol=rounding_atol(out64, outlo, q.dtype), rtol=0, msg=f"decode seed={seed}")
    q2 = torch.randn(1, 1500, 8, 64, generator=gen, device="cuda").half()
    k2 = torch.randn(1, 1000, 8, 64, generator=gen, device="cuda").half()
    p2 = check_dense(q2, k2, k2, None, True, (-1, -1), 0.0, None, 0.0)
    out2, lse2 = ta.forward(q2, k2, k2, None, None, None, p2, True)
    assert torch.equal(out2[:, :500], torch.zeros_like(out2[:, :500]))
    assert bool((lse2[:, :, :500] == float("inf")).all()) and bool(torch.isfinite(lse2[:, :, 500:]).all())


@pytest.mark.parametrize("causal", [False, True], ids=["dense", "causal"])
def test_auto_fast_path_on_gpu(seed, causal):
    """auto on a dense bf16 no-grad forward of 4096 keys takes the torch backend's cuDNN path, as
    the cuda policy says, with and without the lse, with the same numbers as float64."""
    from vllm_rocm_accel import rocm_accel_ops

    gen = torch.Generator(device="cuda").manual_seed(seed)
    # 4096 keys: past the policy's fast-path rule's start (1024, a measured crossover)
    q, k, v = (torch.randn(1, 4096, 4, 128, generator=gen, device="cuda").bfloat16() for _ in range(3))
    p = check_dense(q, k, v, None, causal, (-1, -1), 0.0, None, 0.0)
    rocm_accel_ops.reset_call_counts()
    with torch.no_grad():
        out = rocm_accel_ops.flash_attn_func(q, k, v, causal=causal)
        out2, lse = rocm_accel_ops.flash_attn_func(q, k, v, causal=causal, return_lse=True)
    assert rocm_accel_ops.call_counts() == {("flash_attn_fwd", "torch"): 2}  # cuDNN gives the lse too
    out64, lse64 = ref_attention(q.double(), k.double(), v.double(), p, None, None, None, lowp=False)
    outlo, _ = ref_attention(q, k, v, p, None, None, None, lowp=True)
    atol = rounding_atol(out64, outlo, q.dtype)
    assert_close_verbose(out, out64, atol=atol, rtol=0, msg=f"auto fast path seed={seed}")
    assert_close_verbose(out2, out64, atol=atol, rtol=0, msg=f"auto with lse seed={seed}")
    assert_close_verbose(lse, lse64, atol=LSE_ATOL, rtol=0, msg=f"lse seed={seed}")


# -- the torch backend's cuDNN path -----------------------------------------------------------------
CUDNN_CASES = [
    ("d128-causal-bf16", dict(b=2, sq=1024, sk=1024, hq=8, hk=8, d=128, causal=True, dtype=torch.bfloat16)),
    ("d64-dense-fp16-sq<sk", dict(b=2, sq=700, sk=1500, hq=4, hk=4, d=64, dtype=torch.float16)),
    ("d80-dense-bf16-sq>sk", dict(b=1, sq=1000, sk=600, hq=4, hk=4, d=80, dtype=torch.bfloat16)),
]


def _check_grads(grads, g64, glo, xs, dtype, msg):
    for gname, g, r64, rlo, x in zip(("dq", "dk", "dv"), grads, g64, glo, xs):
        assert g.shape == x.shape and g.dtype == x.dtype and g.is_contiguous(), gname
        assert_close_verbose(g, r64, atol=rounding_atol(r64, rlo, dtype), rtol=0, msg=f"{gname} {msg}")


@pytest.mark.parametrize("name,c", CUDNN_CASES, ids=[n for n, _ in CUDNN_CASES])
def test_cudnn_path_on_gpu(seed, name, c):
    """cuDNN's forward (with and without the lse) and backward, from its own out/lse, from the
    Triton forward's out/lse, and with no lse (recomputed), against float64."""
    if torch.cuda.get_device_capability() < (9, 0):
        pytest.skip("the cuDNN path is asserted on Hopper and newer")
    gen = torch.Generator(device="cuda").manual_seed(seed)
    q, k, v, cu_q, cu_k, alibi, p = _inputs(c, gen)
    assert torch_attn.cudnn_serves(q, k, v, p), name
    msg = f"{name} seed={seed}"
    dout = torch.randn(p.out_shape(), generator=gen, device="cuda", dtype=torch.float32).to(q.dtype)
    out64, lse64, g64 = ref_with_grads(q, k, v, dout, p, None, None, None, lowp=False)
    outlo, _, glo = ref_with_grads(q, k, v, dout, p, None, None, None, lowp=True)
    atol = rounding_atol(out64, outlo, q.dtype)

    out, lse = torch_attn.forward(q, k, v, None, None, None, p, True)
    out2, none = torch_attn.forward(q, k, v, None, None, None, p, False)
    assert none is None and out.is_contiguous() and lse.shape == p.lse_shape() and lse.dtype == torch.float32
    assert_close_verbose(out, out64, atol=atol, rtol=0, msg=f"out {msg}")
    assert_close_verbose(out2, out64, atol=atol, rtol=0, msg=f"out (no lse) {msg}")
    assert_close_verbose(lse, lse64, atol=LSE_ATOL, rtol=0, msg=f"lse {msg}")

    _check_grads(torch_attn.backward(dout, q, k, v, out, lse, None, None, None, p), g64, glo, (q, k, v), q.dtype,
                 f"cudnn fwd {msg}")
    tout, tlse = ta.forward(q, k, v, None, None, None, p, True)
    _check_grads(torch_attn.backward(dout, q, k, v, tout, tlse, None, None, None, p), g64, glo, (q, k, v),
                 q.dtype, f"triton fwd {msg}")
    no_lse = torch.empty(0, dtype=torch.float32, device="cuda")
    _check_grads(torch_attn.backward(dout, q, k, v, out, no_lse, None, None, None, p), g64, glo, (q, k, v),
                 q.dtype, f"no lse {msg}")


@pytest.mark.parametrize("deterministic", [False, True], ids=["default", "deterministic"])
def test_auto_training_step_on_gpu(seed, deterministic):
    """A training step through auto at 1000 keys: Triton's forward (below the forward's
    crossover), cuDNN's backward from Triton's lse; deterministic=True keeps the backward on
    Triton. Gradients against float64 either way."""
    from vllm_rocm_accel import rocm_accel_ops

    gen = torch.Generator(device="cuda").manual_seed(seed)
    c = dict(b=2, sq=1000, sk=1000, hq=8, hk=8, d=64, causal=True, dtype=torch.bfloat16)
    q, k, v, _, _, _, p = _inputs(c, gen)
    dout = torch.randn(p.out_shape(), generator=gen, device="cuda", dtype=torch.float32).to(q.dtype)
    leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    rocm_accel_ops.reset_call_counts()
    out = rocm_accel_ops.flash_attn_func(*leaves, causal=True, deterministic=deterministic)
    out.backward(dout)
    bwd = "triton" if deterministic else "torch"
    assert rocm_accel_ops.call_counts() == {("flash_attn_fwd", "triton"): 1, ("flash_attn_bwd", bwd): 1}
    _, _, g64 = ref_with_grads(q, k, v, dout, p, None, None, None, lowp=False)
    _, _, glo = ref_with_grads(q, k, v, dout, p, None, None, None, lowp=True)
    _check_grads([t.grad for t in leaves], g64, glo, (q, k, v), q.dtype, f"auto deterministic={deterministic}")


def test_triton_backward_from_cudnn_forward_on_gpu(seed):
    """The other mix a training step can take: cuDNN's forward (auto from 1024 keys) with the
    Triton backward (deterministic=True), which reads cuDNN's out and lse. Against float64."""
    if torch.cuda.get_device_capability() < (9, 0):
        pytest.skip("the cuDNN path is asserted on Hopper and newer")
    gen = torch.Generator(device="cuda").manual_seed(seed)
    c = dict(b=2, sq=1024, sk=1024, hq=8, hk=8, d=128, causal=True, dtype=torch.bfloat16)
    q, k, v, _, _, _, p = _inputs(c, gen)
    assert torch_attn.cudnn_serves(q, k, v, p)
    dout = torch.randn(p.out_shape(), generator=gen, device="cuda", dtype=torch.float32).to(q.dtype)
    out, lse = torch_attn.forward(q, k, v, None, None, None, p, True)
    grads = ta.backward(dout, q, k, v, out, lse, None, None, None, p)
    _, _, g64 = ref_with_grads(q, k, v, dout, p, None, None, None, lowp=False)
    _, _, glo = ref_with_grads(q, k, v, dout, p, None, None, None, lowp=True)
    _check_grads(grads, g64, glo, (q, k, v), q.dtype, f"triton bwd from cudnn fwd seed={seed}")
