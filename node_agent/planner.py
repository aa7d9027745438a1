"""Planning a poll: which orders to install, each fetched, checked and prepared on disk.

From the clusters' views (brought up to date by ``node_agent.view``) the planner decides
what a poll installs and readies it, without switching anything in:

- an order name published by two clusters belongs to the first cluster in the config, the
  other one is refused; so is a name whose directory under ``orders/`` (``*`` written
  ``_``) another order already holds;
- each order whose bundle hash differs from the installed one is fetched, checked and
  written to a new version directory (a ``Prepared``), unless ``node_agent.schedule``
  says it waits (its ``install_after``; for a replacement also ``stagger`` and
  ``update_window``): then it is deferred, and kept in an index that a poll answered 304
  looks at;
- a bundle refused for good (by cluster, order and bundle hash) is not downloaded again;
- a bundle whose version failed its check_command or probe is not downloaded again before
  its ``retry_at`` (``node_agent.backoff``): the order is reported failed, with the failure
  and the time of the retry, which keeps its cluster's head unapplied.

``plan_all`` is a full pass over every order (it rebuilds the deferred index);
``plan_changed`` only looks at the order names a new head may have changed (those of the
shards whose hash moved) and at the deferred orders whose time has come; ``plan_due`` only
at the latter. ``node_agent.rollout`` switches the prepared versions in.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from certfleet.bundle import FormatError, ShardEntry, iso_utc, safe_dir_name
from certfleet.config import AgentConfig, OrderSettings, UnsafeFilesPathError
from certfleet.store import StoreError
from node_agent.agentstate import AgentState
from node_agent.backoff import holding
from node_agent.certificate import check_bundle
from node_agent.errors import AgentError, RefusedError
from node_agent.installer import FileModes, Installer, file_modes
from node_agent.material import render
from node_agent.result import FAILED, REFUSED
from node_agent.schedule import Deferral, deferral
from node_agent.source import ClusterSource, bundle_object
from node_agent.tally import PollTally

log = logging.getLogger(__name__)

_REFUSAL_CACHE = 10_000


@dataclass(frozen=True)
class Prepared:
    """A verified bundle written to a version directory, not yet switched in."""

    name: str
    cluster: str
    entry: ShardEntry
    safe: str
    version: str
    key_type: str
    copies: dict[str, str]
    dns_names: tuple[str, ...]


def destinations(settings: OrderSettings, safe: str) -> dict[str, str]:
    """The ``files`` copy paths of an order; raises UnsafeFilesPathError on an escape."""
    return dict(settings.expanded_files(safe))


def modes_for(settings: OrderSettings) -> FileModes:
    return file_modes(
        key_perm=settings.key_perm,
        cert_perm=settings.cert_perm,
        key_user=settings.key_user,
        key_group=settings.key_group,
    )


class Planner:
    """Plans the installs of one agent; keeps the deferred index and the refusal cache."""

    def __init__(
        self,
        config: AgentConfig,
        installer: Installer,
        sources: Mapping[str, ClusterSource],
        node_id: str = "",
    ) -> None:
        self.config = config
        self.installer = installer
        self.sources = sources
        self.node_id = node_id  # ``stagger`` spreads the nodes by it
        self._deferred: dict[str, tuple[str, Deferral]] = {}  # name -> (cluster, why)
        # Permanent refusals by (cluster, order, bundle hash): not downloaded again.
        self._refused: dict[tuple[str, str, str], RefusedError] = {}

    # -- ownership -----------------------------------------------------------------------

    def _owners(self, state: AgentState, tally: PollTally) -> dict[str, str]:
        """Who serves each order name: the first cluster in the config that publishes it.

        In config order, then name order (the order a full pass plans them in)."""
        owners: dict[str, str] = {}
        # Directory names: an installed order keeps its own; then the first name seen. Only
        # a name with '*' or '_' can share its directory with another name ('*' is written
        # '_'), so the others are left out of this check.
        directories = {o.safe_name: n for n, o in state.orders.items() if "_" in o.safe_name}
        for trust in self.config.clusters:
            cluster_state = state.cluster(trust.name)
            names: Iterable[str] = cluster_state.entries()
            if not cluster_state.complete():  # an unread shard may hold an installed order
                installed = [n for n, o in state.orders.items() if o.cluster == trust.name]
                names = set(names).union(installed)
            for name in sorted(names):
                owner = owners.setdefault(name, trust.name)
                if owner != trust.name:
                    self._refuse_duplicate(tally, name, trust.name, owner)
                    continue
                if "*" not in name and "_" not in name:
                    continue
                try:
                    safe = safe_dir_name(name)
                except FormatError:
                    continue  # refused by name when it is prepared
                holder = directories.setdefault(safe, name)
                if holder != name:
                    del owners[name]
                    tally.problem(
                        REFUSED,
                        f"order {name!r} of cluster {trust.name}",
                        f"order {name!r} of cluster {trust.name}: refused, its directory "
                        f"orders/{safe} belongs to order {holder!r} (the same name with "
                        "'*' written '_')",
                        trust.name,
                    )
        return owners

    @staticmethod
    def _refuse_duplicate(tally: PollTally, name: str, cluster: str, owner: str) -> None:
        tally.problem(
            REFUSED,
            f"order {name!r} of cluster {cluster}",
            f"order {name!r} of cluster {cluster}: refused, cluster {owner} "
            "(first in the config) publishes the same order name",
            cluster,
        )

    def deferrals(self) -> dict[str, Deferral]:
        """The orders waiting (as of the last poll), by name, with why and until when."""
        return {name: wait for name, (_, wait) in self._deferred.items()}

    # -- fetching and preparing ----------------------------------------------------------

    def plan_all(self, state: AgentState, now: int, tally: PollTally) -> list[Prepared]:
        """A full pass: every order of every cluster's view; the deferred index anew."""
        owners = self._owners(state, tally)
        for name in [n for n in state.backoff if n not in owners]:
            del state.backoff[name]  # no longer published: nothing to retry
        self._deferred.clear()
        prepared: list[Prepared] = []
        for trust in self.config.clusters:
            names = [name for name, owner in owners.items() if owner == trust.name]
            prepared.extend(self._plan(state, trust.name, names, now, tally))
        return prepared

    def plan_changed(
        self, state: AgentState, now: int, tally: PollTally, names: Collection[str]
    ) -> list[Prepared]:
        """A new head after a clean poll: only ``names`` (those its changed shards hold, or
        held before), then the deferred orders whose time has come.

        The other orders are as the last pass left them. Names with ``*`` or ``_`` (which
        may share a directory) call for ``plan_all``: the caller checks ``needs_full``."""
        owners: dict[str, str] = {}
        for name in sorted(names):
            self._deferred.pop(name, None)
            publishers = [
                trust.name
                for trust in self.config.clusters
                if name in state.cluster(trust.name).entries()
                or (
                    not state.cluster(trust.name).complete()
                    and self._installed(state, name, trust.name)
                )
            ]
            if not publishers:
                state.backoff.pop(name, None)  # no longer published: nothing to retry
                continue
            owners[name] = publishers[0]
            for other in publishers[1:]:
                self._refuse_duplicate(tally, name, other, publishers[0])
        prepared = self.plan_due(state, now, tally)
        for trust in self.config.clusters:
            mine = [name for name, owner in owners.items() if owner == trust.name]
            prepared.extend(self._plan(state, trust.name, mine, now, tally))
        return prepared

    @staticmethod
    def needs_full(names: Iterable[str]) -> bool:
        """True when ``names`` hold a name that may share its directory (``*`` or ``_``)."""
        return any("*" in name or "_" in name for name in names)

    @staticmethod
    def _installed(state: AgentState, name: str, cluster: str) -> bool:
        order = state.orders.get(name)
        return order is not None and order.cluster == cluster

    def plan_due(self, state: AgentState, now: int, tally: PollTally) -> list[Prepared]:
        """A poll without a new head: only the deferred orders whose time has come."""
        due: dict[str, list[str]] = {}
        for name, (cluster, wait) in list(self._deferred.items()):
            if wait.until <= now:
                del self._deferred[name]
                due.setdefault(cluster, []).append(name)
            else:
                tally.deferred.append(name)
        prepared: list[Prepared] = []
        for cluster, names in due.items():
            prepared.extend(self._plan(state, cluster, names, now, tally))
        return prepared

    def _plan(
        self, state: AgentState, cluster: str, names: Sequence[str], now: int, tally: PollTally
    ) -> list[Prepared]:
        """Fetch and prepare those of ``names`` (owned by ``cluster``) that changed."""
        prepared: list[Prepared] = []
        entries = state.cluster(cluster).entries()
        for name in names:
            entry = entries.get(name)
            if entry is None:
                continue
            installed = state.orders.get(name)
            if (
                installed is not None
                and installed.cluster == cluster
                and installed.bundle_hash == entry.bundle_hash.hex()
            ):
                if installed.removed_at is not None:
                    state.orders[name] = replace(installed, removed_at=None)  # published again
                state.backoff.pop(name, None)
                continue
            held = holding(state, name, cluster, entry.bundle_hash.hex(), now)
            if held is not None:  # failed its check_command or probe: not before retry_at
                tally.problem(FAILED, f"order {name!r}", held.detail(), cluster)
                continue
            wait = deferral(
                self.config,
                node_id=self.node_id,
                order_name=name,
                install_after=entry.install_after,
                serving_not_after=installed.not_after if installed is not None else None,
                now=now,
            )
            if wait is not None:
                tally.deferred.append(name)
                self._deferred[name] = (cluster, wait)
                log.info("order %r deferred until %s (%s)", name, iso_utc(wait.until), wait.reason)
                continue
            subject = bundle_object(cluster, name, entry.bundle_hash)
            known = (cluster, name, entry.bundle_hash.hex())
            if known in self._refused:
                refusal = self._refused[known]
                tally.problem(REFUSED, refusal.object_name, f"{refusal} (not fetched again)",
                              cluster)  # fmt: skip
                continue
            try:
                prepared.append(self._prepare(cluster, entry, now))
            except RefusedError as err:
                tally.problem(REFUSED, err.object_name, str(err), cluster)
                if err.permanent:
                    if len(self._refused) >= _REFUSAL_CACHE:
                        self._refused.clear()
                    self._refused[known] = err
            except (StoreError, AgentError) as err:
                tally.problem(FAILED, subject, f"{subject}: {err}", cluster)
        return prepared

    def _prepare(self, cluster: str, entry: ShardEntry, now: int) -> Prepared:
        name = entry.order_name
        subject = bundle_object(cluster, name, entry.bundle_hash)
        try:
            safe = safe_dir_name(name)
        except FormatError as err:
            raise RefusedError(subject, err.reason) from err
        settings = self.config.settings_for(name)
        try:
            copies = destinations(settings, safe)
        except UnsafeFilesPathError as err:
            raise RefusedError(subject, str(err)) from err
        bundle = self.sources[cluster].fetch_bundle(name, entry.bundle_hash)
        if bundle.serial != entry.serial:
            raise RefusedError(subject, "serial differs from the one in its shard entry")
        checked = check_bundle(bundle, object_name=subject, now=now)
        files = render(checked, p12_password=settings.p12_password)
        version = self.installer.prepare(
            safe, files, modes_for(settings), label=entry.bundle_hash.hex()[:16]
        )
        return Prepared(
            name, cluster, entry, safe, version, bundle.key_type, copies, bundle.dns_names
        )
