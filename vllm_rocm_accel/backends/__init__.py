"""Backends: one small module per (backend, family), each a few plain functions.

``torch`` runs anywhere (the reference), ``triton`` runs our portable kernels,
``aiter`` adapts AMD's AITER on ROCm gfx9. Backend functions write into the
outputs they are given; the op layer allocates and validates.
"""
