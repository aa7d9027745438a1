"""Key material in its text forms: cluster secrets, the publisher's signing and public keys.

Text forms (docs/format.md "Text forms and names"), base64url written without padding, read with or
without it:

- cluster secret ``"<id>:<base64url of 32 random bytes>"``, id ``[A-Za-z0-9_-]{1,32}``;
  read also with the standard base64 alphabet (``+`` ``/``), which a secret made by
  ``sslmate clusters add`` may use, and always written back as base64url;
- publisher private key ``"ed25519-private:<base64url of the 32-byte seed>"``;
- publisher public key ``"ed25519:<base64url of the 32-byte key>"``.

Parse errors say what is wrong and never echo the text; reprs redact private material.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from certfleet.bundle.errors import MalformedError

SECRET_ID = re.compile(r"[A-Za-z0-9_-]{1,32}")
_B64URL = re.compile(r"[A-Za-z0-9_-]*={0,2}")
_B64STD = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_TO_URL = str.maketrans("+/", "-_")
_KEY_BYTES = 32
_PRIVATE_PREFIX = "ed25519-private:"
_PUBLIC_PREFIX = "ed25519:"
# Sync-private secrets: HKDF-SHA256 of the signing key's seed, info = prefix + purpose.
SYNC_SECRET_INFO = b"certfleet/v1/sync-private/"
SYNC_PURPOSES = ("state", "registry")


def b64url_encode(data: bytes) -> str:
    """Unpadded base64url, the canonical text form of every key."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_32(text: str, what: str) -> bytes:
    """Decode canonical base64url of exactly 32 bytes, padding optional."""
    if not _B64URL.fullmatch(text):
        raise MalformedError(what, "is not base64url (A-Z a-z 0-9 - _, optional = padding)")
    bare = text.rstrip("=")
    try:
        raw = base64.urlsafe_b64decode(bare + "=" * (-len(bare) % 4))
    except (binascii.Error, ValueError) as err:
        raise MalformedError(what, "is not valid base64url") from err
    if len(raw) != _KEY_BYTES:
        raise MalformedError(what, f"must encode {_KEY_BYTES} bytes, not {len(raw)}")
    if b64url_encode(raw) != bare:
        raise MalformedError(what, "is not canonical base64url")
    return raw


def validate_secret_id(secret_id: str, what: str = "cluster secret") -> str:
    if not isinstance(secret_id, str) or not SECRET_ID.fullmatch(secret_id):
        raise MalformedError(what, "id must be 1-32 characters of A-Z a-z 0-9 _ -")
    return secret_id


@dataclass(frozen=True, repr=False)
class ClusterSecret:
    """A cluster secret: its public id and its 32 secret bytes."""

    id: str
    key: bytes

    def __post_init__(self) -> None:
        validate_secret_id(self.id)
        if not isinstance(self.key, bytes) or len(self.key) != _KEY_BYTES:
            raise MalformedError(f"cluster secret {self.id}", "key must be 32 bytes")

    @classmethod
    def generate(cls, secret_id: str) -> ClusterSecret:
        return cls(secret_id, os.urandom(_KEY_BYTES))

    @classmethod
    def parse(cls, text: str) -> ClusterSecret:
        if not isinstance(text, str) or ":" not in text:
            raise MalformedError("cluster secret", "must look like '<id>:<base64url of 32 bytes>'")
        secret_id, _, encoded = text.partition(":")
        validate_secret_id(secret_id)
        what = f"cluster secret {secret_id}"
        if "+" in encoded or "/" in encoded:  # standard base64, as SSLMate's may be
            if not _B64STD.fullmatch(encoded):
                raise MalformedError(what, "mixes the base64 and base64url alphabets")
            encoded = encoded.translate(_TO_URL)
        return cls(secret_id, _b64url_32(encoded, what))

    def export(self) -> str:
        return f"{self.id}:{b64url_encode(self.key)}"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ClusterSecret):
            return NotImplemented
        return self.id == other.id and hmac.compare_digest(self.key, other.key)

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        return f"ClusterSecret(id={self.id!r}, key=<redacted>)"

    __str__ = __repr__


