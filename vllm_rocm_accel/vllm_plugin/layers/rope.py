"""vLLM's RotaryEmbedding routed to our ``rotary_embedding`` op.

``CustomOp.register_oot`` replaces a layer by its class *name*, so every class is routed
under its own name: ``RotaryEmbedding`` itself (NeoX and GPT-J styles) and the scaling
variants that only change how the cos||sin cache is computed and inherit
``RotaryEmbedding``'s forward unchanged (Llama 3, linear, NTK, dynamic NTK, dynamic NTK
alpha, YaRN, Gemma 4's proportional). Variants with their own forward (MRoPE, DeepSeek,
dual-chunk, Phi-3 long-rope, Llama 4 vision, FoPE, ...) are left to vLLM.

The forward follows vLLM's: the cache converted to the query dtype
(``_match_cos_sin_cache_dtype``) and query/key rotated in place (as vLLM's
``ops.rotary_embedding``), then returned. Calls our op cannot serve (positions that are
not 1-D, e.g. flattened later by vLLM, or a cache that does not match ``rotary_dim``)
fall back to vLLM's own ``forward_native``.
"""

from __future__ import annotations

import importlib

# (module under vllm.model_executor.layers.rotary_embedding, class name)
ROUTED_CLASSES = (
    ("base", "RotaryEmbedding"),
    ("llama3_rope", "Llama3RotaryEmbedding"),
    ("linear_scaling_rope", "LinearScalingRotaryEmbedding"),
    ("ntk_scaling_rope", "NTKScalingRotaryEmbedding"),
    ("dynamic_ntk_scaling_rope", "DynamicNTKScalingRotaryEmbedding"),
    ("dynamic_ntk_alpha_rope", "DynamicNTKAlphaRotaryEmbedding"),
    ("yarn_scaling_rope", "YaRNScalingRotaryEmbedding"),
    ("gemma4_rope", "Gemma4RotaryEmbedding"),
)

_FORWARDS = ("forward_native", "forward_cuda", "forward_hip", "forward_cpu", "forward_xpu", "forward_oot")


def _servable(layer, positions, query, key, cache) -> bool:
    return (
        positions.dim() == 1
        and query.dim() in (2, 3)
        and (key is None or key.dim() in (2, 3))
        and cache.dim() == 2
        and cache.shape[-1] == layer.rotary_dim
        and query.shape[0] == positions.shape[0]
    )


def _routed_class(base_cls):
    from ...facade import rocm_accel_ops

    def forward(self, positions, query, key=None):
        cache = self._match_cos_sin_cache_dtype(query)
        if not _servable(self, positions, query, key, cache):
            return base_cls.forward_native(self, positions, query, key)
        rocm_accel_ops.rotary_embedding(
            positions, query, key, self.head_size, cache, self.is_neox_style, self.rotary_dim
        )
        return query, key

    namespace = {name: forward for name in _FORWARDS}
    namespace["__doc__"] = f"vLLM's {base_cls.__name__} with its forward routed to ``rocm_accel_ops.rotary_embedding``."
    namespace["__module__"] = __name__
    return type(f"RocmAccel{base_cls.__name__}", (base_cls,), namespace)


def _factory(module: str, name: str):
    def make():
        mod = importlib.import_module(f"vllm.model_executor.layers.rotary_embedding.{module}")
        return name, _routed_class(getattr(mod, name))

    make.__name__ = f"_make_{name}"
    return make


FACTORIES = tuple(_factory(module, name) for module, name in ROUTED_CLASSES)
