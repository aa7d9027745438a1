"""Bulk publications for the benchmarks: real, verifiable v1 objects written in process.

A throwaway CA (ECDSA P-256 root and intermediate, made here with ``cryptography``) issues
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

import datetime
import multiprocessing
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)
from cryptography.x509.oid import NameOID

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

CLUSTER = "bench"
DAY = 86400
CHUNK = 2000


def order_name(number: int) -> str:
    return f"o{number:06d}.fleet.bench.example"


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _when(seconds: int) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(seconds, tz=datetime.timezone.utc)


class Issuer:
    """An intermediate CA that signs one ECDSA leaf per order."""

    def __init__(self, key: ec.EllipticCurvePrivateKey, certificate: x509.Certificate) -> None:
        self.key = key
        self.certificate = certificate
        self.chain_pem = (certificate.public_bytes(Encoding.PEM),)

    @classmethod
    def create(cls, now: int) -> Issuer:
        root_key = ec.generate_private_key(ec.SECP256R1())
        key = ec.generate_private_key(ec.SECP256R1())
        root_name = _name("certfleet bench root (throwaway)")
        certificate = (
            x509.CertificateBuilder()
            .subject_name(_name("certfleet bench intermediate (throwaway)"))
            .issuer_name(root_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_when(now - DAY))
            .not_valid_after(_when(now + 365 * DAY))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(root_key, hashes.SHA256())
        )
        return cls(key, certificate)

    def export(self) -> tuple[bytes, bytes]:
        key_pem = self.key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
        return key_pem, self.chain_pem[0]

    @classmethod
    def load(cls, key_pem: bytes, certificate_pem: bytes) -> Issuer:
        key = load_pem_private_key(key_pem, password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return cls(key, x509.load_pem_x509_certificate(certificate_pem))

    def bundle(self, name: str, now: int) -> Bundle:
        key = ec.generate_private_key(ec.SECP256R1())
        serial = x509.random_serial_number()
        start = now - 3600
        leaf = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(serial)
            .not_valid_before(_when(start))
            .not_valid_after(_when(start + 90 * DAY))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        return Bundle(
            name, (name,), "ecdsa",
            key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()),
            leaf.public_bytes(Encoding.PEM), self.chain_pem,
            format(serial, "x"), start, start + 90 * DAY,
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


def _work(job: tuple[bytes, bytes, str, int, int, int]) -> list[SealedOrder]:
    key_pem, certificate_pem, secret_text, first, count, now = job
    issuer = Issuer.load(key_pem, certificate_pem)
    secrets = [ClusterSecret.parse(secret_text)]
    return [seal_verified(issuer, order_name(n), secrets, now) for n in range(first, first + count)]


def make_orders(
    issuer: Issuer, secret: ClusterSecret, total: int, *, now: int, workers: int | None = None
) -> list[SealedOrder]:
    """``total`` verified sealed orders, numbered 0..total-1, made in worker processes."""
    key_pem, certificate_pem = issuer.export()
    jobs = [
        (key_pem, certificate_pem, secret.export(), first, min(CHUNK, total - first), now)
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
