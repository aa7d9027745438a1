"""What a run has to do for one cluster, decided by a pure function of the provider's
listing, the sync state and the time.

- ``issue``: listed orders that need a new key and certificate, with the reason: ``new``
  (never published), ``names`` (the order's DNS names changed), ``renewal`` (due, see
  ``renewal``), ``rekey`` (marked by ``certfleet rekey``) or ``key_type`` (the configured
  key type changed);
- ``resume``: orders whose stored pending key still matches the order: collect its
  certificate, never make a second key;
- ``drop_pending``: pending keys that no longer match (names or key type changed again,
  or a rekey mark came after them); they are replaced by an ``issue``;
- ``missing``: orders the state knows that the listing lacks. The listing is never
  evidence of removal by itself: each of these is confirmed with the provider;
- ``invalid``: listed orders refused because of an unsafe order or DNS name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Callable

from certfleet.bundle import FormatError, validate_dns_name, validate_order_name
from certfleet.sync.provider import ProviderOrder
from certfleet.sync.renewal import renewal_due
from certfleet.sync.state import ClusterState

IMMEDIATE_REASONS = frozenset({"new", "names"})


@dataclass(frozen=True)
class Issue:
    order: ProviderOrder
    reason: str

    @property
    def immediate(self) -> bool:
        """Nodes may install the result at once (nothing valid to keep serving)."""
        return self.reason in IMMEDIATE_REASONS


@dataclass(frozen=True)
class Plan:
    listed: Mapping[str, ProviderOrder]
    issue: tuple[Issue, ...]
    resume: tuple[str, ...]
    drop_pending: tuple[str, ...]
    missing: tuple[str, ...]
    invalid: Mapping[str, str]


def _clean(order: ProviderOrder) -> ProviderOrder:
    """The order with validated lowercase sorted names; ``FormatError`` if unsafe."""
    validate_order_name(order.name)
    names = tuple(sorted({validate_dns_name(name) for name in order.dns_names}))
    if not names:
        raise ValueError("the order has no DNS names")
    if names == order.dns_names:
        return order  # already clean: no second copy of every listed order
    return ProviderOrder(order.name, order.cluster, names)


def _reason(
    order: ProviderOrder,
    state: ClusterState,
    now: int,
    key_type: str,
    renew_days: int | None,
    renew_at: int | None,
) -> str | None:
    record = state.orders.get(order.name)
    if record is None:
        return "new"
    if record.dns_names != order.dns_names:
        return "names"
    if order.name in state.rekey:
        return "rekey"
    if record.key_type != key_type:
        return "key_type"
    if renew_at is not None:
        # the CA's suggestion, but never later than the last tenth of the lifetime (a
        # window past the expiry would let the certificate lapse)
        lifetime = max(0, record.not_after - record.not_before)
        if now >= min(renew_at, record.not_after - lifetime // 10):
            return "renewal"
    elif renewal_due(record.not_before, record.not_after, now, renew_days):
        return "renewal"
    return None


def plan_cluster(
    cluster: str,
    listing: Sequence[ProviderOrder],
    state: ClusterState,
    *,
    now: int,
    key_type_for: Callable[[str], str],
    renew_days: int | None,
    renew_at: Mapping[str, int] | None = None,
) -> Plan:
    """``renew_at``: renewal times the provider suggests (ACME ARI), by order name; they
    replace the lifetime rule for those orders."""
    listed: dict[str, ProviderOrder] = {}
    invalid: dict[str, str] = {}
    for raw in listing:
        if raw.cluster != cluster or raw.name in listed:
            continue
        try:
            listed[raw.name] = _clean(raw)
        except (FormatError, ValueError) as err:
            invalid[raw.name] = str(err)
    issue: list[Issue] = []
    resume: list[str] = []
    drop: list[str] = []
    for name, order in sorted(listed.items()):
        key_type = key_type_for(name)
        suggested = renew_at.get(name) if renew_at else None
        reason = _reason(order, state, now, key_type, renew_days, suggested)
        pending = state.pending.get(name)
        if pending is not None:
            stale = (
                pending.dns_names != order.dns_names
                or pending.key_type != key_type
                # a key's own rekey mark is cleared when the key is made, so a mark that is
                # still here came after this pending key: it must be replaced too
                or name in state.rekey
            )
            if not stale:
                resume.append(name)
                continue
            drop.append(name)
        if reason is not None:
            issue.append(Issue(order, reason))
    known = set(state.orders) | set(state.pending)
    missing = sorted(known - set(listed) - set(invalid))
    return Plan(listed, tuple(issue), tuple(resume), tuple(drop), tuple(missing), invalid)
