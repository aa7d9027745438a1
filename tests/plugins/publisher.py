"""Real v1 publications for the agent's tests, written with ``certfleet.bundle`` directly.

The agent's tests must not depend on the sync engine, so this plugin plays the sync: a
throwaway CA (root + intermediate, ECDSA P-256, made with ``cryptography``) issues real
leaf certificates; bundles, shards and heads are sealed, signed and stored exactly as
docs/format.md says. It can also publish what a sync never would (hostile names, moved or
tampered objects, old or expired heads) to test the agent's defences.

Fixtures:

- ``publisher_ca`` (session): a :class:`TestCa`;
- ``make_publisher`` (function): ``make_publisher(store_url, cluster="web", **options)``
  returns a :class:`Publisher` writing to that store.
"""

from __future__ import annotations

import datetime
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Callable, Union

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
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
    Tombstone,
    content_hash,
    encode_head,
    next_generation,
    seal,
    seal_bundle,
    seal_shard,
    shard_index,
)
from certfleet.bundle.codec import Writer
from certfleet.store import Store, open_store

SHARDS = 16
DAY = 86400
PrivateKey = Union[rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey]


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _when(seconds: int) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(seconds, tz=datetime.timezone.utc)


def _pem_key(key: PrivateKey) -> bytes:
    return key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())


@dataclass(frozen=True)
class Issued:
    """A leaf key and certificate with its chain, as PEM."""

    key_pem: bytes
    cert_pem: bytes
    chain_pem: tuple[bytes, ...]
    serial: str
    not_before: int
    not_after: int


class TestCa:
    """A root and an intermediate CA that issue leaf certificates on demand.

    ``TestCa()`` makes a new pair, valid from a day before ``now``; ``TestCa(exported)``
    takes back what :meth:`export` gave (e.g. in another process: keys do not pickle).
    """

    __test__ = False  # not a test class, despite its name

    def __init__(
        self, exported: tuple[bytes, bytes, bytes] | None = None, *, now: int | None = None
    ) -> None:
        self._rsa_keys: list[rsa.RSAPrivateKey] = []
        if exported is not None:
            root_pem, intermediate_pem, key_pem = exported
            key = load_pem_private_key(key_pem, password=None)
            assert isinstance(key, ec.EllipticCurvePrivateKey)
            self.root = x509.load_pem_x509_certificate(root_pem)
            self.intermediate = x509.load_pem_x509_certificate(intermediate_pem)
            self.intermediate_key = key
            return
        now = int(time.time()) if now is None else now
        root_key = ec.generate_private_key(ec.SECP256R1())
        self.root = self._ca(_name("certfleet test root"), root_key, None, now)
        self.intermediate_key = ec.generate_private_key(ec.SECP256R1())
        self.intermediate = self._ca(
            _name("certfleet test intermediate"),
            self.intermediate_key,
            (self.root, root_key),
            now,
        )

    def export(self) -> tuple[bytes, bytes, bytes]:
        """The root, the intermediate and the intermediate's key, as PEM."""
        return self.root_pem, self.chain_pem[0], _pem_key(self.intermediate_key)

    @staticmethod
    def _ca(
        name: x509.Name,
        key: ec.EllipticCurvePrivateKey,
        issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
        now: int,
    ) -> x509.Certificate:
        issuer_name, signer = (name, key) if issuer is None else (issuer[0].subject, issuer[1])
        return (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(issuer_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_when(now - DAY))
            .not_valid_after(_when(now + 365 * DAY))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(signer, hashes.SHA256())
        )

    @property
    def root_pem(self) -> bytes:
        return self.root.public_bytes(Encoding.PEM)

    @property
    def chain_pem(self) -> tuple[bytes, ...]:
        return (self.intermediate.public_bytes(Encoding.PEM),)

    def _key(self, key_type: str) -> PrivateKey:
        if key_type == "ecdsa":
            return ec.generate_private_key(ec.SECP256R1())
        # RSA keys are slow to make: the tests reuse a small pool.
        if len(self._rsa_keys) < 2:
            self._rsa_keys.append(rsa.generate_private_key(public_exponent=65537, key_size=2048))
            return self._rsa_keys[-1]
        return self._rsa_keys[len(self._rsa_keys) % 2]

    def issue(
        self,
        dns_names: Sequence[str],
        *,
        key_type: str = "ecdsa",
        key: PrivateKey | None = None,
        not_before: int | None = None,
        lifetime: int = 90 * DAY,
    ) -> Issued:
        """A leaf for ``dns_names`` (the first is its CN), with a new key unless ``key``."""
        key = key or self._key(key_type)
        start = int(time.time()) - 3600 if not_before is None else not_before
        serial = x509.random_serial_number()
        certificate = (
            x509.CertificateBuilder()
            .subject_name(_name(dns_names[0]))
            .issuer_name(self.intermediate.subject)
            .public_key(key.public_key())
            .serial_number(serial)
            .not_valid_before(_when(start))
            .not_valid_after(_when(start + lifetime))
            .add_extension(
                x509.SubjectAlternativeName([x509.DNSName(name) for name in dns_names]),
                critical=False,
            )
            .sign(self.intermediate_key, hashes.SHA256())
        )
        return Issued(
            _pem_key(key),
            certificate.public_bytes(Encoding.PEM),
            self.chain_pem,
            format(serial, "x"),
            start,
            start + lifetime,
        )


