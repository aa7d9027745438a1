"""Seeded fault injection: which request fails, and how."""

from __future__ import annotations

import enum
import random
import threading


class Fault(enum.Enum):
    """How one request fails on purpose."""

    SERVER_ERROR = "500"  # 500 {"code": "internal_error"}
    RATE_LIMITED = "429"  # 429 {"code": "rate_limited"} with Retry-After: 1
    DROPPED = "drop"  # the connection is closed without an answer
    TRUNCATED = "truncated"  # the JSON body is cut short (Content-Length matches the cut)


class FaultPlan:
    """Draws a fault for each request with probability ``rate``, reproducibly by ``seed``.

    The draws are sequential under a lock, so a client making one request at a time sees
    the same faults on every run with the same seed.
    """

    def __init__(self, rate: float, seed: int | None = None) -> None:
        if not 0.0 <= rate <= 1.0:
            raise ValueError("fault rate must be between 0 and 1")
        self._rate = rate
        self._random = random.Random(seed)  # noqa: S311 - test faults, not secrets
        self._lock = threading.Lock()

    def draw(self) -> Fault | None:
        """The fault for the next request, or None for a normal answer."""
        if self._rate <= 0:
            return None
        with self._lock:
            if self._random.random() >= self._rate:
                return None
            return self._random.choice(list(Fault))
