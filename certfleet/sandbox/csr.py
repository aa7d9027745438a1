"""Checking a submitted CSR the way a public CA would, before anything is stored."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from certfleet.sandbox.errors import ApiError

_MIN_RSA_BITS = 2048
_CURVES = ("secp256r1", "secp384r1")


@dataclass(frozen=True)
class CheckedCsr:
    """A CSR whose signature, key and names passed."""

    public_key_pem: str
    pubkey_hash: str


def pubkey_hash(public_key_der: bytes) -> str:
    """The ``pubkey_hash`` of docs/sandbox.md: lowercase hex SHA-256 of the DER
    SubjectPublicKeyInfo."""
    return hashlib.sha256(public_key_der).hexdigest()


def check_csr(pem: str, order_names: list[str]) -> CheckedCsr:
    """The CSR's key and hash if it is well formed, strong and names exactly ``order_names``.

    Raises :class:`ApiError`: 400 ``invalid_csr`` (not PEM, bad signature), 422
    ``weak_key`` (RSA under 2048 bits, EC curves other than P-256/P-384), 422
    ``unsupported_key`` (other key types), 422 ``csr_names_mismatch``. The CSR's names are
    its DNS SANs plus its CN; compared as sets, case-insensitively.
    """
    try:
        csr = x509.load_pem_x509_csr(pem.encode())
    except ValueError as err:
        raise ApiError(400, "invalid_csr", "csr is not a PEM certificate request") from err
    if not csr.is_signature_valid:
        raise ApiError(400, "invalid_csr", "the CSR's signature does not verify")
    try:
        key = csr.public_key()
    except ValueError as err:  # an unknown key algorithm
        raise ApiError(422, "unsupported_key", "the CSR's key type is not supported") from err
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < _MIN_RSA_BITS:
            raise ApiError(
                422, "weak_key", f"RSA keys need at least {_MIN_RSA_BITS} bits, got {key.key_size}"
            )
    elif isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name not in _CURVES:
            raise ApiError(
                422, "weak_key", f"EC keys must use P-256 or P-384, got {key.curve.name}"
            )
    else:
        raise ApiError(422, "unsupported_key", "only RSA and ECDSA keys are supported")
    names = _csr_names(csr)
    wanted = {n.lower() for n in order_names}
    if names != wanted:
        missing = sorted(wanted - names)
        extra = sorted(names - wanted)
        raise ApiError(
            422,
            "csr_names_mismatch",
            f"the CSR's names must equal the order's: missing {missing}, unexpected {extra}",
        )
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    public_pem = key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return CheckedCsr(public_key_pem=public_pem.decode(), pubkey_hash=pubkey_hash(der))


def _csr_names(csr: x509.CertificateSigningRequest) -> set[str]:
    names: set[str] = set()
    for attribute in csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME):
        value = attribute.value
        names.add((value if isinstance(value, str) else value.decode()).lower())
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return names
    for general_name in san:
        if not isinstance(general_name, x509.DNSName):
            raise ApiError(422, "csr_names_mismatch", "the CSR may carry DNS names only")
        names.add(general_name.value.lower())
    return names
