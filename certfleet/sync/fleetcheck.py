"""The fleet check: a sync run reads the cluster's acks and says which nodes lag or fail.

Agents write an encrypted ack of what they installed (``acks/<node-id>``, docs/format.md
§5.3); ``certfleet nodes`` shows them on demand. The check makes the sync tell someone: at
most once per ``fleet_check_interval`` (the cluster's, else the sync-wide one; 0 turns it
off) a cluster run reads the acks with ``certfleet.sync.nodereport.read_nodes`` against the head
the state records (no head read, no shard read: one LIST, then one GET per ack whose ETag
changed since the last check; what it kept of the others is ``certfleet.sync.fleetcache``'s
object: one GET and, when it changed, one PUT), puts the cluster's figures into the run
summary (``fleet``; ``fleet_problem_nodes`` in all) and logs a warning per node that is
stale (behind a head out for longer than ``fleet_stale_after``), failing, unreadable or
ahead of the head.

It is the last step of a cluster run, after publishing and garbage collection, under the
run's lease, and it never takes time from publishing:

- it starts only with at least ``MIN_SECONDS`` of the time budget left beyond the run's
  reserve, and reads acks for at most ``BUDGET_SHARE`` of what is left; a check that did
  not read every ack by then reports nothing and is tried again by the next run, which
  reads only the acks this one did not (the cache keeps those it read);
- the time of a check that completed is kept in the cluster's sync state
  (``last_fleet_check``), written with the rest of the state at the end of the run; a crash
  between the check and that write only means one more check.

A node's hostname is its own label and its node id an object key: both are untrusted and
logged escaped. A check that cannot list or read the acks records the error
``fleet:<cluster>`` in the summary.
"""

from __future__ import annotations

import logging

from certfleet.store import Store, StoreError
from certfleet.sync.budget import Budget
from certfleet.sync.context import RunContext
from certfleet.sync.errors import printable
from certfleet.sync.fleetcache import AckCache
from certfleet.sync.nodereport import NodeReport, Published, count_nodes, read_nodes
from certfleet.sync.settings import ClusterPolicy, SyncSettings
from certfleet.sync.state import ClusterState
from certfleet.sync.summary import RunTally

log = logging.getLogger(__name__)

MIN_SECONDS = 1.0
BUDGET_SHARE = 0.5


def stale_after(policy: ClusterPolicy, settings: SyncSettings) -> float:
    """The cluster's ``fleet_stale_after``, else the sync-wide one."""
    if policy.fleet_stale_after is None:
        return settings.fleet_stale_after
    return policy.fleet_stale_after


class FleetCheck:
    """The fleet check of one cluster run (``ctx``), at the run's time ``now``: it reads
    the acks in ``store``, records the check in ``state`` and the figures in ``tally``,
    within a share of the ``budget``."""

    def __init__(
        self,
        ctx: RunContext,
        store: Store,
        state: ClusterState,
        now: int,
        *,
        budget: Budget,
        tally: RunTally,
    ) -> None:
        self.ctx = ctx
        self.store = store
        self.state = state
        self.now = now
        self.budget = budget
        self.tally = tally
        self.cluster = ctx.cluster
        policy, settings = ctx.policy, ctx.settings
        self.interval = (
            settings.fleet_check_interval
            if policy.fleet_check_interval is None
            else policy.fleet_check_interval
        )
        self.stale_after = stale_after(policy, settings)

    def due(self) -> bool:
        """The check is on, the cluster has a head, and the last check is an interval old."""
        return (
            self.interval > 0
            and self.state.head is not None
            and self.now - self.state.last_fleet_check >= self.interval
        )

    def run_if_due(self) -> bool:
        """Check the fleet when due and the budget allows; True when a check completed."""
        if not self.due():
            return False
        left = self.budget.left()
        if left is not None and left < MIN_SECONDS:
            log.info("cluster %s: fleet check left for the next run: %.1f s of budget left",
                     self.cluster, max(left, 0.0))  # fmt: skip
            return False
        deadline = None if left is None else self.budget.monotonic() + left * BUDGET_SHARE
        head = self.state.head
        assert head is not None  # due() checked it
        published = Published(head.generation, head.issued_at, head.valid_until, None)
        secrets = self.ctx.secrets
        cache = AckCache(self.store, self.cluster, self.ctx.keys)
        try:
            found = read_nodes(
                self.store,
                self.cluster,
                secrets,
                published,
                now=self.now,
                stale_after=self.stale_after,
                deadline=deadline,
                signing_key=self.ctx.settings.signing_key,
                known=cache.load(),
            )
            cache.save(found.known)  # also after a partial read: the next one goes on
        except StoreError as err:
            log.warning("cluster %s: fleet check failed: %s", self.cluster, err)
            self.tally.error(f"fleet:{self.cluster}", err)
            return False
        log.debug("cluster %s: fleet check read %d of %d acks (the others unchanged)",
                  self.cluster, found.reads, len(found.nodes))  # fmt: skip
        if found.unread:
            log.warning(
                "cluster %s: fleet check stopped by the time budget (%d of %d acks unread); "
                "the next run checks again",
                self.cluster,
                found.unread,
                found.unread + len(found.nodes),
            )
            return False
        self._report(found.nodes, found.truncated)
        self.state.last_fleet_check = self.now
        return True

    def _report(self, nodes: tuple[NodeReport, ...], truncated: bool) -> None:
        figures = count_nodes(nodes)
        problems = [node for node in nodes if node.problems]
        figures["problem_nodes"] = len(problems)
        self.tally.fleet[self.cluster] = figures
        log.info(
            "cluster %s: fleet check: %s",
            self.cluster,
            ", ".join(f"{value} {name}" for name, value in figures.items()),
        )
        if truncated:
            log.warning("cluster %s: fleet check read only the first %d acks", self.cluster,
                        len(nodes))  # fmt: skip
        for node in problems:
            kind = f" ({node.error_kind})" if node.error_kind else ""
            host = printable(node.hostname, 64) or "-"
            if node.ack is None and node.label:
                host += " (unverified)"  # an unreadable ack's hostname label
            log.warning(
                "cluster %s: node %s, id %s: %s%s",
                self.cluster,
                host,
                printable(node.node_id, 64),
                node.status,
                kind,
            )
