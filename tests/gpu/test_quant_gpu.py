"""The FP8 quant family on a real GPU (skipped without one): Triton kernels compiled for the device,
against the torch reference and float64."""

import pytest
import torch

from vllm_rocm_accel import fp8, rocm_accel_ops

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")]

FORMATS = [torch.float8_e4m3fn, torch.float8_e4m3fnuz]


def _x(tokens, hidden, dtype, row_pad=0):
    full = torch.randn(tokens, hidden + row_pad, device="cuda").mul_(3).to(dtype)
    full[0] = 0  # an all-zero row
    return full[:, :hidden] if row_pad else full


def _agree(q, s, qr, sr, fmt, msg):
    torch.testing.assert_close(s, sr, rtol=1e-6, atol=0, msg=msg)
    diff = (q.double() - qr.double()).abs()
    ulp = torch.pow(2.0, torch.floor(torch.log2(qr.double().abs().clamp(min=1e-30))).clamp(min=-7) - 3)
    assert (diff <= ulp).all(), f"{msg}: {int((diff > ulp).sum())} values differ by more than one FP8 ulp"
    same = (q.view(torch.uint8) == qr.view(torch.uint8)).float().mean().item()
    assert same > 0.999, f"{msg}: only {same:.4%} of q bit-identical to the torch reference"


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
# (300, 7168) / (300, 4992): the chunked per-token kernel (>= 256 rows, 4096 < H <= 7168; 4992 = 39 x 128:
# a partial last 1024-column chunk, and still whole 128-groups for per_token_group_quant)
@pytest.mark.parametrize("tokens,hidden", [(1, 4096), (7, 7168), (257, 4096), (4099, 1536), (300, 7168),
                                           (300, 4992)])
def test_triton_matches_torch_reference(seed, fmt, dtype, tokens, hidden):
    x = _x(tokens, hidden, dtype)
    for op, kwargs in (("per_tensor_quant", {}), ("per_token_quant", {}),
                       ("per_token_group_quant", {"group_size": 128}),
                       ("per_token_group_quant", {"group_size": 128, "column_major_scales": True}),
                       ("per_token_quant", {"scale_ub": torch.tensor(2.5, device="cuda")})):
        fn = getattr(rocm_accel_ops, op)
        q, s = fn(x, dtype=fmt, backend="triton", **kwargs)
        qr, sr = fn(x, dtype=fmt, backend="torch", **kwargs)
        assert s.shape == sr.shape and s.stride() == sr.stride() and q.stride() == qr.stride()
        _agree(q, s, qr, sr, fmt, f"{op} {kwargs} {tokens}x{hidden} {dtype}")
    zero_q, zero_s = rocm_accel_ops.per_token_quant(x, dtype=fmt, backend="triton")
    assert not zero_q[0].float().any() and zero_s[0].item() == pytest.approx(fp8.AMAX_FLOOR / fp8.fp8_max(fmt))


def test_strided_rows_and_static_scale(seed):
    fmt = fp8.fp8_dtype(torch.device("cuda"))
    x = _x(33, 2048, torch.bfloat16, row_pad=64)
    assert not x.is_contiguous()
    for op in ("per_token_quant", "per_token_group_quant"):
        fn = getattr(rocm_accel_ops, op)
        q, s = fn(x, dtype=fmt, backend="triton")
        qr, sr = fn(x.contiguous(), dtype=fmt, backend="torch")
        _agree(q, s, qr, sr, fmt, op)
    static = torch.tensor([0.01], device="cuda")
    q, s = rocm_accel_ops.per_tensor_quant(x, static, dtype=fmt, backend="triton")
    qr, sr = rocm_accel_ops.per_tensor_quant(x, static, dtype=fmt, backend="torch")
    _agree(q, s, qr, sr, fmt, "static")


def test_compile_fullgraph_on_gpu(seed):
    def f(h):
        q, s = rocm_accel_ops.per_token_group_quant(h, 128, True)
        return (q.float().reshape(h.shape[0], -1, 128) * s.unsqueeze(-1)).reshape(h.shape)

    h = torch.randn(64, 4096, device="cuda", dtype=torch.bfloat16)
    torch._dynamo.reset()
    got = torch.compile(f, fullgraph=True)(h)
    torch.testing.assert_close(got, f(h), atol=0, rtol=0)


