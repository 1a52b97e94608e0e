"""Fake (meta) implementations: output shapes and dtypes only, for torch.compile tracing.

One module per family; each fake runs the same argument checks as the real op,
so a bad call fails while tracing with the same message it gives eagerly.
"""