class Publisher:
    """Plays the sync for one cluster of one store: bundles, shards, signed heads."""

    def __init__(
        self,
        store: Store,
        ca: TestCa,
        cluster: str = "web",
        *,
        secrets: Sequence[ClusterSecret] | None = None,
        signing_key: SigningKey | None = None,
    ) -> None:
        self.store = store
        self.ca = ca
        self.cluster = cluster
        self.secrets = tuple(secrets) if secrets else (ClusterSecret.generate("k1"),)
        self.signing_key = signing_key or SigningKey.generate()
        self.shard_key = os.urandom(32)
        self.entries: dict[str, ShardEntry] = {}
        self.tombstones: dict[str, Tombstone] = {}
        self.raw_entries: dict[str, tuple[bytes, str]] = {}  # name -> (bundle hash, serial)
        self.bundles: dict[str, Bundle] = {}
        self.generation = 0
        self.heads: list[bytes] = []
        self._sealed: dict[int, tuple[object, bytes]] = {}  # index -> (content, digest)

    # -- what an agent config needs ------------------------------------------------------

    def cluster_stanza(self) -> str:
        secrets = ", ".join(f'"{secret.export()}"' for secret in self.secrets)
        return (
            f'cluster "{self.cluster}" {{\n  secret = [{secrets}]\n'
            f'  publisher = "{self.signing_key.public_key().export()}"\n}}\n'
        )

    def prefix(self) -> str:
        return f"v1/clusters/{self.cluster}"

    # -- orders --------------------------------------------------------------------------

    def make_bundle(
        self,
        order_name: str,
        dns_names: Sequence[str] | None = None,
        *,
        key_type: str = "ecdsa",
        key: PrivateKey | None = None,
        not_before: int | None = None,
        lifetime: int = 90 * DAY,
    ) -> Bundle:
        names = tuple(dns_names or (order_name,))
        issued = self.ca.issue(
            names, key_type=key_type, key=key, not_before=not_before, lifetime=lifetime
        )
        return Bundle(
            order_name, names, key_type, issued.key_pem, issued.cert_pem, issued.chain_pem,
            issued.serial, issued.not_before, issued.not_after,
        )  # fmt: skip

    def put_bundle(self, bundle: Bundle) -> bytes:
        data = seal_bundle(bundle, cluster=self.cluster, secrets=self.secrets)
        return self.put_object("bundles", data)

    def put_object(self, kind: str, data: bytes) -> bytes:
        digest = content_hash(data)
        self.store.put(f"{self.prefix()}/{kind}/{digest.hex()}", data)
        return digest

    def issue(
        self,
        order_name: str,
        dns_names: Sequence[str] | None = None,
        *,
        install_after: int = 0,
        **options: object,
    ) -> Bundle:
        """Issue and store a bundle for ``order_name`` and point its entry at it."""
        bundle = self.make_bundle(order_name, dns_names, **options)  # type: ignore[arg-type]
        self.set_entry(bundle, self.put_bundle(bundle), install_after=install_after)
        return bundle

    def set_entry(self, bundle: Bundle, digest: bytes, *, install_after: int = 0) -> None:
        self.bundles[bundle.order_name] = bundle
        self.tombstones.pop(bundle.order_name, None)
        self.entries[bundle.order_name] = ShardEntry(
            bundle.order_name, digest, bundle.serial, bundle.not_after, install_after
        )

    def remove(self, order_name: str, removed_at: int | None = None) -> None:
        del self.entries[order_name]
        self.tombstones[order_name] = Tombstone(order_name, removed_at or int(time.time()))

    def inject_raw_entry(self, order_name: str, bundle_hash: bytes, serial: str = "1") -> None:
        """An entry under any name at all, bypassing the name rules (hostile publisher)."""
        self.raw_entries[order_name] = (bundle_hash, serial)

    def put_raw_bundle(self, order_name: str, payload_name: str | None = None) -> bytes:
        """A bundle sealed under ``order_name`` whatever it is, e.g. ``../../etc/x``."""
        issued = self.ca.issue(["hostile.example"])
        writer = Writer().text(payload_name or order_name).u32(1).text("hostile.example")
        writer.text("ecdsa").blob(issued.key_pem).blob(issued.cert_pem)
        writer.u32(1).blob(issued.chain_pem[0]).text(issued.serial)
        writer.u64(issued.not_before).u64(issued.not_after)
        data = seal("bundle", self.cluster, order_name, writer.getvalue(), self.secrets)
        return self.put_object("bundles", data)

    # -- shards and heads ----------------------------------------------------------------

    def index_of(self, order_name: str) -> int:
        return shard_index(self.shard_key, order_name, SHARDS)

    def _shard_digest(self, index: int) -> bytes:
        """Like the sync: a shard whose content did not change keeps its stored object."""
        entries = tuple(e for n, e in self.entries.items() if self.index_of(n) == index)
        stones = tuple(t for n, t in self.tombstones.items() if self.index_of(n) == index)
        raw = sorted((n, v) for n, v in self.raw_entries.items() if self.index_of(n) == index)
        content = (sorted(entries, key=repr), sorted(stones, key=repr), raw)
        cached = self._sealed.get(index)
        if cached is not None and cached[0] == content:
            return cached[1]
        digest = self.put_object("shards", self._shard_bytes(index, entries, stones, raw))
        self._sealed[index] = (content, digest)
        return digest

    def _shard_bytes(
        self,
        index: int,
        entries: tuple[ShardEntry, ...],
        stones: tuple[Tombstone, ...],
        raw: list[tuple[str, tuple[bytes, str]]],
    ) -> bytes:
        if not raw:
            shard = Shard(entries, stones)
            return seal_shard(shard, cluster=self.cluster, index=index, secrets=self.secrets)
        # Hand-encoded, so that names the format refuses can be published.
        rows = sorted(
            [(e.order_name, e.bundle_hash, e.serial) for e in entries]
            + [(name, digest, serial) for name, (digest, serial) in raw]
        )
        writer = Writer().u32(len(rows))
        for name, digest, serial in rows:
            writer.text(name).raw(digest).text(serial).u64(2**40).u64(0)
        writer.u32(0)
        return seal("shard", self.cluster, str(index), writer.getvalue(), self.secrets)

    def publish(
        self,
        *,
        now: int | None = None,
        valid_for: int = 3 * DAY,
        generation: int | None = None,
    ) -> bytes:
        """Write every shard and a new signed head; return the head's bytes."""
        issued_at = int(time.time()) if now is None else now
        digests = tuple(self._shard_digest(index) for index in range(SHARDS))
        self.generation = generation or next_generation(self.generation, issued_at * 1000)
        head = Head(
            self.cluster, self.generation, issued_at, issued_at + valid_for,
            tuple(secret.id for secret in self.secrets), digests,
        )  # fmt: skip
        data = encode_head(head, self.signing_key)
        self.put_head(data)
        self.heads.append(data)
        return data

    def put_head(self, data: bytes) -> None:
        self.store.put(f"{self.prefix()}/head", data)

    def bundle_key(self, order_name: str) -> str:
        return f"{self.prefix()}/bundles/{self.entries[order_name].bundle_hash.hex()}"


@pytest.fixture(scope="session")
def publisher_ca() -> TestCa:
    return TestCa()


@pytest.fixture
def make_publisher(publisher_ca: TestCa) -> Iterator[Callable[..., Publisher]]:
    """``make_publisher(store_url, cluster="web", **options)``: a Publisher on that store."""

    def make(store_url: str, cluster: str = "web", **options: object) -> Publisher:
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") if store_url.startswith("s3:") else None
        store = open_store(store_url, endpoint=endpoint)
        return Publisher(store, publisher_ca, cluster, **options)  # type: ignore[arg-type]

    yield make
