"""Checks of a decrypted bundle's key and certificates before anything reaches the disk.

The store is untrusted and the sync may have bugs, so the agent checks again what the sync
checked: the private key parses and is of the announced type, the leaf certificate carries
its public key, the leaf's DNS names are exactly the bundle's, the leaf has a server
certificate's profile (not a CA; serverAuth when it has an extended key usage: the same rule
as the sync's, ``certfleet.bundle.leaf``), each certificate is issued by the next one in the
chain, and the leaf is valid now.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_private_key,
)

from certfleet.bundle import Bundle
from certfleet.bundle.leaf import leaf_problem
from node_agent.errors import RefusedError


@dataclass(frozen=True)
class CheckedBundle:
    """A bundle whose key and certificates passed every check, in parsed form."""

    bundle: Bundle
    private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    leaf: x509.Certificate
    chain: tuple[x509.Certificate, ...]

    def __repr__(self) -> str:
        return f"CheckedBundle({self.bundle!r})"


def _spki(key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey | object) -> bytes:
    if not isinstance(key, (rsa.RSAPublicKey, ec.EllipticCurvePublicKey)):
        return b""
    return key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def _load_certificate(pem: bytes, what: str, object_name: str) -> x509.Certificate:
    try:
        certificates = x509.load_pem_x509_certificates(pem)
    except ValueError as err:
        raise RefusedError(object_name, f"{what} is not a PEM certificate") from err
    if len(certificates) != 1:
        raise RefusedError(object_name, f"{what} holds {len(certificates)} certificates, not 1")
    return certificates[0]


def _load_key(bundle: Bundle, object_name: str) -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey:
    try:
        key = load_pem_private_key(bundle.private_key_pem, password=None)
    except (ValueError, TypeError) as err:
        # The message of the underlying error is not shown: it could quote key bytes.
        raise RefusedError(object_name, "private key is not an unencrypted PEM key") from err
    expected = rsa.RSAPrivateKey if bundle.key_type == "rsa" else ec.EllipticCurvePrivateKey
    if not isinstance(key, expected):
        raise RefusedError(object_name, f"private key is not of key type {bundle.key_type}")
    return key


def _dns_names(leaf: x509.Certificate) -> set[str]:
    try:
        extension = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return set()
    return {name.lower() for name in extension.value.get_values_for_type(x509.DNSName)}


def _check_profile(leaf: x509.Certificate, object_name: str) -> None:
    """Refuse a leaf that cannot serve as a TLS server certificate (a CA, no serverAuth)."""
    problem = leaf_problem(leaf)
    if problem is not None:
        raise RefusedError(object_name, problem)


def check_bundle(bundle: Bundle, *, object_name: str, now: int) -> CheckedBundle:
    """Return the parsed bundle, or raise ``RefusedError`` naming ``object_name`` and why."""
    key = _load_key(bundle, object_name)
    leaf = _load_certificate(bundle.certificate_pem, "leaf certificate", object_name)
    chain = tuple(
        _load_certificate(pem, f"chain certificate {position + 1}", object_name)
        for position, pem in enumerate(bundle.chain_pem)
    )
    if _spki(leaf.public_key()) != _spki(key.public_key()):
        raise RefusedError(object_name, "the leaf certificate does not match the private key")
    names = _dns_names(leaf)
    if names != set(bundle.dns_names):
        raise RefusedError(
            object_name,
            f"the leaf certificate names {sorted(names)}, the bundle {sorted(bundle.dns_names)}",
        )
    _check_profile(leaf, object_name)
    issued = (leaf, *chain)
    for position, (child, issuer) in enumerate(zip(issued, issued[1:])):
        try:
            child.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature) as err:
            raise RefusedError(
                object_name,
                f"chain out of order: certificate {position} is not issued by the next one",
            ) from err
    moment = datetime.datetime.fromtimestamp(now, tz=datetime.timezone.utc)
    if moment < leaf.not_valid_before_utc:
        raise RefusedError(object_name, "the leaf certificate is not valid yet", permanent=False)
    if moment > leaf.not_valid_after_utc:
        raise RefusedError(object_name, "the leaf certificate has expired")
    return CheckedBundle(bundle, key, leaf, chain)
