"""Private keys and CSRs: generation, PKCS#8 serialisation and the public-key hash.

Pure functions, bytes in and bytes out. ``pubkey_hash`` is the lowercase hex SHA-256 of
the DER SubjectPublicKeyInfo, the identity APIv3 gives a submitted key.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Union

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

PrivateKey = Union[rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey]
PublicKey = Union[rsa.RSAPublicKey, ec.EllipticCurvePublicKey]

RSA_BITS = 2048


def generate_key(key_type: str) -> PrivateKey:
    """A new private key: ``"rsa"`` (2048-bit) or ``"ecdsa"`` (P-256)."""
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    if key_type == "ecdsa":
        return ec.generate_private_key(ec.SECP256R1())
    raise ValueError(f"unknown key type {key_type!r} (expected 'rsa' or 'ecdsa')")


def private_key_pem(key: PrivateKey) -> bytes:
    """Unencrypted PKCS#8 PEM (it is sealed before it leaves memory)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_private_key(pem: bytes) -> PrivateKey:
    """Parse a PKCS#8 PEM key; ``ValueError`` if it is not an RSA or ECDSA key."""
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
        raise ValueError("private key is neither RSA nor ECDSA")
    return key


def spki_hash(public_key: PublicKey) -> str:
    spki = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).hexdigest()


def pubkey_hash(key: PrivateKey) -> str:
    """Lowercase hex SHA-256 of the key's DER SubjectPublicKeyInfo."""
    return spki_hash(key.public_key())


def build_csr(key: PrivateKey, dns_names: Sequence[str]) -> bytes:
    """A PEM CSR for ``dns_names`` (CN = the first name, every name as a SAN)."""
    if not dns_names:
        raise ValueError("a CSR needs at least one DNS name")
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_names[0][:64])])
    )
    builder = builder.add_extension(
        x509.SubjectAlternativeName([x509.DNSName(name) for name in dns_names]), critical=False
    )
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
