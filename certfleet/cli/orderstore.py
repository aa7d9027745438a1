"""Where ``certfleet add | edit | list | show | rm`` keep orders: the APIv3, or the registry.

With a sync config in ACME mode (``certfleet.registry.mode``) the orders live in the
order registry in the store; otherwise at the APIv3 (SSLMate, or the sandbox). Both are
used through :class:`OrderBackend` and answer with ``certfleet.apiv3.Order``, so the
commands print the same thing and exit with the same codes either way: an existing name
is an error (exit 1), an unknown order is :class:`OrderNotFound` (exit 1), an unknown
cluster a usage error (exit 2).
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Callable, Protocol

from certfleet.acme.errors import Problem
from certfleet.acme.state import AcmeStateError, AcmeStateStore
from certfleet.apiv3 import ApiClient, Identifier, NotFound, Order, RetryPolicy, Unauthorized
from certfleet.cli.errors import CliError, OrderNotFound, UsageError
from certfleet.cli.settings import ApiSettings
from certfleet.config.sync import SyncConfig
from certfleet.orders import Identifier as OrderIdentifier
from certfleet.registry import OrderRegistry, RegistryNotFound, RegistryOrder, UnknownCluster
from certfleet.registry.mode import acme_clusters, previous_registry_secrets, registry_secret
from certfleet.store import Store, StoreError, open_store

CLI_RETRY = RetryPolicy(max_attempts=5, max_seconds=30.0, base_delay=0.5, max_delay=8.0)
REGISTERED = "registered"


class OrderBackend(Protocol):
    """The order calls the commands make."""

    def create(
        self, identifiers: Sequence[Identifier], cluster: str | None, name: str
    ) -> Order: ...

    def get(self, name: str) -> Order: ...

    def update(self, name: str, identifiers: Sequence[Identifier]) -> Order: ...

    def delete(self, name: str) -> None: ...

    def orders(self, cluster: str | None) -> list[Order]: ...

    def details(self, order: Order) -> dict[str, str]:
        """What else is known of ``order`` (ACME progress), for ``certfleet show``."""
        ...


class ApiBackend:
    """Orders at the APIv3."""

    def __init__(self, client: ApiClient, settings: ApiSettings) -> None:
        self._client = client
        self._settings = settings

    def create(self, identifiers: Sequence[Identifier], cluster: str | None, name: str) -> Order:
        return self._client.create_order(identifiers, cluster=cluster, name=name)

    def get(self, name: str) -> Order:
        with self._known(name):
            return self._client.get_order(name)

    def update(self, name: str, identifiers: Sequence[Identifier]) -> Order:
        with self._known(name):
            return self._client.update_order(name, identifiers)

    def delete(self, name: str) -> None:
        with self._known(name):
            self._client.delete_order(name)

    def orders(self, cluster: str | None) -> list[Order]:
        return list(self._client.iter_orders(cluster))

    def details(self, order: Order) -> dict[str, str]:
        return {}

    @contextmanager
    def _known(self, name: str) -> Iterator[None]:
        try:
            yield
        except NotFound as err:
            raise OrderNotFound(name, self._settings.endpoint) from err


class RegistryBackend:
    """Orders in the order registry (ACME mode)."""

    def __init__(
        self,
        registry: OrderRegistry,
        where: str,
        progress: Callable[[str, str], dict[str, str]] | None = None,
    ) -> None:
        self._registry = registry
        self._where = where
        self._progress = progress

    def details(self, order: Order) -> dict[str, str]:
        if self._progress is None or order.cluster is None:
            return {}
        return self._progress(order.cluster, order.name)

    def create(self, identifiers: Sequence[Identifier], cluster: str | None, name: str) -> Order:
        if cluster is None:
            raise UsageError("add needs --cluster C: the cluster whose nodes will serve the order")
        with self._known(name):
            return registry_order(self._registry.create(cluster, _plain(identifiers), name))

    def get(self, name: str) -> Order:
        with self._known(name):
            return registry_order(self._registry.get(name))

    def update(self, name: str, identifiers: Sequence[Identifier]) -> Order:
        with self._known(name):
            return registry_order(self._registry.set_identifiers(name, _plain(identifiers)))

    def delete(self, name: str) -> None:
        with self._known(name):
            self._registry.delete(name)

    def orders(self, cluster: str | None) -> list[Order]:
        with self._known(""):
            clusters = self._registry.clusters if cluster is None else (cluster,)
            found = [registry_order(o) for c in clusters for o in self._registry.list(c)]
        return sorted(found, key=lambda order: order.name)

    @contextmanager
    def _known(self, name: str) -> Iterator[None]:
        try:
            yield
        except RegistryNotFound as err:
            raise OrderNotFound(name, self._where) from err
        except UnknownCluster as err:
            raise UsageError(str(err)) from err


class MixedBackend:
    """Some clusters in ACME mode, others at the APIv3: each order where its cluster is.

    A name is looked up in the registry first, then at the APIv3.
    """

    def __init__(self, registry: RegistryBackend, api: ApiBackend, acme: Sequence[str]) -> None:
        self._registry = registry
        self._api = api
        self._acme = tuple(acme)

    def create(self, identifiers: Sequence[Identifier], cluster: str | None, name: str) -> Order:
        backend = self._registry if cluster in self._acme else self._api
        return backend.create(identifiers, cluster, name)

    def get(self, name: str) -> Order:
        return self._owner(name)[1]

    def update(self, name: str, identifiers: Sequence[Identifier]) -> Order:
        return self._owner(name)[0].update(name, identifiers)

    def delete(self, name: str) -> None:
        self._owner(name)[0].delete(name)

    def orders(self, cluster: str | None) -> list[Order]:
        if cluster is not None:
            return (self._registry if cluster in self._acme else self._api).orders(cluster)
        found = self._registry.orders(None) + self._api.orders(None)
        return sorted(found, key=lambda order: order.name)

    def details(self, order: Order) -> dict[str, str]:
        if order.cluster in self._acme:
            return self._registry.details(order)
        return {}

    def _owner(self, name: str) -> tuple[OrderBackend, Order]:
        try:
            return self._registry, self._registry.get(name)
        except OrderNotFound:
            return self._api, self._api.get(name)


def registry_backend(config: SyncConfig) -> RegistryBackend:
    """The registry of ``config``'s ACME-mode clusters."""
    store = open_store(config.store, endpoint=config.store_endpoint)
    registry = OrderRegistry(
        store,
        registry_secret(config),
        acme_clusters(config),
        previous=previous_registry_secrets(config),
    )
    return RegistryBackend(
        registry, f"the order registry in {store.url}", partial(acme_progress, config, store)
    )


