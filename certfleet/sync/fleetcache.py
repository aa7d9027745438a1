"""What the fleet check keeps of the acks it read (``v1/sync/fleet/<cluster>``).

So that a check reads only the acks that changed since the last one: for each node whose
ack opened, the ETag the listing gave it and what the check needs to assess the node again
(``certfleet.sync.nodereport.KnownAck``: hostname, generation, report time, the orders that
failed or owe an on_update, and the ack's declared owed list). One object per cluster, JSON
sealed as the sync state is (``certfleet.sync.sealing``: for the sync-only secret, kind
``pending`` under the reserved identity ``/fleet``, which no order name can take): no node
can read it, nor forge it to hide a problem node.

Written unconditionally (the run holds the cluster's lease) and only when it changed. It is
a cache: a missing one, or one that does not open with the current sync secret (a signing
key replaced, a bad write), is an empty one and costs one full read of the acks; it is
never an error.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from certfleet.bundle import Ack, AckOrder, FormatError, OwedUpdate
from certfleet.sealedobject import SealedObject
from certfleet.store import ObjectTooLarge, Store
from certfleet.sync.layout import FLEET_CACHE_MAX_BYTES, fleet_cache_key
from certfleet.sync.nodereport import KnownAck
from certfleet.sync.sealing import SyncKeys

log = logging.getLogger(__name__)

KIND = "pending"
IDENTITY = "/fleet"
VERSION = 2  # 2: with each ack's declared owed list (a version-1 cache is an empty one)


def encode_known(known: Mapping[str, KnownAck]) -> bytes:
    """Canonical JSON: the same acks give the same bytes."""
    acks = {
        node_id: [
            item.etag,
            item.ack.hostname,
            item.ack.generation,
            item.ack.reported_at,
            [[o.order_name, o.state, o.serial, o.detail] for o in item.ack.orders],
            None if item.ack.owed is None else [[o.order_name, o.command] for o in item.ack.owed],
        ]
        for node_id, item in known.items()
    }
    document = {"version": VERSION, "acks": acks}
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def decode_known(data: bytes) -> dict[str, KnownAck]:
    """ValueError (or KeyError, TypeError, FormatError) when it is not this version's."""
    document: dict[str, Any] = json.loads(data)
    if document.get("version") != VERSION:
        raise ValueError(f"unknown fleet cache version {document.get('version')!r}")
    known: dict[str, KnownAck] = {}
    for node_id, (etag, hostname, generation, reported_at, orders, owed) in document[
        "acks"
    ].items():
        problems = tuple(AckOrder(*order) for order in orders)
        owing = None if owed is None else tuple(OwedUpdate(*item) for item in owed)
        ack = Ack(node_id, hostname, int(generation), int(reported_at), problems, owing)
        known[node_id] = KnownAck(str(etag), ack)
    return known


class AckCache:
    """Loads and saves one cluster's ``KnownAck``s."""

    def __init__(self, store: Store, cluster: str, keys: SyncKeys) -> None:
        self._cluster = cluster
        self._object = SealedObject(
            store,
            fleet_cache_key(cluster),
            keys,
            kind=KIND,
            cluster=cluster,
            identity=IDENTITY,
            max_bytes=FLEET_CACHE_MAX_BYTES,
        )

    def load(self) -> dict[str, KnownAck]:
        """The kept acks; empty when there is none or it does not open (logged).

        A store error other than a missing object propagates."""
        try:
            known = self._object.load(decode_known, accept_old=False)
        except ObjectTooLarge:
            log.warning("cluster %s: the fleet check's cache is over %d bytes; every ack is "
                        "read again", self._cluster, FLEET_CACHE_MAX_BYTES)  # fmt: skip
            return {}
        except (FormatError, ValueError, KeyError, TypeError) as err:
            log.warning("cluster %s: the fleet check's cache is unusable (%s); every ack "
                        "is read again", self._cluster, type(err).__name__)  # fmt: skip
            return {}
        return {} if known is None else known

    def save(self, known: Mapping[str, KnownAck]) -> bool:
        """Write ``known`` if it differs from what was loaded or saved; True if written."""
        return self._object.overwrite(encode_known(known))
