"""The JSON form of the agent's state: the index's parts, the record files, schema 1.

Every document is compact JSON with sorted keys, so the same content gives the same
bytes: an order bucket's record file is named by the BLAKE2b digest of those bytes
(``content_digest``), and ``node_agent.statestore`` refuses a record that does not match its
name. Order names are spread over ``BUCKETS`` record files by ``bucket_of``, stable across
versions. ``from_schema_1`` reads a ``state.json`` of schema 1 (everything in one
document). What is written where and when is ``node_agent.statestore``'s.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from certfleet.bundle import ShardEntry, Tombstone
from node_agent.agentstate import (
    AgentState,
    Backoff,
    ClusterState,
    InstalledOrder,
    OrderTable,
    OwedCommand,
    ShardRecord,
)

BUCKETS = 1024
SCHEMA = 2
OLD_SCHEMA = 1


def bucket_of(order_name: str) -> int:
    """The order bucket an order name is recorded in (stable across versions).

    A cryptographic hash, not CRC-32: CRC is linear, and names that differ in a few digits
    (``web001`` … ``web999``) fall into a few hundred buckets of 1,024."""
    digest = hashlib.blake2b(order_name.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % BUCKETS


def dumps(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def _entry(raw: list[Any]) -> ShardEntry:
    name, digest, serial, not_after, install_after = raw
    return ShardEntry(name, bytes.fromhex(digest), serial, int(not_after), int(install_after))


def shard_json(record: ShardRecord) -> bytes:
    return dumps(
        {
            "entries": [
                [e.order_name, e.bundle_hash.hex(), e.serial, e.not_after, e.install_after]
                for e in record.entries
            ],
            "tombstones": [[t.order_name, t.removed_at] for t in record.tombstones],
        }
    )


def shard_record(name: str, raw: dict[str, Any]) -> ShardRecord:
    return ShardRecord(
        name,
        tuple(_entry(e) for e in raw["entries"]),
        tuple(Tombstone(name, int(removed_at)) for name, removed_at in raw["tombstones"]),
    )


def order_json(order: InstalledOrder) -> dict[str, Any]:
    raw = dict(vars(order))  # flat but for ``previous`` (asdict is slow on large states)
    raw["copies"] = dict(order.copies)
    raw["dns_names"] = list(order.dns_names)
    raw["previous"] = order_json(order.previous) if order.previous else None
    return raw


def installed_order(raw: dict[str, Any]) -> InstalledOrder:
    previous = raw.pop("previous", None)
    return InstalledOrder(**raw, previous=installed_order(previous) if previous else None)


def cluster_json(cluster: ClusterState) -> dict[str, Any]:
    return {
        "applied_etag": cluster.applied_etag,
        "applied_generation": cluster.applied_generation,
        "accepted_generation": cluster.accepted_generation,
        "valid_until": cluster.valid_until,
        "shard_count": cluster.shard_count,
        "shards": {str(index): record.hash for index, record in cluster.shards.items()},
    }


def backoff_json(backoffs: dict[str, Backoff]) -> dict[str, Any]:
    return {name: vars(held) for name, held in sorted(backoffs.items())}


def backoffs(raw: dict[str, Any]) -> dict[str, Backoff]:
    """The backoffs of an index; an index without them (written before they existed) has
    none."""
    return {
        str(name): Backoff(
            cluster=str(held["cluster"]),
            bundle_hash=str(held["bundle_hash"]),
            attempts=int(held["attempts"]),
            retry_at=int(held["retry_at"]),
            error=str(held["error"]),
        )
        for name, held in raw.get("backoff", {}).items()
    }


def _entry_of_schema_1(raw: dict[str, Any]) -> ShardEntry:
    return _entry(
        [raw["order_name"], raw["bundle_hash"], raw["serial"], raw["not_after"],
         raw["install_after"]]
    )  # fmt: skip


def from_schema_1(raw: dict[str, Any]) -> AgentState:
    """A state.json of schema 1: every shard entry and installed order in one document."""
    state = AgentState()
    for name, cluster in raw.get("clusters", {}).items():
        shards = {
            int(index): ShardRecord(
                record["hash"],
                tuple(_entry_of_schema_1(e) for e in record["entries"]),
                tuple(
                    Tombstone(t["order_name"], int(t["removed_at"])) for t in record["tombstones"]
                ),
            )
            for index, record in cluster.pop("shards", {}).items()
        }
        state.clusters[name] = ClusterState(**cluster, shards=shards)
    orders = raw.get("orders", {})
    state.orders = OrderTable((name, installed_order(order)) for name, order in orders.items())
    state.owed = [OwedCommand(**owed) for owed in raw.get("owed", [])]
    return state


def content_digest(data: bytes) -> str:
    """The name of a record file holding ``data``."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()
