"""A sync-private object: one sealed document at one store key, read and written back
conditionally.

The sync state, the ACME state, the order registry and the fleet check's cache are each
one such object per cluster (docs/format.md "Sync-private objects"): the envelope
(``certfleet.bundle``) sealed for one secret only, ``SigningKey.sync_secret(purpose)``,
which no node holds. ``SealedObject.load`` reads it (at most ``max_bytes``, over that
``ObjectTooLarge``), opens it and keeps the ETag it was read at; ``SealedObject.save``
seals a new plaintext for the current secret and writes it with ``put_if_absent`` (nothing
was read) or ``put_if_match`` (the ETag read), so a writer that lost a race learns it
(``lost_race``, or the store's ``PreconditionFailed``) instead of overwriting.

``SealingKeys`` says which secrets open such an object. Two older sealings are opened
only when the caller asks (``accept_old``), each because it will write the object back
sealed for the current secret at once:

- ``previous``: sealed with the sync secret of the config's ``previous_signing_key`` (the
  publisher key is being replaced; it has the current secret's id);
- ``legacy``: sealed with the cluster's secrets, as versions before sync-private sealing
  did. Every node holds a cluster secret, so such an object is trusted only as far as the
  caller can vouch for it (the sync state: ``certfleet.sync.migration``).

Only the sync and the processes that keep its objects (the order API, the admin CLI)
use this module; the node agent never does.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Callable, TypeVar

from certfleet.bundle import (
    ClusterSecret,
    IntegrityError,
    NoUsableSecretError,
    open_sealed,
    seal,
    seal_parts,
    wrapped_for,
)
from certfleet.bundle.envelope import object_name
from certfleet.store import ObjectNotFound, PreconditionFailed, Store

T = TypeVar("T")

CURRENT = "current"
PREVIOUS = "previous"
LEGACY = "legacy"


@dataclass(frozen=True, repr=False)
class SealingKeys:
    """The current sync secret, the previous one (if any) and the cluster's secrets."""

    current: ClusterSecret
    previous: tuple[ClusterSecret, ...] = ()
    legacy: tuple[ClusterSecret, ...] = ()

    def __repr__(self) -> str:
        kind = type(self).__name__
        return f"{kind}(previous={len(self.previous)}, legacy={len(self.legacy)}, <redacted>)"

    def seal(self, kind: str, cluster: str, identity: str, payload: bytes) -> bytes:
        """Seal a sync-private object for the current sync secret only."""
        return seal(kind, cluster, identity, payload, [self.current])

    def seal_parts(
        self, kind: str, cluster: str, identity: str, payload: bytes
    ) -> tuple[bytes, bytes]:
        """``seal`` in two parts whose concatenation is the sealed object (``seal_parts``)."""
        return seal_parts(kind, cluster, identity, payload, [self.current])

    def open(
        self,
        data: bytes,
        opener: Callable[[Sequence[ClusterSecret]], T],
        *,
        name: str,
        accept_old: bool,
    ) -> tuple[T, str]:
        """``opener`` applied with the secrets the object is sealed for, and which sealing
        it was (``CURRENT``, ``PREVIOUS`` or ``LEGACY``); the old two only with
        ``accept_old``. A ``FormatError`` when no allowed secret opens it."""
        wraps = set(wrapped_for(data, name=name))
        attempts: list[tuple[str, tuple[ClusterSecret, ...]]] = []
        if self.current.id in wraps:
            attempts.append((CURRENT, (self.current,)))
            if accept_old and self.previous:
                attempts.append((PREVIOUS, self.previous))
        elif accept_old and wraps & {secret.id for secret in self.legacy}:
            attempts.append((LEGACY, self.legacy))
        if not attempts:
            held = [self.current.id] + ([s.id for s in self.legacy] if accept_old else [])
            raise NoUsableSecretError(name, sorted(wraps), sorted(set(held)))
        for sealing, secrets in attempts[:-1]:
            try:
                return opener(secrets), sealing
            except IntegrityError:
                continue
        sealing, secrets = attempts[-1]
        return opener(secrets), sealing