def acme_progress(config: SyncConfig, store: Store, cluster: str, name: str) -> dict[str, str]:
    """The order's ACME progress from the sync's ACME state: status, the CA's last problem
    (one line), when it is tried again; ``unreadable`` when the state cannot be opened."""
    previous = config.previous_signing_key
    states = AcmeStateStore(
        store,
        cluster,
        config.signing_key.sync_secret("state"),
        time.time,
        previous=() if previous is None else (previous.sync_secret("state"),),
    )
    try:
        record = states.load().orders.get(name)
    except (AcmeStateError, StoreError) as err:
        return {"unreadable": str(err)}
    if record is None:
        return {"status": "not ordered from the CA yet (the next sync run does)"}
    found = {"status": record.status or ("issued" if record.cert_id else "waiting")}
    if record.problem is not None:
        try:
            found["problem"] = Problem.from_json(record.problem).summary()
        except ValueError:
            found["problem"] = "(a problem document certfleet cannot read)"
    if record.retry_at > time.time():
        moment = datetime.datetime.fromtimestamp(record.retry_at, datetime.timezone.utc)
        found["retry_at"] = moment.strftime("%Y-%m-%d %H:%M:%S UTC")
    return found


@contextmanager
def api_backend(settings: ApiSettings) -> Iterator[ApiBackend]:
    try:
        client = ApiClient(settings.endpoint, settings.api_key, retry=CLI_RETRY)
    except ValueError as err:
        raise UsageError(
            f"API endpoint {settings.endpoint!r} (from {settings.source}): {err}"
        ) from err
    try:
        yield ApiBackend(client, settings)
    except Unauthorized as err:
        raise CliError(f"{err} (the API key from {settings.source} was refused)") from err
    finally:
        client.close()


def registry_order(order: RegistryOrder) -> Order:
    """A registry order as the APIv3 client's ``Order`` (state ``registered``)."""
    return Order(
        name=order.name,
        cluster=order.cluster,
        identifiers=tuple(Identifier(i.value, i.approval) for i in order.identifiers),
        state=REGISTERED,
        created_at=_time(order.created_at),
        updated_at=_time(order.updated_at),
    )


def _plain(identifiers: Sequence[Identifier]) -> list[OrderIdentifier]:
    return [OrderIdentifier(i.value, i.approval) for i in identifiers]


def _time(seconds: int) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
