"""The sync engine: poll the provider, make keys and CSRs, publish signed, encrypted bundles.

``run_sync(config, deadline=..., store=..., provider=..., clock=..., clusters=...)`` runs
one pass and returns a ``RunSummary``; ``mark_rekey(config, cluster, orders)`` makes the
next pass replace keys. The engine talks to the provider only through
``certfleet.sync.provider.Provider``.
"""

from __future__ import annotations

from certfleet.sync.errors import (
    CertificateRejected,
    LeaseHeldError,
    LeaseLostError,
    StateError,
    SyncError,
    UnknownClusterError,
    UnknownOrderError,
)
from certfleet.sync.provider import (
    IssuedCert,
    Provider,
    ProviderError,
    ProviderNotFound,
    ProviderOrder,
)
from certfleet.sync.runner import mark_rekey, run_sync
from certfleet.sync.summary import RunSummary

__all__ = [
    "CertificateRejected",
    "IssuedCert",
    "LeaseHeldError",
    "LeaseLostError",
    "Provider",
    "ProviderError",
    "ProviderNotFound",
    "ProviderOrder",
    "RunSummary",
    "StateError",
    "SyncError",
    "UnknownClusterError",
    "UnknownOrderError",
    "mark_rekey",
    "run_sync",
]