@pytest.mark.parametrize("op", ["per_token_quant", "per_token_group_quant", "per_tensor_quant"])
def test_negative_zero_keeps_its_sign_in_e4m3fn(op):
    """-0.0 encodes as 0x80 (-0) in e4m3fn through the shipped kernels, as torch's reference does: the
    split division's negations are true negations (``v * -1.0``; Triton 3.6 lowers ``-v`` to
    ``0 - v``, which gave +0 here)."""
    x = torch.randn(64, 4096, device="cuda").to(torch.bfloat16)
    x[:, ::5] = -0.0
    x[:, 1::5] = 0.0
    q, _ = getattr(rocm_accel_ops, op)(x, dtype=torch.float8_e4m3fn, backend="triton")
    qr, _ = getattr(rocm_accel_ops, op)(x, dtype=torch.float8_e4m3fn, backend="torch")
    codes = q.view(torch.uint8)
    assert (codes[:, ::5] == 0x80).all(), f"{op}: {int((codes[:, ::5] != 0x80).sum())} of -0.0 not 0x80"
    assert (codes[:, 1::5] == 0x00).all(), f"{op}: +0.0 not 0x00"
    assert torch.equal(codes[:, ::5], qr.view(torch.uint8)[:, ::5])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_static_scale_fast_paths_give_the_clamped_division_codes(seed, monkeypatch, dtype):
    """per_tensor static scales through every combination of the fast paths (static_split: the guarded
    split division; static_sat_cvt: no clamp before the native saturating conversion; flat tiles) give
    the IEEE-division-and-clamp kernel's bytes, for scales whose quotients overflow float32 and ones the
    split does not take; NaN inputs encode as NaN with static_sat_cvt (torch's reference too) where the
    clamp gives +-FP8_MAX. Also against torch's reference, NaN aside."""
    from helpers import edited_config
    from vllm_rocm_accel.backends.triton import quant as tq

    fmt = torch.float8_e4m3fn
    x = torch.randn(64, 4032, device="cuda") * 3  # 258048 elements = 63 x 4096: EVEN flat tiles
    x[1] *= torch.exp2(torch.empty(4032, device="cuda").uniform_(-40, 40))
    x[2, :9] = torch.tensor([float("inf"), float("-inf"), 3e38, -3e38, float("nan"), -0.0, 1e-30, 6e4, -6e4])
    x = x.to(dtype)
    nan = x.isnan()
    finite_amax = x[x.isfinite()].float().abs().amax().item()
    scales = [finite_amax / 448, 0.01, 2.0**-50, 2.0**-59.5, 2.0**-70, 2.0**-120, 2.0**59, 2.0**65, 1e30]
    for edited in edited_config(monkeypatch, tq):
        section = edited["cuda"]["per_tensor"]
        variants = [dict(static_split=a, static_sat_cvt=b, flat=f) for a in (False, True) for b in (False, True)
                    for f in (None, [{"max_numel": 10**18, "block": 4096, "num_warps": 8}])]
        for scale in scales:
            static = torch.tensor([scale], device="cuda")
            section.update(static_split=False, static_sat_cvt=False)
            section.pop("flat", None)
            tq.clear_caches()
            want, _ = rocm_accel_ops.per_tensor_quant(x, static, dtype=fmt, backend="triton")
            wb = want.view(torch.uint8)
            qr, _ = rocm_accel_ops.per_tensor_quant(x, static, dtype=fmt, backend="torch")
            assert torch.equal(wb[~nan], qr.view(torch.uint8)[~nan]), f"scale {scale}: clamp kernel vs torch"
            for v in variants:
                section.update(static_split=v["static_split"], static_sat_cvt=v["static_sat_cvt"])
                section.pop("flat", None)
                if v["flat"]:
                    section["flat"] = v["flat"]
                tq.clear_caches()
                q, s = rocm_accel_ops.per_tensor_quant(x, static, dtype=fmt, backend="triton")
                qb = q.view(torch.uint8)
                assert torch.equal(s.reshape(1), static), f"scale {scale} {v}: the scale written"
                diff = (qb != wb) & ~nan
                assert not diff.any(), (f"scale {scale} {v}: {int(diff.sum())} bytes differ, first "
                                        f"{[int(i) for i in diff.nonzero()[0]]}")
                if v["static_sat_cvt"]:
                    assert q[nan].float().isnan().all() and qr[nan].float().isnan().all(), f"scale {scale} {v}"
                else:
                    assert torch.equal(qb[nan], wb[nan])
