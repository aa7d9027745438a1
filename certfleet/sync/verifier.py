"""Verification of an issued certificate before anything is published.

``verify_issued`` checks that the leaf matches the private key, covers exactly the order's
DNS names, is valid at ``now`` and has a server certificate's profile
(``certfleet.bundle.leaf``), and normalises the chain the provider gave into what every
agent accepts:

- a PEM entry holding several certificates (intermediate + root in one string, as many
  CAs deliver them) is split, and so is a leaf entry followed by its chain;
- the chain is put in order from the leaf up, each link checked (the issuer's subject is
  the child's issuer, and the issuer's key verifies the child's signature);
- a self-signed root at the top is dropped (clients hold their roots; agents refuse a
  chain entry holding several certificates, and nothing is gained by sending the root);
- a certificate that is not on the leaf's issuing path, or a path longer than
  ``MAX_CHAIN``, is refused.

A failure is a ``CertificateRejected`` naming the order and the rule; nothing is published.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding

from certfleet.bundle.leaf import leaf_problem
from certfleet.sync.errors import CertificateRejected
from certfleet.sync.keypair import PrivateKey, pubkey_hash, spki_hash

MAX_CHAIN = 8


@dataclass(frozen=True)
class VerifiedCert:
    """What the certificate itself says, once verified (times are Unix seconds), and the
    certificates to publish: the leaf alone, and the normalised chain (issuer first)."""

    serial: str
    not_before: int
    not_after: int
    certificate_pem: bytes
    chain_pem: tuple[bytes, ...]


def _load(pem: bytes, order_name: str, what: str) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(pem)
    except ValueError as err:
        raise CertificateRejected(order_name, f"{what} is not a PEM certificate") from err


def _sans(cert: x509.Certificate) -> set[str]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return set()
    return {name.lower() for name in ext.value.get_values_for_type(x509.DNSName)}


def _issued_by(child: x509.Certificate, parent: x509.Certificate) -> bool:
    try:
        child.verify_directly_issued_by(parent)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _self_signed(cert: x509.Certificate) -> bool:
    return cert.subject == cert.issuer and _issued_by(cert, cert)


def normalise_chain(
    leaf: x509.Certificate, pool: Sequence[tuple[str, x509.Certificate]], order_name: str
) -> tuple[x509.Certificate, ...]:
    """The certificates of ``pool`` (each with how to name it) in order from the leaf's
    issuer up, without a self-signed root; ``CertificateRejected`` when one is not on the
    path or the path is too long."""
    remaining: list[tuple[str, x509.Certificate]] = []
    seen: set[bytes] = set()
    for label, cert in pool:
        der = cert.public_bytes(Encoding.DER)
        if der not in seen:  # the same certificate twice: once is enough
            seen.add(der)
            remaining.append((label, cert))
    path: list[x509.Certificate] = []
    current = leaf
    while not _self_signed(current):
        found = next(
            (i for i, (_, cert) in enumerate(remaining) if _issued_by(current, cert)), None
        )
        if found is None:
            break
        if len(path) >= MAX_CHAIN:
            raise CertificateRejected(order_name, f"chain longer than {MAX_CHAIN} certificates")
        current = remaining.pop(found)[1]
        path.append(current)
    if remaining:
        raise CertificateRejected(
            order_name, f"{remaining[0][0]} is not on the leaf's issuing chain"
        )
    if path and _self_signed(path[-1]):
        path.pop()
    return tuple(path)


def verify_issued(
    *,
    order_name: str,
    key: PrivateKey,
    dns_names: Sequence[str],
    certificate_pem: bytes,
    chain_pem: Sequence[bytes],
    now: int,
) -> VerifiedCert:
    """Verify a certificate for an order; return its serial, validity and the
    certificates to publish."""
    leaf, *extra = _load(certificate_pem, order_name, "the leaf")
    if spki_hash(leaf.public_key()) != pubkey_hash(key):  # type: ignore[arg-type]
        raise CertificateRejected(order_name, "the certificate does not match the private key")
    wanted = {name.lower() for name in dns_names}
    try:
        names = _sans(leaf)
    except ValueError as err:
        raise CertificateRejected(order_name, "the certificate's extensions are malformed") from err
    if names != wanted:
        raise CertificateRejected(
            order_name, "the certificate's DNS names differ from the order's names"
        )
    problem = leaf_problem(leaf)
    if problem is not None:
        raise CertificateRejected(order_name, problem)
    not_before = int(leaf.not_valid_before_utc.timestamp())
    not_after = int(leaf.not_valid_after_utc.timestamp())
    if not not_before <= now <= not_after:
        raise CertificateRejected(order_name, "the certificate is not valid now")
    pool = [(f"certificate {i + 2} of the leaf entry", cert) for i, cert in enumerate(extra)]
    for position, pem in enumerate(chain_pem):
        label = f"chain certificate {position + 1}"
        pool.extend((label, cert) for cert in _load(pem, order_name, label))
    chain = normalise_chain(leaf, pool, order_name)
    return VerifiedCert(
        format(leaf.serial_number, "x"),
        not_before,
        not_after,
        leaf.public_bytes(Encoding.PEM),
        tuple(cert.public_bytes(Encoding.PEM) for cert in chain),
    )


def published_problem(certificate_pem: bytes, chain_pem: Sequence[bytes]) -> str | None:
    """Why agents would refuse a bundle's certificates as published (by a version that did
    not normalise chains or check the leaf's profile), or None: the leaf and each chain
    entry must be one certificate, the leaf a server certificate, each link in order."""
    try:
        entries = [x509.load_pem_x509_certificates(pem) for pem in (certificate_pem, *chain_pem)]
    except ValueError:
        return "a certificate is not PEM"
    if any(len(entry) != 1 for entry in entries):
        return "an entry holds several certificates"
    issued = [entry[0] for entry in entries]
    problem = leaf_problem(issued[0])
    if problem is not None:
        return problem
    if not all(_issued_by(child, parent) for child, parent in zip(issued, issued[1:])):
        return "the chain is out of order"
    return None
