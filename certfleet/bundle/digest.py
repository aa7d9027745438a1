"""Content hashes: every object in the store is addressed by the SHA-256 of its bytes."""

from __future__ import annotations

import hashlib

HASH_SIZE = 32


def content_hash(data: bytes) -> bytes:
    """SHA-256 of the stored bytes (32 bytes), as the head and shards record it."""
    return hashlib.sha256(data).digest()


def content_hash_hex(data: bytes) -> str:
    """Lowercase hex SHA-256 of the stored bytes, as object keys spell it."""
    return hashlib.sha256(data).hexdigest()
