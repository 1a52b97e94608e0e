"""Per-(op, backend) call counters: proof of which backend served, for tests and doctor.

Incremented inside the op implementations, so calls from compiled graphs count too.
"""

from __future__ import annotations

from collections import Counter

_counts: Counter = Counter()


def count(op: str, backend: str) -> None:
    _counts[op, backend] += 1


def call_counts() -> dict[tuple[str, str], int]:
    return dict(_counts)


def reset() -> None:
    _counts.clear()
