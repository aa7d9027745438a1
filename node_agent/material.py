"""The files an installed order consists of, rendered from a checked bundle.

For key type ``T`` (``rsa`` or ``ecdsa``): ``T.key.pem`` (PKCS#8), ``T.crt.pem`` (leaf),
``T.chain.pem`` (intermediates), ``T.chained.pem`` (leaf + intermediates),
``T.combined.pem`` (key + leaf + intermediates) and ``T.p12`` (PKCS#12 under
``p12_password``). Every PEM is re-serialised, so no stray bytes from the store reach the disk.

The PKCS#12 file encrypts the key and the certificates with PBES2 (PBKDF2-HMAC-SHA256,
AES-256-CBC) and has an HMAC-SHA256 MAC, the algorithms Java's own keytool writes since
8u301 and 11.0.12, which OpenSSL 1.1.1 and 3 and Windows 10 1709 / Server 2019 and later
read too (the tests read it with ``openssl pkcs12`` and Java 17's ``keytool``). An empty
password writes neither encryption nor MAC: ``openssl pkcs12 -passin pass:`` reads it but
Java lists no entry in it, which is why the configured default is not empty.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    KeySerializationEncryption,
    NoEncryption,
    PrivateFormat,
    pkcs12,
)

from node_agent.certificate import CheckedBundle

# The file types, in the order files are written (key first), as `files { TYPE = ... }` names them.
FILE_TYPES = ("key", "crt", "chain", "chained", "combined", "p12")
KEY_BEARING = frozenset({"key", "combined", "p12"})
_SUFFIX = {
    "key": "key.pem",
    "crt": "crt.pem",
    "chain": "chain.pem",
    "chained": "chained.pem",
    "combined": "combined.pem",
    "p12": "p12",
}
_P12_KDF_ROUNDS = 50_000


def file_name(key_type: str, file_type: str) -> str:
    """The name of a file inside a version directory, e.g. ``rsa.key.pem``."""
    return f"{key_type}.{_SUFFIX[file_type]}"


@dataclass(frozen=True)
class OrderFiles:
    """Every file of one installed version, by file type; the repr hides the contents."""

    key_type: str
    contents: Mapping[str, bytes]

    def __repr__(self) -> str:
        return f"OrderFiles(key_type={self.key_type!r}, types={sorted(self.contents)})"


def _p12_encryption(password: str) -> KeySerializationEncryption:
    if not password:
        return NoEncryption()
    return (
        PrivateFormat.PKCS12.encryption_builder()
        .kdf_rounds(_P12_KDF_ROUNDS)
        .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC)
        .hmac_hash(hashes.SHA256())
        .build(password.encode("utf-8"))
    )


def render(checked: CheckedBundle, *, p12_password: str) -> OrderFiles:
    """The contents of every file type for ``checked``."""
    key = checked.private_key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    leaf = checked.leaf.public_bytes(Encoding.PEM)
    chain = b"".join(certificate.public_bytes(Encoding.PEM) for certificate in checked.chain)
    p12 = pkcs12.serialize_key_and_certificates(
        checked.bundle.order_name.encode("utf-8"),
        checked.private_key,
        checked.leaf,
        list(checked.chain) or None,
        _p12_encryption(p12_password),
    )
    contents = {
        "key": key,
        "crt": leaf,
        "chain": chain,
        "chained": leaf + chain,
        "combined": key + leaf + chain,
        "p12": p12,
    }
    return OrderFiles(checked.bundle.key_type, contents)
