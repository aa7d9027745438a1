"""The seam between the sync engine and a certificate provider.

The engine sees only this module's types. Two providers implement it: ``apiv3_provider``
adapts SSLMate's APIv3, ``acme_provider`` an RFC 8555 CA with the orders kept in the store
(built by ``acme_wiring``); the engine does not know which one it talks to.

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
  raises ``ProviderNotFound`` when no CSR with that key is known for the order;
- ``renewal_times(cluster, names)`` returns the renewal time (Unix seconds) the provider
  suggests for some of the named published orders (the ACME provider's ARI window); the
  engine uses it instead of its lifetime rule for those, and its own rule for the others;
- ``forget_removed(cluster, listed)`` is called once per run, after the head is published,
  when the listing succeeded (``listed``: the names it gave); the provider drops what it
  keeps of the cluster's orders that no longer exist (the ACME provider: its state records,
  after deactivating the authorizations of an ACME order left unfinished at the CA), never
  of one listed or worked on in this run, and returns the names it dropped;
- ``expect_revision(cluster, revision)`` is called before the listing with the
  ``SourceRevision`` of the cluster's order source (the ACME order registry) this sync
  acted on last (number 0: none); from then on the provider refuses with
  ``ProviderError``, never with fewer orders or ``ProviderNotFound``, a source that went
  back (deleted, an older copy, or one that does not descend from it);
  ``seen_revision(cluster)`` is where the source stood at the last read of this run, which
  the engine remembers in the sync state. A provider without revisions answers number 0.

Every other failure (network, 5xx, refusal) is a ``ProviderError``.

The last four have default bodies in ``Provider`` (no opinion, nothing kept): a provider that
subclasses ``Provider`` explicitly, as the APIv3 one does, inherits them.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
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
class SourceRevision:
    """Where a cluster's order source stands: its revision number, raised by every write
    (0: none seen), and the id of the write that made it ("": unknown)."""

    number: int = 0
    write_id: str = ""


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

    def renewal_times(self, cluster: str, names: Sequence[str]) -> Mapping[str, int]:
        """No opinion by default: the engine's lifetime rule decides every renewal."""
        return {}

    def forget_removed(self, cluster: str, listed: Collection[str]) -> list[str]:
        """Nothing kept by default, so nothing to drop."""
        return []

    def expect_revision(self, cluster: str, revision: SourceRevision) -> None:
        """No revisions by default: nothing to check."""
        return None

    def seen_revision(self, cluster: str) -> SourceRevision:
        """No revisions by default."""
        return SourceRevision()
