"""The sync engine's error tree, rooted at ``certfleet.errors.CertfleetError``.

Messages name the cluster, order or object concerned and never carry key material. Text
that comes from outside (a provider's answer) is passed through ``printable`` first, so a
message never holds a raw control character when it reaches a terminal or a log line.
"""

from __future__ import annotations

from certfleet.bundle import iso_utc
from certfleet.errors import MAX_MESSAGE as MAX_MESSAGE  # shared with the agent
from certfleet.errors import CertfleetError
from certfleet.errors import printable as printable


class SyncError(CertfleetError):
    """Base class of every error the sync engine raises."""


class LeaseHeldError(SyncError):
    """Another run holds the cluster's lease and it has not expired: back off."""

    def __init__(self, cluster: str, expires_at: float) -> None:
        super().__init__(
            f"cluster {cluster}: another sync holds the lease until {iso_utc(expires_at)}; "
            "backing off"
        )
        self.cluster = cluster
        self.expires_at = expires_at


class LeaseLostError(SyncError):
    """The lease was taken over (it expired mid-run): this run must stop writing."""

    def __init__(self, cluster: str) -> None:
        super().__init__(f"cluster {cluster}: the sync lease was lost to another run")
        self.cluster = cluster


class StateError(SyncError):
    """The sync's own state for a cluster cannot be read or written."""

    def __init__(self, cluster: str, reason: str) -> None:
        super().__init__(f"cluster {cluster}: sync state {reason}")
        self.cluster = cluster
        self.reason = reason


class ConcurrentWriteError(StateError):
    """The state or the head changed since this run read it: another writer is at work."""


# Failures that end a cluster's run even inside a per-order ``except``: the lease is gone,
# or the state (or head) was changed by another writer.
RUN_FATAL: tuple[type[SyncError], ...] = (LeaseLostError, ConcurrentWriteError)


class CertificateRejected(SyncError):
    """An issued certificate failed verification; it is never published."""

    def __init__(self, order_name: str, reason: str) -> None:
        super().__init__(f"order {order_name}: certificate rejected: {reason}")
        self.order_name = order_name
        self.reason = reason


class UnknownClusterError(SyncError):
    """A cluster was asked for that the sync config does not define."""

    def __init__(self, cluster: str) -> None:
        super().__init__(f"cluster {cluster} is not configured in the sync config")
        self.cluster = cluster


class UnknownOrderError(SyncError):
    """``rekey`` was given order names the cluster's sync state does not hold: the sync has
    no key for them, so there is nothing to replace (a misspelt name, or another cluster's)."""

    def __init__(self, cluster: str, names: tuple[str, ...]) -> None:
        shown = ", ".join(repr(printable(name)) for name in names)
        subject = f"order {shown} is" if len(names) == 1 else f"orders {shown} are"
        super().__init__(
            f"{subject} not in cluster {cluster!r}: the sync holds no key for "
            f"{'it' if len(names) == 1 else 'them'} (an order the sync has not published yet "
            "gets a new key at its first sync anyway); nothing marked"
        )
        self.cluster = cluster
        self.names = names
