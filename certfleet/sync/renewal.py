"""The renewal and cut-over rules, as pure functions of times in Unix seconds.

- A certificate is due for renewal when less than a third of its lifetime is left, or,
  when ``renew_days`` is configured, less than that many days. The window is capped at
  half the lifetime, so a short-lived certificate is never renewed right after issuance
  (which would otherwise loop forever).
- A provider may suggest its own renewal time (the ACME CA's ARI window, see
  ``plan``): it replaces this rule for that order, capped at the last tenth of the
  lifetime so that a suggestion past the expiry cannot let a certificate lapse.
- ``install_after`` is when nodes may switch to a new certificate: its not_before plus the
  clock-skew margin, so the fleet cuts over together after clients' clocks have caught up;
  or the not_before itself when there is nothing to keep serving (a new order, or names
  that changed, where the old certificate no longer covers what the order asks for).
"""

from __future__ import annotations

DAY = 86400


def renewal_window(not_before: int, not_after: int, renew_days: int | None) -> int:
    """Seconds before not_after at which renewal starts."""
    lifetime = max(0, not_after - not_before)
    window = lifetime // 3 if renew_days is None else renew_days * DAY
    return min(window, lifetime // 2)


def renewal_due(not_before: int, not_after: int, now: int, renew_days: int | None) -> bool:
    """True when the certificate should be replaced now."""
    return now >= not_after - renewal_window(not_before, not_after, renew_days)


def install_after(not_before: int, skew_margin: int, *, immediate: bool) -> int:
    """When nodes may install the certificate (``immediate`` for new orders or new names)."""
    return not_before if immediate else not_before + skew_margin
