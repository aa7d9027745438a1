"""The keys that seal the sync's private objects: its state and its pending keys.

They are sealed with the envelope (docs/format.md "Envelope") for one secret only,
``SigningKey.sync_secret("state")`` (id ``sync-state``, HKDF-SHA256 of the signing key's
seed): no node holds it, so no node can forge them (docs/format.md "Sync-private
objects"). Two older sealings are still opened, each only where the caller says it will
move the object to the current key at once (``certfleet.sealedobject.SealingKeys``):

- ``previous``: sealed with the sync secret of the config's ``previous_signing_key`` (the
  publisher key is being replaced; both secrets have the id ``sync-state``);
- ``legacy``: sealed with the cluster's secrets, as versions before sync-private sealing
  did. A cluster secret is held by every node, so such an object is trusted only as far as
  the signed head vouches for it (``certfleet.sync.migration``).
"""

from __future__ import annotations

from collections.abc import Sequence

from certfleet.bundle import ClusterSecret
from certfleet.sealedobject import CURRENT as CURRENT
from certfleet.sealedobject import LEGACY as LEGACY
from certfleet.sealedobject import PREVIOUS as PREVIOUS
from certfleet.sealedobject import SealingKeys
from certfleet.sync.settings import SyncSettings

STATE_PURPOSE = "state"


class SyncKeys(SealingKeys):
    """The sync config's ``state`` secrets (current and previous) and a cluster's secrets."""

    @classmethod
    def of(cls, settings: SyncSettings, secrets: Sequence[ClusterSecret]) -> SyncKeys:
        """The keys of a sync config, for a cluster with ``secrets``."""
        previous = settings.previous_signing_key
        return cls(
            settings.signing_key.sync_secret(STATE_PURPOSE),
            () if previous is None else (previous.sync_secret(STATE_PURPOSE),),
            tuple(secrets),
        )
