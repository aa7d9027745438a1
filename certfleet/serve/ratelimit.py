"""A per-key token bucket, kept in process memory.

Each API key may make ``burst`` requests at once and ``rate`` per second after that; an
answer beyond it is 429 with ``Retry-After``. In the Lambda every execution environment
has its own buckets, so the effective limit is this times the number of concurrent
environments: the function's reserved concurrency (and the Function URL's own
throttling) bounds the rest (docs/api.md "Limits").
"""

from __future__ import annotations

import math
import threading
import time
from typing import Callable

DEFAULT_RATE = 10.0
DEFAULT_BURST = 40.0
_MAX_KEYS = 10_000


class RateLimiter:
    """Token buckets by key id; thread-safe; ``clock`` is monotonic seconds."""

    def __init__(
        self,
        rate: float = DEFAULT_RATE,
        burst: float = DEFAULT_BURST,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self._rate = rate
        self._burst = burst
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key_id: str) -> float:
        """0 when a request of ``key_id`` may proceed, else the seconds to wait."""
        with self._lock:
            now = self._clock()
            tokens, stamp = self._buckets.get(key_id, (self._burst, now))
            tokens = min(self._burst, tokens + (now - stamp) * self._rate)
            if tokens >= 1:
                if len(self._buckets) >= _MAX_KEYS and key_id not in self._buckets:
                    self._buckets.clear()
                self._buckets[key_id] = (tokens - 1, now)
                return 0.0
            self._buckets[key_id] = (tokens, now)
            return (1 - tokens) / self._rate

    @staticmethod
    def retry_after(wait: float) -> str:
        """``wait`` as a Retry-After value (whole seconds, at least 1)."""
        return str(max(1, math.ceil(wait)))
