"""An adversary with write access to the store: the tool the hostile-store tests use.

The trust model (docs/security.md, "Whoever can write the store") says whoever can write
the store can delete things but cannot make a node install anything the sync did not
publish, nor roll it back. ``Tamperer`` does what such an adversary can do to the
published objects of a cluster, every kind (``head``, ``shard``, ``bundle``, ``ack``) in
every way:

- ``flip``: one bit flipped at a seeded random position;
- ``truncate``: cut at a seeded random length (possibly empty);
- ``extend``: bytes appended;
- ``delete``: the object removed;
- ``swap``: another object's bytes written under this key — another order's bundle,
  another kind's object, or the same kind from another cluster (``swap_sources``);
- ``replay``: an older head written back (the adversary kept a copy).

It holds no secret and no signing key: it only reads and writes bytes, like the store's
adversary. It imports only ``certfleet.store`` (boto3 is imported lazily, for ``s3://``)
and never the agent. ``snapshot``/``restore`` put a cluster back as it was between two
attacks. Every change is returned as a ``Tampering`` that says what was done, so a
failing test names the attack.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from certfleet.bundle.layout import cluster_prefix, head_key
from certfleet.store import ObjectNotFound, Store

KINDS = ("head", "shard", "bundle", "ack")
WAYS = ("flip", "truncate", "extend", "delete", "swap", "replay")
_FOLDERS = {"shard": "shards/", "bundle": "bundles/", "ack": "acks/"}
_MAX_READ = 64 * 1024 * 1024  # any published kind (the largest cap is 16 MiB)


class TamperError(ValueError):
    """The requested attack cannot be made (e.g. no object of that kind exists)."""


@dataclass(frozen=True)
class Tampering:
    """One change an adversary made: which object, which way, and a detail."""

    kind: str
    way: str
    key: str
    detail: str

    def __str__(self) -> str:
        return f"{self.way} {self.kind} {self.key} ({self.detail})"


def kind_of(key: str) -> str:
    """``head``, ``shard``, ``bundle`` or ``ack`` for a published key; ValueError otherwise."""
    parts = key.split("/")
    if len(parts) == 4 and parts[3] == "head":
        return "head"
    if len(parts) == 5:
        for kind, folder in _FOLDERS.items():
            if parts[3] + "/" == folder:
                return kind
    raise ValueError(f"not a published object key: {key!r}")


class Tamperer:
    """Tampers with the objects of a store; every random choice comes from ``rng``."""

    def __init__(self, store: Store, rng: random.Random) -> None:
        self.store = store
        self.rng = rng

    # -- looking ---------------------------------------------------------------------------

    def objects(self, cluster: str, kind: str) -> list[str]:
        """The keys of ``cluster``'s objects of ``kind``, sorted."""
        prefix = cluster_prefix(cluster)
        if kind == "head":
            return [key for key in self.store.list(prefix) if key == prefix + "head"]
        if kind not in _FOLDERS:
            raise ValueError(f"unknown object kind {kind!r}; one of {', '.join(KINDS)}")
        return sorted(self.store.list(prefix + _FOLDERS[kind]))

    def read(self, key: str) -> bytes:
        return self.store.get(key, max_bytes=_MAX_READ).data

    def pick(self, cluster: str, kind: str) -> str:
        keys = self.objects(cluster, kind)
        if not keys:
            raise TamperError(f"cluster {cluster} has no {kind} object to tamper with")
        return self.rng.choice(keys)

    def snapshot(self, cluster: str) -> dict[str, bytes]:
        """Every published object of ``cluster``, by key."""
        return {key: self.read(key) for key in self.store.list(cluster_prefix(cluster))}

    def restore(self, cluster: str, snapshot: Mapping[str, bytes]) -> None:
        """Put ``cluster`` back to ``snapshot``: rewrite what differs, delete what is new."""
        for key in list(self.store.list(cluster_prefix(cluster))):
            if key not in snapshot:
                self.store.delete(key)
        for key, data in snapshot.items():
            try:
                same = self.read(key) == data
            except ObjectNotFound:
                same = False
            if not same:
                self.store.put(key, data)

    # -- attacking ---------------------------------------------------------------------------

    def flip(self, key: str) -> Tampering:
        data = bytearray(self.read(key))
        if not data:
            raise TamperError(f"{key} is empty: no bit to flip")
        bit = self.rng.randrange(len(data) * 8)
        data[bit // 8] ^= 1 << (bit % 8)
        self.store.put(key, bytes(data))
        return Tampering(kind_of(key), "flip", key, f"bit {bit} of {len(data)} bytes")

    def truncate(self, key: str) -> Tampering:
        data = self.read(key)
        length = self.rng.randrange(len(data)) if data else 0
        self.store.put(key, data[:length])
        return Tampering(kind_of(key), "truncate", key, f"{len(data)} -> {length} bytes")

    def extend(self, key: str) -> Tampering:
        extra = bytes(self.rng.randrange(256) for _ in range(self.rng.randint(1, 64)))
        self.store.put(key, self.read(key) + extra)
        return Tampering(kind_of(key), "extend", key, f"{len(extra)} bytes appended")

    def delete(self, key: str) -> Tampering:
        self.store.delete(key)
        return Tampering(kind_of(key), "delete", key, "removed")

    def swap(self, key: str, source: str) -> Tampering:
        """Write ``source``'s bytes under ``key`` (sources from ``swap_sources``)."""
        self.store.put(key, self.read(source))
        return Tampering(kind_of(key), "swap", key, f"now holds the bytes of {source}")

    def replay(self, cluster: str, old_head: bytes) -> Tampering:
        """Write back a head the adversary copied earlier."""
        key = head_key(cluster)
        self.store.put(key, old_head)
        return Tampering("head", "replay", key, f"an older head of {len(old_head)} bytes")

    def swap_sources(self, key: str, clusters: Iterable[str]) -> dict[str, str]:
        """What ``key`` may be swapped with, by label: ``order`` (another object of the same
        kind and cluster), ``kind`` (an object of another kind) and ``cluster`` (the same
        kind in another cluster). Labels with no candidate are left out."""
        kind = kind_of(key)
        cluster = key.split("/")[2]
        found: dict[str, str] = {}
        same = [k for k in self.objects(cluster, kind) if k != key]
        if same:
            found["order"] = self.rng.choice(same)
        others = [k for other in KINDS if other != kind for k in self.objects(cluster, other)]
        if others:
            found["kind"] = self.rng.choice(sorted(others))
        foreign = [k for c in clusters if c != cluster for k in self.objects(c, kind)]
        if foreign:
            found["cluster"] = self.rng.choice(sorted(foreign))
        return found
