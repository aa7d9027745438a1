"""Unix seconds as people read them in messages: ISO 8601 in UTC, ``2026-11-27T11:11:45Z``.

Objects keep Unix seconds (``u64``); only text meant for a person (log lines, error
messages, the details of an ack) uses this form.
"""

from __future__ import annotations

import time


def iso_utc(seconds: float) -> str:
    """``seconds`` (Unix time) as ISO 8601 UTC to the second; out-of-range values as-is."""
    try:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(seconds)))
    except (OverflowError, OSError, ValueError):
        return f"{seconds} (Unix seconds)"
