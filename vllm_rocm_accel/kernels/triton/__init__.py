"""Triton kernel bodies (``@triton.jit`` only); launchers live in ``backends.triton``."""
