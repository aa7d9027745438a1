"""When a node may install a new version of an order: the pure cutover rule.

Every new version waits for its bundle's ``install_after`` (the sync's skew-safe cutover).
A *replacement* — a certificate is being served for the order — may wait longer:

- ``stagger``: until ``install_after + stagger * f``, where ``f`` in [0, 1) is a keyed hash of
  the node id and the order name. ``install_after`` is in the shard entry, so every node
  counts from the same instant and each node's turn survives restarts and reloads; the
  order name in the hash keeps one node from always going last.
- ``update_window``: until the window (UTC) is open, at or after the time above.

Neither delays a first install (nothing is served yet) nor a removal, and neither holds
back a replacement once the certificate being served expires within ``urgent_before``
(or has expired): the wait ends at ``not_after - urgent_before`` at the latest.

The planner (when to fetch), ``--status`` and the acks (why an order waits) all ask
``deferral``, so they agree.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from certfleet.bundle import iso_utc
from certfleet.config import AgentConfig
from certfleet.config.window import UpdateWindow

INSTALL_AFTER = "install_after"
STAGGER = "stagger"
UPDATE_WINDOW = "update window"

_DAY = 86400
_EPOCH_WEEKDAY = 3  # 1970-01-01 was a Thursday (Monday is 0)
_STAGGER_KEY = b"certfleet/v1/stagger"


@dataclass(frozen=True)
class Deferral:
    """An order waits until ``until`` (Unix seconds) because of ``reason``."""

    until: int
    reason: str

    def detail(self) -> str:
        """As an ack's detail says it: ``install_after 2025-11-28T03:20:00Z``, ``stagger
        until ...`` (ISO 8601 UTC)."""
        if self.reason == INSTALL_AFTER:
            return f"{INSTALL_AFTER} {iso_utc(self.until)}"
        return f"{self.reason} until {iso_utc(self.until)}"


def stagger_fraction(node_id: str, order_name: str) -> float:
    """A stable fraction in [0, 1) for this node and order (HMAC-SHA256, first 64 bits)."""
    message = f"{node_id}\0{order_name}".encode()
    digest = hmac.new(_STAGGER_KEY, message, hashlib.sha256).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def window_opening(window: UpdateWindow, at: int) -> int:
    """``at`` if ``window`` is open then, otherwise the next time it opens."""
    today = at - at % _DAY
    for day in range(-1, 8):  # yesterday's window may still be open; a week covers the rest
        opens = today + day * _DAY + window.start * 60
        weekday = (opens // _DAY + _EPOCH_WEEKDAY) % 7
        if weekday in window.days and at < opens + window.length:
            return max(opens, at)
    raise ValueError("an update window with no day")  # the config refuses an empty list


def deferral(
    config: AgentConfig,
    *,
    node_id: str,
    order_name: str,
    install_after: int,
    serving_not_after: int | None,
    now: int,
) -> Deferral | None:
    """Why and until when the new version of ``order_name`` waits; None: install it now.

    ``serving_not_after`` is the not_after of the certificate served for the order, None
    when there is none (a first install is never staggered nor held for a window)."""
    until, reason = install_after, INSTALL_AFTER
    if serving_not_after is not None and (config.stagger or config.update_window):
        urgent_at = serving_not_after - int(config.urgent_before)
        if config.stagger:
            turn = install_after + int(config.stagger * stagger_fraction(node_id, order_name))
            if turn > until:
                until, reason = turn, STAGGER
        if config.update_window is not None:
            earliest = max(until, now)
            opening = window_opening(config.update_window, earliest)
            if opening > earliest:
                until, reason = opening, UPDATE_WINDOW
        if until > urgent_at:  # waiting any longer would be dangerous
            until = max(urgent_at, install_after)
            reason = INSTALL_AFTER if until == install_after else reason
    return Deferral(until, reason) if until > now else None
