"""What every part of one cluster run reads and none changes: the run's context.

``RunContext`` names the cluster, its policy (secrets, key types, reuse and check
intervals), the sync-wide settings, the keys derived from them (``SyncKeys``: the
sync-private secret and the cluster's secrets) and the wall clock (Unix seconds). It is
frozen: the parts of a run (``audit``, ``issuer``, ``publisher``, ``fleetcheck``) each take
it with the other few inputs they need (the store or a ``RunWriter``, the ``Budget``, the
``RunTally``, the state), so each can be built on its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from certfleet.bundle import ClusterSecret
from certfleet.sync.sealing import SyncKeys
from certfleet.sync.settings import ClusterPolicy, SyncSettings

Clock = Callable[[], float]


@dataclass(frozen=True, repr=False)
class RunContext:
    """One cluster run's fixed inputs (its secrets are redacted from ``repr``): ``secrets``
    are the cluster's, newest first (what bundles and shards are sealed for)."""

    cluster: str
    policy: ClusterPolicy
    settings: SyncSettings
    secrets: tuple[ClusterSecret, ...]
    keys: SyncKeys
    clock: Clock

    @classmethod
    def of(
        cls, cluster: str, policy: ClusterPolicy, settings: SyncSettings, clock: Clock
    ) -> RunContext:
        """The context of ``cluster``'s run, its keys derived from the settings and policy."""
        secrets = tuple(policy.secrets)
        return cls(cluster, policy, settings, secrets, SyncKeys.of(settings, secrets), clock)

    def __repr__(self) -> str:
        return f"RunContext(cluster={self.cluster!r}, <redacted>)"
