"""The sync's private state for one cluster (``v1/sync/state/<cluster>``).

One object per cluster, JSON sealed with the envelope for the sync-only secret (kind
``pending`` under the reserved identity ``/state``, which no order name can take: order
names cannot contain ``/``; ``certfleet.sync.sealing``), never for a cluster secret, which
every node holds. It records:

- ``shard_key``: the random HMAC key that spreads orders over shards (made once; kept
  across secret rotations);
- ``orders``: each published order's names, key type, bundle hash, serial, validity,
  ``install_after`` and the secret ids its bundle is sealed for;
- ``pending``: keys generated and stored (as sealed pending-key objects) before their CSR
  was submitted, awaiting their certificate;
- ``tombstones``, ``rekey`` marks, the ``shards`` last published (plaintext digest and
  object hash per index), the last ``head`` written, ``unreferenced`` objects with the
  time they stopped being referenced, when the store was last swept for orphans, and
  when the fleet's acks were last checked (``last_fleet_check``, ``fleetcheck``; absent
  from states written before it existed: 0);
- ``registry_revision`` and ``registry_write_id``: the revision of the cluster's order
  registry (ACME mode) this sync has acted on last and the id of the write that made it, so
  that a deleted registry, an older copy written back, or one that does not descend from
  that write is refused rather than read as removals (present only when set).

Written only with ``put_if_absent`` / ``put_if_match``; saving state that did not change
writes nothing. A state that the sync secret does not open is refused (``StateError``: that
cluster is reported, the others proceed), and so is one whose head generation lies more
than a day ahead. ``load(accept_old=True)`` also opens a state sealed the old ways
(``sealing``); the caller must then vouch for it and rewrite it (``certfleet.sync.migration``).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

from certfleet.bundle import FormatError, generation_too_far
from certfleet.sealedobject import SealedObject
from certfleet.store import Store
from certfleet.sync.errors import ConcurrentWriteError, StateError
from certfleet.sync.layout import STATE_MAX_BYTES, state_key
from certfleet.sync.sealing import SyncKeys

KIND = "pending"
IDENTITY = "/state"
VERSION = 1


@dataclass(frozen=True)
class OrderRecord:
    """A published certificate of one order (times in Unix seconds)."""

    __slots__ = (
        "bundle",
        "dns_names",
        "install_after",
        "key_type",
        "not_after",
        "not_before",
        "pubkey_hash",
        "secret_ids",
        "serial",
    )  # fmt: skip

    dns_names: tuple[str, ...]
    key_type: str
    bundle: str
    pubkey_hash: str
    serial: str
    not_before: int
    not_after: int
    install_after: int
    secret_ids: tuple[str, ...]


@dataclass(frozen=True)
class PendingRecord:
    """A key stored before its CSR: the sealed key object's hash and what it was made for."""

    __slots__ = ("created_at", "dns_names", "key_type", "object", "pubkey_hash", "reason")

    object: str
    pubkey_hash: str
    dns_names: tuple[str, ...]
    key_type: str
    created_at: int
    reason: str


@dataclass(frozen=True)
class ShardRecord:
    """A published shard: SHA-256 of its plaintext, and of its sealed object."""

    __slots__ = ("digest", "object")

    digest: str
    object: str


@dataclass(frozen=True)
class HeadRecord:
    generation: int
    issued_at: int
    valid_until: int
    secret_ids: tuple[str, ...]


@dataclass
class ClusterState:
    """The mutable working copy of a cluster's state during one run."""

    shard_key: bytes
    orders: dict[str, OrderRecord] = field(default_factory=dict)
    pending: dict[str, PendingRecord] = field(default_factory=dict)
    tombstones: dict[str, int] = field(default_factory=dict)
    rekey: set[str] = field(default_factory=set)
    shards: list[ShardRecord] = field(default_factory=list)
    shard_secret_ids: tuple[str, ...] = ()
    head: Optional[HeadRecord] = None
    unreferenced: dict[str, int] = field(default_factory=dict)
    last_sweep: int = 0
    last_fleet_check: int = 0
    registry_revision: int = 0
    registry_write_id: str = ""

    @classmethod
    def new(cls) -> ClusterState:
        return cls(shard_key=os.urandom(32))

    def encode(self) -> bytes:
        """Canonical JSON: equal states encode to equal bytes."""
        out = io.BytesIO()
        for part in self.encode_parts():
            out.write(part)
        return out.getvalue()

    def digest(self) -> bytes:
        """SHA-256 of ``encode()``, without holding the whole encoding at once."""
        hashed = hashlib.sha256()
        for part in self.encode_parts():
            hashed.update(part)
        return hashed.digest()

    def encode_parts(self) -> Iterator[bytes]:
        """``encode()`` in pieces (one per order), so a large state is hashed or written out
        without a second copy of itself as JSON objects: the bytes are exactly those of
        ``json.dumps(document, sort_keys=True, separators=(",", ":"))``."""
        document = {
            "version": VERSION,
            "shard_key": self.shard_key.hex(),
            "pending": {name: asdict(rec) for name, rec in self.pending.items()},
            "tombstones": self.tombstones,
            "rekey": sorted(self.rekey),
            "shards": [asdict(rec) for rec in self.shards],
            "shard_secret_ids": list(self.shard_secret_ids),
            "head": None if self.head is None else asdict(self.head),
            "unreferenced": self.unreferenced,
            "last_sweep": self.last_sweep,
            "last_fleet_check": self.last_fleet_check,
        }
        if self.registry_revision:  # absent at 0: a state without a registry encodes as before
            document["registry_revision"] = self.registry_revision
        if self.registry_write_id:
            document["registry_write_id"] = self.registry_write_id
        # "orders" sorts between the keys before it and those after it; neither side is empty
        before = _dumps({k: v for k, v in document.items() if k < "orders"})
        after = _dumps({k: v for k, v in document.items() if k > "orders"})
        yield f'{before[:-1]},"orders":{{'.encode()
        orders = self.orders
        separator = ""
        for name in sorted(orders):
            rec = orders[name]
            fields = {field: getattr(rec, field) for field in OrderRecord.__slots__}
            yield f"{separator}{_dumps(name)}:{_dumps(fields)}".encode()
            separator = ","
        yield f"}},{after[1:]}".encode()

    @classmethod
    def decode(cls, data: bytes) -> ClusterState:
        # Each order's record is made as soon as its JSON object is parsed (``_Records``),
        # so the parsed tree of a large state never exists whole beside its records.
        doc: dict[str, Any] = json.loads(data, object_hook=_Records())
        if doc.get("version") != VERSION:
            raise ValueError(f"unknown state version {doc.get('version')!r}")
        head = doc["head"]
        return cls(
            shard_key=bytes.fromhex(doc["shard_key"]),
            orders={n: _order(r) for n, r in doc["orders"].items()},
            pending={n: _pending(r) for n, r in doc["pending"].items()},
            tombstones={n: int(t) for n, t in doc["tombstones"].items()},
            rekey=set(doc["rekey"]),
            shards=[ShardRecord(r["digest"], r["object"]) for r in doc["shards"]],
            shard_secret_ids=tuple(doc["shard_secret_ids"]),
            head=None
            if head is None
            else HeadRecord(
                int(head["generation"]),
                int(head["issued_at"]),
                int(head["valid_until"]),
                tuple(head["secret_ids"]),
            ),
            unreferenced={k: int(t) for k, t in doc["unreferenced"].items()},
            last_sweep=int(doc["last_sweep"]),
            last_fleet_check=int(doc.get("last_fleet_check", 0)),
            registry_revision=int(doc.get("registry_revision", 0)),
            registry_write_id=str(doc.get("registry_write_id", "")),
        )


