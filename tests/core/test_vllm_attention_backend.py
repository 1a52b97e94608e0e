"""Our attention backend in vLLM's ``CUSTOM`` slot, driven through vLLM's own classes on the CPU.

No engine: the metadata comes from a vLLM :class:`CommonAttentionMetadata` through our builder,
the KV cache is a real tensor laid out as vLLM 0.32 lays out a layer's view (``KVCacheLayout``),
and a mixed batch (prefill chunks with cached context and 1-token decodes, interleaved, random
non-contiguous block tables, padded rows with slot -1) goes through ``do_kv_cache_update`` and
``forward`` as vLLM's ``Attention`` layer calls them, then through the layer itself. Outputs are
compared with a float64 reference over each sequence's keys (tests/attention_ref.py) and the
cache is checked slot by slot. Registration: once, idempotent, selectable by name, and leaves a
slot someone else filled alone.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

vllm = pytest.importorskip("vllm")

from attention_ref import attention_ref, attention_tolerance  # noqa: E402
from helpers import assert_close_verbose  # noqa: E402
from vllm.config import AttentionConfig, VllmConfig, set_current_vllm_config  # noqa: E402
from vllm.platforms.interface import DeviceCapability  # noqa: E402
from vllm.v1.attention.backend import CommonAttentionMetadata  # noqa: E402
from vllm.v1.attention.backends.registry import AttentionBackendEnum, register_backend  # noqa: E402
from vllm.v1.kv_cache_interface import FullAttentionSpec  # noqa: E402
from vllm.v1.kv_cache_layout import KVCacheLayout  # noqa: E402

from vllm_rocm_accel import fp8, plugin, rocm_accel_ops  # noqa: E402
from vllm_rocm_accel.vllm_plugin import attention_backend as ab  # noqa: E402
from vllm_rocm_accel.vllm_plugin.attention_backend import (  # noqa: E402
    RocmAccelAttentionBackend,
    RocmAccelAttentionMetadata,
)

BLOCK = 16
HQ, HK, D = 4, 2, 64
NUM_BLOCKS = 40
PAD = 2  # padded query rows past the batch (vLLM pads tokens; their slots are -1)
# (tokens already in the cache, tokens this step), in batch order: 3 decodes and 2 prefill
# chunks with existing context, interleaved (the backend needs no reordering).
BATCH = ((47, 1), (20, 13), (1, 1), (33, 17), (15, 1))
FLOORS = {torch.bfloat16: 1e-2, torch.float16: 2e-3, torch.float32: 1e-5}


# --- the batch ---------------------------------------------------------------------
def _kv_cache(layout: KVCacheLayout, dtype: torch.dtype, dim: int) -> torch.Tensor:
    """A layer's cache as vLLM 0.32 views it: logical (num_blocks, Hk, block_size, D + Dv),
    strided in ``layout``'s physical order, filled with noise (unwritten slots must not matter)."""
    logical = (NUM_BLOCKS, HK, BLOCK, dim)
    order = layout.layer_view_order  # physical axis order of the 4-D view
    raw = torch.empty([logical[i] for i in order], dtype=dtype)
    if dtype == torch.uint8:
        raw.copy_(torch.randint(0, 0x78, raw.shape, dtype=torch.uint8))  # finite e4m3 values
    else:
        raw.normal_()
    view = raw.permute([order.index(i) for i in range(4)])
    assert tuple(view.shape) == logical and view.stride(-1) == 1
    return view


