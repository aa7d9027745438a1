"""Which clusters of a sync config keep their orders in the registry (ACME mode).

A cluster is in ACME mode when its own ``provider`` says ``"acme"``, or it says nothing
and the top-level ``provider`` does (the default is ``"sslmate"``: orders at the APIv3).
The CLI keeps the orders of a config whose clusters are all in ACME mode in the registry,
and in a mixed config each order where its cluster is (``certfleet.cli.orderstore``).
"""

from __future__ import annotations

from certfleet.bundle import ClusterSecret
from certfleet.config.sync import SyncConfig

ACME = "acme"


def acme_clusters(config: SyncConfig) -> tuple[str, ...]:
    """The names of ``config``'s clusters whose orders live in the registry."""
    top = getattr(config, "provider", None) or "sslmate"
    return tuple(
        cluster.name
        for cluster in config.clusters
        if (getattr(cluster, "provider", None) or top) == ACME
    )


def registry_secret(config: SyncConfig) -> ClusterSecret:
    """The secret that seals the registry, derived from the sync config's signing key."""
    return config.signing_key.sync_secret("registry")


def previous_registry_secrets(config: SyncConfig) -> tuple[ClusterSecret, ...]:
    """The registry secret of ``previous_signing_key`` (during a rotation), if it is set."""
    previous = getattr(config, "previous_signing_key", None)
    return () if previous is None else (previous.sync_secret("registry"),)
