"""The sandbox's test CA: a root and an intermediate (ECDSA P-256) issuing real leaves.

Nothing here is trusted anywhere: the root is made when a data directory is first used
and is served at ``/api/v3/sandbox/root.pem`` so that tests can verify chains against it.
The root's private key is dropped once the intermediate is signed.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certfleet.sandbox.errors import DataDirError

_CA_VALIDITY = datetime.timedelta(days=365 * 30)
_BACKDATE = datetime.timedelta(hours=1)


@dataclass(frozen=True)
class IssuedCert:
    """A leaf the CA signed."""

    crt_pem: str
    serial: int
    not_before: datetime.datetime
    not_after: datetime.datetime


class SandboxCa:
    """Root + intermediate; :meth:`issue` signs leaves with the intermediate."""

    def __init__(
        self,
        root: x509.Certificate,
        intermediate: x509.Certificate,
        intermediate_key: ec.EllipticCurvePrivateKey,
    ) -> None:
        self._root = root
        self._intermediate = intermediate
        self._key = intermediate_key

    def __repr__(self) -> str:
        return f"SandboxCa(root={self._root.subject.rfc4514_string()!r})"

    @classmethod
    def create(cls, now: datetime.datetime) -> SandboxCa:
        """A fresh root and intermediate, valid from a day before ``now`` for 30 years."""
        root_key = ec.generate_private_key(ec.SECP256R1())
        root_name = _name("certfleet sandbox TEST root - not trusted")
        root = _ca_builder(root_name, root_name, root_key.public_key(), root_key.public_key(), now)
        root_cert = root.add_extension(
            x509.BasicConstraints(ca=True, path_length=1), critical=True
        ).sign(root_key, hashes.SHA256())
        key = ec.generate_private_key(ec.SECP256R1())
        inter = _ca_builder(
            _name("certfleet sandbox TEST intermediate - not trusted"),
            root_name,
            key.public_key(),
            root_key.public_key(),
            now,
        )
        inter_cert = inter.add_extension(
            x509.BasicConstraints(ca=True, path_length=0), critical=True
        ).sign(root_key, hashes.SHA256())
        return cls(root_cert, inter_cert, key)

    @classmethod
    def from_json(cls, data: object, path: str) -> SandboxCa:
        """The CA stored by :meth:`to_json`; :class:`DataDirError` naming ``path`` if bad."""
        if not isinstance(data, dict):
            raise DataDirError(path, "not a sandbox CA file")
        try:
            root = x509.load_pem_x509_certificate(data["root"].encode())
            inter = x509.load_pem_x509_certificate(data["intermediate"].encode())
            key = serialization.load_pem_private_key(data["intermediate_key"].encode(), None)
        except (KeyError, AttributeError, ValueError) as err:
            raise DataDirError(path, "not a sandbox CA file") from err
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise DataDirError(path, "the intermediate key is not an EC key")
        return cls(root, inter, key)

    def to_json(self) -> dict[str, str]:
        """Certificates and the intermediate's private key, as PEM strings."""
        key_pem = self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return {
            "root": self.root_pem,
            "intermediate": self.chain_pem[0],
            "intermediate_key": key_pem.decode(),
        }

    @property
    def root_pem(self) -> str:
        return self._root.public_bytes(serialization.Encoding.PEM).decode()

    @property
    def chain_pem(self) -> list[str]:
        """The intermediates a leaf needs, issuer first (just the one)."""
        return [self._intermediate.public_bytes(serialization.Encoding.PEM).decode()]

    def issue(
        self,
        public_key: CertificatePublicKeyTypes,
        dns_names: list[str],
        now: datetime.datetime,
        lifetime: datetime.timedelta,
    ) -> IssuedCert:
        """A leaf for ``public_key``: SANs ``dns_names``, CN the first, serverAuth.

        not_before is ``now`` minus one hour (as public CAs do); not_after is
        ``now + lifetime``. Raises ``ValueError`` for names X.509 cannot carry.
        """
        now = now.replace(microsecond=0)
        usage_for_rsa = isinstance(public_key, rsa.RSAPublicKey)
        inter_ski = self._intermediate.extensions.get_extension_for_class(
            x509.SubjectKeyIdentifier
        ).value
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_names[0])]))
            .issuer_name(self._intermediate.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(now + lifetime)
            .add_extension(
                x509.SubjectAlternativeName([x509.DNSName(n) for n in dns_names]), critical=False
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(key_encipherment=usage_for_rsa), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(inter_ski),
                critical=False,
            )
        )
        cert = builder.sign(self._key, hashes.SHA256())
        return IssuedCert(
            crt_pem=cert.public_bytes(serialization.Encoding.PEM).decode(),
            serial=cert.serial_number,
            not_before=now - _BACKDATE,
            not_after=now + lifetime,
        )


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "certfleet sandbox (test double)"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _key_usage(
    *, key_encipherment: bool = False, signs_certificates: bool = False
) -> x509.KeyUsage:
    """digitalSignature, plus keyEncipherment (RSA leaves) or keyCertSign and cRLSign (CAs)."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=key_encipherment,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=signs_certificates,
        crl_sign=signs_certificates,
        encipher_only=False,
        decipher_only=False,
    )


def _ca_builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    issuer_key: ec.EllipticCurvePublicKey,
    now: datetime.datetime,
) -> x509.CertificateBuilder:
    start = now - datetime.timedelta(days=1)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + _CA_VALIDITY)
        .add_extension(_key_usage(signs_certificates=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key), critical=False
        )
    )