@dataclass(frozen=True, repr=False)
class PublicKey:
    """A publisher's Ed25519 public key, pinned by nodes."""

    raw: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.raw, bytes) or len(self.raw) != _KEY_BYTES:
            raise MalformedError("publisher key", "must be 32 bytes")

    @classmethod
    def parse(cls, text: str) -> PublicKey:
        if not isinstance(text, str) or not text.startswith(_PUBLIC_PREFIX):
            raise MalformedError("publisher key", f"must look like '{_PUBLIC_PREFIX}<base64url>'")
        return cls(_b64url_32(text[len(_PUBLIC_PREFIX) :], "publisher key"))

    def export(self) -> str:
        return _PUBLIC_PREFIX + b64url_encode(self.raw)

    def verify(self, signature: bytes, data: bytes) -> bool:
        """True when ``signature`` is a valid Ed25519 signature of ``data`` by this key."""
        try:
            Ed25519PublicKey.from_public_bytes(self.raw).verify(signature, data)
        except (InvalidSignature, ValueError):
            return False
        return True

    def __repr__(self) -> str:
        return f"PublicKey({self.export()!r})"

    __str__ = export


class SigningKey:
    """The publisher's Ed25519 private key; only the sync holds it."""

    __slots__ = ("_key", "_seed")

    def __init__(self, seed: bytes) -> None:
        if not isinstance(seed, bytes) or len(seed) != _KEY_BYTES:
            raise MalformedError("publisher signing key", "seed must be 32 bytes")
        self._seed = seed
        self._key = Ed25519PrivateKey.from_private_bytes(seed)

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(os.urandom(_KEY_BYTES))

    @classmethod
    def parse(cls, text: str) -> SigningKey:
        if not isinstance(text, str) or not text.startswith(_PRIVATE_PREFIX):
            raise MalformedError(
                "publisher signing key", f"must look like '{_PRIVATE_PREFIX}<base64url>'"
            )
        return cls(_b64url_32(text[len(_PRIVATE_PREFIX) :], "publisher signing key"))

    def export(self) -> str:
        return _PRIVATE_PREFIX + b64url_encode(self._seed)

    def public_key(self) -> PublicKey:
        return PublicKey(self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data)

    def label_key(self) -> X25519PrivateKey:
        """The X25519 form of this key, which opens the hostname labels of acks
        (``certfleet.bundle.acklabel``): the scalar Ed25519 derives from the seed, the first
        half of SHA-512(seed) (X25519 clamps it)."""
        return X25519PrivateKey.from_private_bytes(hashlib.sha512(self._seed).digest()[:32])

    def sync_secret(self, purpose: str) -> ClusterSecret:
        """The sync-only secret for one purpose, derived from the seed; no node holds it.

        ``state`` seals the sync's own objects (lease, state, pending keys, ACME state);
        ``registry`` seals the order registry, so that a process serving the order API can
        hold that one derived secret without the signing key. The secret id is
        ``sync-<purpose>``; the bytes are HKDF-SHA256(seed, salt = none,
        info = ``certfleet/v1/sync-private/<purpose>``).
        """
        if purpose not in SYNC_PURPOSES:
            raise ValueError(f"unknown sync secret purpose {purpose!r}")
        info = SYNC_SECRET_INFO + purpose.encode("ascii")
        derived = HKDF(algorithm=SHA256(), length=_KEY_BYTES, salt=None, info=info)
        return ClusterSecret(f"sync-{purpose}", derived.derive(self._seed))

    def __repr__(self) -> str:
        return f"SigningKey(public={self.public_key().export()!r}, seed=<redacted>)"

    __str__ = __repr__
