"""One poll of every configured cluster: fetch, verify, install, check, run commands.

``Agent.poll_once()`` is the whole job of ``certfleet-agent --once`` and one turn of the
daemon loop:

1. for each cluster, one conditional GET of its head; a new head is verified and only the
   shards whose hashes changed are fetched (``ClusterView``);
2. an order name published by two clusters belongs to the first cluster in the config, the
   other one is refused;
3. each order whose bundle hash differs from the installed one is fetched, checked and
   written to a new version directory, unless its ``install_after`` is still ahead
   (deferred, reconsidered on every poll, even one answered 304);
4. the symlinks switch; ``files`` copies are written (and interrupted sets completed);
5. each distinct ``check_command`` of the switched orders runs; on failure those orders go
   back to their previous version;
6. removed orders are kept (reported) or deleted after their grace period;
7. each distinct ``on_update`` command owed runs once; failures stay owed in the durable
   state and are retried on the next poll, also after a restart.

A cluster's head is recorded as applied (its ETag used for the next conditional GET) only
when every order of it is installed or deferred. The commands' environment carries
``CERTFLEET_UPDATED_ORDERS`` and ``CERTFLEET_REMOVED_ORDERS`` — space-separated *safe* order
names, i.e. the directory names under ``orders/`` (``*`` written ``_``, so no shell glob) —
and ``CERTFLEET_GENERATION``, the newest head generation among those orders' clusters.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Callable

from certfleet.bundle import FormatError, ShardEntry, safe_dir_name
from certfleet.config import AgentConfig, OrderSettings, UnsafeFilesPathError
from certfleet.store import Store, StoreError, open_store
from node_agent.ack import AckWriter, ack_orders
from node_agent.certificate import check_bundle
from node_agent.errors import AgentError, InstallError, RefusedError
from node_agent.health import HealthStore
from node_agent.hook import CommandRunner, ShellRunner
from node_agent.installer import FileModes, Installer, file_modes, remove_copies, write_copies
from node_agent.material import render
from node_agent.metrics import render_metrics, write_metrics
from node_agent.result import FAILED, REFUSED, CommandRun, PollResult
from node_agent.source import ClusterSource, bundle_object
from node_agent.state import AgentState, InstalledOrder, OwedCommand, StateStore, node_id
from node_agent.tally import Tally
from node_agent.view import refresh_view

log = logging.getLogger(__name__)

_REFUSAL_CACHE = 10_000

Clock = Callable[[], float]


@dataclass(frozen=True)
class _Prepared:
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


class Agent:
    """The node agent of one config and one state directory."""

    def __init__(
        self,
        config: AgentConfig,
        *,
        store: Store | None = None,
        runner: CommandRunner | None = None,
        clock: Clock = time.time,
    ) -> None:
        self.config = config
        self.store = store or open_store(config.store, endpoint=config.store_endpoint)
        self.runner: CommandRunner = runner or ShellRunner()
        self.clock = clock
        self.installer = Installer(config.state_dir)
        self.installer.remove_temp_links()
        self.node_id = node_id(config.state_dir)
        self.states = StateStore(config.state_dir)
        self.state: AgentState = self.states.load()
        self._dirty = False
        self.health_store = HealthStore(config.state_dir)
        self.health = self.health_store.load()
        self.acks = AckWriter(self.store, self.node_id)
        # Permanent refusals by (cluster, order, bundle hash): not downloaded again.
        self._refused: dict[tuple[str, str, str], RefusedError] = {}
        self._orphans_reported = False
        self.sources = {
            trust.name: ClusterSource(
                self.store, trust.name, secrets=trust.secrets, publishers=trust.publishers
            )
            for trust in config.clusters
        }

    # -- the poll ------------------------------------------------------------------------

    def poll_once(self) -> PollResult:
        now = int(self.clock())
        tally = Tally()
        fresh: dict[str, tuple[str, int]] = {}
        for trust in self.config.clusters:
            cluster_state = self.state.cluster(trust.name)
            new_head = refresh_view(
                self.sources[trust.name],
                cluster_state,
                now=now,
                min_generation=self.config.min_generation,
                tally=tally,
            )
            if new_head is not None:
                fresh[trust.name] = new_head
                self._dirty = True
        owners = self._owners(tally)
        prepared: list[_Prepared] = []
        for trust in self.config.clusters:
            prepared.extend(self._plan(trust.name, owners, now, tally))
        switched = self._switch(prepared, tally)
        removed = self._removals(owners, now, tally)
        self._owe(switched, removed)
        self._save()
        self._complete_copies(tally)
        self._save()
        self._check(switched, tally)
        self._run_owed(tally)
        for cluster, (etag, generation) in fresh.items():
            if not tally.has_problem(cluster):
                cluster_state = self.state.cluster(cluster)
                cluster_state.applied_etag = etag
                cluster_state.applied_generation = generation
                self._dirty = True
        self._save()
        result = tally.result(self.state, [trust.name for trust in self.config.clusters])
        log.info("poll done: %s", result.summary())
        self._report(result, now)
        return result

    def _save(self) -> None:
        """Write the state if this poll changed it (an idle poll writes nothing)."""
        if self._dirty:
            self.states.save(self.state)
            self._dirty = False

    # -- ownership -----------------------------------------------------------------------

    def _owners(self, tally: Tally) -> dict[str, str]:
        """Who serves each order name: the first cluster in the config that publishes it."""
        owners: dict[str, str] = {}
        # Directory names: an installed order keeps its own; then the first name seen.
        directories = {order.safe_name: name for name, order in self.state.orders.items()}
        for trust in self.config.clusters:
            cluster_state = self.state.cluster(trust.name)
            names = list(cluster_state.entries())
            if not cluster_state.complete():  # an unread shard may hold an installed order
                names += [n for n, o in self.state.orders.items() if o.cluster == trust.name]
            for name in sorted(set(names)):
                owner = owners.setdefault(name, trust.name)
                if owner != trust.name:
                    tally.problem(
                        REFUSED,
                        f"order {name!r} of cluster {trust.name}",
                        f"order {name!r} of cluster {trust.name}: refused, cluster {owner} "
                        "(first in the config) publishes the same order name",
                        trust.name,
                    )
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

    # -- fetching and preparing ----------------------------------------------------------

    def _plan(
        self, cluster: str, owners: dict[str, str], now: int, tally: Tally
    ) -> list[_Prepared]:
        prepared: list[_Prepared] = []
        for name, entry in sorted(self.state.cluster(cluster).entries().items()):
            if owners.get(name) != cluster:
                continue
            installed = self.state.orders.get(name)
            if (
                installed is not None
                and installed.cluster == cluster
                and installed.bundle_hash == entry.bundle_hash.hex()
            ):
                if installed.removed_at is not None:
                    installed.removed_at = None  # published again
                    self._dirty = True
                continue
            if entry.install_after > now:
                tally.deferred.append(name)
                log.info("order %r deferred until %d (install_after)", name, entry.install_after)
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

    def _prepare(self, cluster: str, entry: ShardEntry, now: int) -> _Prepared:
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
        return _Prepared(
            name, cluster, entry, safe, version, bundle.key_type, copies, bundle.dns_names
        )

    # -- switching -----------------------------------------------------------------------

    def _switch(self, prepared: Sequence[_Prepared], tally: Tally) -> list[str]:
        switched: list[str] = []
        for item in prepared:
            old = self.state.orders.get(item.name)
            try:
                self.installer.switch(item.safe, item.version)
            except InstallError as err:
                tally.problem(FAILED, f"order {item.name!r}", str(err), item.cluster)
                continue
            previous = replace(old, previous=None) if old is not None else None
            self.state.orders[item.name] = InstalledOrder(
                cluster=item.cluster,
                safe_name=item.safe,
                bundle_hash=item.entry.bundle_hash.hex(),
                serial=item.entry.serial,
                key_type=item.key_type,
                not_after=item.entry.not_after,
                version=item.version,
                previous=previous,
                copies=item.copies,
                installed_at=int(self.clock()),
                dns_names=list(item.dns_names),
            )
            self.installer.prune(item.safe, [item.version, old.version if old else None])
            switched.append(item.name)
            self._dirty = True
            tally.installed.append(item.name)
            log.info("installed order %r (serial %s) from cluster %s", item.name,
                     item.entry.serial, item.cluster)  # fmt: skip
        return switched

    def _complete_copies(self, tally: Tally) -> None:
        """Write ``files`` copies that are missing, stale or were interrupted."""
        for name, order in sorted(self.state.orders.items()):
            settings = self.config.settings_for(name)
            try:
                wanted = destinations(settings, order.safe_name)
            except UnsafeFilesPathError as err:
                tally.problem(REFUSED, f"order {name!r}", str(err), order.cluster)
                continue
            if order.copies_version == order.version and order.copies == wanted:
                continue
            order.copies, order.copies_version = wanted, None
            self._dirty = True
            if wanted:
                try:
                    files = self.installer.read(order.safe_name, order.version, order.key_type)
                    write_copies(files, wanted, modes_for(settings))
                except InstallError as err:
                    tally.problem(FAILED, f"order {name!r}", str(err), order.cluster)
                    continue
            order.copies_version = order.version

    # -- check_command and rollback ------------------------------------------------------

    def _check(self, switched: Sequence[str], tally: Tally) -> None:
        by_command: dict[str, list[str]] = {}
        for name in switched:
            command = self.config.settings_for(name).check_command
            if command:
                by_command.setdefault(command, []).append(name)
        for command, names in by_command.items():
            safe_names = [self.state.orders[name].safe_name for name in names]
            outcome = self.runner.run(command, self._env(safe_names, []), self.config.hook_timeout)
            tally.commands.append(CommandRun(command, outcome.ok, outcome.describe()))
            if outcome.ok:
                continue
            for name in names:
                cluster = self.state.orders[name].cluster
                self._roll_back(name, tally)
                tally.problem(
                    FAILED,
                    f"order {name!r}",
                    f"order {name!r}: check_command {command!r} {outcome.describe()}; "
                    "rolled back to the previous version",
                    cluster,
                )

    def _roll_back(self, name: str, tally: Tally) -> None:
        order = self.state.orders[name]
        previous = order.previous
        try:
            self.installer.switch(order.safe_name, previous.version if previous else None)
            if previous is None:
                remove_copies(order.copies)
                del self.state.orders[name]
            else:
                self.state.orders[name] = replace(previous, copies_version=None)
        except InstallError as err:
            tally.problem(FAILED, f"order {name!r}", f"rollback failed: {err}", order.cluster)
            return
        self._dirty = True
        tally.installed.remove(name)
        tally.rolled_back.append(name)
        for owed in self.state.owed:
            if order.safe_name in owed.updated:
                owed.updated.remove(order.safe_name)
        self.state.owed = [owed for owed in self.state.owed if owed.updated or owed.removed]
        self._complete_copies(tally)
        log.warning("order %r rolled back", name)

    # -- removals ------------------------------------------------------------------------

    def _removals(self, owners: dict[str, str], now: int, tally: Tally) -> list[str]:
        """Handle installed orders their cluster no longer publishes; return deleted names."""
        deleted: list[str] = []
        for trust in self.config.clusters:
            cluster_state = self.state.cluster(trust.name)
            if not cluster_state.complete():
                continue  # an unread shard may still hold them
            entries = cluster_state.entries()
            tombstones = cluster_state.tombstones()
            for name, order in sorted(self.state.orders.items()):
                if order.cluster != trust.name or name in entries:
                    continue
                if order.removed_at is None:
                    stone = tombstones.get(name)
                    order.removed_at = stone.removed_at if stone else now
                    self._dirty = True
                    log.warning("order %r was removed from cluster %s", name, trust.name)
                settings = self.config.settings_for(name)
                if settings.remove != "delete" or now < order.removed_at + settings.remove_after:
                    tally.retired.append(name)
                    continue
                try:
                    self.installer.delete(order.safe_name)
                    remove_copies(order.copies)
                except InstallError as err:
                    tally.problem(FAILED, f"order {name!r}", str(err), trust.name)
                    continue
                del self.state.orders[name]
                self._dirty = True
                deleted.append(name)
                tally.removed.append(name)
                log.info("deleted the files of removed order %r", name)
        return deleted

    # -- on_update -----------------------------------------------------------------------

    def _owe(self, updated: Sequence[str], removed: Sequence[str]) -> None:
        """Record the on_update commands these changes call for, durably, before running."""
        for names, kind in ((updated, "updated"), (removed, "removed")):
            for name in names:
                safe = safe_dir_name(name)
                cluster = self.state.orders[name].cluster if name in self.state.orders else None
                generation = self.state.cluster(cluster).accepted_generation if cluster else 0
                for command in self.config.settings_for(name).on_update:
                    owed = next((o for o in self.state.owed if o.command == command), None)
                    if owed is None:
                        owed = OwedCommand(command)
                        self.state.owed.append(owed)
                    listed = owed.updated if kind == "updated" else owed.removed
                    if safe not in listed:
                        listed.append(safe)
                    owed.generation = max(owed.generation, generation)

    def _run_owed(self, tally: Tally) -> None:
        for owed in list(self.state.owed):
            env = self._env(owed.updated, owed.removed, owed.generation)
            outcome = self.runner.run(owed.command, env, self.config.hook_timeout)
            tally.commands.append(CommandRun(owed.command, outcome.ok, outcome.describe()))
            self._dirty = True
            if outcome.ok:
                self.state.owed.remove(owed)
                continue
            owed.failures += 1
            owed.last_error = outcome.describe()
            tally.problem(
                FAILED,
                f"command {owed.command!r}",
                f"on_update command {owed.command!r} {outcome.describe()} "
                f"(failure {owed.failures}; retried on the next poll)",
            )
            self._save()

    def _env(
        self, updated: Sequence[str], removed: Sequence[str], generation: int = 0
    ) -> dict[str, str]:
        if not generation:
            generation = max(
                (c.accepted_generation for c in self.state.clusters.values()), default=0
            )
        return {
            "CERTFLEET_UPDATED_ORDERS": " ".join(updated),
            "CERTFLEET_REMOVED_ORDERS": " ".join(removed),
            "CERTFLEET_GENERATION": str(generation),
        }

    # -- reporting: health, metrics file, acks --------------------------------------------

    def _report(self, result: PollResult, now: int) -> None:
        """After a poll: record its health, rewrite the metrics file, write changed acks."""
        self._report_orphans()
        self.health.record(result, now)
        self.health_store.save(self.health)
        clusters = [trust.name for trust in self.config.clusters]
        if self.config.metrics_file:
            text = render_metrics(clusters, self.state, self.health, now=now)
            try:
                write_metrics(self.config.metrics_file, text)
            except OSError as err:
                log.warning("cannot write the metrics file %s: %s", self.config.metrics_file,
                            err)  # fmt: skip
        reached = {c.cluster for c in result.clusters if c.head != "unreachable"}
        for trust in self.config.clusters:
            if not self.acks.enabled:
                break
            if trust.name not in reached:
                continue  # the store is down for this cluster: the ack waits for it
            cluster_state = self.state.cluster(trust.name)
            self.acks.report(
                trust.name,
                trust.secrets,
                generation=cluster_state.applied_generation,
                orders=ack_orders(self.state, trust.name, result),
                now=now,
            )

    def _report_orphans(self) -> None:
        """Log, once per config, installed orders of clusters no longer in the config."""
        if self._orphans_reported:
            return
        self._orphans_reported = True
        configured = {trust.name for trust in self.config.clusters}
        for name, order in sorted(self.state.orders.items()):
            if order.cluster not in configured:
                log.warning(
                    "order %r of cluster %s: the cluster is no longer in the config; its files "
                    "are kept and no longer updated (remove %s by hand when done)",
                    name, order.cluster, os.path.join(self.installer.orders_dir, order.safe_name),
                )  # fmt: skip
