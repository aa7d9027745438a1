"""Bundles: one order's private key and certificates, sealed for the cluster.

A bundle's identity in the associated data is its order name, so a bundle stored under
another order's entry fails to open. Its plaintext encoding is canonical; DNS names are
stored lowercase, in the order the certificate lists them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from certfleet.bundle.codec import Reader, Writer
from certfleet.bundle.envelope import Rng, object_name, open_sealed, seal
from certfleet.bundle.errors import MalformedError
from certfleet.bundle.keys import ClusterSecret
from certfleet.bundle.names import validate_dns_name, validate_order_name
from certfleet.bundle.shard import check_time, validate_serial

KIND = "bundle"
KEY_TYPES = ("rsa", "ecdsa")
MAX_DNS_NAMES = 1000
MAX_CHAIN = 16
MAX_PEM = 64 * 1024


@dataclass(frozen=True)
class Bundle:
    """An order's key and certificates; times are Unix seconds. The repr hides the key."""

    order_name: str
    dns_names: tuple[str, ...]
    key_type: str
    private_key_pem: bytes
    certificate_pem: bytes
    chain_pem: tuple[bytes, ...]
    serial: str
    not_before: int
    not_after: int

    def __post_init__(self) -> None:
        validate_order_name(self.order_name, where="bundle")
        where = f"bundle for order {self.order_name}"
        object.__setattr__(self, "dns_names", validate_dns_names(self.dns_names, where))
        object.__setattr__(self, "chain_pem", tuple(self.chain_pem))
        if self.key_type not in KEY_TYPES:
            raise MalformedError(where, "key_type must be 'rsa' or 'ecdsa'")
        if len(self.chain_pem) > MAX_CHAIN:
            raise MalformedError(where, f"chain has more than {MAX_CHAIN} certificates")
        for pem in (self.private_key_pem, self.certificate_pem, *self.chain_pem):
            if not isinstance(pem, bytes) or not 0 < len(pem) <= MAX_PEM:
                raise MalformedError(where, "every PEM must be 1 byte to 64 KiB")
        validate_serial(self.serial, where)
        check_time(self.not_before, "not_before", where)
        check_time(self.not_after, "not_after", where)
        if self.not_before > self.not_after:
            raise MalformedError(where, "not_before is after not_after")

    def __repr__(self) -> str:
        return (
            f"Bundle(order_name={self.order_name!r}, dns_names={self.dns_names!r}, "
            f"key_type={self.key_type!r}, private_key_pem=<redacted>, serial={self.serial!r}, "
            f"not_before={self.not_before}, not_after={self.not_after})"
        )

    __str__ = __repr__


def validate_dns_names(dns_names: Sequence[str], where: str) -> tuple[str, ...]:
    """``dns_names`` checked (lowercased), 1 to ``MAX_DNS_NAMES`` of them, all distinct."""
    checked = tuple(validate_dns_name(name, where=where) for name in dns_names)
    if not 1 <= len(checked) <= MAX_DNS_NAMES or len(set(checked)) != len(checked):
        raise MalformedError(where, f"needs 1 to {MAX_DNS_NAMES} distinct DNS names")
    return checked


def write_dns_names(writer: Writer, dns_names: Sequence[str]) -> Writer:
    """A u32 count, then each name as text."""
    writer.u32(len(dns_names))
    for name in dns_names:
        writer.text(name)
    return writer


def read_dns_names(reader: Reader, name: str) -> tuple[str, ...]:
    """What :func:`write_dns_names` wrote; each name must already be valid and lowercase."""
    dns_names = []
    for _ in range(reader.count(4, MAX_DNS_NAMES)):
        dns_name = reader.text(253)
        if validate_dns_name(dns_name, where=name) != dns_name:
            raise reader.fail("DNS names must be stored lowercase")
        dns_names.append(dns_name)
    return tuple(dns_names)


def encode_bundle(bundle: Bundle) -> bytes:
    """The canonical plaintext of a bundle."""
    writer = write_dns_names(Writer().text(bundle.order_name), bundle.dns_names)
    writer.text(bundle.key_type).blob(bundle.private_key_pem).blob(bundle.certificate_pem)
    writer.u32(len(bundle.chain_pem))
    for pem in bundle.chain_pem:
        writer.blob(pem)
    writer.text(bundle.serial).u64(bundle.not_before).u64(bundle.not_after)
    return writer.getvalue()


def decode_bundle(payload: bytes, name: str = "bundle") -> Bundle:
    """Parse a bundle plaintext strictly (DNS names must already be lowercase)."""
    reader = Reader(payload, name)
    order_name = validate_order_name(reader.text(253), where=name)
    dns_names = read_dns_names(reader, name)
    key_type = reader.text(8)
    private_key_pem = reader.blob(MAX_PEM)
    certificate_pem = reader.blob(MAX_PEM)
    chain_pem = tuple(reader.blob(MAX_PEM) for _ in range(reader.count(4, MAX_CHAIN)))
    serial = validate_serial(reader.text(128), name)
    not_before = reader.u64()
    not_after = reader.u64()
    reader.end()
    try:
        return Bundle(
            order_name,
            dns_names,
            key_type,
            private_key_pem,
            certificate_pem,
            chain_pem,
            serial,
            not_before,
            not_after,
        )
    except MalformedError as err:
        raise MalformedError(name, err.reason) from err


def seal_bundle(
    bundle: Bundle, *, cluster: str, secrets: Sequence[ClusterSecret], rng: Rng = os.urandom
) -> bytes:
    return seal(KIND, cluster, bundle.order_name, encode_bundle(bundle), secrets, rng=rng)


def open_bundle(
    data: bytes, *, cluster: str, order_name: str, secrets: Sequence[ClusterSecret]
) -> Bundle:
    validate_order_name(order_name)
    name = object_name(KIND, cluster, order_name)
    bundle = decode_bundle(open_sealed(KIND, cluster, order_name, data, secrets), name)
    if bundle.order_name != order_name:
        raise MalformedError(name, "holds another order's bundle")
    return bundle
