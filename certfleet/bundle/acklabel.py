"""The hostname label in front of an ack, encrypted for the sync (docs/format.md "Ack").

``certfleet nodes`` must name the host of an ack it cannot open (a node that holds a
retired or mistyped cluster secret), yet whoever reads the store must still see ciphertext
only. So the agent encrypts its hostname a second time, for the publisher: to each Ed25519
key it pins, converted to its X25519 form, with a fresh X25519 key of its own (ECIES). The
sync's signing key opens it: the X25519 private scalar is the one Ed25519 derives from the
seed (the first half of SHA-512(seed)), the public key the birational map of RFC 7748 §4.1,
u = (1 + y) / (1 - y) mod 2^255 - 19 (as libsodium's ``crypto_sign_ed25519_pk_to_curve25519``
and age's ``ssh-ed25519`` recipients do).

The label is not authenticated: the publisher's public key is public (every head carries
it), so anyone who can write ``acks/`` can make one. A reader shows it as a hint only. When
the ack itself opens, the hostname sealed inside it is the one reported.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from certfleet.bundle.codec import Reader, Writer
from certfleet.bundle.envelope import Rng, associated_data
from certfleet.bundle.errors import MalformedError
from certfleet.bundle.keys import PublicKey, SigningKey

MAGIC = b"CFAL"
VERSION = 1
KIND = "ack-label"
INFO = b"certfleet/v1/ack-label"
MAX_ENTRIES = 4
MAX_HOSTNAME = 1024
_P = 2**255 - 19
_NONCE = 12


def x25519_public(publisher: PublicKey) -> bytes:
    """The X25519 form of an Ed25519 public key: u = (1 + y) / (1 - y) mod p."""
    y = int.from_bytes(publisher.raw, "little") & ((1 << 255) - 1)
    if y >= _P or y == 1:
        raise MalformedError("publisher key", "has no X25519 form")
    u = (1 + y) * pow(1 - y, _P - 2, _P) % _P
    return u.to_bytes(32, "little")


@dataclass(frozen=True)
class _Entry:
    publisher: bytes  # the raw Ed25519 public key it is encrypted for
    ephemeral: bytes  # the writer's X25519 public key
    nonce: bytes
    ciphertext: bytes


def _key(shared: bytes, ephemeral: bytes, recipient: bytes) -> bytes:
    return HKDF(SHA256(), 32, ephemeral + recipient, INFO).derive(shared)


def seal_label(
    hostname: str,
    *,
    cluster: str,
    node_id: str,
    publishers: Sequence[PublicKey],
    rng: Rng = os.urandom,
) -> bytes:
    """The label: magic, version, then ``hostname`` encrypted for each publisher."""
    if not 1 <= len(publishers) <= MAX_ENTRIES:
        raise ValueError(f"a label is sealed for 1 to {MAX_ENTRIES} publishers")
    plaintext = hostname.encode("utf-8")
    if len(plaintext) > MAX_HOSTNAME:
        raise ValueError(f"a hostname label holds at most {MAX_HOSTNAME} bytes")
    ad = associated_data(KIND, cluster, node_id)
    writer = Writer().raw(MAGIC).u8(VERSION).u32(len(publishers))
    for publisher in publishers:
        recipient = x25519_public(publisher)
        mine = X25519PrivateKey.from_private_bytes(rng(32))
        ephemeral = mine.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        shared = mine.exchange(X25519PublicKey.from_public_bytes(recipient))
        nonce = rng(_NONCE)
        sealed = AESGCM(_key(shared, ephemeral, recipient)).encrypt(nonce, plaintext, ad)
        writer.raw(publisher.raw).raw(ephemeral).raw(nonce).blob(sealed)
    return writer.getvalue()


def split_label(data: bytes, name: str) -> tuple[tuple[_Entry, ...], bytes]:
    """(the label's entries, empty when the object has no label; the rest of ``data``)."""
    if not data.startswith(MAGIC):
        return (), data
    reader = Reader(data, name)
    reader.raw(len(MAGIC))
    if reader.u8() != VERSION:
        raise MalformedError(name, f"unknown hostname label version (this reader: {VERSION})")
    count = reader.count(32 + 32 + _NONCE + 4 + 16, MAX_ENTRIES)
    if count == 0:
        raise MalformedError(name, "hostname label with no entry")
    entries = tuple(
        _Entry(reader.raw(32), reader.raw(32), reader.raw(_NONCE), reader.blob(MAX_HOSTNAME + 16))
        for _ in range(count)
    )
    return entries, data[reader.position :]


def open_label(
    entries: Sequence[_Entry], *, cluster: str, node_id: str, signing_key: SigningKey
) -> str | None:
    """The hostname, when an entry is encrypted for ``signing_key``'s publisher; None
    otherwise (another publisher's, or it does not open). Unauthenticated."""
    private = signing_key.label_key()
    mine = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    ad = associated_data(KIND, cluster, node_id)
    for entry in entries:
        try:
            if x25519_public(PublicKey(entry.publisher)) != mine:
                continue
            shared = private.exchange(X25519PublicKey.from_public_bytes(entry.ephemeral))
            key = _key(shared, entry.ephemeral, mine)
            plaintext = AESGCM(key).decrypt(entry.nonce, entry.ciphertext, ad)
            return plaintext.decode("utf-8")
        except (InvalidTag, ValueError, MalformedError):
            continue
    return None
