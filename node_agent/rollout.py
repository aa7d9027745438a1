"""Applying a plan: switch versions in, check them, roll back, remove, run on_update.

The steps of a poll after planning (``node_agent.planner``), each on the ``AgentState``:

1. ``switch``: the symlinks of the prepared orders switch to their new versions;
2. ``removals``: installed orders their cluster no longer publishes are kept (reported) or
   deleted after their grace period; a full pass finds them and keeps an index of those
   whose files are kept, any other poll looks only at that index;
3. ``owe``: the on_update commands these changes call for are recorded in the durable
   state before anything runs;
4. ``complete_copies``: the ``files`` copies are written (and interrupted sets completed);
5. ``check``: each distinct ``check_command`` of the switched orders runs; on failure those
   orders go back to their previous version (a first install is removed) and are no longer
   owed an on_update;
6. ``run_owed``: each distinct ``on_update`` command owed runs once; failures stay owed in
   the durable state and are retried on the next poll, also after a restart;
7. ``probe``: the switched orders with a ``probe`` are checked over TLS; those that fail
   go back to their previous version with the orders that share their on_update commands,
   and those commands run again (``node_agent.probestep``).

An order rolled back by its own failed check_command or probe backs off: that bundle is not
tried again before a ``retry_at`` that doubles with each failed attempt
(``node_agent.backoff``); the planner reports it failed meanwhile, which keeps the
cluster's head unapplied. Orders rolled back only because they share an on_update command
with a failed probe are tried again at the next poll.

The commands' environment carries ``CERTFLEET_UPDATED_ORDERS`` and
``CERTFLEET_REMOVED_ORDERS`` — space-separated *safe* order names, i.e. the directory names
under ``orders/`` (``*`` written ``_``, so no shell glob) — and ``CERTFLEET_GENERATION``,
the newest head generation among those orders' clusters.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Callable

from certfleet.bundle import iso_utc, safe_dir_name
from certfleet.config import AgentConfig, UnsafeFilesPathError
from node_agent.agentstate import AgentState, InstalledOrder, OwedCommand
from node_agent.backoff import hold
from node_agent.errors import InstallError
from node_agent.hook import CommandRunner
from node_agent.installer import Installer, remove_copies, write_copies
from node_agent.planner import Prepared, destinations, modes_for
from node_agent.probe import Prober, probe
from node_agent.probestep import ProbeStep
from node_agent.result import FAILED, REFUSED, CommandRun
from node_agent.tally import PollTally

log = logging.getLogger(__name__)

Clock = Callable[[], float]


class Rollout:
    """Applies plans for one agent; keeps the index of retired orders and failed copies."""

    def __init__(
        self,
        config: AgentConfig,
        installer: Installer,
        runner: CommandRunner,
        clock: Clock,
        prober: Prober = probe,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.config = config
        self.installer = installer
        self.runner = runner
        self.clock = clock
        self.rng = rng  # the jitter of backoffs
        self.probe_step = ProbeStep(config, installer, self, prober, rng)
        self._retired: dict[str, str] = {}  # removed upstream, files kept: name -> cluster
        self.copies_failed: set[str] = set()  # orders whose ``files`` copies are not written
        # The state changed beyond ``OrderTable.changed`` (owed commands): the agent saves
        # it and clears this.
        self.dirty = False

    # -- switching -----------------------------------------------------------------------

    def switch(
        self, state: AgentState, prepared: Sequence[Prepared], tally: PollTally
    ) -> list[str]:
        switched: list[str] = []
        for item in prepared:
            old = state.orders.get(item.name)
            try:
                self.installer.switch(item.safe, item.version)
            except InstallError as err:
                tally.problem(FAILED, f"order {item.name!r}", str(err), item.cluster)
                continue
            previous = replace(old, previous=None) if old is not None else None
            state.orders[item.name] = InstalledOrder(
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

    def complete_copies(self, state: AgentState, names: Iterable[str], tally: PollTally) -> None:
        """Write the ``files`` copies of ``names`` that are missing, stale or interrupted."""
        for name in sorted(names):
            order = state.orders.get(name)
            if order is None:
                self.copies_failed.discard(name)
                continue
            settings = self.config.settings_for(name)
            try:
                wanted = destinations(settings, order.safe_name)
            except UnsafeFilesPathError as err:
                tally.problem(REFUSED, f"order {name!r}", str(err), order.cluster)
                self.copies_failed.add(name)
                continue
            if order.copies_version == order.version and order.copies == wanted:
                self.copies_failed.discard(name)
                continue
            order = state.orders[name] = replace(order, copies=wanted, copies_version=None)
            if wanted:
                try:
                    files = self.installer.read(order.safe_name, order.version, order.key_type)
                    write_copies(files, wanted, modes_for(settings))
                except InstallError as err:
                    tally.problem(FAILED, f"order {name!r}", str(err), order.cluster)
                    self.copies_failed.add(name)
                    continue
            state.orders[name] = replace(order, copies_version=order.version)
            self.copies_failed.discard(name)

    # -- check_command and rollback ------------------------------------------------------

    def check(self, state: AgentState, switched: Sequence[str], tally: PollTally) -> None:
        """Run the check_command of the switched orders; roll back those it fails."""
        by_command: dict[str, list[str]] = {}
        for name in switched:
            command = self.config.settings_for(name).check_command
            if command:
                by_command.setdefault(command, []).append(name)
        fraction = self.rng() if by_command else 0.5  # one jitter for those failing together
        for command, names in by_command.items():
            safe_names = [state.orders[name].safe_name for name in names]
            env = self._env(state, safe_names, [])
            outcome = self.runner.run(command, env, self.config.hook_timeout)
            tally.commands.append(CommandRun(command, outcome.ok, outcome.describe()))
            if outcome.ok:
                continue
            for name in names:
                order = state.orders[name]
                self.roll_back(state, name, tally)
                done = (
                    "rolled back to the previous version"
                    if order.previous is not None
                    else "removed (a first install: there is no previous version)"
                )
                message = f"order {name!r}: check_command {command!r} {outcome.describe()}; {done}"
                if name in tally.rolled_back:
                    message = self.back_off(state, name, order, message, fraction)
                tally.problem(FAILED, f"order {name!r}", message, order.cluster)

    def back_off(
        self, state: AgentState, name: str, order: InstalledOrder, message: str, fraction: float
    ) -> str:
        """Back off from ``order``'s version (just rolled back); the problem's message."""
        held = hold(
            state,
            name,
            cluster=order.cluster,
            bundle_hash=order.bundle_hash,
            error=message,
            now=int(self.clock()),
            fraction=fraction,
        )
        log.warning(
            "order %r: bundle %s not tried again before %s (attempt %d failed)",
            name, order.bundle_hash[:16], iso_utc(held.retry_at), held.attempts,
        )  # fmt: skip
        return held.detail()

    def roll_back(self, state: AgentState, name: str, tally: PollTally) -> None:
        """Switch ``name`` back to its previous version (or none), its copies too."""
        order = state.orders[name]
        previous = order.previous
        try:
            self.installer.switch(order.safe_name, previous.version if previous else None)
            if previous is None:
                remove_copies(order.copies)
                del state.orders[name]
            else:
                state.orders[name] = replace(previous, copies_version=None)
        except InstallError as err:
            tally.problem(FAILED, f"order {name!r}", f"rollback failed: {err}", order.cluster)
            return
        self.dirty = True
        tally.installed.remove(name)
        tally.rolled_back.append(name)
        for owed in state.owed:
            if order.safe_name in owed.updated:
                owed.updated.remove(order.safe_name)
        state.owed = [owed for owed in state.owed if owed.updated or owed.removed]
        self.complete_copies(state, [name], tally)
        log.warning("order %r rolled back", name)

    # -- removals ------------------------------------------------------------------------

    def removals(
        self,
        state: AgentState,
        now: int,
        tally: PollTally,
        full: bool,
        touched: Mapping[str, Collection[str]] | None = None,
    ) -> list[str]:
        """Handle installed orders their cluster no longer publishes; return deleted names.

        A full pass finds them (and keeps the index of those whose files are kept); any
        other poll looks at that index and at the ``touched`` names (by cluster: those a
        new head's changed shards hold, or held before)."""
        if full:
            self._retired.clear()
            candidates: list[tuple[str, str]] = []
            by_cluster: dict[str, list[str]] = {}
            for name, order in state.orders.items():
                by_cluster.setdefault(order.cluster, []).append(name)
            for trust in self.config.clusters:
                cluster_state = state.cluster(trust.name)
                if not cluster_state.complete():
                    continue  # an unread shard may still hold them
                entries = cluster_state.entries()
                gone = [n for n in by_cluster.get(trust.name, []) if n not in entries]
                candidates.extend((trust.name, name) for name in sorted(gone))
        else:
            candidates = [(cluster, name) for name, cluster in self._retired.items()]
            for cluster, names in (touched or {}).items():
                cluster_state = state.cluster(cluster)
                if not cluster_state.complete():
                    continue
                entries = cluster_state.entries()
                for name in sorted(names):
                    held = state.orders.get(name)
                    if (
                        held is not None
                        and held.cluster == cluster
                        and name not in entries
                        and name not in self._retired
                    ):
                        candidates.append((cluster, name))
            self._retired.clear()
        return [n for cluster, n in candidates if self._remove(state, cluster, n, now, tally)]

    def _remove(
        self, state: AgentState, cluster: str, name: str, now: int, tally: PollTally
    ) -> bool:
        """Retire or delete an order its cluster no longer publishes; True if deleted."""
        order = state.orders.get(name)
        if order is None:
            return False
        if order.removed_at is None:
            stone = state.cluster(cluster).tombstones().get(name)
            order = state.orders[name] = replace(
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
        del state.orders[name]
        tally.removed.append(name)
        log.info("deleted the files of removed order %r", name)
        return True

    # -- on_update -----------------------------------------------------------------------

    def owe(self, state: AgentState, updated: Sequence[str], removed: Sequence[str]) -> None:
        """Record the on_update commands these changes call for, durably, before running."""
        for names, kind in ((updated, "updated"), (removed, "removed")):
            for name in names:
                safe = safe_dir_name(name)
                cluster = state.orders[name].cluster if name in state.orders else None
                generation = state.cluster(cluster).accepted_generation if cluster else 0
                for command in self.config.settings_for(name).on_update:
                    owed = next((o for o in state.owed if o.command == command), None)
                    if owed is None:
                        owed = OwedCommand(command)
                        state.owed.append(owed)
                    listed = owed.updated if kind == "updated" else owed.removed
                    if safe not in listed:
                        listed.append(safe)
                    owed.generation = max(owed.generation, generation)

    def run_owed(
        self, state: AgentState, tally: PollTally, only: Collection[str] | None = None
    ) -> None:
        """Run each owed on_update command (of ``only``, if given) once; a success is no
        longer owed."""
        for owed in list(state.owed):
            if only is not None and owed.command not in only:
                continue
            env = self._env(state, owed.updated, owed.removed, owed.generation)
            outcome = self.runner.run(owed.command, env, self.config.hook_timeout)
            tally.commands.append(CommandRun(owed.command, outcome.ok, outcome.describe()))
            self.dirty = True
            if outcome.ok:
                state.owed.remove(owed)
                continue
            owed.failures += 1
            owed.last_error = outcome.describe()
            tally.problem(
                FAILED,
                f"command {owed.command!r}",
                f"on_update command {owed.command!r} {outcome.describe()} "
                f"(failure {owed.failures}; retried on the next poll)",
            )

    # -- the probe after on_update -------------------------------------------------------

    def probe(self, state: AgentState, switched: Sequence[str], tally: PollTally) -> None:
        """Probe the switched orders over TLS and undo those that fail
        (``node_agent.probestep``)."""
        self.probe_step.run(state, switched, tally)

    @staticmethod
    def _env(
        state: AgentState, updated: Sequence[str], removed: Sequence[str], generation: int = 0
    ) -> dict[str, str]:
        if not generation:
            generation = max((c.accepted_generation for c in state.clusters.values()), default=0)
        return {
            "CERTFLEET_UPDATED_ORDERS": " ".join(updated),
            "CERTFLEET_REMOVED_ORDERS": " ".join(removed),
            "CERTFLEET_GENERATION": str(generation),
        }
