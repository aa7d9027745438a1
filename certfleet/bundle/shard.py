"""Index shards: which bundle is current for each order, and which orders were removed.

An order belongs to shard ``HMAC-SHA256(shard_key, order_name) mod count`` (the sync keeps
the key; agents never compute it, they compare shard hashes). A shard's plaintext encoding
is canonical (entries and tombstones sorted by order name), so the sync recognises an
unchanged shard by comparing plaintexts: the sealed bytes differ on every seal.
"""

from __future__ import annotations

import hmac
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from hashlib import sha256

from certfleet.bundle.codec import U63_LIMIT, Reader, Writer
from certfleet.bundle.envelope import Rng, object_name, open_sealed, seal
from certfleet.bundle.errors import MalformedError
from certfleet.bundle.keys import ClusterSecret
from certfleet.bundle.names import validate_order_name

KIND = "shard"
_SERIAL = re.compile(r"[!-~]{1,128}")
_HASH = 32
MIN_SHARDS = 16
MAX_SHARDS = 1 << 16


def validate_serial(serial: str, where: str) -> str:
    """A certificate serial as the provider spells it: 1-128 printable ASCII, no spaces."""
    if not isinstance(serial, str) or not _SERIAL.fullmatch(serial):
        raise MalformedError(where, "serial must be 1-128 printable ASCII characters")
    return serial


def check_time(value: int, field: str, where: str) -> int:
    if not isinstance(value, int) or not 0 <= value < U63_LIMIT:
        raise MalformedError(where, f"{field} must be Unix seconds in 0..2**63-1")
    return value


@dataclass(frozen=True)
class ShardEntry:
    """The current bundle of one order; times are Unix seconds."""

    order_name: str
    bundle_hash: bytes
    serial: str
    not_after: int
    install_after: int

    def __post_init__(self) -> None:
        validate_order_name(self.order_name, where="shard entry")
        where = f"shard entry for {self.order_name}"
        if not isinstance(self.bundle_hash, bytes) or len(self.bundle_hash) != _HASH:
            raise MalformedError(where, "bundle_hash must be 32 bytes")
        validate_serial(self.serial, where)
        check_time(self.not_after, "not_after", where)
        check_time(self.install_after, "install_after", where)


@dataclass(frozen=True)
class Tombstone:
    """An order the provider no longer has for this cluster, removed at Unix seconds."""

    order_name: str
    removed_at: int

    def __post_init__(self) -> None:
        validate_order_name(self.order_name, where="tombstone")
        check_time(self.removed_at, "removed_at", f"tombstone for {self.order_name}")


@dataclass(frozen=True)
class Shard:
    """One shard's content; kept sorted by order name, so equal content compares equal."""

    entries: tuple[ShardEntry, ...] = ()
    tombstones: tuple[Tombstone, ...] = ()

    def __post_init__(self) -> None:
        entries = tuple(sorted(self.entries, key=lambda entry: entry.order_name))
        tombstones = tuple(sorted(self.tombstones, key=lambda stone: stone.order_name))
        object.__setattr__(self, "entries", entries)
        object.__setattr__(self, "tombstones", tombstones)
        names = [entry.order_name for entry in entries] + [t.order_name for t in tombstones]
        if len(set(names)) != len(names):
            raise MalformedError("shard", "names an order twice (entry or tombstone)")


def encode_shard(shard: Shard) -> bytes:
    """The canonical plaintext of a shard (what is sealed, and what to compare)."""
    writer = Writer().u32(len(shard.entries))
    for entry in shard.entries:
        writer.text(entry.order_name).raw(entry.bundle_hash).text(entry.serial)
        writer.u64(entry.not_after).u64(entry.install_after)
    writer.u32(len(shard.tombstones))
    for stone in shard.tombstones:
        writer.text(stone.order_name).u64(stone.removed_at)
    return writer.getvalue()


def _ascending(previous: str | None, name: str, reader: Reader) -> str:
    if previous is not None and not previous < name:
        raise reader.fail("orders are not in strictly ascending name order")
    return name


def decode_shard(payload: bytes, name: str = "shard") -> Shard:
    """Parse a canonical shard plaintext strictly; refuse unsafe names and non-canonical order."""
    reader = Reader(payload, name)
    entries: list[ShardEntry] = []
    previous: str | None = None
    for _ in range(reader.count(4 + _HASH + 4 + 16)):
        previous = _ascending(previous, validate_order_name(reader.text(253), where=name), reader)
        bundle_hash = reader.raw(_HASH)
        serial = validate_serial(reader.text(128), name)
        not_after = reader.u64()
        entries.append(ShardEntry(previous, bundle_hash, serial, not_after, reader.u64()))
    tombstones: list[Tombstone] = []
    previous = None
    for _ in range(reader.count(4 + 8)):
        previous = _ascending(previous, validate_order_name(reader.text(253), where=name), reader)
        tombstones.append(Tombstone(previous, reader.u64()))
    reader.end()
    try:
        return Shard(tuple(entries), tuple(tombstones))
    except MalformedError as err:
        raise MalformedError(name, err.reason) from err


def _identity(index: int) -> str:
    if not isinstance(index, int) or not 0 <= index < MAX_SHARDS:
        raise ValueError(f"shard index must be in 0..{MAX_SHARDS - 1}")
    return str(index)


def seal_shard(
    shard: Shard,
    *,
    cluster: str,
    index: int,
    secrets: Sequence[ClusterSecret],
    rng: Rng = os.urandom,
) -> bytes:
    return seal(KIND, cluster, _identity(index), encode_shard(shard), secrets, rng=rng)


def open_shard(data: bytes, *, cluster: str, index: int, secrets: Sequence[ClusterSecret]) -> Shard:
    identity = _identity(index)
    payload = open_sealed(KIND, cluster, identity, data, secrets)
    return decode_shard(payload, object_name(KIND, cluster, identity))


def shard_count(n_orders: int) -> int:
    """The smallest power of two, at least 16, whose square is at least ``n_orders``."""
    if n_orders < 0:
        raise ValueError("n_orders must not be negative")
    count = MIN_SHARDS
    while count * count < n_orders and count < MAX_SHARDS:
        count *= 2
    return count


def shard_index(shard_key: bytes, order_name: str, count: int) -> int:
    """The shard of an order: first 8 bytes of HMAC-SHA256(key, name), big-endian, mod count."""
    if count < 1 or count & (count - 1):
        raise ValueError("shard count must be a power of two")
    if len(shard_key) < 16:
        raise ValueError("shard key must be at least 16 bytes")
    mac = hmac.new(shard_key, order_name.encode("utf-8"), sha256).digest()
    return int.from_bytes(mac[:8], "big") % count
