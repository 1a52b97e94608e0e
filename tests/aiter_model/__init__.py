"""Test-only stand-ins for AMD's AITER (no AMD GPU, and ``import aiter`` is never attempted).

* :mod:`.wheel`: the real ``amd-aiter`` wheel's Python sources, read with ``ast``
  (never imported): what ``aiter.<name>`` resolves to and whether a call binds.
* :mod:`.model`: a torch model of the functions' documented contracts, which
  the ``fake_aiter`` fixture (:mod:`.fixtures`) installs as ``sys.modules["aiter"]``.
"""
