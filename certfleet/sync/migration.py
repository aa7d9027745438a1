"""Moving a cluster's sync-private objects to the current sync secret.

A run loads its state with ``accept_old`` and, when it was not sealed with the current
sync secret (``certfleet.sync.sealing``), hands it to ``migrate`` before anything else:

- ``legacy`` (sealed with the cluster's secrets by a version before sync-private sealing):
  every node holds a cluster secret, so the state could be forged. It is accepted only
  when the signed head vouches for it: the head in the store verifies with the configured
  signing key, and the state's head record, shard list and orders and tombstones are
  exactly what that head publishes (the shards are opened and compared). A forged state
  that agrees with the signed head can change nothing that is published; anything else
  is refused with ``StateError`` (that cluster is reported; deleting the state object
  makes the sync start the cluster afresh).
- ``previous`` (sealed with the sync secret of ``previous_signing_key``): authentic.

In both cases each pending key is re-sealed with the current sync secret (one that cannot
be opened is dropped: the order gets a new key), the old object is recorded as
unreferenced, and the caller saves the state, now sealed with the current sync secret.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace

from certfleet.bundle import (
    ClusterSecret,
    PendingKey,
    content_hash_hex,
    open_pending,
    open_shard,
    seal_pending,
)
from certfleet.errors import CertfleetError
from certfleet.store import PreconditionFailed, Store
from certfleet.sync.errors import StateError
from certfleet.sync.headseen import HeadSeen
from certfleet.sync.layout import PENDING_MAX_BYTES, SHARD_MAX_BYTES, pending_key, shard_key
from certfleet.sync.sealing import LEGACY, SyncKeys
from certfleet.sync.state import ClusterState, read_bytes

log = logging.getLogger(__name__)

Published = dict[str, tuple[str, str, int, int]]


def migrate(
    store: Store,
    cluster: str,
    keys: SyncKeys,
    state: ClusterState,
    *,
    sealing: str,
    seen: HeadSeen,
    now: int,
) -> None:
    """Vouch for a state sealed the old way (``StateError`` if it cannot be) and re-seal
    its pending keys with the current sync secret."""
    if sealing == LEGACY:
        check_against_head(store, cluster, keys.legacy, state, seen)
    log.warning(
        "cluster %s: the sync state was sealed with %s; rewriting it under the sync key",
        cluster,
        "the cluster secrets" if sealing == LEGACY else "the previous signing key",
    )
    reseal_pending(store, cluster, keys, state, now)


def _published_by_state(state: ClusterState) -> tuple[Published, dict[str, int]]:
    orders = {
        name: (rec.bundle, rec.serial, rec.not_after, rec.install_after)
        for name, rec in state.orders.items()
    }
    return orders, dict(state.tombstones)


def check_against_head(
    store: Store,
    cluster: str,
    secrets: Sequence[ClusterSecret],
    state: ClusterState,
    seen: HeadSeen,
) -> None:
    """Refuse a legacy state unless it is the state of the signed head in the store."""
    head, recorded = seen.head, state.head
    if head is None or not seen.signed:
        raise StateError(
            cluster, "is sealed with a cluster secret and no signed head vouches for it"
        )
    if recorded is None or recorded.generation != head.generation:
        raise StateError(
            cluster, "is sealed with a cluster secret and disagrees with the signed head"
        )
    if tuple(bytes.fromhex(rec.object) for rec in state.shards) != head.shard_hashes:
        raise StateError(cluster, "is sealed with a cluster secret and lists other shards")
    orders: Published = {}
    tombstones: dict[str, int] = {}
    for index, digest in enumerate(head.shard_hashes):
        try:
            data = read_bytes(store, shard_key(cluster, digest.hex()), max_bytes=SHARD_MAX_BYTES)
            shard = open_shard(data, cluster=cluster, index=index, secrets=secrets)
        except CertfleetError as err:
            raise StateError(cluster, f"cannot be checked against shard {index}: {err}") from err
        for entry in shard.entries:
            orders[entry.order_name] = (
                entry.bundle_hash.hex(),
                entry.serial,
                entry.not_after,
                entry.install_after,
            )
        tombstones.update((stone.order_name, stone.removed_at) for stone in shard.tombstones)
    if (orders, tombstones) != _published_by_state(state):
        raise StateError(
            cluster, "is sealed with a cluster secret and disagrees with the published shards"
        )


def reseal_pending(
    store: Store, cluster: str, keys: SyncKeys, state: ClusterState, now: int
) -> None:
    """Re-seal every pending key with the current sync secret."""
    for name, record in sorted(state.pending.items()):
        old = pending_key(cluster, record.object)
        try:
            data = read_bytes(store, old, max_bytes=PENDING_MAX_BYTES)
            pending = _open_old(data, cluster, name, keys)
            sealed = seal_pending(pending, cluster=cluster, secrets=[keys.current])
        except CertfleetError as err:
            log.warning("cluster %s: dropping pending key of %s: %s", cluster, name, err)
            del state.pending[name]
            state.unreferenced.setdefault(old, now)
            continue
        digest = content_hash_hex(sealed)
        try:
            store.put_if_absent(pending_key(cluster, digest), sealed)
        except PreconditionFailed:
            pass  # content-addressed: the same bytes are there
        state.pending[name] = replace(record, object=digest)
        state.unreferenced.setdefault(old, now)


def _open_old(data: bytes, cluster: str, name: str, keys: SyncKeys) -> PendingKey:
    """A pending key sealed with any of the sync's keys, old ones included."""

    def opener(secrets: Sequence[ClusterSecret]) -> PendingKey:
        return open_pending(data, cluster=cluster, order_name=name, secrets=secrets)

    pending, _ = keys.open(
        data, opener, name=f"pending key for order {name} in cluster {cluster}", accept_old=True
    )
    return pending
