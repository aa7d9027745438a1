"""The single-writer lease on a cluster's sync state (``v1/sync/lease/<cluster>``).

``acquire`` reads the lease object first. When there is none, it is created with
``put_if_absent``; when there is one that has expired (or was released by writing an
expiry in the past), it is taken over with ``put_if_match`` on the ETag just read; a live
lease is never written to: the run backs off with ``LeaseHeldError``. Of two racing runs
at most one conditional write wins and the other backs off. ``release`` writes an expiry
in the past, conditioned on the holder's ETag, so a no-change run costs one read and two
writes (take over, release). The holder refreshes the lease when half its duration has
passed; a refresh that loses means another run took over, and this one must stop writing
(``LeaseLostError``).

When there is no lease object at all (the first run on this store for this cluster, or
one after the store was wiped), ``acquire`` first runs
``certfleet.store.check_conditional_writes``: a server that accepts a put whose
``If-None-Match``/``If-Match`` should have failed is refused with
``ConditionalWritesUnsupported`` before the sync writes anything else, and again on every
run until it is fixed (no lease is ever created there). Once the lease exists the probe
never runs again, so normal runs pay nothing for it.

The lease is plain JSON (owner id and expiry, Unix seconds): it carries no secret.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Callable

from certfleet.store import ObjectNotFound, PreconditionFailed, Store, check_conditional_writes
from certfleet.sync.errors import LeaseHeldError, LeaseLostError
from certfleet.sync.layout import LEASE_MAX_BYTES, lease_key

log = logging.getLogger(__name__)

Clock = Callable[[], float]


def _encode(owner: str, expires_at: float) -> bytes:
    return json.dumps({"owner": owner, "expires_at": round(expires_at, 3)}).encode()


def _expires_at(data: bytes) -> float:
    """The lease's expiry; an unreadable lease counts as expired (it can be taken over)."""
    try:
        value = json.loads(data)["expires_at"]
    except (ValueError, KeyError, TypeError):
        return 0.0
    return float(value) if isinstance(value, (int, float)) else 0.0


class Lease:
    """One run's hold on one cluster; use ``acquire`` then ``release``."""

    def __init__(self, store: Store, cluster: str, *, duration: float, clock: Clock) -> None:
        self._store = store
        self._cluster = cluster
        self._key = lease_key(cluster)
        self._duration = duration
        self._clock = clock
        self._owner = os.urandom(8).hex()
        self._etag: str | None = None
        self._taken_at = 0.0

    @property
    def held(self) -> bool:
        return self._etag is not None

    @property
    def owner(self) -> str:
        """This holder's random id, as written in the lease object."""
        return self._owner

    def acquire(self) -> None:
        """Take the lease, or raise ``LeaseHeldError`` if another run holds it."""
        now = self._clock()
        data = _encode(self._owner, now + self._duration)
        try:
            current = self._store.get(self._key, max_bytes=LEASE_MAX_BYTES)
        except ObjectNotFound:
            current = None
        try:
            if current is None:
                check_conditional_writes(self._store)
                self._etag = self._store.put_if_absent(self._key, data)
            else:
                expires_at = _expires_at(current.data)
                if expires_at > now:
                    raise LeaseHeldError(self._cluster, expires_at)
                self._etag = self._store.put_if_match(self._key, data, current.etag)
        except PreconditionFailed as err:  # another run's conditional write won the race
            raise LeaseHeldError(self._cluster, now + self._duration) from err
        self._taken_at = now
        log.debug("cluster %s: lease taken", self._cluster)

    def refresh(self) -> None:
        """Extend the lease when half of it has passed; ``LeaseLostError`` if it was taken."""
        now = self._clock()
        if self._etag is None or now - self._taken_at < self._duration / 2:
            return
        try:
            self._etag = self._store.put_if_match(
                self._key, _encode(self._owner, now + self._duration), self._etag
            )
        except PreconditionFailed as err:
            self._etag = None
            raise LeaseLostError(self._cluster) from err
        self._taken_at = now

    def release(self) -> None:
        """Give the lease up (mark it expired); losing the race here is only logged."""
        if self._etag is None:
            return
        try:
            self._store.put_if_match(self._key, _encode(self._owner, 0.0), self._etag)
        except PreconditionFailed:
            log.warning("cluster %s: lease was taken over before release", self._cluster)
        finally:
            self._etag = None
