"""The ACME provider's sync-private state for one cluster (``v1/sync/acme/<cluster>``).

One sealed object per cluster (envelope kind ``acme``, identity ``/state``), sealed only
for the sync's own secret (``SigningKey.sync_secret("state")``), which no node holds: a
node with write access to the store cannot forge it, and the provider refuses what it
cannot open. JSON, canonical, holding:

- ``account_url`` and the thumbprint of the key it was registered with (a new key in the
  config registers again);
- per order name, the ACME order in flight for the pending key with ``pubkey_hash``: its
  URL and the CSR to finalize with (so a later run resumes it, and a crash after finalize
  downloads instead of ordering again), the last problem document from the CA, the failed
  attempts and ``retry_at`` (Unix seconds; the order waits until then);
- per order name, the published certificate's ARI id (RFC 9773 ``certID``), the renewal
  time the CA suggested and when to ask again.

The record of an order removed from the registry is dropped (``AcmeState.forget``) by the
run that finds it gone, after that run has published the head (the provider first
deactivates the authorizations of its ACME order if that was still unfinished).

An object sealed with the secret of the config's ``previous_signing_key`` (a publisher key
rotation) is opened too, and written back sealed with the current one at the next save.

``generation`` is the Unix time in milliseconds of the write (rising); a state whose
generation is more than a day ahead of the clock is refused. Every write is conditional
(``put_if_absent`` / ``put_if_match``); saving an unchanged state writes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Optional

from certfleet.bundle import ClusterSecret, FormatError, validate_cluster_name
from certfleet.errors import CertfleetError
from certfleet.sealedobject import CURRENT, SealedObject, SealingKeys
from certfleet.store import Store

KIND = "acme"
IDENTITY = "/state"
VERSION = 1
FUTURE_SLACK_MS = 86_400_000
# The largest state read (the store contract's ``get(max_bytes=)``): about 1.5 KB per order
# in flight or with ARI data, so this is the sync state's cap, for as many orders.
MAX_BYTES = 256 * 1024 * 1024


def acme_state_key(cluster: str) -> str:
    """The store key of a cluster's ACME state: ``v1/sync/acme/<cluster>`` (UnsafeNameError
    for a name that is not a cluster name, so no key can leave ``v1/sync/acme/``)."""
    return f"v1/sync/acme/{validate_cluster_name(cluster)}"


class AcmeStateError(CertfleetError):
    """The ACME state cannot be read or written; names the cluster, never a secret."""

    def __init__(self, cluster: str, problem: str) -> None:
        self.cluster = cluster
        super().__init__(f"ACME state of cluster {cluster} {problem}")


class AcmeStateConflict(AcmeStateError):
    """A conditional write of the ACME state lost: another writer changed it."""


@dataclass
class OrderState:
    """One order name's ACME progress and renewal information (times: Unix seconds)."""

    pubkey_hash: Optional[str] = None
    csr_pem: Optional[str] = None
    url: Optional[str] = None
    status: str = ""
    problem: Optional[dict[str, Any]] = None
    attempts: int = 0
    retry_at: float = 0.0
    names: Optional[list[str]] = None  # the DNS names of the last order made (or tried)
    cert_id: Optional[str] = None
    renew_at: Optional[int] = None
    ari_next_check: int = 0

    def forget_order(self) -> None:
        """Drop the ACME order in flight (kept: problem, attempts, retry_at, ARI)."""
        self.pubkey_hash = self.csr_pem = self.url = None
        self.status = ""


@dataclass
class AcmeState:
    account_url: Optional[str] = None
    account_thumbprint: Optional[str] = None
    orders: dict[str, OrderState] = field(default_factory=dict)
    generation: int = 0

    def order(self, name: str) -> OrderState:
        """The record of ``name``, created empty when missing."""
        return self.orders.setdefault(name, OrderState())

    def forget(self, names: Iterable[str]) -> list[str]:
        """Drop the records of ``names`` (orders that no longer exist: their pending ACME
        order, backoff, problem and ARI data go with them); returns the names dropped."""
        dropped = sorted(name for name in set(names) if name in self.orders)
        for name in dropped:
            del self.orders[name]
        return dropped

    def encode(self) -> bytes:
        document = {
            "version": VERSION,
            "generation": self.generation,
            "account_url": self.account_url,
            "account_thumbprint": self.account_thumbprint,
            "orders": {name: asdict(record) for name, record in sorted(self.orders.items())},
        }
        return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes) -> AcmeState:
        doc: dict[str, Any] = json.loads(data)
        if doc.get("version") != VERSION:
            raise ValueError(f"unknown ACME state version {doc.get('version')!r}")
        return cls(
            account_url=doc["account_url"],
            account_thumbprint=doc["account_thumbprint"],
            orders={name: OrderState(**raw) for name, raw in doc["orders"].items()},
            generation=int(doc["generation"]),
        )


class AcmeStateStore:
    """Loads and conditionally saves one cluster's ACME state, remembering its ETag."""

    def __init__(
        self,
        store: Store,
        cluster: str,
        secret: ClusterSecret,
        clock: Callable[[], float],
        previous: Sequence[ClusterSecret] = (),
    ) -> None:
        self._cluster = cluster
        self._clock = clock
        self._object = SealedObject(
            store,
            acme_state_key(cluster),
            SealingKeys(secret, tuple(previous)),
            kind=KIND,
            cluster=cluster,
            identity=IDENTITY,
            max_bytes=MAX_BYTES,
            lost_race=lambda: AcmeStateConflict(cluster, "was changed by another writer"),
        )
        self._saved: bytes | None = None  # as encoded now (a state of an older form differs)

    def load(self) -> AcmeState:
        """The stored state, or an empty one."""
        try:
            state = self._object.load(self._decode, accept_old=True)
        except FormatError as err:
            raise AcmeStateError(self._cluster, f"cannot be opened: {err}") from err
        if state is None:
            self._saved = None
            return AcmeState()
        self._saved = state.encode() if self._object.sealing == CURRENT else None
        return state

    def save(self, state: AcmeState) -> bool:
        """Write the state if it changed (or was sealed with the previous key); True if a
        write happened."""
        if state.encode() == self._saved:
            return False
        state.generation = max(state.generation + 1, int(self._clock() * 1000))
        plain = state.encode()
        self._object.save(plain)
        self._saved = plain
        return True

    def _decode(self, plain: bytes) -> AcmeState:
        try:
            state = AcmeState.decode(plain)
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise AcmeStateError(self._cluster, "is not valid JSON of this version") from err
        if state.generation > int(self._clock() * 1000) + FUTURE_SLACK_MS:
            raise AcmeStateError(self._cluster, "has a generation more than a day ahead")
        return state