class SealedObject:
    """The sealed object at ``key`` (envelope ``kind``, ``cluster``, ``identity``).

    After ``load``: ``etag`` is the ETag read (None: there was no object, or it did not
    open or decode), ``sealing`` how it was sealed, and ``saved`` the SHA-256 of its
    plaintext when sealed for the current secret (None otherwise, so that ``save`` rewrites
    it): a digest, not the plaintext, so a large object is not held twice for the whole
    run. ``save`` updates all three.
    """

    def __init__(
        self,
        store: Store,
        key: str,
        keys: SealingKeys,
        *,
        kind: str,
        cluster: str,
        identity: str,
        max_bytes: int,
        lost_race: Callable[[], Exception] | None = None,
    ) -> None:
        self._store = store
        self._key = key
        self._keys = keys
        self._kind, self._cluster, self._identity = kind, cluster, identity
        self._max_bytes = max_bytes
        self._lost_race = lost_race
        self.etag: str | None = None
        self.sealing = CURRENT
        self.saved: bytes | None = None

    @property
    def key(self) -> str:
        return self._key

    def load(self, decode: Callable[[bytes], T], *, accept_old: bool) -> T | None:
        """``decode`` of the plaintext, or None when there is no object.

        Over ``max_bytes``: ``ObjectTooLarge``; not opened by the secrets allowed (see
        ``SealingKeys.open``): a ``FormatError``. What ``decode`` raises propagates; the
        object is remembered (ETag, sealing, plaintext digest) only when it decoded. The
        sealed bytes are let go before ``decode`` runs."""
        self.etag, self.sealing, self.saved = None, CURRENT, None
        try:
            stored = self._store.get(self._key, max_bytes=self._max_bytes)
        except ObjectNotFound:
            return None
        etag, envelope = stored.etag, (self._kind, self._cluster, self._identity)
        opener: Callable[[Sequence[ClusterSecret]], bytes] = partial(
            open_sealed, *envelope, stored.data
        )
        name = object_name(*envelope)
        plain, sealing = self._keys.open(stored.data, opener, name=name, accept_old=accept_old)
        del stored, opener  # the sealed bytes: not held beside the plaintext and its decoding
        digest = hashlib.sha256(plain).digest() if sealing == CURRENT else None
        decoded = decode(plain)
        self.etag, self.sealing, self.saved = etag, sealing, digest
        return decoded

    def holds(self, digest: bytes) -> bool:
        """True when ``digest`` is the SHA-256 of the plaintext stored (as read or last
        written, sealed for the current secret): saving that plaintext writes nothing."""
        return digest == self.saved

    def save(self, plain: bytes) -> bool:
        """Seal ``plain`` for the current secret and write it conditionally on what was
        read, unless it is what is stored already; True if it wrote.

        A lost race raises ``lost_race()`` (from the store's ``PreconditionFailed``, which
        propagates as it is when ``lost_race`` is None)."""
        return self.save_encoded(lambda: plain)

    def save_encoded(self, encode: Callable[[], bytes]) -> bool:
        """``save(encode())``, for a large object: its plaintext is held only until it is
        encrypted (two copies of its size at most, not three)."""
        sealed = self._seal_if_changed(encode)
        if sealed is None:
            return False
        data, digest = sealed
        try:
            if self.etag is None:
                self.etag = self._store.put_if_absent(self._key, data)
            else:
                self.etag = self._store.put_if_match(self._key, data, self.etag)
        except PreconditionFailed as err:
            if self._lost_race is None:
                raise
            raise self._lost_race() from err
        self.saved, self.sealing = digest, CURRENT
        return True

    def overwrite(self, plain: bytes) -> bool:
        """``save`` without the condition, for an object only a lease holder writes."""
        sealed = self._seal_if_changed(lambda: plain)
        if sealed is None:
            return False
        data, digest = sealed
        self.etag = self._store.put(self._key, data)
        self.saved, self.sealing = digest, CURRENT
        return True

    def _seal_if_changed(self, encode: Callable[[], bytes]) -> tuple[bytes, bytes] | None:
        """The sealed object and the plaintext's digest; None if it is what is stored."""
        plain = encode()
        digest = hashlib.sha256(plain).digest()
        if self.holds(digest):
            return None
        envelope = (self._kind, self._cluster, self._identity)
        prefix, ciphertext = self._keys.seal_parts(*envelope, plain)
        del plain  # let go before the sealed object is joined: not three copies at once
        return prefix + ciphertext, digest
