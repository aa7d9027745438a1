"""What the engine reads from the sync config, as protocols.

``certfleet.config.sync.SyncConfig`` and ``ClusterSyncConfig`` satisfy these; tests and
other callers may pass any object with the same attributes. Durations are seconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional, Protocol

from certfleet.bundle import ClusterSecret, SigningKey


class ClusterPolicy(Protocol):
    """One cluster's settings: its secrets (newest first) and key policy."""

    @property
    def name(self) -> str: ...

    @property
    def secrets(self) -> tuple[ClusterSecret, ...]: ...

    @property
    def renew_days(self) -> Optional[int]: ...

    def key_type_for(self, order_name: str) -> str: ...

    def reuse_key_for(self, order_name: str) -> bool: ...

    @property
    def fleet_check_interval(self) -> Optional[float]:
        """None: the sync-wide setting."""

    @property
    def fleet_stale_after(self) -> Optional[float]:
        """None: the sync-wide setting."""


class SyncSettings(Protocol):
    """The sync-wide settings."""

    @property
    def store(self) -> str: ...

    @property
    def store_endpoint(self) -> Optional[str]: ...

    @property
    def api_key(self) -> Optional[str]: ...

    @property
    def api_endpoint(self) -> str: ...

    @property
    def signing_key(self) -> SigningKey: ...

    @property
    def previous_signing_key(self) -> Optional[SigningKey]:
        """The signing key being replaced: its sync secret still opens the sync's state."""

    @property
    def skew_margin(self) -> float: ...

    @property
    def head_validity(self) -> float: ...

    @property
    def gc_grace(self) -> float: ...

    @property
    def lease_duration(self) -> float: ...

    @property
    def issue_wait(self) -> float: ...

    @property
    def fleet_check_interval(self) -> float:
        """How often each cluster's acks are read; 0: never (``certfleet.sync.fleetcheck``)."""

    @property
    def fleet_stale_after(self) -> float: ...

    @property
    def clusters(self) -> Sequence[ClusterPolicy]: ...
