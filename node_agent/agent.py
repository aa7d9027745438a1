"""One poll of every configured cluster: fetch, verify, install, check, run commands.

``Agent.poll_once()`` is the whole job of ``certfleet-agent --once`` and one turn of the
daemon loop:

1. for each cluster, one conditional GET of its head; a new head is verified and only the
   shards whose hashes changed are fetched (``ClusterView``);
2. an order name published by two clusters belongs to the first cluster in the config, the
   other one is refused;
3. each order whose bundle hash differs from the installed one is fetched, checked and
   written to a new version directory, unless its ``install_after`` is still ahead or,
   for a replacement, its ``stagger`` turn or ``update_window`` has not come
   (``node_agent.schedule``; deferred, reconsidered on every poll, even one answered 304);
4. the symlinks switch; ``files`` copies are written (and interrupted sets completed);
5. each distinct ``check_command`` of the switched orders runs; on failure those orders go
   back to their previous version;
6. removed orders are kept (reported) or deleted after their grace period;
7. each distinct ``on_update`` command owed runs once; failures stay owed in the durable
   state and are retried on the next poll, also after a restart;
8. each switched order with a ``probe`` is checked over TLS: does the server now serve the
   new leaf? If not, it goes back to its previous version (with the orders that share its
   on_update commands) and those commands run again.

An order rolled back by its failed check_command or probe backs off (``node_agent.backoff``):
its bundle is not fetched nor tried again before a ``retry_at`` that doubles with each failed
attempt (1 min to 1 h); meanwhile every poll reports it failed. The backoffs are kept in the
durable state (a restart keeps them); ``clear_backoff`` (a config reload) ends them.

Steps 2 and 3 are ``node_agent.planner``'s, 4 to 8 ``node_agent.rollout``'s; this module
runs them in that order and reports the poll (health, metrics file, acks).

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
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Mapping
from typing import Callable

from certfleet.bundle import AckOrder
from certfleet.config import AgentConfig
from certfleet.store import Store, open_store
from node_agent.ack import MAX_LISTED_ORDERS, AckWriter, ack_orders, ack_owed
from node_agent.agentstate import AgentState
from node_agent.health import HealthStore
from node_agent.hook import CommandRunner, ShellRunner
from node_agent.identity import node_id
from node_agent.installer import Installer
from node_agent.metrics import OrderMetrics, render_metrics, write_metrics
from node_agent.planner import Planner, destinations
from node_agent.result import PollResult
from node_agent.rollout import Clock, Rollout
from node_agent.schedule import Deferral
from node_agent.source import ClusterSource
from node_agent.statestore import StateStore
from node_agent.tally import PollTally
from node_agent.view import changed_names, refresh_view

__all__ = ["Agent", "destinations"]  # destinations: still imported from here

log = logging.getLogger(__name__)

# The total deadline of one store request (a head, a shard, a bundle, an ack), every retry
# included, plus one second per MiB moved: a poll of a hung store gives up on a cluster's
# head after this long instead of waiting on a server that trickles bytes.
STORE_TIMEOUT = 30.0


class Agent:
    """The node agent of one config and one state directory."""

    def __init__(
        self,
        config: AgentConfig,
        *,
        store: Store | None = None,
        runner: CommandRunner | None = None,
        clock: Clock = time.time,
        rng: Callable[[], float] = random.random,
        stop: threading.Event | None = None,
    ) -> None:
        self.config = config
        # ``stop`` (the daemon's stop request) also cancels a store request in flight, so a
        # hung or trickling store cannot hold SIGTERM for longer than a fraction of a second.
        self.store = store or open_store(
            config.store, endpoint=config.store_endpoint, timeout=STORE_TIMEOUT, cancel=stop
        )
        self.runner: CommandRunner = runner or ShellRunner(passed=config.hook_env)
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
        self._order_metrics = OrderMetrics()
        self.health_store = HealthStore(config.state_dir)
        self.health = self.health_store.load()
        self.acks = AckWriter(self.store, self.node_id)
        # The orders of the last compact ack computed, by cluster: where the next starts.
        self._acked: dict[str, dict[str, AckOrder]] = {}
        self._orphans_reported = False
        self.sources = {
            trust.name: ClusterSource(
                self.store, trust.name, secrets=trust.secrets, publishers=trust.publishers
            )
            for trust in config.clusters
        }
        # They keep the indexes of full passes, so a poll answered 304 touches only those:
        # the deferred orders (``planner``), the retired ones (``rollout``).
        self.planner = Planner(config, self.installer, self.sources, self.node_id)
        self.rollout = Rollout(config, self.installer, self.runner, clock, rng=rng)

    def proven(self, cluster: str) -> str | None:
        """The digest of the secrets last proven for ``cluster`` (``node_agent.secretproof``)."""
        known = self.state.clusters.get(cluster)
        return known.proven if known is not None else None

    def remember_proven(self, cluster: str, digest: str) -> None:
        """Record that the secrets whose digest is ``digest`` open ``cluster``'s head; saved
        at the end of the next poll."""
        self.state.cluster(cluster).proven = digest
        self._dirty = True

    def clear_backoff(self) -> None:
        """Forget every backoff (a config reload: the operator may have fixed the cause);
        saved at the end of the next poll."""
        if self.state.backoff:
            log.info("config reloaded: %d order(s) backing off are tried again at once",
                     len(self.state.backoff))  # fmt: skip
            self.state.backoff = {}
            self._dirty = True

    # -- the poll ------------------------------------------------------------------------

    def poll_once(self) -> PollResult:
        now = int(self.clock())
        tally = PollTally()
        fresh: dict[str, tuple[str, int]] = {}
        touched: dict[str, set[str]] | None = {}  # None: a full pass
        for trust in self.config.clusters:
            cluster_state = self.state.cluster(trust.name)
            before, before_count = cluster_state.shards, cluster_state.shard_count
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
                names = changed_names(before, before_count, cluster_state)
                if names is None or touched is None or self.planner.needs_full(names):
                    touched = None
                else:
                    touched[trust.name] = names
        view_problems = len(tally.problems)
        revision = self.state.orders.revision
        backoff = dict(self.state.backoff)
        full, self._full_next = self._full_next or touched is None, True  # until this poll ends
        waits = self.planner.deferrals()
        every: set[str] = set()
        if full or touched is None:
            touched = None
            prepared = self.planner.plan_all(self.state, now, tally)
        else:
            every = set().union(*touched.values())
            prepared = self.planner.plan_changed(self.state, now, tally, every)
        rollout = self.rollout
        switched = rollout.switch(self.state, prepared, tally)
        removed = rollout.removals(self.state, now, tally, full, touched)
        rollout.owe(self.state, switched, removed)
        copies = (
            self.state.orders if self._recheck_copies else rollout.copies_failed | set(switched)
        )
        rollout.complete_copies(self.state, copies, tally)
        rollout.check(self.state, switched, tally)
        rollout.run_owed(self.state, tally)
        rollout.probe(self.state, switched, tally)
        for name in tally.installed:
            self.state.backoff.pop(name, None)  # the version it backed off from passed
        if self.state.backoff != backoff:
            self._dirty = True
        for cluster, (etag, generation) in fresh.items():
            if not tally.has_problem(cluster):
                cluster_state = self.state.cluster(cluster)
                cluster_state.applied_etag = etag
                cluster_state.applied_generation = generation
                self._dirty = True
        result = tally.result(self.state, [trust.name for trust in self.config.clusters])
        log.info("poll done: %s", result.summary())
        changed = (
            full
            or bool(fresh)
            or self.state.orders.revision != revision
            or bool(result.commands)
            or self.planner.deferrals() != waits  # e.g. a missed window: the next one
        )
        scope = None if full else self._ack_scope(result, waits, every)
        self._report(result, now, changed, scope)
        self._save()  # once, with the digests of the acks just written
        # An order that failed is retried by a full pass (its head may be applied already).
        self._full_next = any(p.cluster is not None for p in tally.problems[view_problems:])
        self._recheck_copies = False
        return result

    def _save(self) -> None:
        """Write the state if this poll changed it (an idle poll writes nothing)."""
        if self._dirty or self.rollout.dirty or self.state.orders.changed:
            self.states.save(self.state)
            self._dirty = self.rollout.dirty = False

    # -- reporting: health, metrics file, acks --------------------------------------------

    def _ack_scope(
        self, result: PollResult, waits: Mapping[str, Deferral], touched: set[str]
    ) -> set[str] | None:
        """The order names an ack after this poll (not a full pass) may report otherwise
        than the last one: those it ``touched``, installed, deferred (now or before),
        removed or rolled back. None: any, when the poll had a problem or an on_update
        command keeps failing."""
        if result.problems or any(owed.failures for owed in self.state.owed):
            return None
        scope = set(touched).union(
            result.installed, result.deferred, result.removed, result.retired,
            result.rolled_back, waits, self.planner.deferrals(),
        )  # fmt: skip
        return scope

    def _report(
        self, result: PollResult, now: int, changed: bool, scope: set[str] | None = None
    ) -> None:
        """After a poll: record its health, rewrite the metrics file, write changed acks.

        Unless ``changed`` (a full pass, a new head, or an order or command changed), the
        per-order metrics are the cached ones and only acks that could not be written are
        tried. ``scope``: the only names whose ack lines may have changed (None: any)."""
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
            compact = len(cluster_state.entries()) > MAX_LISTED_ORDERS
            last = self._acked.get(trust.name)
            if scope is None or last is None or trust.name in self.acks.unsent or not compact:
                last, only = self.acks.last_orders(trust.name), None
            else:
                only = scope
            orders = ack_orders(
                self.state, trust.name, result, last, self.planner.deferrals(), only
            )
            # What this ack lists is what the next one starts from (when it is compact: a
            # compact one is the same for the orders a poll did not touch).
            if compact:
                self._acked[trust.name] = {order.order_name: order for order in orders}
            else:
                self._acked.pop(trust.name, None)
            written = self.acks.report(
                trust.name,
                trust.secrets,
                publishers=trust.publishers,
                generation=cluster_state.applied_generation,
                orders=orders,
                now=now,
                state=cluster_state,
                owed=ack_owed(self.state, trust.name, orders),
            )
            self._dirty = self._dirty or written

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
