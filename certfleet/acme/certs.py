"""Certificates and CSRs as the ACME provider handles them: pure functions, bytes in.

- ``csr_names`` / ``csr_pubkey_hash``: what a CSR asks for, and the key it is for (the
  lowercase hex SHA-256 of its SubjectPublicKeyInfo, as the engine names keys);
- ``split_chain``: the PEM chain a CA sends (leaf first) as leaf and intermediates;
- ``cert_id``: a certificate's RFC 9773 identifier, for renewal information and
  ``replaces``.
"""

from __future__ import annotations

import base64
import hashlib
import math

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat


def csr_names(csr_pem: bytes) -> tuple[str, ...]:
    """The DNS names of a CSR's subjectAltName, in order."""
    csr = x509.load_pem_x509_csr(csr_pem)
    san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return tuple(san.get_values_for_type(x509.DNSName))


def csr_pubkey_hash(csr_pem: bytes) -> str:
    """Lowercase hex SHA-256 of the CSR's SubjectPublicKeyInfo (DER)."""
    csr = x509.load_pem_x509_csr(csr_pem)
    der = csr.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def split_chain(pem: bytes) -> tuple[bytes, tuple[bytes, ...]]:
    """Leaf and intermediates of a PEM chain as the CA sent it (leaf first)."""
    certs = x509.load_pem_x509_certificates(pem)
    if not certs:
        raise ValueError("the CA sent no certificate")
    parts = tuple(cert.public_bytes(Encoding.PEM) for cert in certs)
    return parts[0], parts[1:]


def cert_id(certificate_pem: bytes) -> str:
    """RFC 9773 certificate identifier: base64url(AKI keyIdentifier) "." base64url(serial)."""
    cert = x509.load_pem_x509_certificate(certificate_pem)
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    if aki.key_identifier is None:
        raise ValueError("the certificate's AKI has no key identifier")
    serial = cert.serial_number
    raw = serial.to_bytes(math.ceil((serial.bit_length() + 1) / 8), "big", signed=True)
    return f"{_b64url(aki.key_identifier)}.{_b64url(raw)}"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")
