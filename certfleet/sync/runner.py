"""The public entry points: ``run_sync`` (one pass over the clusters) and ``mark_rekey``.

``run_sync`` runs each configured cluster with ``certfleet.sync.engine.ClusterRun``, one
after the other within the deadline; a cluster's failure is that cluster's error in the
summary, never the others'. Each cluster's provider is the caller's, or the one the config
chooses for it (APIv3, or ACME through ``acme_wiring``), opened by ``ProviderOpener`` only
when the cluster's run first needs it and closed after it. The counters of the run
(``certfleet.sync.summary``) are filled in by the parts; the store's request counts are
added at the end.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any, Callable

from certfleet.errors import CertfleetError
from certfleet.store import Store, open_store
from certfleet.sync.engine import Checkpoint, Clock, ClusterRun
from certfleet.sync.errors import (
    LeaseHeldError,
    StateError,
    SyncError,
    UnknownClusterError,
    UnknownOrderError,
)
from certfleet.sync.lease import Lease
from certfleet.sync.provider import Provider
from certfleet.sync.sealing import SyncKeys
from certfleet.sync.settings import ClusterPolicy, SyncSettings
from certfleet.sync.state import StateStore
from certfleet.sync.summary import RunSummary, RunTally

log = logging.getLogger(__name__)

REKEY_LEASE_WAIT = 30.0
MAX_CALL_SECONDS = 30.0


def open_config_store(config: SyncSettings) -> Store:
    return open_store(config.store, endpoint=config.store_endpoint)


def open_config_provider(
    config: SyncSettings, deadline: float | None, *, cluster: str = "", store: Store | None = None
) -> Provider:
    """The cluster's provider: APIv3 (its retries bounded by the time budget), or ACME when
    the config chooses it for ``cluster`` (orders from the registry in ``store``)."""
    provider_for = getattr(config, "provider_for", None)
    if provider_for is not None and provider_for(cluster) == "acme" and store is not None:
        from certfleet.sync.acme_wiring import open_acme_provider

        return open_acme_provider(config, cluster, store)
    from certfleet.apiv3 import RetryPolicy
    from certfleet.sync.apiv3_provider import ApiV3Provider

    if not config.api_key:
        raise SyncError("the sync config has no api_key (nor CERTFLEET_API_KEY)")
    budget = MAX_CALL_SECONDS
    if deadline is not None:
        budget = max(1.0, min(budget, (deadline - time.monotonic()) / 4))
    return ApiV3Provider.connect(
        config.api_endpoint, config.api_key, retry=RetryPolicy(max_seconds=budget)
    )


def _policies(config: SyncSettings, clusters: Sequence[str] | None) -> list[ClusterPolicy]:
    by_name = {policy.name: policy for policy in config.clusters}
    if clusters is None:
        return list(config.clusters)
    missing = [name for name in clusters if name not in by_name]
    if missing:
        raise UnknownClusterError(missing[0])
    return [by_name[name] for name in clusters]


def run_sync(
    config: SyncSettings,
    *,
    deadline: float | None = None,
    store: Store | None = None,
    provider: Provider | None = None,
    clock: Clock | None = None,
    clusters: Sequence[str] | None = None,
    checkpoint: Checkpoint | None = None,
    verify_store: bool = False,
) -> RunSummary:
    """One sync pass over the configured clusters (or ``clusters``); never raises for one
    cluster's or one order's failure, of whatever type (a MemoryError, a RecursionError, a
    library's ValueError): those are in the summary's ``errors``, and the state a failed
    cluster had already made safe is saved (``ClusterRun``).

    ``deadline`` is a ``time.monotonic()`` value: work stops cleanly before it and resumes
    on the next run. ``store`` and ``provider`` are built from the config when None;
    ``clock`` returns Unix seconds (``time.time`` by default); ``checkpoint`` is called
    with a step name after every durable step (tests inject crashes there).
    ``verify_store`` lists each cluster's objects now (not only when the periodic sweep is
    due) and reads every object its head references, to find and repair missing or
    corrupted ones (``certfleet.sync.audit``).
    """
    started = time.monotonic()
    policies = _policies(config, clusters)
    store = store if store is not None else open_config_store(config)
    before = store.stats.as_dict()
    tally = RunTally()
    for policy in policies:
        if deadline is not None and time.monotonic() >= deadline:
            tally.complete = False
            break
        opener = ProviderOpener(config, deadline, policy.name, store, given=provider)
        try:
            ClusterRun(
                cluster=policy.name,
                policy=policy,
                settings=config,
                store=store,
                open_provider=opener,
                clock=clock or time.time,
                deadline=deadline,
                tally=tally,
                checkpoint=checkpoint or _no_checkpoint,
                verify_store=verify_store,
            ).run()
        except LeaseHeldError as err:
            log.info("%s", err)
            tally.complete = False
            tally.skipped.append(policy.name)
        except CertfleetError as err:
            log.error("cluster %s: %s", policy.name, err)
            tally.error(f"cluster:{policy.name}", err)
        except Exception as err:  # any other failure is this cluster's: the others go on
            log.error("cluster %s: unexpected %s", policy.name, type(err).__name__)
            log.debug("cluster %s: traceback", policy.name, exc_info=True)
            tally.error(f"cluster:{policy.name}", err)
        finally:
            opener.close()
    after = store.stats.as_dict()
    tally.count(
        store_reads=after["reads"] - before["reads"],
        store_writes=after["writes"] - before["writes"],
        store_requests=after["requests"] - before["requests"],
    )
    return tally.summary([policy.name for policy in policies], duration=time.monotonic() - started)


class ProviderOpener:
    """Opens a cluster's provider when its run first asks for it (a run whose lease another
    run holds never does), and closes it afterwards: the configured provider, or the one
    the caller ``given`` (which the caller closes)."""

    def __init__(
        self,
        config: SyncSettings,
        deadline: float | None,
        cluster: str,
        store: Store,
        given: Provider | None = None,
    ) -> None:
        self._config = config
        self._deadline = deadline
        self._cluster = cluster
        self._store = store
        self._given = given
        self._opened: Provider | None = None

    def __call__(self) -> Provider:
        if self._given is not None:
            return self._given
        if self._opened is None:
            self._opened = open_config_provider(
                self._config, self._deadline, cluster=self._cluster, store=self._store
            )
        return self._opened

    def close(self) -> None:
        """Close the provider this opener opened (a caller's stays open)."""
        if self._opened is not None:
            _close(self._opened)


def _close(provider: Any) -> None:
    """Close a provider that holds connections or DNS values (the ACME one)."""
    close = getattr(provider, "close", None)
    if close is not None:
        close()


def _no_checkpoint(step: str) -> None:
    return None


def mark_rekey(
    config: SyncSettings,
    cluster: str,
    orders: Sequence[str] | None,
    *,
    store: Store | None = None,
    clock: Clock | None = None,
    sleep: Callable[[float], None] = time.sleep,
    lease_wait: float = REKEY_LEASE_WAIT,
) -> tuple[str, ...]:
    """Mark ``orders`` (every order of the cluster when None) for a new key at the next sync.

    Takes the cluster's lease (waiting up to ``lease_wait`` seconds for a running sync),
    so it never races the engine. Returns the names marked.

    A name must be one the cluster's state holds (a published order, or one whose new key
    awaits its certificate): only those have a key to replace. A mark on any other name
    would do nothing (an order the sync has not seen yet gets a new key at its first sync
    anyway), so such names are refused with ``UnknownOrderError`` and nothing is marked:
    a misspelt name does not pass silently while the intended order keeps its key.
    """
    policy = _policies(config, [cluster])[0]
    store = store if store is not None else open_config_store(config)
    clock = clock or time.time
    keys = SyncKeys.of(config, policy.secrets)
    lease = Lease(
        store,
        cluster,
        duration=config.lease_duration,
        clock=clock,
        secret=keys.current,
        previous=keys.previous,
    )
    give_up = time.monotonic() + lease_wait
    while True:
        try:
            lease.acquire()
            break
        except LeaseHeldError:
            if time.monotonic() >= give_up:
                raise
            sleep(1.0)
    try:
        states = StateStore(store, cluster, keys)
        state = states.load(now_ms=int(clock() * 1000))
        known = set(state.orders) | set(state.pending)
        names = tuple(sorted(known)) if orders is None else tuple(dict.fromkeys(orders))
        unknown = tuple(name for name in names if name not in known)
        if unknown:
            raise UnknownOrderError(cluster, unknown)
        state.rekey.update(names)
        states.save(state)
    except (StateError, UnknownOrderError):
        lease.release()
        raise
    lease.release()
    return names
