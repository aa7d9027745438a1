"""The order registry: in ACME mode, the orders live in the store, one object per cluster.

``v1/sync/orders/<cluster>`` holds ``{"version": 1, "revision": N, "history": [write
ids], "orders": [...]}`` (orders sorted by name; ``revision`` raised by every write and
``history`` the ids of the last writes, both absent from older objects),
sealed (kind ``registry``, identity ``/orders``) with the sync-only registry secret
(``SigningKey.sync_secret("registry")``; the order API's config carries just that
secret as ``registry_secret``). Nodes cannot forge it: they do not hold that secret.
Every write is conditional, so concurrent writers (the CLI, the order API, several
Lambda instances) never lose each other's changes. docs/api.md describes the semantics.
"""

from __future__ import annotations

from certfleet.orders import Identifier
from certfleet.registry.errors import (
    OrderExists,
    RegistryContended,
    RegistryError,
    RegistryNotFound,
    RegistryRolledBack,
    UnknownCluster,
)
from certfleet.registry.registry import (
    IDENTITY,
    KIND,
    MAX_REGISTRY_BYTES,
    OrderRegistry,
    RegistryOrder,
    RegistryRead,
    descends,
    registry_key,
)

__all__ = [
    "IDENTITY",
    "KIND",
    "MAX_REGISTRY_BYTES",
    "Identifier",
    "OrderExists",
    "OrderRegistry",
    "RegistryContended",
    "RegistryError",
    "RegistryNotFound",
    "RegistryOrder",
    "RegistryRead",
    "RegistryRolledBack",
    "UnknownCluster",
    "descends",
    "registry_key",
]
