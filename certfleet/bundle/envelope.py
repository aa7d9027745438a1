"""Envelope encryption shared by shards, bundles, acks and pending keys.

A random 32-byte data key encrypts the payload with AES-256-GCM; the data key is wrapped
once for each active cluster secret, with AES-256-GCM under HKDF-SHA256(secret, salt = 32
random bytes, info = "certfleet/v1/wrap"). Associated data binds the format version, the
object kind, the cluster and the object's identity, so an object moved to another order,
kind or cluster fails to open; the payload's associated data also covers the envelope
header, so no byte of a sealed object can change unnoticed. docs/format.md "Envelope" is
the byte-level description.

Sealing the same payload twice gives different bytes (fresh keys, salts and nonces): to see
whether an object changed, compare plaintexts, not ciphertexts.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Callable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from certfleet.bundle.codec import Reader, Writer
from certfleet.bundle.errors import IntegrityError, NoUsableSecretError
from certfleet.bundle.keys import ClusterSecret, validate_secret_id
from certfleet.bundle.names import validate_cluster_name

Rng = Callable[[int], bytes]

MAGIC = b"CFSE"
VERSION = 1
KINDS = ("shard", "bundle", "ack", "pending", "registry", "acme")
WRAP_INFO = b"certfleet/v1/wrap"
MAX_WRAPS = 16
_KEY = 32
_SALT = 32
_NONCE = 12
_TAG = 16


@dataclass(frozen=True)
class _Wrap:
    secret_id: str
    salt: bytes
    nonce: bytes
    wrapped_key: bytes


def associated_data(kind: str, cluster: str, identity: str, *extra: bytes) -> bytes:
    """The AEAD associated data: length-prefixed version, kind, cluster, identity, extras."""
    writer = Writer().blob(bytes((VERSION,)))
    for field in (kind.encode(), cluster.encode(), identity.encode(), *extra):
        writer.blob(field)
    return writer.getvalue()


def wrapping_key(secret: ClusterSecret, salt: bytes) -> bytes:
    """HKDF-SHA256 of the cluster secret: the key that wraps one object's data key."""
    return HKDF(algorithm=SHA256(), length=_KEY, salt=salt, info=WRAP_INFO).derive(secret.key)


_OBJECT_NAMES = {
    "shard": "shard {identity} of cluster {cluster}",
    "bundle": "bundle for order {identity} in cluster {cluster}",
    "ack": "ack of node {identity} in cluster {cluster}",
    "pending": "pending key for order {identity} in cluster {cluster}",
    "registry": "order registry of cluster {cluster}",
    "acme": "ACME state {identity} of cluster {cluster}",
}


def object_name(kind: str, cluster: str, identity: str) -> str:
    """How errors name a sealed object, e.g. "bundle for order example.com in cluster web"."""
    return _OBJECT_NAMES[kind].format(identity=identity, cluster=cluster)


def _draw(rng: Rng, size: int) -> bytes:
    value = rng(size)
    if not isinstance(value, bytes) or len(value) != size:
        raise ValueError(f"rng returned something other than {size} bytes")
    return value


