"""The order API's keys: making one, reading it from a request, checking it.

A key is ``<id>_<secret>``: ``id`` 10 lowercase hex digits (public, it names the key in
logs and in the config), ``secret`` 43 characters of base64url (256 random bits). The
config keeps only the SHA-256 of the whole key (``order_api_key`` blocks), so a leaked
config cannot be replayed as a key. A request presents the key as ``Authorization:
Bearer KEY`` or as HTTP Basic with the key as user and an empty password (``curl -u
KEY:``). Checking compares the digest with every configured one in constant time.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field

from certfleet.config.serve import ApiKeyEntry, validate_key_name

MAX_KEY_LENGTH = 200


@dataclass(frozen=True)
class NewApiKey:
    """A key just made: the entry to keep in the config, and the key to show once."""

    entry: ApiKeyEntry
    key: str = field(repr=False)


def key_digest(key: str) -> str:
    """Lowercase hex SHA-256 of the whole key, as the config keeps it."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def generate_key(name: str, clusters: Sequence[str] = ()) -> NewApiKey:
    """A new random key for ``name``, limited to ``clusters`` (none: every cluster)."""
    key_id = secrets.token_hex(5)
    key = f"{key_id}_{secrets.token_urlsafe(32)}"
    entry = ApiKeyEntry(validate_key_name(name), key_id, key_digest(key), tuple(clusters))
    return NewApiKey(entry, key)


def presented_key(authorization: str | None) -> str | None:
    """The key in an ``Authorization`` header (Bearer, or Basic with an empty password)."""
    if not authorization:
        return None
    scheme, _, credentials = authorization.strip().partition(" ")
    credentials = credentials.strip()
    if scheme.lower() == "bearer":
        key = credentials
    elif scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        key, _, password = decoded.partition(":")
        if password:
            return None
    else:
        return None
    if not key or len(key) > MAX_KEY_LENGTH:
        return None
    return key


class KeyRing:
    """The configured keys; :meth:`match` finds the entry of a presented key."""

    def __init__(self, entries: Sequence[ApiKeyEntry]) -> None:
        self._entries = tuple(entries)

    def __len__(self) -> int:
        return len(self._entries)

    def match(self, key: str | None) -> ApiKeyEntry | None:
        """The entry whose digest is the key's, comparing with every entry (constant time)."""
        digest = key_digest(key or "").encode("ascii")
        found: ApiKeyEntry | None = None
        for entry in self._entries:
            if hmac.compare_digest(digest, entry.sha256.encode("ascii")) and key:
                found = entry
        return found
