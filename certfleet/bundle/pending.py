"""Pending keys: a freshly generated private key, sealed into the sync's state before its
CSR is submitted, so a crash between the two never loses the key the CA will certify.

The identity bound into the associated data is the order name. Times are Unix seconds.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

from certfleet.bundle.codec import Reader, Writer
from certfleet.bundle.envelope import Rng, object_name, open_sealed, seal
from certfleet.bundle.errors import MalformedError
from certfleet.bundle.keybundle import (
    KEY_TYPES,
    MAX_PEM,
    read_dns_names,
    validate_dns_names,
    write_dns_names,
)
from certfleet.bundle.keys import ClusterSecret
from certfleet.bundle.names import validate_order_name
from certfleet.bundle.shard import check_time

KIND = "pending"
_PUBKEY_HASH = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class PendingKey:
    """A key awaiting its certificate: PKCS#8 PEM plus what the CSR asked for."""

    order_name: str
    key_type: str
    private_key_pem: bytes
    pubkey_hash: str
    dns_names: tuple[str, ...]
    created_at: int

    def __post_init__(self) -> None:
        validate_order_name(self.order_name, where="pending key")
        where = f"pending key for order {self.order_name}"
        if self.key_type not in KEY_TYPES:
            raise MalformedError(where, "key_type must be 'rsa' or 'ecdsa'")
        pem = self.private_key_pem
        if not isinstance(pem, bytes) or not 0 < len(pem) <= MAX_PEM:
            raise MalformedError(where, "private key PEM must be 1 byte to 64 KiB")
        if not isinstance(self.pubkey_hash, str) or not _PUBKEY_HASH.fullmatch(self.pubkey_hash):
            raise MalformedError(where, "pubkey_hash must be 64 lowercase hex digits")
        object.__setattr__(self, "dns_names", validate_dns_names(self.dns_names, where))
        check_time(self.created_at, "created_at", where)

    def __repr__(self) -> str:
        return (
            f"PendingKey(order_name={self.order_name!r}, key_type={self.key_type!r}, "
            f"private_key_pem=<redacted>, pubkey_hash={self.pubkey_hash!r}, "
            f"dns_names={self.dns_names!r}, created_at={self.created_at})"
        )

    __str__ = __repr__


def encode_pending(pending: PendingKey) -> bytes:
    writer = Writer().text(pending.order_name).text(pending.key_type)
    writer.blob(pending.private_key_pem).text(pending.pubkey_hash)
    return write_dns_names(writer, pending.dns_names).u64(pending.created_at).getvalue()


def decode_pending(payload: bytes, name: str = "pending key") -> PendingKey:
    reader = Reader(payload, name)
    order_name = validate_order_name(reader.text(253), where=name)
    key_type = reader.text(8)
    private_key_pem = reader.blob(MAX_PEM)
    pubkey_hash = reader.text(64)
    dns_names = read_dns_names(reader, name)
    created_at = reader.u64()
    reader.end()
    try:
        return PendingKey(order_name, key_type, private_key_pem, pubkey_hash, dns_names, created_at)
    except MalformedError as err:
        raise MalformedError(name, err.reason) from err


def seal_pending(
    pending: PendingKey,
    *,
    cluster: str,
    secrets: Sequence[ClusterSecret],
    rng: Rng = os.urandom,
) -> bytes:
    return seal(KIND, cluster, pending.order_name, encode_pending(pending), secrets, rng=rng)


def open_pending(
    data: bytes, *, cluster: str, order_name: str, secrets: Sequence[ClusterSecret]
) -> PendingKey:
    validate_order_name(order_name)
    name = object_name(KIND, cluster, order_name)
    pending = decode_pending(open_sealed(KIND, cluster, order_name, data, secrets), name)
    if pending.order_name != order_name:
        raise MalformedError(name, "holds another order's pending key")
    return pending
