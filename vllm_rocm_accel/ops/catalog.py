"""The public ops, as data: name -> the AITER feature flag that gates its aiter backend.

Kept free of torch imports so settings validation can name the ops cheaply.
Each later family adds its ops here.
"""

OP_FEATURES: dict[str, str] = {
    "rms_norm": "rmsnorm",
    "fused_add_rms_norm": "rmsnorm",
}
OP_NAMES: tuple[str, ...] = tuple(OP_FEATURES)
