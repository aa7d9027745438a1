"""The keys that seal the sync's private objects: its state and its pending keys.

They are sealed with the envelope (docs/format.md "Envelope") for one secret only,
``SigningKey.sync_secret("state")`` (id ``sync-state``, HKDF-SHA256 of the signing key's
seed): no node holds it, so no node can forge them (docs/format.md "Sync-private
objects"). Two older sealings are still opened, each only where the caller says it will
move the object to the current key at once:

- ``previous``: sealed with the sync secret of the config's ``previous_signing_key`` (the
  publisher key is being replaced; both secrets have the id ``sync-state``);
- ``legacy``: sealed with the cluster's secrets, as versions before sync-private sealing
  did. A cluster secret is held by every node, so such an object is trusted only as far as
  the signed head vouches for it (``certfleet.sync.migration``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Callable, TypeVar

from certfleet.bundle import ClusterSecret, IntegrityError, NoUsableSecretError, seal, wrapped_for
from certfleet.sync.settings import SyncSettings

T = TypeVar("T")

CURRENT = "current"
PREVIOUS = "previous"
LEGACY = "legacy"
STATE_PURPOSE = "state"


@dataclass(frozen=True, repr=False)
class SyncKeys:
    """The current sync secret, the previous one (if any) and the cluster's secrets."""

    current: ClusterSecret
    previous: tuple[ClusterSecret, ...] = ()
    legacy: tuple[ClusterSecret, ...] = ()

    @classmethod
    def of(cls, settings: SyncSettings, secrets: Sequence[ClusterSecret]) -> SyncKeys:
        """The keys of a sync config, for a cluster with ``secrets``."""
        previous = settings.previous_signing_key
        return cls(
            settings.signing_key.sync_secret(STATE_PURPOSE),
            () if previous is None else (previous.sync_secret(STATE_PURPOSE),),
            tuple(secrets),
        )

    def __repr__(self) -> str:
        return f"SyncKeys(previous={len(self.previous)}, legacy={len(self.legacy)}, <redacted>)"

    def seal(self, kind: str, cluster: str, identity: str, payload: bytes) -> bytes:
        """Seal a sync-private object for the current sync secret only."""
        return seal(kind, cluster, identity, payload, [self.current])

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
