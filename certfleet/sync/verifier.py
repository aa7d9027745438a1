"""Verification of an issued certificate before anything is published.

``verify_issued`` checks that the leaf matches the private key, covers exactly the order's
DNS names, is valid at ``now``, and that the chain is in order (each certificate issued
by the next one). A failure is a ``CertificateRejected`` naming the order and the rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from certfleet.sync.errors import CertificateRejected
from certfleet.sync.keypair import PrivateKey, pubkey_hash, spki_hash


@dataclass(frozen=True)
class VerifiedCert:
    """What the certificate itself says, once verified (times are Unix seconds)."""

    serial: str
    not_before: int
    not_after: int


def _load(pem: bytes, order_name: str, what: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError as err:
        raise CertificateRejected(order_name, f"{what} is not a PEM certificate") from err


def _sans(cert: x509.Certificate) -> set[str]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return set()
    return {name.lower() for name in ext.value.get_values_for_type(x509.DNSName)}


def verify_issued(
    *,
    order_name: str,
    key: PrivateKey,
    dns_names: Sequence[str],
    certificate_pem: bytes,
    chain_pem: Sequence[bytes],
    now: int,
) -> VerifiedCert:
    """Verify a certificate for an order; return its serial and validity."""
    leaf = _load(certificate_pem, order_name, "the leaf")
    if spki_hash(leaf.public_key()) != pubkey_hash(key):  # type: ignore[arg-type]
        raise CertificateRejected(order_name, "the certificate does not match the private key")
    wanted = {name.lower() for name in dns_names}
    if _sans(leaf) != wanted:
        raise CertificateRejected(
            order_name, "the certificate's DNS names differ from the order's names"
        )
    not_before = int(leaf.not_valid_before_utc.timestamp())
    not_after = int(leaf.not_valid_after_utc.timestamp())
    if not not_before <= now <= not_after:
        raise CertificateRejected(order_name, "the certificate is not valid now")
    chain = [
        _load(pem, order_name, f"chain certificate {i + 1}") for i, pem in enumerate(chain_pem)
    ]
    for position, (child, parent) in enumerate(zip([leaf, *chain], chain)):
        try:
            child.verify_directly_issued_by(parent)
        except (ValueError, TypeError, InvalidSignature) as err:
            raise CertificateRejected(
                order_name, f"chain out of order at position {position + 1}"
            ) from err
    return VerifiedCert(format(leaf.serial_number, "x"), not_before, not_after)
