"""The seam between the sync engine and a certificate provider.

The engine sees only this module's types. ``apiv3_provider`` adapts SSLMate's APIv3 to it;
an ACME provider (RFC 8555, orders kept in the store) is meant to follow without touching
the engine.

Contract of a ``Provider``:

- ``list_orders(cluster)`` returns every order of the cluster, all pages read, or raises
  ``ProviderError``: a partial listing never reaches the engine;
- ``get_order(name)`` returns the order wherever it lives, or raises ``ProviderNotFound``
  when the provider says it does not exist (the only answer that may lead to a tombstone);
- ``submit_csr(order_name, csr_pem)`` is idempotent by public key: submitting the same
  key twice is a no-op; it returns the lowercase hex SHA-256 of the CSR's
  SubjectPublicKeyInfo (DER);
- ``fetch_certificate(order_name, pubkey_hash, wait=S)`` returns the issued certificate,
  or ``None`` while it is still pending after waiting at most about ``wait`` seconds; it
  raises ``ProviderNotFound`` when no CSR with that key is known for the order.

Every other failure (network, 5xx, refusal) is a ``ProviderError``.

A provider may also offer ``renewal_times(cluster, names) -> Mapping[str, int]``: the
renewal time (Unix seconds) it suggests for some of the named published orders (the ACME
provider's ARI window); the engine then uses it instead of its lifetime rule for them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional, Protocol

from certfleet.sync.errors import SyncError, printable


class ProviderError(SyncError):
    """A provider call failed; ``operation`` names it, ``subject`` the order or cluster.

    ``reason`` often quotes the provider's own answer: it is kept repr-escaped and cut
    (see ``printable``), so a hostile answer cannot put control characters in a message.
    """

    def __init__(self, operation: str, subject: str, reason: str) -> None:
        self.operation = operation
        self.subject = printable(subject)
        self.reason = printable(reason)
        super().__init__(f"provider {operation} for {self.subject} failed: {self.reason}")


class ProviderNotFound(ProviderError):
    """The provider answered that the order (or the order's CSR) does not exist."""

    def __init__(self, operation: str, subject: str) -> None:
        super().__init__(operation, subject, "not found")


@dataclass(frozen=True)
class ProviderOrder:
    """An order as the engine needs it: DNS names are lowercase, sorted, distinct."""

    __slots__ = ("cluster", "dns_names", "name")

    name: str
    cluster: str
    dns_names: tuple[str, ...]


@dataclass(frozen=True)
class IssuedCert:
    """An issued certificate: leaf, intermediates in order, Unix-second validity."""

    certificate_pem: bytes
    chain_pem: tuple[bytes, ...]
    serial: str
    not_before: int
    not_after: int


class Provider(Protocol):
    """What the engine asks of a certificate provider (see the module docstring)."""

    def list_orders(self, cluster: str) -> Sequence[ProviderOrder]: ...

    def get_order(self, name: str) -> ProviderOrder: ...

    def submit_csr(self, order_name: str, csr_pem: bytes) -> str: ...

    def fetch_certificate(
        self, order_name: str, pubkey_hash: str, *, wait: float
    ) -> Optional[IssuedCert]: ...
