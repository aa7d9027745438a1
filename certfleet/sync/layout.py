"""Every store key the sync writes, built in one place (docs/format.md; docs/store.md "Keys").

Published objects live under ``v1/clusters/<cluster>/`` (their keys come from
``certfleet.bundle.layout``, shared with the agent); the sync's private state under
``v1/sync/``. Keys hold only cluster names, fixed words and hex hashes: never an order or
DNS name (the store is untrusted, and object keys are visible to anyone who can list it).
"""

from __future__ import annotations

from certfleet.bundle.layout import (
    ACK_MAX_BYTES,
    BUNDLE_MAX_BYTES,
    HEAD_MAX_BYTES,
    SHARD_MAX_BYTES,
    ack_key,
    acks_prefix,
    bundle_key,
    bundles_prefix,
    cluster_prefix,
    head_key,
    hex_digest,
    shard_key,
    shards_prefix,
)
from certfleet.bundle.names import validate_cluster_name

# The largest sync-private object of each kind the sync reads (the store contract's
# ``get(max_bytes=)``; the published kinds' caps come from ``certfleet.bundle.layout``).
# The state of a 100,000-order cluster is about 60 MB.
LEASE_MAX_BYTES = 64 * 1024
STATE_MAX_BYTES = 256 * 1024 * 1024
PENDING_MAX_BYTES = 1024 * 1024
FLEET_CACHE_MAX_BYTES = 64 * 1024 * 1024  # ~110 bytes per node: 11 MB at 100,000


def lease_key(cluster: str) -> str:
    return f"v1/sync/lease/{validate_cluster_name(cluster)}"


def state_key(cluster: str) -> str:
    return f"v1/sync/state/{validate_cluster_name(cluster)}"


def fleet_cache_key(cluster: str) -> str:
    return f"v1/sync/fleet/{validate_cluster_name(cluster)}"


def pending_prefix(cluster: str) -> str:
    return f"v1/sync/pending/{validate_cluster_name(cluster)}/"


def pending_key(cluster: str, digest: str) -> str:
    return pending_prefix(cluster) + hex_digest(digest)


__all__ = [
    "ACK_MAX_BYTES", "BUNDLE_MAX_BYTES", "FLEET_CACHE_MAX_BYTES", "HEAD_MAX_BYTES",
    "LEASE_MAX_BYTES", "PENDING_MAX_BYTES", "SHARD_MAX_BYTES", "STATE_MAX_BYTES",
    "ack_key", "acks_prefix", "bundle_key", "bundles_prefix", "cluster_prefix",
    "fleet_cache_key", "head_key", "lease_key", "pending_key", "pending_prefix", "shard_key",
    "shards_prefix", "state_key",
]  # fmt: skip
