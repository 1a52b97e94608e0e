"""vLLM's decoder attention served by our paged-KV ops, through vLLM's public backend registry.

vLLM 0.32 keeps its attention backends in ``AttentionBackendEnum``
(``vllm/v1/attention/backends/registry.py``); the member ``CUSTOM`` is the slot for a third-party
backend, filled with ``register_backend(AttentionBackendEnum.CUSTOM, "module.Class")``. The
plugin's :func:`register` does that once per process (vLLM calls the plugin in every process it
starts, so the engine core and each worker see it). A deployment then selects it by name:
``--attention-backend CUSTOM`` (or ``attention_config={"backend": "CUSTOM"}`` /
``--attention-config '{"backend": "CUSTOM"}'``). The ROCm and CUDA platforms take a selected
backend after its ``validate_configuration`` says yes (and refuse to start, naming the reasons,
when it says no); vLLM's CPU platform ignores the selection and always uses ``CPU_ATTN``.

What a step does (vLLM's ``Attention`` layer drives it, like its FlashAttention backend):

* ``do_kv_cache_update`` (``forward_includes_kv_cache_update = False``): the layer's new keys and
  values go into the paged cache with our ``reshape_and_cache_flash`` (slot ``-1`` = padding,
  skipped; FP8 caches quantized with the layer's ``_k_scale`` / ``_v_scale``);
* ``forward``: one ``flash_attn_varlen_func(q, key_cache, value_cache, cu_seqlens_q,
  cu_seqlens_k=None, ..., block_table, seqused_k, num_splits=0, out=output)`` over the whole
  batch (prefill chunks and 1-token decodes mixed, in any order; ``num_splits=0`` lets the
  split-K heuristic choose), written into vLLM's ``output``.

The cache: vLLM 0.32 gives each layer a 4-D logical view ``(num_blocks, num_kv_heads,
block_size, head_size + head_size_v)`` whose physical order is the resolved
``KVCacheLayout`` (``LBNHC`` by default, i.e. ``(num_blocks, block_size, num_kv_heads, K|V)``
in memory). ``kv_cache.transpose(1, 2)`` split on the last dim gives the
``(num_blocks, block_size, num_kv_heads, D)`` key and value caches our ops read, as strided
views with a unit last-dim stride; the ops accept any such strides, so the backend declares no
layout preference (``supported_kv_cache_layouts() -> None``, as FlashAttention).

Metadata checks: the builder validates each step's metadata once, on the host copies vLLM gives
(``query_start_loc_cpu``; ``seq_lens`` where it already lives on the host, else
``seq_lens_cpu_upper_bound``), with no device reads, and raises ``ValueError`` on a bad batch
(:func:`validate_host_metadata`; ``VLLM_ROCM_ACCEL_CHECK_SEQLENS=0`` turns it off). The layers
then call both ops with ``check_values=False``, so no layer reads the index tensors to the host.

CUDA graphs: the builder reports ``AttentionCGSupport.NEVER``, so vLLM runs attention eagerly
between piecewise graphs. Whether our kernels replay correctly from a full graph (a grid sized
from a host ``max_seqlen_k`` captured once) has not been checked on a GPU.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, replace
from typing import ClassVar, Optional

import torch
from vllm.v1.attention.backend import (
    AttentionBackend,
    AttentionCGSupport,
    AttentionImpl,
    AttentionMetadata,
    AttentionMetadataBuilder,
    AttentionType,
    CommonAttentionMetadata,
)
from vllm.v1.attention.backends.registry import AttentionBackendEnum, register_backend

from .. import settings
from ..facade import rocm_accel_ops

logger = logging.getLogger("vllm_rocm_accel")

SETTING = "VLLM_ROCM_ACCEL_ATTENTION_BACKEND"
SLOT = AttentionBackendEnum.CUSTOM
NAME = SLOT.name  # vLLM's Attention layer maps get_name() back to the enum: it must be "CUSTOM"
KERNEL_BLOCK_SIZES = (16, 32, 64)
MAX_HEAD_SIZE = 256  # vllm_rocm_accel.checks.attention.MAX_HEAD_DIM
HEAD_SIZE_MULTIPLE = 8
# The cache dtypes we write and read. "float16"/"bfloat16" only where they equal the model's dtype
# (our kernels read the cache in q's dtype): supports_combination refuses the others.
KV_CACHE_DTYPES = ("auto", "float16", "bfloat16", "fp8", "fp8_e4m3")
FP8_KV_CACHE_DTYPES = ("fp8", "fp8_e4m3")
_NAMED_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class RocmAccelAttentionMetadata(AttentionMetadata):
    """One step's batch, shared by every layer of a KV cache group.

    Sequence ``b``'s queries are rows ``query_start_loc[b]:query_start_loc[b+1]`` of the packed
    query; its keys are the first ``seq_lens[b]`` slots of its blocks ``block_table[b]`` (context
    already cached plus this step's tokens, written by ``do_kv_cache_update`` first).
    """

    num_actual_tokens: int  # query rows excluding padding
    max_query_len: int
    query_start_loc: torch.Tensor  # (B + 1,) int32
    max_seq_len: int
    seq_lens: torch.Tensor  # (B,) int32
    block_table: torch.Tensor  # (B, max_blocks) int32
    slot_mapping: torch.Tensor  # (num_tokens,) int64, -1 for padding
    num_reqs: int
    causal: bool = True
    # The largest host sequence length the builder validated (None: not validated), so that
    # update_block_table can check a replacement table's capacity without a device read.
    host_max_seq_len: Optional[int] = None


def _metadata_error(msg: str) -> ValueError:
    return ValueError(f"{NAME} ({RocmAccelAttentionBackend.__name__}) attention metadata: {msg}")


def _host(t) -> Optional[torch.Tensor]:
    """``t`` if it is a tensor already on the host (reading it costs no device sync), else None."""
    return t if isinstance(t, torch.Tensor) and t.device.type == "cpu" else None


def _check_capacity(max_len: int, label: str, table_width: int, block_size: int) -> None:
    capacity = table_width * block_size
    if max_len > capacity:
        raise _metadata_error(
            f"{label} = {max_len}: seq_lens longer than the block table allows (block_table has "
            f"{table_width} blocks of {block_size} slots = {capacity} per sequence)")


def validate_host_metadata(m: CommonAttentionMetadata, block_size: int) -> Optional[int]:
    """One step's checks on vLLM's host copies (no device reads), in place of the ops' per-layer
    value checks: query lengths non-negative and cumulative (``query_start_loc_cpu`` starts at 0,
    never decreases, ends within ``num_actual_tokens``, no query longer than ``max_query_len``);
    sequence lengths non-negative, at most ``max_seq_len`` and at most the block table's capacity
    (``block_table.shape[1] * block_size``). Raises ``ValueError``; returns the largest host
    sequence length checked (None when vLLM gave no host copy of the lengths).

    Host copies: ``query_start_loc_cpu`` always (its total is exact; with adaptive verification
    vLLM trims drafts on the device only, so there its per-request split is the host's, checked
    as such, not the device's). The
    lengths: ``seq_lens`` itself when it is a host tensor (exact), else vLLM's
    ``seq_lens_cpu_upper_bound`` (exact outside async spec decode, optimistic there). A bound is
    as good for these checks: vLLM allocates the blocks of every scheduled token, drafts
    included, and derives ``max_seq_len`` from the same bound, so a bound past either limit is a
    bad batch.

    Not checked here (vLLM computes them, and has no host copy in this metadata): the
    block_table entries (``0 <= block < num_blocks``) and the slot mapping's values, which the
    KV-cache write would otherwise read to the host every layer."""
    batch = m.seq_lens.shape[0]
    table_width = m.block_table_tensor.shape[1]
    qsl = _host(m.query_start_loc_cpu)
    if qsl is not None:
        if qsl.dim() != 1 or qsl.shape[0] != batch + 1:
            raise _metadata_error(f"query_start_loc_cpu has shape {tuple(qsl.shape)}, expected ({batch + 1},) "
                                  f"(batch of {batch})")
        first, last = int(qsl[0]), int(qsl[-1])
        if first != 0:
            raise _metadata_error(f"query_start_loc_cpu[0] = {first}, must be 0")
        if batch:
            qlens = qsl[1:] - qsl[:-1]
            low = int(qlens.argmin())
            if int(qlens[low]) < 0:
                raise _metadata_error(
                    f"query_start_loc_cpu decreases at {low + 1} ({int(qsl[low])} -> {int(qsl[low + 1])}): query "
                    "lengths must be >= 0 and cumulative")
            high = int(qlens.argmax())
            if int(qlens[high]) > m.max_query_len:
                raise _metadata_error(f"query {high} has {int(qlens[high])} tokens, more than max_query_len = "
                                      f"{m.max_query_len}")
        if last > m.num_actual_tokens:
            raise _metadata_error(f"query_start_loc_cpu[-1] = {last} is past num_actual_tokens = "
                                  f"{m.num_actual_tokens}")
    seq_lens = _host(m.seq_lens)
    what = "seq_lens"
    if seq_lens is None:
        seq_lens, what = _host(getattr(m, "seq_lens_cpu_upper_bound", None)), "seq_lens_cpu_upper_bound"
    if seq_lens is None or batch == 0:
        return None
    seq_lens = seq_lens[:batch]
    low, high = int(seq_lens.argmin()), int(seq_lens.argmax())
    shortest, longest = int(seq_lens[low]), int(seq_lens[high])
    if shortest < 0:
        raise _metadata_error(f"{what}[{low}] = {shortest}, must be >= 0")
    if longest > m.max_seq_len:
        raise _metadata_error(f"{what}[{high}] = {longest} is longer than max_seq_len = {m.max_seq_len}")
    _check_capacity(longest, f"{what}[{high}]", table_width, block_size)
    return longest


class RocmAccelAttentionMetadataBuilder(AttentionMetadataBuilder[RocmAccelAttentionMetadata]):
    """Builds the metadata from vLLM's :class:`CommonAttentionMetadata`: nothing to plan ahead
    (the split-K heuristic runs inside the op) and no copies; the batch is validated here, once
    per step, on vLLM's host copies (:func:`validate_host_metadata`), never on device tensors."""

    _cudagraph_support: ClassVar[AttentionCGSupport] = AttentionCGSupport.NEVER
    supports_update_block_table: bool = True

    def __init__(self, kv_cache_spec, layer_names, vllm_config, device: torch.device):
        super().__init__(kv_cache_spec, layer_names, vllm_config, device)
        self.block_size = kv_cache_spec.block_size

    def build(
        self,
        common_prefix_len: int,
        common_attn_metadata: CommonAttentionMetadata,
        fast_build: bool = False,
    ) -> RocmAccelAttentionMetadata:
        m = common_attn_metadata
        if isinstance(m.causal, torch.Tensor):
            raise NotImplementedError(f"{NAME} ({RocmAccelAttentionBackend.__name__}): per-sequence causal "
                                      "masks are not supported")
        host_max = None
        if settings.get_settings().VLLM_ROCM_ACCEL_CHECK_SEQLENS:
            host_max = validate_host_metadata(m, self.block_size)
        return RocmAccelAttentionMetadata(
            num_actual_tokens=m.num_actual_tokens,
            max_query_len=m.max_query_len,
            query_start_loc=m.query_start_loc,
            max_seq_len=m.max_seq_len,
            seq_lens=m.seq_lens,
            block_table=m.block_table_tensor,
            slot_mapping=m.slot_mapping,
            num_reqs=m.num_reqs,
            causal=bool(m.causal),
            host_max_seq_len=host_max,
        )

    def update_block_table(self, metadata: RocmAccelAttentionMetadata, blk_table: torch.Tensor,
                           slot_mapping: torch.Tensor) -> RocmAccelAttentionMetadata:
        if metadata.host_max_seq_len is not None and settings.get_settings().VLLM_ROCM_ACCEL_CHECK_SEQLENS:
            _check_capacity(metadata.host_max_seq_len, "the longest sequence", blk_table.shape[1], self.block_size)
        return replace(metadata, block_table=blk_table, slot_mapping=slot_mapping)


class RocmAccelAttentionBackend(AttentionBackend):
    """Decoder self-attention over vLLM's paged KV cache with ``vllm_rocm_accel``'s ops."""

    supported_dtypes: ClassVar[list[torch.dtype]] = [torch.float16, torch.bfloat16, torch.float32]
    supported_kv_cache_dtypes: ClassVar[list[str]] = list(KV_CACHE_DTYPES)
    forward_includes_kv_cache_update: bool = False

    @staticmethod
    def get_name() -> str:
        return NAME

    @staticmethod
    def get_impl_cls() -> type["RocmAccelAttentionImpl"]:
        return RocmAccelAttentionImpl

    @staticmethod
    def get_builder_cls() -> type[RocmAccelAttentionMetadataBuilder]:
        return RocmAccelAttentionMetadataBuilder

    @staticmethod
    def get_supported_kernel_block_sizes(kv_cache_spec=None) -> list[int]:
        return list(KERNEL_BLOCK_SIZES)

    @classmethod
    def supports_head_size(cls, head_size: int) -> bool:
        return head_size % HEAD_SIZE_MULTIPLE == 0 and 0 < head_size <= MAX_HEAD_SIZE

    @classmethod
    def supports_sliding_window(cls) -> bool:
        return True

    @classmethod
    def supports_combination(cls, head_size, dtype, kv_cache_dtype, block_size, use_mla, has_sink,
                             use_sparse, use_mm_prefix, device_capability) -> Optional[str]:
        named = _NAMED_DTYPES.get(kv_cache_dtype or "auto")
        if named is not None and named != dtype:
            return f"kv_cache_dtype {kv_cache_dtype} differs from the model dtype {dtype} (use auto)"
        return None


def _cache_views(kv_cache: torch.Tensor, head_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """vLLM's (num_blocks, Hk, block_size, D + Dv) view -> key (num_blocks, block_size, Hk, D)
    and value (num_blocks, block_size, Hk, Dv) views of the same memory."""
    kv = kv_cache.transpose(1, 2)
    return kv[..., :head_size], kv[..., head_size:]


class RocmAccelAttentionImpl(AttentionImpl[RocmAccelAttentionMetadata]):
    def __init__(
        self,
        num_heads: int,
        head_size: int,
        scale: float,
        num_kv_heads: Optional[int] = None,
        alibi_slopes: Optional[list[float]] = None,
        sliding_window: Optional[int] = None,
        kv_cache_dtype: str = "auto",
        logits_soft_cap: Optional[float] = None,
        attn_type: str = AttentionType.DECODER,
        kv_sharing_target_layer_name: Optional[str] = None,
        sinks: Optional[torch.Tensor] = None,
    ) -> None:
        if attn_type != AttentionType.DECODER:
            raise NotImplementedError(f"{NAME} ({RocmAccelAttentionBackend.__name__}) serves decoder "
                                      f"self-attention only, not {attn_type}")
        if sinks is not None:
            raise NotImplementedError(f"{NAME} ({RocmAccelAttentionBackend.__name__}): attention sinks are "
                                      "not supported")
        if kv_cache_dtype not in KV_CACHE_DTYPES:
            raise NotImplementedError(f"{NAME} ({RocmAccelAttentionBackend.__name__}): kv_cache_dtype "
                                      f"{kv_cache_dtype!r} is not supported; supported: {', '.join(KV_CACHE_DTYPES)}")
        self.num_heads = num_heads
        self.head_size = head_size
        self.scale = float(scale)
        self.num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
        self.alibi_slopes = None if alibi_slopes is None else torch.tensor(alibi_slopes, dtype=torch.float32)
        # FlashAttention's convention: (left, right), -1 unbounded; decoder windows look back only.
        self.sliding_window = (-1, -1) if sliding_window is None else (sliding_window - 1, 0)
        self.kv_cache_dtype = kv_cache_dtype
        self.fp8_cache = kv_cache_dtype in FP8_KV_CACHE_DTYPES
        # Our reshape_and_cache_flash takes "auto" (cache in the keys' dtype) or an FP8 name.
        self._write_dtype = kv_cache_dtype if self.fp8_cache else "auto"
        self.logits_soft_cap = float(logits_soft_cap or 0.0)  # 0 = none
        self.attn_type = attn_type
        self.kv_sharing_target_layer_name = kv_sharing_target_layer_name
        self.num_queries_per_kv = self.num_heads // self.num_kv_heads

    def _alibi(self, device: torch.device) -> Optional[torch.Tensor]:
        slopes = self.alibi_slopes
        if slopes is not None and slopes.device != device:
            slopes = self.alibi_slopes = slopes.to(device)  # once per layer
        return slopes

    def do_kv_cache_update(
        self,
        layer: torch.nn.Module,
        key: torch.Tensor,
        value: torch.Tensor,
        kv_cache: torch.Tensor,
        slot_mapping: torch.Tensor,
    ) -> None:
        """Write this step's keys and values at their slots. ``key``/``value`` may carry padded rows
        past ``slot_mapping``'s length (vLLM pads the tokens, not the slot mapping): those are not
        written, nor are the rows whose slot is -1."""
        if kv_cache.numel() == 0:
            return
        n = slot_mapping.shape[0]
        if key.shape[0] != n:
            key, value = key[:n], value[:n]
        key_cache, value_cache = _cache_views(kv_cache, self.head_size)
        # check_values=False: no per-layer host read of the slots. vLLM computes the slot mapping
        # itself and gives no host copy of it, so its values stay unchecked on this path.
        rocm_accel_ops.reshape_and_cache_flash(
            key, value, key_cache, value_cache, slot_mapping, self._write_dtype, layer._k_scale, layer._v_scale,
            check_values=False,
        )

    def forward(
        self,
        layer: torch.nn.Module,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        kv_cache: torch.Tensor,
        attn_metadata: RocmAccelAttentionMetadata,
        output: torch.Tensor,
        output_scale: Optional[torch.Tensor] = None,
        output_block_scale: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """query (num_tokens, Hq, D); kv_cache as in :func:`_cache_views`, already holding this
        step's keys (``do_kv_cache_update`` ran first); writes output[:num_actual_tokens]
        (num_tokens, Hq, Dv) and returns ``output``."""
        if output_scale is not None or output_block_scale is not None:
            raise NotImplementedError(f"{NAME} ({RocmAccelAttentionBackend.__name__}): fused output "
                                      "quantization is not supported")
        if attn_metadata is None:  # vLLM's profiling run
            return output.fill_(0)
        m = attn_metadata
        n = m.num_actual_tokens
        key_cache, value_cache = _cache_views(kv_cache, self.head_size)
        k_scale = layer._k_scale if self.fp8_cache else None
        v_scale = layer._v_scale if self.fp8_cache else None
        rocm_accel_ops.flash_attn_varlen_func(
            query[:n],
            key_cache,
            value_cache,
            cu_seqlens_q=m.query_start_loc,
            cu_seqlens_k=None,
            max_seqlen_q=m.max_query_len,
            max_seqlen_k=m.max_seq_len,
            softmax_scale=self.scale,
            causal=m.causal,
            window_size=self.sliding_window,
            softcap=self.logits_soft_cap,
            alibi_slopes=self._alibi(query.device),
            block_table=m.block_table,
            seqused_k=m.seq_lens,
            num_splits=0,
            k_descale=k_scale,
            v_descale=v_scale,
            out=output[:n],
            check_values=False,  # the builder validated this step's metadata on vLLM's host copies
        )
        return output


CLASS_PATH = f"{RocmAccelAttentionBackend.__module__}.{RocmAccelAttentionBackend.__qualname__}"
_lock = threading.Lock()


def registered() -> bool:
    """Whether vLLM's ``CUSTOM`` slot points at our backend in this process."""
    return SLOT.is_overridden() and SLOT.get_path() == CLASS_PATH


def register() -> Optional[str]:
    """Fill vLLM's ``CUSTOM`` attention backend slot with ours, once per process; returns the
    slot's name, or None when ``VLLM_ROCM_ACCEL_ATTENTION_BACKEND=0`` (which also empties the
    slot if we had filled it) or when another backend already holds the slot (left alone)."""
    with _lock:
        if not settings.get_settings().VLLM_ROCM_ACCEL_ATTENTION_BACKEND:
            if registered():
                SLOT.clear_override()
            return None
        if registered():
            return NAME
        if SLOT.is_overridden():
            logger.warning(
                "vllm-rocm-accel: vLLM's %s attention backend slot already holds %s; not registering %s",
                NAME, SLOT.get_path(), CLASS_PATH,
            )
            return None
        register_backend(SLOT, CLASS_PATH)
        return NAME