def _dumps(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


_ORDER_FIELDS = frozenset(OrderRecord.__slots__)


class _Records:
    """A ``json.loads`` object hook that turns each JSON object with exactly an order
    record's fields into an ``OrderRecord``, sharing equal key types and secret id tuples
    (a few values repeated over every order) instead of holding one copy per order."""

    def __init__(self) -> None:
        self._shared: dict[object, Any] = {}

    def __call__(self, raw: dict[str, Any]) -> Any:
        if len(raw) != len(_ORDER_FIELDS) or raw.keys() != _ORDER_FIELDS:
            return raw
        shared = self._shared
        key_type, secret_ids = raw["key_type"], tuple(raw["secret_ids"])
        raw["key_type"] = shared.setdefault(key_type, key_type)
        raw["secret_ids"] = shared.setdefault(secret_ids, secret_ids)
        raw["dns_names"] = tuple(raw["dns_names"])
        return OrderRecord(**raw)


def _order(raw: Any) -> OrderRecord:
    if not isinstance(raw, OrderRecord):  # not an object with exactly the record's fields
        raise ValueError("not an order record")
    return raw


def _pending(raw: dict[str, Any]) -> PendingRecord:
    return PendingRecord(**dict(raw, dns_names=tuple(raw["dns_names"])))


def read_bytes(store: Store, key: str, *, max_bytes: int) -> bytes:
    """The object's bytes (``ObjectNotFound`` if missing, ``ObjectTooLarge`` over the cap)."""
    return store.get(key, max_bytes=max_bytes).data


class StateStore:
    """Loads and conditionally saves one cluster's state, remembering its ETag."""

    def __init__(self, store: Store, cluster: str, keys: SyncKeys) -> None:
        self._cluster = cluster
        self._object = SealedObject(
            store,
            state_key(cluster),
            keys,
            kind=KIND,
            cluster=cluster,
            identity=IDENTITY,
            max_bytes=STATE_MAX_BYTES,
            lost_race=lambda: ConcurrentWriteError(cluster, "was changed by another writer"),
        )

    @property
    def found(self) -> bool:
        """True when the last ``load`` (or a ``save`` since) found a stored state; False
        when ``load`` made a fresh one."""
        return self._object.etag is not None

    @property
    def sealing(self) -> str:
        """How the state loaded last was sealed (``certfleet.sync.sealing``)."""
        return self._object.sealing

    def load(self, *, now_ms: int, accept_old: bool = False) -> ClusterState:
        """The stored state, or a fresh one (with a new shard key) if there is none.

        ``sealing`` then says how it was sealed; with ``accept_old`` it may be ``previous``
        or ``legacy`` (see ``certfleet.sync.sealing``), and the next ``save`` rewrites it.
        """
        cluster = self._cluster

        def decode(plain: bytes) -> ClusterState:
            try:
                state = ClusterState.decode(plain)
            except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as err:
                raise StateError(cluster, "is not valid JSON of this version") from err
            if state.head is not None and generation_too_far(state.head.generation, now_ms):
                raise StateError(
                    cluster, f"records generation {state.head.generation}, more than a day ahead"
                )
            return state

        try:
            state = self._object.load(decode, accept_old=accept_old)
        except FormatError as err:
            raise StateError(
                cluster, f"cannot be opened with this sync's key: {err.reason}"
            ) from err
        return ClusterState.new() if state is None else state

    def save(self, state: ClusterState) -> bool:
        """Write the state if it changed (or was sealed the old way); True if it wrote.

        Whether it changed is decided on the digest of its encoding, made order by order:
        a run that changed nothing never holds its state encoded whole."""
        if self._object.holds(state.digest()):
            return False
        return self._object.save_encoded(state.encode)
