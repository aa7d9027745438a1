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

The lease is JSON (owner id and expiry, Unix seconds) authenticated by an HMAC-SHA256
under a key derived from the sync-only secret (``SigningKey.sync_secret("state")``), which
no node holds. It is parsed only when it is at most ``MAX_LEASE_BYTES`` (so no nesting can
exhaust the parser). A lease that is too big, not JSON of this shape, or whose MAC does not
verify (forged, or written by a sync with another signing key, or by a version before
leases were authenticated; one MACed with ``previous_signing_key``'s secret is honoured)
is treated as **broken**: like an expired one, it is taken
over by a put conditioned on its ETag, with a warning. Treating it as held would let one
forged write keep the sync out for ever; whoever can write the store can delete the lease
anyway, and the conditional writes of the state and head still keep two runs apart.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
from collections.abc import Sequence
from typing import Callable

from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from certfleet.bundle import ClusterSecret
from certfleet.store import (
    ObjectNotFound,
    ObjectTooLarge,
    PreconditionFailed,
    Store,
    StoredObject,
    check_conditional_writes,
)
from certfleet.sync.errors import LeaseHeldError, LeaseLostError
from certfleet.sync.layout import LEASE_MAX_BYTES, lease_key

log = logging.getLogger(__name__)

Clock = Callable[[], float]
MAX_LEASE_BYTES = 512
MAC_INFO = b"certfleet/v1/sync-private/lease"


def mac_key(secret: ClusterSecret) -> bytes:
    """The lease's HMAC key: HKDF-SHA256(sync secret, no salt, info ``MAC_INFO``)."""
    return HKDF(algorithm=SHA256(), length=32, salt=None, info=MAC_INFO).derive(secret.key)


def _mac(key: bytes, cluster: str, owner: str, expires_at: float) -> str:
    message = json.dumps([cluster, owner, expires_at], separators=(",", ":")).encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def encode_lease(key: bytes, cluster: str, owner: str, expires_at: float) -> bytes:
    """The lease object: owner, expiry and their MAC (bound to the cluster)."""
    expires = round(expires_at, 3)
    mac = _mac(key, cluster, owner, expires)
    return json.dumps({"owner": owner, "expires_at": expires, "mac": mac}).encode()


def lease_expiry(key: bytes, cluster: str, data: bytes) -> float | None:
    """The expiry of an authentic lease object, or None when it is broken (too big, not
    this JSON shape, or its MAC does not verify)."""
    if len(data) > MAX_LEASE_BYTES:
        return None
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        return None
    if not isinstance(doc, dict):
        return None
    owner, expires_at, mac = doc.get("owner"), doc.get("expires_at"), doc.get("mac")
    if (
        not isinstance(owner, str)
        or not isinstance(mac, str)
        or isinstance(expires_at, bool)
        or not isinstance(expires_at, (int, float))
    ):
        return None
    if not hmac.compare_digest(_mac(key, cluster, owner, expires_at), mac):
        return None
    return float(expires_at)


class Lease:
    """One run's hold on one cluster; use ``acquire`` then ``release``."""

    def __init__(
        self,
        store: Store,
        cluster: str,
        *,
        duration: float,
        clock: Clock,
        secret: ClusterSecret,
        previous: Sequence[ClusterSecret] = (),
    ) -> None:
        self._store = store
        self._cluster = cluster
        self._mac_key = mac_key(secret)
        self._previous_keys = tuple(mac_key(old) for old in previous)
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

    def _encode(self, expires_at: float) -> bytes:
        return encode_lease(self._mac_key, self._cluster, self._owner, expires_at)

    def _expiry(self, data: bytes) -> float:
        """The stored lease's expiry; 0 (taken over at once) when it is broken."""
        for key in (self._mac_key, *self._previous_keys):
            expires_at = lease_expiry(key, self._cluster, data)
            if expires_at is not None:
                break
        if expires_at is None:
            log.warning("cluster %s: the lease object is broken or forged; taking it over",
                        self._cluster)  # fmt: skip
            return 0.0
        return expires_at

    def acquire(self) -> None:
        """Take the lease, or raise ``LeaseHeldError`` if another run holds it."""
        now = self._clock()
        data = self._encode(now + self._duration)
        try:
            current = self._store.get(self._key, max_bytes=LEASE_MAX_BYTES)
        except ObjectNotFound:
            current = None
        except ObjectTooLarge as err:  # broken: taken over unread, by its ETag
            if err.etag is None:
                raise
            current = StoredObject(b"", err.etag)
        try:
            if current is None:
                check_conditional_writes(self._store)
                self._etag = self._store.put_if_absent(self._key, data)
            else:
                expires_at = self._expiry(current.data)
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
                self._key, self._encode(now + self._duration), self._etag
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
            self._store.put_if_match(self._key, self._encode(0.0), self._etag)
        except PreconditionFailed:
            log.warning("cluster %s: lease was taken over before release", self._cluster)
        finally:
            self._etag = None
