"""Where format v1 puts each published object in the store (docs/format.md, and
docs/store.md "Keys"): the one place the sync, the agent, ``certfleet nodes`` and the tamper tool
take object keys from.

Keys hold only cluster names, fixed words, hex hashes and node ids: never an order or DNS
name (the store is untrusted, and object keys are visible to anyone who can list it).

The ``*_MAX_BYTES`` caps are the largest object of each kind a reader accepts (the store
contract's ``get(max_bytes=)``): anything larger is refused before it is buffered. Each is
well above what the format lets the sync write for a realistic fleet, and far below what
would hurt a frontend's memory:

- head: 64 KiB holds 2,048 shard hashes, i.e. a cluster of over 4 million orders;
- shard: 16 MiB (about √orders entries of at most ~450 bytes each, plus tombstones);
- bundle: 4 MiB (a key, a leaf and 16 chain certificates of at most 64 KiB each, and
  1,000 DNS names);
- ack: 16 MiB (a compact ack lists only exceptions, each with at most 1 KiB of detail).
"""

from __future__ import annotations

import re

from certfleet.bundle.ack import validate_node_id
from certfleet.bundle.names import validate_cluster_name

_HEX = re.compile(r"[0-9a-f]{64}")

HEAD_MAX_BYTES = 64 * 1024
SHARD_MAX_BYTES = 16 * 1024 * 1024
BUNDLE_MAX_BYTES = 4 * 1024 * 1024
ACK_MAX_BYTES = 16 * 1024 * 1024


def hex_digest(digest: str) -> str:
    """``digest`` if it is 64 lowercase hex digits (a SHA-256 in a key); ValueError otherwise."""
    if not _HEX.fullmatch(digest):
        raise ValueError("object hashes in keys must be 64 lowercase hex digits")
    return digest


def cluster_prefix(cluster: str) -> str:
    return f"v1/clusters/{validate_cluster_name(cluster)}/"


def head_key(cluster: str) -> str:
    return cluster_prefix(cluster) + "head"


def shards_prefix(cluster: str) -> str:
    return cluster_prefix(cluster) + "shards/"


def bundles_prefix(cluster: str) -> str:
    return cluster_prefix(cluster) + "bundles/"


def acks_prefix(cluster: str) -> str:
    return cluster_prefix(cluster) + "acks/"


def shard_key(cluster: str, digest: str) -> str:
    """The key of the shard whose sealed bytes hash to ``digest`` (64 hex digits)."""
    return shards_prefix(cluster) + hex_digest(digest)


def bundle_key(cluster: str, digest: str) -> str:
    """The key of the bundle whose sealed bytes hash to ``digest`` (64 hex digits)."""
    return bundles_prefix(cluster) + hex_digest(digest)


def ack_key(cluster: str, node_id: str) -> str:
    return acks_prefix(cluster) + validate_node_id(node_id)