def _batch(seed_dtype: torch.dtype):
    """Block tables (random, non-contiguous blocks), slot mapping, query/key/value and the vLLM
    CommonAttentionMetadata of BATCH."""
    perm = torch.randperm(NUM_BLOCKS).tolist()
    seq_lens = [c + n for c, n in BATCH]
    need = [math.ceil(s / BLOCK) for s in seq_lens]
    width = max(need) + 2
    table = torch.zeros(len(BATCH), width, dtype=torch.int32)
    for b, n in enumerate(need):
        table[b, :n] = torch.tensor([perm.pop() for _ in range(n)], dtype=torch.int32)
        table[b, n:] = torch.randint(0, NUM_BLOCKS, (width - n,), dtype=torch.int32)  # unused columns
    slots = []
    for b, (ctx, n) in enumerate(BATCH):
        for pos in range(ctx, ctx + n):
            slots.append(int(table[b, pos // BLOCK]) * BLOCK + pos % BLOCK)
    total = len(slots)
    slot_mapping = torch.tensor(slots + [-1] * PAD, dtype=torch.int64)
    qlens = [n for _, n in BATCH]
    qsl = torch.tensor([0] + list(torch.tensor(qlens).cumsum(0)), dtype=torch.int32)
    common = CommonAttentionMetadata(
        query_start_loc=qsl,
        query_start_loc_cpu=qsl.clone(),
        seq_lens=torch.tensor(seq_lens, dtype=torch.int32),
        num_reqs=len(BATCH),
        num_actual_tokens=total,
        max_query_len=max(qlens),
        max_seq_len=max(seq_lens),
        block_table_tensor=table,
        slot_mapping=slot_mapping,
        causal=True,
    )
    rows = total + PAD
    q = torch.randn(rows, HQ, D, dtype=seed_dtype)
    k = torch.randn(rows, HK, D, dtype=seed_dtype)
    v = torch.randn(rows, HK, D, dtype=seed_dtype)
    return common, q, k, v


def _slot_view(cache: torch.Tensor) -> torch.Tensor:
    """(num_blocks, block_size, Hk, D) cache -> (num_slots, Hk, D), indexed by slot."""
    return cache.contiguous().reshape(-1, cache.shape[2], cache.shape[3])


def _sequence_keys(cache: torch.Tensor, common: CommonAttentionMetadata) -> tuple[torch.Tensor, torch.Tensor]:
    """Each sequence's keys read back from a (num_blocks, block_size, Hk, D) cache through its
    block table, packed, with their cu_seqlens_k."""
    by_slot = _slot_view(cache)
    out, cu = [], [0]
    for b, s in enumerate(common.seq_lens.tolist()):
        pos = torch.arange(s)
        slot = common.block_table_tensor[b, pos // BLOCK].long() * BLOCK + pos % BLOCK
        out.append(by_slot[slot])
        cu.append(cu[-1] + s)
    return torch.cat(out), torch.tensor(cu, dtype=torch.int32)


def _builder(dtype: torch.dtype, block: int = BLOCK):
    spec = FullAttentionSpec(block_size=block, num_kv_heads=HK, head_size=D, dtype=dtype)
    cls = RocmAccelAttentionBackend.get_builder_cls()
    return cls(spec, ["model.layers.0.self_attn.attn"], VllmConfig(), torch.device("cpu"))


def _layer(k_scale: float = 1.0, v_scale: float = 1.0):
    """What the impl reads from vLLM's Attention layer: its per-tensor KV scales (0-dim float32)."""
    return SimpleNamespace(_k_scale=torch.tensor(k_scale), _v_scale=torch.tensor(v_scale))


def _fill_context(key_cache, value_cache, common, ctx_k=None, ctx_v=None):
    """The context a previous step left: random keys at each sequence's first ctx slots."""
    for b, (ctx, _) in enumerate(BATCH):
        for pos in range(ctx):
            blk, off = int(common.block_table_tensor[b, pos // BLOCK]), pos % BLOCK
            key_cache[blk, off] = ctx_k(key_cache.shape[2:]) if ctx_k else torch.randn(key_cache.shape[2:])
            value_cache[blk, off] = ctx_v(value_cache.shape[2:]) if ctx_v else torch.randn(value_cache.shape[2:])


def _check_written(before: torch.Tensor, after: torch.Tensor, new: torch.Tensor, slot_mapping: torch.Tensor):
    """Slot s of ``after`` holds ``new[t]`` for each token t with slot s >= 0; every other slot is
    as ``before`` (padding rows, slot -1, wrote nothing)."""
    b, a = _slot_view(before), _slot_view(after)
    valid = slot_mapping >= 0
    written = slot_mapping[valid]
    assert torch.equal(a[written], new[: slot_mapping.shape[0]][valid]), "the cache does not hold the step's keys"
    untouched = torch.ones(a.shape[0], dtype=torch.bool)
    untouched[written] = False
    assert torch.equal(a[untouched], b[untouched]), "slots outside the slot mapping changed"


def _compare(out, q, key_cache, value_cache, common, dtype, what, window=(-1, -1), softcap=0.0, alibi_slopes=None):
    n = common.num_actual_tokens
    k_all, cu_k = _sequence_keys(key_cache, common)
    v_all, _ = _sequence_keys(value_cache, common)
    opts = dict(cu_seqlens_q=common.query_start_loc, cu_seqlens_k=cu_k, softmax_scale=1.0 / math.sqrt(D),
                causal=True, window_size=window, softcap=softcap, alibi_slopes=alibi_slopes)
    ref64, _ = attention_ref(q[:n], k_all, v_all, upcast=True, **opts)
    low, _ = attention_ref(q[:n], k_all, v_all, upcast=False, **opts)
    atol = attention_tolerance(ref64, low, FLOORS[dtype])
    assert_close_verbose(out[:n].double(), ref64, atol=atol, rtol=0, msg=what)


def _impl(dtype_name="auto", sliding_window=None, softcap=None):
    cls = RocmAccelAttentionBackend.get_impl_cls()
    return cls(HQ, D, 1.0 / math.sqrt(D), HK, None, sliding_window, dtype_name, softcap, "decoder", None)


# --- the mixed batch through the impl ---------------------------------------------------
@pytest.mark.parametrize("layout", [KVCacheLayout.LBNHC, KVCacheLayout.LBHNC], ids=lambda x: x.name)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32], ids=str)
def test_mixed_batch_matches_reference(seed, dtype, layout):
    counts = _run_mixed_batch(dtype, layout)
    assert all(backend == "torch" for _, backend in counts), counts  # the CPU policy


@pytest.mark.parametrize("layout", [KVCacheLayout.LBNHC, KVCacheLayout.LBHNC], ids=lambda x: x.name)
def test_mixed_batch_through_triton_kernels(seed, fresh_settings, layout):
    """The same batch with our Triton kernels forced (the interpreter on the CPU)."""
    pytest.importorskip("triton")
    fresh_settings(VLLM_ROCM_ACCEL_BACKEND="paged_attn_fwd_out=triton,reshape_and_cache_flash=triton")
    counts = _run_mixed_batch(torch.bfloat16, layout)
    assert all(backend == "triton" for _, backend in counts), counts


def _run_mixed_batch(dtype, layout) -> dict:
    common, q, k, v = _batch(dtype)
    md = _builder(dtype).build(0, common)
    assert isinstance(md, RocmAccelAttentionMetadata)
    assert md.num_actual_tokens == common.num_actual_tokens and md.block_table is common.block_table_tensor
    assert md.seq_lens is common.seq_lens and md.query_start_loc is common.query_start_loc

    kv_cache = _kv_cache(layout, dtype, 2 * D)
    key_cache, value_cache = ab._cache_views(kv_cache, D)
    _fill_context(key_cache, value_cache, common)
    before_k, before_v = key_cache.clone(), value_cache.clone()

    impl, layer = _impl(), _layer()
    rocm_accel_ops.reset_call_counts()
    impl.do_kv_cache_update(layer, k, v, kv_cache, common.slot_mapping)
    _check_written(before_k, key_cache, k, common.slot_mapping)
    _check_written(before_v, value_cache, v, common.slot_mapping)

    sentinel = 7.0
    output = torch.full((q.shape[0], HQ, D), sentinel, dtype=dtype)
    got = impl.forward(layer, q, k, v, kv_cache, md, output)
    assert got is output
    assert (output[common.num_actual_tokens:] == sentinel).all(), "padded rows were written"
    _compare(output, q, key_cache, value_cache, common, dtype, f"{dtype} {layout.name}")
    counts = rocm_accel_ops.call_counts()
    assert sum(n for (op, _), n in counts.items() if op == "reshape_and_cache_flash") == 1, counts
    assert sum(n for (op, _), n in counts.items() if op.startswith("paged_attn_fwd")) == 1, counts
    return counts


@pytest.mark.parametrize("option", ["window_softcap", "alibi"])
def test_sliding_window_softcap_alibi(seed, option):
    """vLLM's layer options as the impl gets them: a sliding window of 9 tokens (FlashAttention's
    (left 8, right 0)), a logits softcap, ALiBi slopes given as a Python list."""
    dtype = torch.bfloat16
    common, q, k, v = _batch(dtype)
    md = _builder(dtype).build(0, common)
    kv_cache = _kv_cache(KVCacheLayout.LBNHC, dtype, 2 * D)
    key_cache, value_cache = ab._cache_views(kv_cache, D)
    _fill_context(key_cache, value_cache, common)
    slopes = [2.0 ** (-(h + 1)) for h in range(HQ)]
    if option == "alibi":
        impl = RocmAccelAttentionBackend.get_impl_cls()(HQ, D, 1.0 / math.sqrt(D), HK, slopes, None, "auto", None,
                                                        "decoder", None)
        want = dict(alibi_slopes=torch.tensor(slopes, dtype=torch.float64))
    else:
        impl = _impl(sliding_window=9, softcap=30.0)
        assert impl.sliding_window == (8, 0) and impl.logits_soft_cap == 30.0
        want = dict(window=(8, 0), softcap=30.0)
    layer = _layer()
    impl.do_kv_cache_update(layer, k, v, kv_cache, common.slot_mapping)
    output = torch.empty(q.shape[0], HQ, D, dtype=dtype)
    impl.forward(layer, q, k, v, kv_cache, md, output)
    _compare(output, q, key_cache, value_cache, common, dtype, option, **want)


def test_fp8_kv_cache(seed):
    """kv_cache_dtype "fp8": vLLM allocates the cache as uint8; keys are written as
    fp8(clamp(x / k_scale)) in the device's format and read back as fp8 * k_scale."""
    dtype, fmt = torch.bfloat16, fp8.fp8_dtype(torch.device("cpu"))
    common, q, k, v = _batch(dtype)
    k_scale, v_scale = 1 / 64, 1 / 32  # powers of 2: dequantized values are exact in bf16
    md = _builder(torch.uint8).build(0, common)
    kv_cache = _kv_cache(KVCacheLayout.LBNHC, torch.uint8, 2 * D)
    key_cache, value_cache = ab._cache_views(kv_cache, D)

    def quant(x, scale):
        return (x.float() / scale).clamp(-fp8.fp8_max(fmt), fp8.fp8_max(fmt)).to(fmt).view(torch.uint8)

    _fill_context(key_cache, value_cache, common, ctx_k=lambda s: quant(torch.randn(s), k_scale),
                  ctx_v=lambda s: quant(torch.randn(s), v_scale))
    before_k, before_v = key_cache.clone(), value_cache.clone()
    impl, layer = _impl("fp8"), _layer(k_scale, v_scale)
    impl.do_kv_cache_update(layer, k, v, kv_cache, common.slot_mapping)
    _check_written(before_k, key_cache, quant(k, k_scale), common.slot_mapping)
    _check_written(before_v, value_cache, quant(v, v_scale), common.slot_mapping)

    output = torch.empty(q.shape[0], HQ, D, dtype=dtype)
    impl.forward(layer, q, k, v, kv_cache, md, output)
    deq_k = (key_cache.view(fmt).float() * k_scale).to(dtype)
    deq_v = (value_cache.view(fmt).float() * v_scale).to(dtype)
    _compare(output, q, deq_k, deq_v, common, dtype, "fp8 cache")


def test_profiling_run_and_unsupported_options():
    impl = _impl()
    out = torch.full((3, HQ, D), 5.0)
    assert impl.forward(_layer(), torch.zeros(3, HQ, D), None, None, torch.empty(0), None, out) is out
    assert (out == 0).all()  # vLLM's profiling run passes no metadata
    with pytest.raises(NotImplementedError, match="sinks"):
        RocmAccelAttentionBackend.get_impl_cls()(HQ, D, 0.1, HK, None, None, "auto", None, "decoder", None,
                                                 sinks=torch.zeros(HQ))
    with pytest.raises(NotImplementedError, match="decoder"):
        RocmAccelAttentionBackend.get_impl_cls()(HQ, D, 0.1, HK, None, None, "auto", None, "encoder_only", None)
    with pytest.raises(NotImplementedError, match="fp8_e5m2"):
        _impl("fp8_e5m2")


# --- through vLLM's Attention layer and forward context ------------------------------------
def test_vllm_attention_layer_drives_the_backend(seed):
    """vLLM's ``Attention`` layer built with our backend, run under vLLM's forward context: its
    ``unified_kv_cache_update`` and ``unified_attention_with_output`` ops call our impl."""
    from vllm.forward_context import set_forward_context
    from vllm.model_executor.layers.attention import Attention

    dtype = torch.bfloat16
    name = "model.layers.0.self_attn.attn"
    config = VllmConfig()
    old_default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # vLLM builds layers under the model dtype
    try:
        with set_current_vllm_config(config):
            attn = Attention(HQ, D, 1.0 / math.sqrt(D), num_kv_heads=HK, prefix=name,
                             attn_backend=RocmAccelAttentionBackend)
    finally:
        torch.set_default_dtype(old_default)
    assert type(attn.impl).__name__ == "RocmAccelAttentionImpl"
    assert attn.backend is AttentionBackendEnum.CUSTOM

    common, q, k, v = _batch(dtype)
    md = _builder(dtype).build(0, common)
    kv_cache = _kv_cache(KVCacheLayout.LBNHC, dtype, 2 * D)
    key_cache, value_cache = ab._cache_views(kv_cache, D)
    _fill_context(key_cache, value_cache, common)
    attn.kv_cache = kv_cache
    rocm_accel_ops.reset_call_counts()
    with set_forward_context({name: md}, config, slot_mapping={name: common.slot_mapping}):
        out = attn(q.reshape(q.shape[0], -1), k.reshape(k.shape[0], -1), v.reshape(v.shape[0], -1))
    assert out.shape == (q.shape[0], HQ * D)
    counts = rocm_accel_ops.call_counts()
    assert sum(n for (op, _), n in counts.items() if op == "reshape_and_cache_flash") == 1, counts
    assert sum(n for (op, _), n in counts.items() if op.startswith("paged_attn_fwd")) == 1, counts
    _compare(out.view(-1, HQ, D), q, key_cache, value_cache, common, dtype, "through vLLM's layer")


# --- what vLLM's selector asks ----------------------------------------------------------------
def _reasons(**over):
    """What vLLM's ROCm/CUDA platforms ask a selected backend (``get_attn_backend_cls`` calls
    ``validate_configuration(device_capability=..., **AttentionSelectorConfig._asdict())`` and
    refuses to start on any reason). The platforms themselves do not import on the CPU build."""
    from vllm.v1.attention.selector import AttentionSelectorConfig

    args = dict(head_size=128, dtype=torch.bfloat16, kv_cache_dtype="auto", block_size=16)
    args.update(over)
    selector = AttentionSelectorConfig(**args)
    return RocmAccelAttentionBackend.validate_configuration(device_capability=DeviceCapability(9, 4),
                                                            **selector._asdict())


@pytest.mark.parametrize("over", [
    {}, {"dtype": torch.float16}, {"block_size": 64}, {"block_size": 128}, {"block_size": 32},
    {"kv_cache_dtype": "fp8"}, {"kv_cache_dtype": "fp8_e4m3"}, {"kv_cache_dtype": "bfloat16"},
    {"head_size": 64}, {"head_size": 256}, {"has_sliding_window": True},
], ids=str)
def test_validate_configuration_accepts(over):
    assert _reasons(**over) == []


@pytest.mark.parametrize("over,reason", [
    ({"block_size": 8}, "block_size"), ({"head_size": 72 + 1}, "head_size"), ({"head_size": 512}, "head_size"),
    ({"kv_cache_dtype": "fp8_e5m2"}, "kv_cache_dtype"), ({"kv_cache_dtype": "float16"}, "differs"),
    ({"use_mla": True}, "MLA"), ({"has_sink": True}, "sinks"), ({"attn_type": "encoder_only"}, "attention type"),
    ({"use_non_causal": True}, "non-causal"),
], ids=str)
def test_validate_configuration_refuses(over, reason):
    reasons = _reasons(**over)
    assert any(reason in r for r in reasons), reasons


def test_kernel_block_sizes_and_metadata_builder():
    assert RocmAccelAttentionBackend.get_supported_kernel_block_sizes() == [16, 32, 64]
    assert RocmAccelAttentionBackend.forward_includes_kv_cache_update is False
    builder = _builder(torch.bfloat16, block=64)
    assert builder.block_size == 64
    common, *_ = _batch(torch.bfloat16)
    md = builder.build(0, common)
    table, slots = md.block_table.clone(), md.slot_mapping.clone()
    md2 = builder.update_block_table(md, table, slots)
    assert md2.block_table is table and md2.slot_mapping is slots and md2.seq_lens is md.seq_lens
    with pytest.raises(NotImplementedError, match="causal"):
        builder.build(0, common.replace(causal=torch.ones(len(BATCH), dtype=torch.bool)))


# --- metadata checks: once per step on vLLM's host copies, none per layer ---------------------------
def _value_check_spies(monkeypatch) -> list:
    """Spies on the ops' value checks (the functions that read index tensors to the host), as the
    ops look them up; each still runs the real check."""
    from vllm_rocm_accel.ops import kv_cache as kv_ops
    from vllm_rocm_accel.ops import paged_attention as paged_ops

    calls = []
    for mod, name in ((paged_ops, "check_paged_values"), (kv_ops, "check_slot_values")):
        real = getattr(mod, name)

        def spy(*a, _real=real, _name=name):
            calls.append(_name)
            return _real(*a)

        monkeypatch.setattr(mod, name, spy)
    return calls


def test_forward_runs_no_per_layer_value_checks(seed, fresh_settings, monkeypatch):
    """With the setting on, a step through the backend (cache write + attention, two layers) calls
    neither op's value check: the builder validated the metadata on the host copies."""
    fresh_settings(VLLM_ROCM_ACCEL_CHECK_SEQLENS="1")
    calls = _value_check_spies(monkeypatch)
    dtype = torch.bfloat16
    common, q, k, v = _batch(dtype)
    md = _builder(dtype).build(0, common)
    assert md.host_max_seq_len == common.max_seq_len
    impl, layer = _impl(), _layer()
    for _ in range(2):  # two layers of one step share the metadata
        kv_cache = _kv_cache(KVCacheLayout.LBNHC, dtype, 2 * D)
        key_cache, value_cache = ab._cache_views(kv_cache, D)
        _fill_context(key_cache, value_cache, common)
        impl.do_kv_cache_update(layer, k, v, kv_cache, common.slot_mapping)
        output = torch.empty(q.shape[0], HQ, D, dtype=dtype)
        impl.forward(layer, q, k, v, kv_cache, md, output)
        _compare(output, q, key_cache, value_cache, common, dtype, "no per-layer checks")
    assert calls == [], calls
    # The spies do see the ops' checks when a caller leaves check_values on.
    n = common.num_actual_tokens
    rocm_accel_ops.flash_attn_varlen_func(q[:n], key_cache, value_cache, common.query_start_loc, None,
                                          common.max_query_len, common.max_seq_len, causal=True,
                                          block_table=common.block_table_tensor, seqused_k=common.seq_lens)
    rocm_accel_ops.reshape_and_cache_flash(k, v, key_cache, value_cache, common.slot_mapping, "auto",
                                           layer._k_scale, layer._v_scale)
    assert calls == ["check_paged_values", "check_slot_values"], calls


def test_builder_reads_no_device_tensor(seed):
    """The builder validates on the host copies only: vLLM's device tensors here are meta tensors
    (no values; any read of one raises), the lengths come from seq_lens_cpu_upper_bound."""
    common, *_ = _batch(torch.bfloat16)
    on_meta = common.replace(
        query_start_loc=common.query_start_loc.to("meta"), seq_lens=common.seq_lens.to("meta"),
        block_table_tensor=common.block_table_tensor.to("meta"), slot_mapping=common.slot_mapping.to("meta"),
        seq_lens_cpu_upper_bound=common.seq_lens.clone())
    builder = _builder(torch.bfloat16)
    md = builder.build(0, on_meta)
    assert md.host_max_seq_len == common.max_seq_len and md.seq_lens.device.type == "meta"
    width = common.block_table_tensor.shape[1]
    too_long = common.seq_lens.clone()
    too_long[2] = width * BLOCK + 1
    with pytest.raises(ValueError, match=r"seq_lens_cpu_upper_bound\[2\].*longer than the block table allows"):
        builder.build(0, on_meta.replace(seq_lens_cpu_upper_bound=too_long, max_seq_len=width * BLOCK + 1))
    # no host copy of the lengths: only the query checks run
    assert builder.build(0, on_meta.replace(seq_lens_cpu_upper_bound=None)).host_max_seq_len is None


def _bad_metadata():
    """(id, change to the batch's CommonAttentionMetadata, message)."""
    width = math.ceil(max(c + n for c, n in BATCH) / BLOCK) + 2  # _batch's table width
    past = width * BLOCK + 1

    def seq_len(b, n, **more):
        def change(common):
            lens = common.seq_lens.clone()
            lens[b] = n
            return common.replace(seq_lens=lens, **more)
        return change

    def qsl(i, value, **more):
        def change(common):
            cpu = common.query_start_loc_cpu.clone()
            cpu[i] = value
            return common.replace(query_start_loc_cpu=cpu, **more)
        return change

    yield "seq_len past the block table", seq_len(1, past, max_seq_len=past), \
        r"seq_lens\[1\] = %d: seq_lens longer than the block table allows \(block_table has %d blocks of %d" % (
            past, width, BLOCK)
    yield "seq_len past max_seq_len", seq_len(0, 60), "longer than max_seq_len"
    yield "negative seq_len", seq_len(3, -1), r"seq_lens\[3\] = -1, must be >= 0"
    yield "query_start_loc not at 0", qsl(0, 1), r"query_start_loc_cpu\[0\] = 1"
    yield "query_start_loc decreasing", qsl(2, 0), r"decreases at 2 \(1 -> 0\)"
    yield "query past max_query_len", lambda c: c.replace(max_query_len=16), "more than max_query_len"
    yield "queries past the tokens", lambda c: c.replace(num_actual_tokens=10), "past num_actual_tokens"
    yield "query_start_loc_cpu shape", lambda c: c.replace(query_start_loc_cpu=c.query_start_loc_cpu[:-1]), \
        "has shape"


@pytest.mark.parametrize("case", list(_bad_metadata()), ids=lambda c: c[0])
def test_builder_refuses_bad_metadata(case, fresh_settings):
    name, change, match = case
    fresh_settings(VLLM_ROCM_ACCEL_CHECK_SEQLENS="1")
    common, *_ = _batch(torch.bfloat16)
    bad = change(common)
    with pytest.raises(ValueError, match=match):
        _builder(torch.bfloat16).build(0, bad)
    fresh_settings(VLLM_ROCM_ACCEL_CHECK_SEQLENS="0")  # the setting turns the check off
    assert _builder(torch.bfloat16).build(0, bad).host_max_seq_len is None


def test_update_block_table_checks_the_new_capacity(fresh_settings):
    fresh_settings(VLLM_ROCM_ACCEL_CHECK_SEQLENS="1")
    common, *_ = _batch(torch.bfloat16)
    builder = _builder(torch.bfloat16)
    md = builder.build(0, common)
    need = math.ceil(common.max_seq_len / BLOCK)
    builder.update_block_table(md, common.block_table_tensor[:, :need], common.slot_mapping)  # just fits
    with pytest.raises(ValueError, match="longer than the block table allows"):
        builder.update_block_table(md, common.block_table_tensor[:, :need - 1], common.slot_mapping)


# --- registration -----------------------------------------------------------------------------
def test_plugin_registers_the_custom_backend_once():
    plugin.register()
    plugin.register()
    assert plugin.state()["attention_backend"] == "CUSTOM"
    assert ab.register() == "CUSTOM" and ab.register() == "CUSTOM"  # idempotent
    slot = AttentionBackendEnum.CUSTOM
    assert slot.is_overridden() and slot.get_path() == ab.CLASS_PATH
    assert slot.get_class() is RocmAccelAttentionBackend
    # Selectable by name, as --attention-backend / attention_config give it, and the layer's
    # name -> enum lookup (AttentionBackendEnum[backend.get_name()]) lands on the same slot.
    assert AttentionBackendEnum[RocmAccelAttentionBackend.get_name()] is slot
    assert AttentionConfig(backend="CUSTOM").backend is slot
    from vllm.engine.arg_utils import EngineArgs
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    args = EngineArgs.add_cli_args(FlexibleArgumentParser()).parse_args(["--attention-backend", "CUSTOM"])
    assert AttentionConfig(backend=EngineArgs.from_cli_args(args).attention_backend).backend is slot


def test_register_leaves_another_custom_backend_alone():
    slot = AttentionBackendEnum.CUSTOM
    other = "some_other_plugin.attention.TheirBackend"
    try:
        slot.clear_override()
        register_backend(slot, other)
        assert ab.register() is None
        assert slot.get_path() == other and not ab.registered()
    finally:
        slot.clear_override()
        assert ab.register() == "CUSTOM"


def test_setting_off_leaves_the_slot_empty(fresh_settings):
    slot = AttentionBackendEnum.CUSTOM
    try:
        fresh_settings(VLLM_ROCM_ACCEL_ATTENTION_BACKEND="0")
        assert ab.register() is None
        assert not ab.registered() and not slot.is_overridden()
        fresh_settings(VLLM_ROCM_ACCEL_ATTENTION_BACKEND="1")
        assert ab.register() == "CUSTOM" and ab.registered()
    finally:
        fresh_settings(VLLM_ROCM_ACCEL_ATTENTION_BACKEND=None)
        ab.register()
