"""The retry rule of every part of certfleet: how long to wait before trying again.

Every retry in the project takes its delay from here: the APIv3 client
(``certfleet.apiv3.transport``), the HTTPS store (``certfleet.store.https``), the ACME
provider (``certfleet.acme.retry``), and in the node agent the daemon loop
(``node_agent.loop``) and the backoff of a version that failed its checks
(``node_agent.backoff``). Each keeps its own figures (first delay, cap, jitter) and budget;
the shape is the same:

- ``exponential``: ``first`` doubling with each failed attempt, capped at ``cap``;
- a jitter, so that many clients that failed together do not retry in step: ``spread``
  (± a fraction of the delay: the agent's waits, which should stay near their nominal
  value) or ``full_jitter`` (anywhere between 0 and the delay: short API retries, where
  spreading the load matters most);
- never sooner than the server's ``Retry-After`` (``parse_retry_after``: RFC 9110 §10.2.3,
  delay-seconds or an HTTP-date), which each caller caps at what it can wait.

Jitter draws are a number in [0, 1) from an injected callable (``random.random`` by
default), so the rules are tested without randomness.

Written here rather than taken from tenacity or stamina: the node agent imports it on
small machines, where a pure module of a few functions costs nothing, while those
libraries (and their dependencies) add import time and memory for decorators, async support
and instrumentation the agent would not use; and the callers need the delay as a number
(the agent sleeps in ``stop.wait``, the ACME provider stores a retry time in its state,
the APIv3 client asks its recovery hook between attempts), which a decorator-shaped API
does not give.
"""

from __future__ import annotations

import email.utils
import math
import re
from datetime import timezone
from typing import Callable, Optional

Draw = Callable[[], float]
MAX_DOUBLINGS = 16
_DELAY_SECONDS = re.compile(r"[0-9]+")


def exponential(attempt: int, *, first: float, cap: float) -> float:
    """The delay after the ``attempt``-th failure in a row (1, 2, ...): ``first``, doubled
    for each failure after the first, at most ``cap``; 0 before any failure."""
    if attempt <= 0:
        return 0.0
    return min(cap, first * 2.0 ** min(attempt - 1, MAX_DOUBLINGS))


def spread(delay: float, jitter: float, draw: float) -> float:
    """``delay`` moved by up to ± ``jitter`` (a fraction of it); ``draw`` in [0, 1) picks
    where (0.5: not moved)."""
    return delay * (1.0 + jitter * (2.0 * draw - 1.0))


def full_jitter(delay: float, draw: float) -> float:
    """A delay between 0 and ``delay``; ``draw`` in [0, 1) picks where."""
    return delay * draw


def parse_retry_after(
    value: Optional[str], now: float, *, cap: float = math.inf
) -> Optional[float]:
    """Seconds from ``now`` (Unix seconds) that a ``Retry-After`` header value asks to wait,
    at most ``cap``: delay-seconds (ASCII digits) or an HTTP-date (a date in the past is
    0; one without a zone is taken as UTC). None when absent or unreadable."""
    if value is None:
        return None
    text = value.strip()
    if _DELAY_SECONDS.fullmatch(text):
        return min(float(text), cap)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return min(max(0.0, when.timestamp() - now), cap)
