"""The head: the one small signed object a node polls (docs/format.md "Head").

It names the cluster, a ``generation`` that only ever rises, its validity window, the active
secret ids and the SHA-256 of every shard in shard order, and is signed with the publisher's
Ed25519 key over a domain-separation prefix followed by the encoded body. Times
(``issued_at``, ``valid_until``) are Unix seconds; ``generation`` is Unix milliseconds (or
one more than the previous generation, whichever is larger).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from certfleet.bundle.codec import U63_LIMIT, Reader, Writer
from certfleet.bundle.errors import (
    BadSignatureError,
    ExpiredHeadError,
    MalformedError,
    RollbackError,
    UnknownPublisherError,
    UnsafeNameError,
    WrongClusterError,
)
from certfleet.bundle.keys import PublicKey, SigningKey, validate_secret_id
from certfleet.bundle.names import validate_cluster_name

MAGIC = b"CFHD"
VERSION = 1
SIGNATURE_DOMAIN = b"certfleet/v1/head\x00"
MAX_VALIDITY_SECONDS = 7 * 24 * 3600
# A generation is Unix milliseconds: one beyond now + a day is forged or from a broken clock.
MAX_GENERATION_AHEAD_MS = 24 * 3600 * 1000
MAX_SECRET_IDS = 16
MIN_SHARDS = 16
MAX_SHARDS = 1 << 16
_HASH = 32
_SIGNATURE = 64


def head_name(cluster: str) -> str:
    return f"head of cluster {cluster}"


@dataclass(frozen=True)
class Head:
    """The content of a head; constructing one checks every rule of the format."""

    cluster: str
    generation: int
    issued_at: int
    valid_until: int
    secret_ids: tuple[str, ...]
    shard_hashes: tuple[bytes, ...]

    def __post_init__(self) -> None:
        validate_cluster_name(self.cluster, where="head")
        name = head_name(self.cluster)
        object.__setattr__(self, "secret_ids", tuple(self.secret_ids))
        object.__setattr__(self, "shard_hashes", tuple(self.shard_hashes))
        for field in ("generation", "issued_at", "valid_until"):
            value = getattr(self, field)
            if not isinstance(value, int) or not 0 <= value < U63_LIMIT:
                raise MalformedError(name, f"{field} must be an integer in 0..2**63-1")
        if self.generation < 1:
            raise MalformedError(name, "generation must be at least 1")
        if not self.issued_at <= self.valid_until <= self.issued_at + MAX_VALIDITY_SECONDS:
            raise MalformedError(name, "valid_until must be within 7 days after issued_at")
        if not 1 <= len(self.secret_ids) <= MAX_SECRET_IDS:
            raise MalformedError(name, f"must list 1 to {MAX_SECRET_IDS} secret ids")
        for secret_id in self.secret_ids:
            validate_secret_id(secret_id, name)
        if len(set(self.secret_ids)) != len(self.secret_ids):
            raise MalformedError(name, "lists a secret id twice")
        count = len(self.shard_hashes)
        if count & (count - 1) or not MIN_SHARDS <= count <= MAX_SHARDS:
            raise MalformedError(name, f"shard count {count} is not a power of two in 16..65536")
        for digest in self.shard_hashes:
            if not isinstance(digest, bytes) or len(digest) != _HASH:
                raise MalformedError(name, "every shard hash must be 32 bytes")


def generation_too_far(generation: int, now_ms: int) -> bool:
    """True when ``generation`` lies beyond ``now_ms`` + one day: such a generation is
    refused wherever it is read (by nodes, and by the sync in its head and state)."""
    return generation > now_ms + MAX_GENERATION_AHEAD_MS


def next_generation(previous: int, now_ms: int) -> int:
    """The generation after ``previous``: max(previous + 1, now in Unix milliseconds)."""
    return max(previous + 1, now_ms)


def _body(head: Head, publisher: PublicKey) -> bytes:
    writer = Writer().raw(MAGIC).u8(VERSION).raw(publisher.raw).text(head.cluster)
    writer.u64(head.generation).u64(head.issued_at).u64(head.valid_until)
    writer.u32(len(head.secret_ids))
    for secret_id in head.secret_ids:
        writer.text(secret_id)
    writer.u32(len(head.shard_hashes))
    for digest in head.shard_hashes:
        writer.raw(digest)
    return writer.getvalue()


def encode_head(head: Head, signing_key: SigningKey) -> bytes:
    """The byte-exact signed head: body, then Ed25519(domain prefix + body)."""
    body = _body(head, signing_key.public_key())
    return body + signing_key.sign(SIGNATURE_DOMAIN + body)


@dataclass(frozen=True)
class _Parsed:
    body: bytes
    signature: bytes
    publisher: bytes
    cluster: str
    numbers: tuple[int, int, int]
    secret_ids: tuple[str, ...]
    shard_hashes: tuple[bytes, ...]


def _parse(data: bytes, name: str) -> _Parsed:
    reader = Reader(data, name)
    if reader.raw(len(MAGIC)) != MAGIC:
        raise reader.fail("is not a certfleet head (bad magic)")
    version = reader.u8()
    if version != VERSION:
        raise reader.fail(f"unknown format version {version}")
    publisher = reader.raw(32)
    cluster = reader.text(64)
    numbers = (reader.u64(), reader.u64(), reader.u64())
    secret_ids = tuple(reader.text(32) for _ in range(reader.count(5, MAX_SECRET_IDS)))
    shard_hashes = tuple(reader.raw(_HASH) for _ in range(reader.count(_HASH, MAX_SHARDS)))
    body_end = reader.position
    signature = reader.raw(_SIGNATURE)
    reader.end()
    return _Parsed(
        bytes(data[:body_end]), signature, publisher, cluster, numbers, secret_ids, shard_hashes
    )


def _head(parsed: _Parsed, name: str) -> Head:
    generation, issued_at, valid_until = parsed.numbers
    try:
        return Head(
            parsed.cluster,
            generation,
            issued_at,
            valid_until,
            parsed.secret_ids,
            parsed.shard_hashes,
        )
    except UnsafeNameError as err:
        raise UnsafeNameError(name, err.reason, err.name) from err
    except MalformedError as err:
        raise MalformedError(name, err.reason) from err


def peek_head(data: bytes) -> Head:
    """Parse a head WITHOUT checking its signature, cluster, generation or expiry.

    For tooling and for the sync's own bookkeeping only; a node must use ``decode_head``.
    """
    return _head(_parse(data, "head"), "head")


def head_publisher(data: bytes) -> PublicKey:
    """The publisher key a head claims to be signed by (unverified)."""
    return PublicKey(_parse(data, "head").publisher)


def verify_head(data: bytes, *, cluster: str, publishers: Sequence[PublicKey]) -> Head:
    """Check a head's structure, signature and cluster, but not its generation or expiry."""
    name = head_name(cluster)
    parsed = _parse(data, name)
    pinned = {key.raw for key in publishers}
    if parsed.publisher not in pinned:
        raise UnknownPublisherError(name, PublicKey(parsed.publisher).export())
    if not PublicKey(parsed.publisher).verify(parsed.signature, SIGNATURE_DOMAIN + parsed.body):
        raise BadSignatureError(name)
    head = _head(parsed, name)
    if head.cluster != cluster:
        raise WrongClusterError(name, cluster, head.cluster)
    return head


def decode_head(
    data: bytes,
    *,
    cluster: str,
    publishers: Sequence[PublicKey],
    now: int,
    min_generation: int = 0,
) -> Head:
    """Verify a head as a node must, ``now`` in Unix seconds; refuse it with a FormatError.

    Checks, in order: structure (MalformedError), a pinned publisher (UnknownPublisherError),
    the signature (BadSignatureError), the cluster (WrongClusterError), the generation
    against ``min_generation`` (RollbackError; an equal generation is accepted), a generation
    beyond now + one day (MalformedError), and expiry, ``now > valid_until`` (ExpiredHeadError).
    """
    head = verify_head(data, cluster=cluster, publishers=publishers)
    name = head_name(cluster)
    if generation_too_far(head.generation, now * 1000):
        raise MalformedError(name, f"generation {head.generation} is more than a day ahead")
    if head.generation < min_generation:
        raise RollbackError(name, head.generation, min_generation)
    if now > head.valid_until:
        raise ExpiredHeadError(name, head.valid_until, now)
    return head
