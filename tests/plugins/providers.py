"""Provider doubles for the sync's tests.

:class:`PassThroughProvider` hands every call of the sync's ``Provider`` interface to a real
provider (``inner``, e.g. an ``ApiV3Provider`` on the sandbox), the four with default bodies
too; a test's double subclasses it and overrides only the calls it falsifies (an empty
listing, an exception, a corrupted certificate), so the double names what it changes and
nothing else. :func:`sign_csr` is the in-process issuance of the doubles that stand in
for a CA.
"""

from __future__ import annotations

import datetime
from collections.abc import Collection, Mapping, Sequence
from typing import Optional

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from certfleet.sandbox.ca import SandboxCa
from certfleet.sync.keypair import spki_hash
from certfleet.sync.provider import IssuedCert, Provider, ProviderOrder, SourceRevision


def sign_csr(
    ca: SandboxCa, csr_pem: bytes, names: Sequence[str], now: datetime.datetime
) -> tuple[str, IssuedCert]:
    """The CSR's public key hash and a 90-day certificate for ``names`` signed by ``ca``."""
    key = x509.load_pem_x509_csr(csr_pem).public_key()
    assert isinstance(key, (ec.EllipticCurvePublicKey, rsa.RSAPublicKey))
    leaf = ca.issue(key, list(names), now, datetime.timedelta(days=90))
    issued = IssuedCert(
        leaf.crt_pem.encode(),
        tuple(pem.encode() for pem in ca.chain_pem),
        format(leaf.serial, "x"),
        int(leaf.not_before.timestamp()),
        int(leaf.not_after.timestamp()),
    )
    return spki_hash(key), issued


class PassThroughProvider(Provider):
    """Every call goes to ``inner`` unchanged."""

    def __init__(self, inner: Provider) -> None:
        self.inner = inner

    def list_orders(self, cluster: str) -> Sequence[ProviderOrder]:
        return self.inner.list_orders(cluster)

    def get_order(self, name: str) -> ProviderOrder:
        return self.inner.get_order(name)

    def submit_csr(self, order_name: str, csr_pem: bytes) -> str:
        return self.inner.submit_csr(order_name, csr_pem)

    def fetch_certificate(
        self, order_name: str, pubkey_hash: str, *, wait: float
    ) -> Optional[IssuedCert]:
        return self.inner.fetch_certificate(order_name, pubkey_hash, wait=wait)

    def renewal_times(self, cluster: str, names: Sequence[str]) -> Mapping[str, int]:
        return self.inner.renewal_times(cluster, names)

    def forget_removed(self, cluster: str, listed: Collection[str]) -> list[str]:
        return self.inner.forget_removed(cluster, listed)

    def expect_revision(self, cluster: str, revision: SourceRevision) -> None:
        self.inner.expect_revision(cluster, revision)

    def seen_revision(self, cluster: str) -> SourceRevision:
        return self.inner.seen_revision(cluster)
