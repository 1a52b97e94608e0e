"""Kernel bodies, by language (``triton/``)."""
