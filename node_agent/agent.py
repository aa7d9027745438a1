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
when every order of it is installed or deferred. The state is saved once, at the end of the
poll: a crash before that leaves the state of the poll before, and the next run does the
work again (a new version of the same content, the commands run again).

Only a *full pass* walks every order: the first poll of an ``Agent``, a poll that read a
new head (or read one again because the last one is not applied yet), and the poll after
one that failed an order or raised. Any other poll — a 304 for every cluster — touches
only what is due: the deferred orders (an index kept by the last full pass), the orders
removed upstream whose files are kept (likewise) and the owed commands; the metrics
file's per-order lines and the acks are computed again only when something changed.

The commands' environment carries ``CERTFLEET_UPDATED_ORDERS`` and
``CERTFLEET_REMOVED_ORDERS`` — space-separated *safe* order names, i.e. the directory names
under ``orders/`` (``*`` written ``_``, so no shell glob) — and ``CERTFLEET_GENERATION``,
the newest head generation among those orders' clusters.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Sequence
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
from node_agent.metrics import OrderMetrics, render_metrics, write_metrics
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
        # What the next poll must do in full: every order (True until a poll completes
        # cleanly) and every order's ``files`` copies (the config may have changed).
        self._full_next = True
        self._recheck_copies = True
        # Indexes kept by full passes, so a poll answered 304 touches only these:
        self._deferred: dict[str, tuple[str, int]] = {}  # name -> (cluster, install_after)
        self._retired: dict[str, str] = {}  # removed upstream, files kept: name -> cluster
        self._copies_failed: set[str] = set()
        self._order_metrics = OrderMetrics()
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
        view_problems = len(tally.problems)
        revision = self.state.orders.revision
        full, self._full_next = self._full_next or bool(fresh), True  # until this poll ends
        prepared = self._plan_all(now, tally) if full else self._plan_due(now, tally)
        switched = self._switch(prepared, tally)
        removed = self._removals(now, tally, full)
        self._owe(switched, removed)
        copies = self.state.orders if self._recheck_copies else self._copies_failed | set(switched)
        self._complete_copies(copies, tally)
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
        changed = full or self.state.orders.revision != revision or bool(result.commands)
        self._report(result, now, changed)
        # An order that failed is retried by a full pass (its head may be applied already).
        self._full_next = any(p.cluster is not None for p in tally.problems[view_problems:])
        self._recheck_copies = False
        return result

    def _save(self) -> None:
        """Write the state if this poll changed it (an idle poll writes nothing)."""
        if self._dirty or self.state.orders.changed:
            self.states.save(self.state)
            self._dirty = False

    # -- ownership -----------------------------------------------------------------------

    def _owners(self, tally: Tally) -> dict[str, str]:
        """Who serves each order name: the first cluster in the config that publishes it.

        In config order, then name order (the order a full pass plans them in)."""
        owners: dict[str, str] = {}
        # Directory names: an installed order keeps its own; then the first name seen. Only
        # a name with '*' or '_' can share its directory with another name ('*' is written
        # '_'), so the others are left out of this check.
        directories = {o.safe_name: n for n, o in self.state.orders.items() if "_" in o.safe_name}
        for trust in self.config.clusters:
            cluster_state = self.state.cluster(trust.name)
            names: Iterable[str] = cluster_state.entries()
            if not cluster_state.complete():  # an unread shard may hold an installed order
                installed = [n for n, o in self.state.orders.items() if o.cluster == trust.name]
                names = set(names).union(installed)
            for name in sorted(names):
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

    # -- fetching and preparing ----------------------------------------------------------

    def _plan_all(self, now: int, tally: Tally) -> list[_Prepared]:
        """A full pass: every order of every cluster's view; the deferred index anew."""
        owners = self._owners(tally)
        self._deferred.clear()
        prepared: list[_Prepared] = []
        for trust in self.config.clusters:
            names = [name for name, owner in owners.items() if owner == trust.name]
            prepared.extend(self._plan(trust.name, names, now, tally))
        return prepared

    def _plan_due(self, now: int, tally: Tally) -> list[_Prepared]:
        """A poll without a new head: only the deferred orders whose time has come."""
        due: dict[str, list[str]] = {}
        for name, (cluster, install_after) in list(self._deferred.items()):
            if install_after <= now:
                del self._deferred[name]
                due.setdefault(cluster, []).append(name)
            else:
                tally.deferred.append(name)
        prepared: list[_Prepared] = []
        for cluster, names in due.items():
            prepared.extend(self._plan(cluster, names, now, tally))
        return prepared

    def _plan(self, cluster: str, names: Sequence[str], now: int, tally: Tally) -> list[_Prepared]:
        """Fetch and prepare those of ``names`` (owned by ``cluster``) that changed."""
        prepared: list[_Prepared] = []
        entries = self.state.cluster(cluster).entries()
        for name in names:
            entry = entries.get(name)
            if entry is None:
                continue
            installed = self.state.orders.get(name)
            if (
                installed is not None
                and installed.cluster == cluster
                and installed.bundle_hash == entry.bundle_hash.hex()
            ):
                if installed.removed_at is not None:
                    self.state.orders[name] = replace(installed, removed_at=None)  # published again
                continue
            if entry.install_after > now:
                tally.deferred.append(name)
                self._deferred[name] = (cluster, entry.install_after)
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
            tally.installed.append(item.name)
            log.info("installed order %r (serial %s) from cluster %s", item.name,
                     item.entry.serial, item.cluster)  # fmt: skip
        return switched

    def _complete_copies(self, names: Iterable[str], tally: Tally) -> None:
        """Write the ``files`` copies of ``names`` that are missing, stale or interrupted."""
        for name in sorted(names):
            order = self.state.orders.get(name)
            if order is None:
                self._copies_failed.discard(name)
                continue
            settings = self.config.settings_for(name)
            try:
                wanted = destinations(settings, order.safe_name)
            except UnsafeFilesPathError as err:
                tally.problem(REFUSED, f"order {name!r}", str(err), order.cluster)
                self._copies_failed.add(name)
                continue
            if order.copies_version == order.version and order.copies == wanted:
                self._copies_failed.discard(name)
                continue
            order = self.state.orders[name] = replace(order, copies=wanted, copies_version=None)
            if wanted:
                try:
                    files = self.installer.read(order.safe_name, order.version, order.key_type)
                    write_copies(files, wanted, modes_for(settings))
                except InstallError as err:
                    tally.problem(FAILED, f"order {name!r}", str(err), order.cluster)
                    self._copies_failed.add(name)
                    continue
            self.state.orders[name] = replace(order, copies_version=order.version)
            self._copies_failed.discard(name)

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
        self._complete_copies([name], tally)
        log.warning("order %r rolled back", name)

    # -- removals ------------------------------------------------------------------------

    def _removals(self, now: int, tally: Tally, full: bool) -> list[str]:
        """Handle installed orders their cluster no longer publishes; return deleted names.

        A full pass finds them (and keeps the index of those whose files are kept); any
        other poll only looks at that index."""
        if full:
            self._retired.clear()
            candidates: list[tuple[str, str]] = []
            by_cluster: dict[str, list[str]] = {}
            for name, order in self.state.orders.items():
                by_cluster.setdefault(order.cluster, []).append(name)
            for trust in self.config.clusters:
                cluster_state = self.state.cluster(trust.name)
                if not cluster_state.complete():
                    continue  # an unread shard may still hold them
                entries = cluster_state.entries()
                gone = [n for n in by_cluster.get(trust.name, []) if n not in entries]
                candidates.extend((trust.name, name) for name in sorted(gone))
        else:
            candidates = [(cluster, name) for name, cluster in self._retired.items()]
            self._retired.clear()
        return [name for cluster, name in candidates if self._remove(cluster, name, now, tally)]

    def _remove(self, cluster: str, name: str, now: int, tally: Tally) -> bool:
        """Retire or delete an order its cluster no longer publishes; True if deleted."""
        order = self.state.orders.get(name)
        if order is None:
            return False
        if order.removed_at is None:
            stone = self.state.cluster(cluster).tombstones().get(name)
            order = self.state.orders[name] = replace(
                order, removed_at=stone.removed_at if stone else now
            )
            log.warning("order %r was removed from cluster %s", name, cluster)
        settings = self.config.settings_for(name)
        assert order.removed_at is not None
        if settings.remove != "delete" or now < order.removed_at + settings.remove_after:
            tally.retired.append(name)
            self._retired[name] = cluster
            return False
        try:
            self.installer.delete(order.safe_name)
            remove_copies(order.copies)
        except InstallError as err:
            tally.problem(FAILED, f"order {name!r}", str(err), cluster)
            return False
        del self.state.orders[name]
        tally.removed.append(name)
        log.info("deleted the files of removed order %r", name)
        return True

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

    def _report(self, result: PollResult, now: int, changed: bool) -> None:
        """After a poll: record its health, rewrite the metrics file, write changed acks.

        Unless ``changed`` (a full pass, or an order or command changed), the per-order
        metrics are the cached ones and only acks that could not be written are tried."""
        self._report_orphans()
        self.health.record(result, now)
        self.health_store.save(self.health)
        clusters = [trust.name for trust in self.config.clusters]
        if self.config.metrics_file:
            order_text = self._order_metrics.text(self.state.orders)
            text = render_metrics(clusters, self.state, self.health, now=now, order_text=order_text)
            try:
                write_metrics(self.config.metrics_file, text)
            except OSError as err:
                log.warning("cannot write the metrics file %s: %s", self.config.metrics_file,
                            err)  # fmt: skip
        reached = {c.cluster for c in result.clusters if c.head != "unreachable"}
        for trust in self.config.clusters:
            if not self.acks.enabled:
                break
            if trust.name not in reached:  # the store is down for this cluster: the ack waits
                if changed:
                    self.acks.unsent.add(trust.name)
                continue
            if not changed and trust.name not in self.acks.unsent:
                continue  # the same as the last one
            cluster_state = self.state.cluster(trust.name)
            self.acks.report(
                trust.name,
                trust.secrets,
                generation=cluster_state.applied_generation,
                orders=ack_orders(
                    self.state, trust.name, result, self.acks.last_orders(trust.name)
                ),
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
