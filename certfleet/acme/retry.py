"""The one retry rule of the ACME provider: when to try an order again.

- ``badNonce`` is retried at once, up to ``BAD_NONCE_TRIES`` times per request (a CA may
  reject a share of good nonces: pebble rejects 5 % by default);
- ``rateLimited`` and 503 answers wait for the CA's Retry-After (that order only), or the
  backoff when the CA gave none;
- anything else (an invalid authorization, a refused order) waits ``backoff(attempts)``:
  5 minutes doubling to a day, so a failing name is never retried in a hot loop.

Pure functions of times in Unix seconds, on the project's one retry rule
(``certfleet.retry``: the doubling delay and the Retry-After parser).
"""

from __future__ import annotations

from typing import Optional

from certfleet import retry

BAD_NONCE_TRIES = 8
BACKOFF_FIRST = 300.0
BACKOFF_CAP = 86400.0
RETRY_AFTER_CAP = 7 * 86400.0
WAIT_CODES = frozenset({"rateLimited"})


def backoff(attempts: int) -> float:
    """Seconds to wait after ``attempts`` failed attempts (1, 2, ...)."""
    return retry.exponential(attempts, first=BACKOFF_FIRST, cap=BACKOFF_CAP)


def parse_retry_after(value: Optional[str], now: float) -> Optional[float]:
    """Seconds from ``now`` that a CA's Retry-After asks for (delta-seconds or an HTTP
    date), capped at a week; None when absent or unreadable."""
    return retry.parse_retry_after(value, now, cap=RETRY_AFTER_CAP)


def retry_at(
    now: float,
    attempts: int,
    *,
    code: Optional[str],
    status: Optional[int],
    retry_after: Optional[float],
) -> float:
    """When an order that failed (``attempts`` times so far, this one included) may be
    tried again: the CA's Retry-After for rate limits and 503, else the backoff."""
    if (code in WAIT_CODES or status == 503) and retry_after is not None:
        return now + retry_after
    if retry_after is not None:
        return now + max(retry_after, backoff(attempts))
    return now + backoff(attempts)
