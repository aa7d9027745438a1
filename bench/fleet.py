"""Bulk publications for the benchmarks: real, verifiable v1 objects written in process.

A throwaway CA (ECDSA P-256 root and intermediate: the tests' ``TestCa``) issues
one leaf certificate per order, each with its own ECDSA P-256 key and the order name as its
only DNS name. Every bundle is sealed with ``certfleet.bundle`` for its own order name and,
before it is stored, opened with ``open_bundle`` and checked with the agent's own
``node_agent.certificate.check_bundle`` (key matches leaf, names, chain, validity). Orders
are made by a pool of worker processes (one per core).

``Publication`` then plays the sync for one cluster of one store: it writes the bundles,
the shards (``shard_count(N)`` of them, orders placed by ``shard_index`` under a random
key) and a signed head, and can change one order (new bundle, its shard, a new head), which
is exactly what the sync writes for one renewal.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.plugins

from certfleet.bundle import (
    Bundle,
    ClusterSecret,
    Head,
    Shard,
    ShardEntry,
    SigningKey,
    content_hash,
    encode_head,
    next_generation,
    open_bundle,
    seal_bundle,
    seal_shard,
    shard_count,
    shard_index,
)
from certfleet.store import Store
from node_agent.certificate import check_bundle
from tests.plugins.publisher import TestCa

CLUSTER = "bench"
DAY = 86400
CHUNK = 2000


def order_name(number: int) -> str:
    return f"o{number:06d}.fleet.bench.example"


class Issuer(TestCa):
    """The tests' throwaway CA (tests/plugins/publisher.py), one ECDSA leaf per order."""

    @classmethod
    def create(cls, now: int) -> Issuer:
        return cls(now=now)

    def bundle(self, name: str, now: int) -> Bundle:
        """A bundle for the order ``name``, valid from an hour before ``now`` for 90 days."""
        issued = self.issue((name,), not_before=now - 3600, lifetime=90 * DAY)
        return Bundle(
            name, (name,), "ecdsa", issued.key_pem, issued.cert_pem, issued.chain_pem,
            issued.serial, issued.not_before, issued.not_after,
        )  # fmt: skip


@dataclass(frozen=True)
class SealedOrder:
    """One order's sealed bundle (the stored bytes) and its shard entry."""

    sealed: bytes
    entry: ShardEntry


def seal_verified(
    issuer: Issuer, name: str, secrets: Sequence[ClusterSecret], now: int
) -> SealedOrder:
    """Issue, seal and verify one order's bundle as the agent would (AEAD + certificate checks)."""
    bundle = issuer.bundle(name, now)
    sealed = seal_bundle(bundle, cluster=CLUSTER, secrets=secrets)
    opened = open_bundle(sealed, cluster=CLUSTER, order_name=name, secrets=secrets)
    check_bundle(opened, object_name=f"bundle of {name}", now=now)
    entry = ShardEntry(
        name, content_hash(sealed), bundle.serial, bundle.not_after, bundle.not_before
    )
    return SealedOrder(sealed, entry)


def _work(job: tuple[tuple[bytes, bytes, bytes], str, int, int, int]) -> list[SealedOrder]:
    exported, secret_text, first, count, now = job
    issuer = Issuer(exported)
    secrets = [ClusterSecret.parse(secret_text)]
    return [seal_verified(issuer, order_name(n), secrets, now) for n in range(first, first + count)]


def make_orders(
    issuer: Issuer, secret: ClusterSecret, total: int, *, now: int, workers: int | None = None
) -> list[SealedOrder]:
    """``total`` verified sealed orders, numbered 0..total-1, made in worker processes."""
    exported = issuer.export()
    jobs = [
        (exported, secret.export(), first, min(CHUNK, total - first), now)
        for first in range(0, total, CHUNK)
    ]
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers or os.cpu_count() or 1) as pool:
        chunks = pool.map(_work, jobs)
    return [order for chunk in chunks for order in chunk]


class Publication:
    """One cluster's objects in one store, written as the sync writes them."""

    def __init__(
        self,
        store: Store,
        secret: ClusterSecret,
        signing_key: SigningKey,
        order_count: int,
    ) -> None:
        self.store = store
        self.secret = secret
        self.signing_key = signing_key
        self.shard_key = os.urandom(32)
        self.count = shard_count(order_count)
        self.shards: list[dict[str, ShardEntry]] = [{} for _ in range(self.count)]
        self.shard_hashes: list[bytes] = [b""] * self.count
        self.generation = 0
        self.head_bytes = b""

    def prefix(self) -> str:
        return f"v1/clusters/{CLUSTER}"

    def write_orders(self, orders: Iterator[SealedOrder] | Sequence[SealedOrder]) -> None:
        for order in orders:
            self.store.put(f"{self.prefix()}/bundles/{order.entry.bundle_hash.hex()}", order.sealed)
            index = shard_index(self.shard_key, order.entry.order_name, self.count)
            self.shards[index][order.entry.order_name] = order.entry
        for index in range(self.count):
            self._write_shard(index)
        self.publish()

    def change(self, order: SealedOrder) -> int:
        """Publish a new bundle for an existing order: bundle, its shard, head. Its shard index."""
        self.store.put(f"{self.prefix()}/bundles/{order.entry.bundle_hash.hex()}", order.sealed)
        index = shard_index(self.shard_key, order.entry.order_name, self.count)
        self.shards[index][order.entry.order_name] = order.entry
        self._write_shard(index)
        self.publish()
        return index

    def entries(self) -> list[ShardEntry]:
        return [entry for shard in self.shards for entry in shard.values()]

    def _write_shard(self, index: int) -> None:
        shard = Shard(tuple(self.shards[index].values()))
        data = seal_shard(shard, cluster=CLUSTER, index=index, secrets=[self.secret])
        digest = content_hash(data)
        self.store.put(f"{self.prefix()}/shards/{digest.hex()}", data)
        self.shard_hashes[index] = digest

    def publish(self) -> None:
        now = int(time.time())
        self.generation = next_generation(self.generation, now * 1000)
        head = Head(
            CLUSTER, self.generation, now, now + 3 * DAY, (self.secret.id,),
            tuple(self.shard_hashes),
        )  # fmt: skip
        self.head_bytes = encode_head(head, self.signing_key)
        self.store.put(f"{self.prefix()}/head", self.head_bytes)

    def agent_stanza(self) -> str:
        return (
            f'cluster "{CLUSTER}" {{\n  secret = "{self.secret.export()}"\n'
            f'  publisher = "{self.signing_key.public_key().export()}"\n}}\n'
        )