def _check_kind(kind: str, cluster: str, identity: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown object kind {kind!r}")
    validate_cluster_name(cluster)
    if not isinstance(identity, str) or not identity:
        raise ValueError("object identity must be a non-empty string")


def seal(
    kind: str,
    cluster: str,
    identity: str,
    payload: bytes,
    secrets: Sequence[ClusterSecret],
    *,
    rng: Rng = os.urandom,
) -> bytes:
    """Encrypt ``payload`` so that any of ``secrets`` opens it, bound to kind/cluster/identity.

    Randomness is drawn from ``rng`` in this order: data key (32), payload nonce (12), then
    for each secret in order its salt (32) and wrap nonce (12).
    """
    prefix, ciphertext = seal_parts(kind, cluster, identity, payload, secrets, rng=rng)
    return prefix + ciphertext


def seal_parts(
    kind: str,
    cluster: str,
    identity: str,
    payload: bytes,
    secrets: Sequence[ClusterSecret],
    *,
    rng: Rng = os.urandom,
) -> tuple[bytes, bytes]:
    """``seal`` in two parts whose concatenation is the sealed object: the header with the
    ciphertext's length, and the ciphertext; a caller that owns a large payload can let it
    go before joining them."""
    _check_kind(kind, cluster, identity)
    if not secrets or len(secrets) > MAX_WRAPS:
        raise ValueError(f"seal needs 1 to {MAX_WRAPS} cluster secrets")
    if len({secret.id for secret in secrets}) != len(secrets):
        raise ValueError("seal was given two secrets with the same id")
    data_key = _draw(rng, _KEY)
    nonce = _draw(rng, _NONCE)
    wrap_ad = associated_data(kind, cluster, identity)
    header = Writer().raw(MAGIC).u8(VERSION).raw(nonce).u32(len(secrets))
    for secret in secrets:
        salt = _draw(rng, _SALT)
        wrap_nonce = _draw(rng, _NONCE)
        wrapped = AESGCM(wrapping_key(secret, salt)).encrypt(wrap_nonce, data_key, wrap_ad)
        header.text(secret.id).raw(salt).raw(wrap_nonce).raw(wrapped)
    head_bytes = header.getvalue()
    payload_ad = associated_data(kind, cluster, identity, head_bytes)
    ciphertext = AESGCM(data_key).encrypt(nonce, bytes(payload), payload_ad)
    return Writer().raw(head_bytes).u32(len(ciphertext)).getvalue(), ciphertext


def _parse(data: bytes, name: str) -> tuple[bytes, bytes, tuple[_Wrap, ...], memoryview]:
    reader = Reader(data, name)
    if reader.raw(len(MAGIC)) != MAGIC:
        raise reader.fail("is not a certfleet sealed object (bad magic)")
    version = reader.u8()
    if version != VERSION:
        raise reader.fail(f"unknown format version {version}")
    nonce = reader.raw(_NONCE)
    wraps: list[_Wrap] = []
    for _ in range(reader.count(4 + _SALT + _NONCE + _KEY + _TAG, MAX_WRAPS)):
        secret_id = reader.text(32)
        validate_secret_id(secret_id, name)
        if any(wrap.secret_id == secret_id for wrap in wraps):
            raise reader.fail(f"secret id {secret_id} is wrapped twice")
        wraps.append(_Wrap(secret_id, reader.raw(_SALT), reader.raw(_NONCE), reader.raw(48)))
    if not wraps:
        raise reader.fail("is wrapped for no secret")
    header = bytes(data[: reader.position])
    ciphertext = reader.blob_view()  # a large state's ciphertext is not copied
    reader.end()
    if len(ciphertext) < _TAG:
        raise reader.fail("ciphertext is shorter than its tag")
    return header, nonce, tuple(wraps), ciphertext


def wrapped_for(data: bytes, *, name: str = "sealed object") -> tuple[str, ...]:
    """The secret ids a sealed object is wrapped for (unauthenticated; to plan re-wrapping)."""
    return tuple(wrap.secret_id for wrap in _parse(data, name)[2])


def open_sealed(
    kind: str,
    cluster: str,
    identity: str,
    data: bytes,
    secrets: Sequence[ClusterSecret],
) -> bytes:
    """Decrypt a sealed object made for this kind, cluster and identity with any held secret."""
    _check_kind(kind, cluster, identity)
    name = object_name(kind, cluster, identity)
    header, nonce, wraps, ciphertext = _parse(data, name)
    usable = [(w, s) for w in wraps for s in secrets if s.id == w.secret_id]
    if not usable:
        raise NoUsableSecretError(
            name, [w.secret_id for w in wraps], sorted({s.id for s in secrets})
        )
    wrap_ad = associated_data(kind, cluster, identity)
    for wrap, secret in usable:
        try:
            aead = AESGCM(wrapping_key(secret, wrap.salt))
            data_key = aead.decrypt(wrap.nonce, wrap.wrapped_key, wrap_ad)
        except InvalidTag:
            continue
        break
    else:
        raise IntegrityError(name)
    payload_ad = associated_data(kind, cluster, identity, header)
    try:
        return AESGCM(data_key).decrypt(nonce, ciphertext, payload_ad)
    except InvalidTag as err:
        raise IntegrityError(name) from err
