"""Every store key the sync writes, built in one place (DESIGN.md "Store layout").

Published objects live under ``v1/clusters/<cluster>/``; the sync's private state under
``v1/sync/``. Keys hold only cluster names, fixed words and hex hashes: never an order or
DNS name (the store is untrusted, and object keys are visible to anyone who can list it).
"""

from __future__ import annotations

import re

from certfleet.bundle.names import validate_cluster_name

_HEX = re.compile(r"[0-9a-f]{64}")


def _hex(digest: str) -> str:
    if not _HEX.fullmatch(digest):
        raise ValueError("object hashes in keys must be 64 lowercase hex digits")
    return digest


def cluster_prefix(cluster: str) -> str:
    return f"v1/clusters/{validate_cluster_name(cluster)}/"


def head_key(cluster: str) -> str:
    return cluster_prefix(cluster) + "head"


def bundles_prefix(cluster: str) -> str:
    return cluster_prefix(cluster) + "bundles/"


def shards_prefix(cluster: str) -> str:
    return cluster_prefix(cluster) + "shards/"


def bundle_key(cluster: str, digest: str) -> str:
    return bundles_prefix(cluster) + _hex(digest)


def shard_key(cluster: str, digest: str) -> str:
    return shards_prefix(cluster) + _hex(digest)


def lease_key(cluster: str) -> str:
    return f"v1/sync/lease/{validate_cluster_name(cluster)}"


def state_key(cluster: str) -> str:
    return f"v1/sync/state/{validate_cluster_name(cluster)}"


def pending_prefix(cluster: str) -> str:
    return f"v1/sync/pending/{validate_cluster_name(cluster)}/"


def pending_key(cluster: str, digest: str) -> str:
    return pending_prefix(cluster) + _hex(digest)
