"""One sync run for one cluster (docs/sync.md "One pass, for each configured cluster").

The order of writes is what makes a crash at any instant safe:

1. the lease (``lease``); every later write is conditional or content-addressed;
2. a new key is sealed into a pending-key object and recorded in the state **before** its
   CSR is submitted, so a crash never loses a key the CA may certify, and a resumed run
   collects that key's certificate instead of making a second key (``issuer``);
3. bundles, then only the shards whose plaintext changed, then the head by
   compare-and-swap on the ETag read at the start, with ``next_generation`` of the higher
   of the head's and the state's generation (a crash between head and state loses none);
4. the state, recording what the head now references and what stopped being referenced
   (with the time, for garbage collection after ``gc_grace``) (``publisher``), and when
   the nodes' acks were last checked: the fleet check, when due, is the run's last step
   before the state is saved (``fleetcheck``); just before it, a provider that keeps
   records of its own (the ACME state) drops those of removed orders (``forget_removed``).
   The state also remembers the order source's revision the run acted on (the ACME
   registry's, with the id of the write that made it), and the next run hands it to the
   provider before listing: a registry deleted, put back to an older copy, or not
   descending from that write is then a listing failure, not a list of removals (with no
   state at all but a head this sync signed, revision 1 at least, and such a run with a
   failed listing writes neither head nor state).

The state is sealed with the sync-only secret (``certfleet.sync.sealing``); one sealed the
old way is vouched for and rewritten first (``certfleet.sync.migration``). A failure of any
type after the state is loaded is contained: one order's is that order's error; anything
else ends the cluster's run after the state is saved with what it already records (each
record follows the write it describes), so the next run does not redo or republish it.

An object written by a run that crashed before recording it is found by the periodic
sweep and collected like any other unreferenced object. The sweep's listing is made at the
start of the run, so the same run also repairs referenced objects that went missing
(``audit``).

The parts of a run each take a few explicit inputs and can be built alone: the frozen
``RunContext`` (cluster, policy, settings, keys, clock), the ``Budget`` (the time budget,
with its monotonic clock), the ``RunWriter`` (content-addressed writes, retired objects,
the state, the checkpoint that keeps the lease fresh), the ``RunTally`` and the state.
``ClusterRun`` builds them and runs the parts in order.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Callable

from certfleet.errors import CertfleetError
from certfleet.store import Store
from certfleet.sync.audit import Audit
from certfleet.sync.budget import Budget, Monotonic
from certfleet.sync.context import Clock, RunContext
from certfleet.sync.errors import RUN_FATAL
from certfleet.sync.fleetcheck import FleetCheck
from certfleet.sync.headseen import HeadSeen, read_head
from certfleet.sync.issuer import Issuer
from certfleet.sync.layout import bundle_key, pending_key
from certfleet.sync.lease import Lease
from certfleet.sync.migration import migrate
from certfleet.sync.plan import plan_cluster
from certfleet.sync.provider import (
    Provider,
    ProviderError,
    ProviderNotFound,
    ProviderOrder,
    SourceRevision,
)
from certfleet.sync.publisher import Publisher
from certfleet.sync.sealing import CURRENT
from certfleet.sync.settings import ClusterPolicy, SyncSettings
from certfleet.sync.state import ClusterState, StateStore
from certfleet.sync.summary import RunTally
from certfleet.sync.writer import Checkpoint, RunWriter

log = logging.getLogger(__name__)

__all__ = ("Checkpoint", "Clock", "ClusterRun")


class ClusterRun:
    """Runs the sync once for one cluster; counts into ``tally``. ``open_provider`` is
    called once, when the run first needs the provider (after the lease and the state)."""

    def __init__(
        self,
        *,
        cluster: str,
        policy: ClusterPolicy,
        settings: SyncSettings,
        store: Store,
        open_provider: Callable[[], Provider],
        clock: Clock,
        deadline: float | None,
        tally: RunTally,
        checkpoint: Checkpoint,
        verify_store: bool = False,
        monotonic: Monotonic = time.monotonic,
    ) -> None:
        self.ctx = ctx = RunContext.of(cluster, policy, settings, clock)
        self.cluster = cluster
        self.store = store
        self.open_provider = open_provider
        self.tally = tally
        self.verify_store = verify_store
        self.budget = Budget(deadline, monotonic=monotonic)
        self.lease = Lease(
            store,
            cluster,
            duration=settings.lease_duration,
            clock=clock,
            secret=ctx.keys.current,
            previous=ctx.keys.previous,
        )
        self.states = StateStore(store, cluster, ctx.keys)
        self.writer = RunWriter(
            store, ctx, states=self.states, checkpoint=checkpoint, refresh=self.lease.refresh
        )

    # -- flow ---------------------------------------------------------------------------

    def run(self) -> None:
        """Take the lease, do the work, release the lease (not on a simulated crash)."""
        self.lease.acquire()
        try:
            self.writer.step("lease")
            try:
                self._run_locked()
            except Exception:
                self.lease.release()
                raise
            self.lease.release()
        finally:
            if self.budget.exhausted:
                self.tally.complete = False

    def _run_locked(self) -> None:
        seen = self._read_head()
        clock = self.ctx.clock
        now = int(clock())
        state = self.states.load(now_ms=int(clock() * 1000), accept_old=True)
        # no state, but a head this sync signed: the state was deleted (or lost)
        lost = not self.states.found and seen.signed and seen.head is not None
        if self.states.sealing != CURRENT:
            migrate(
                self.store, self.cluster, self.ctx.keys, state,
                sealing=self.states.sealing, seen=seen, now=now,
            )  # fmt: skip
            self.states.save(state)
            self.writer.step("migrated")
        self.writer.step("loaded")
        try:
            if not self._work_and_publish(state, seen, now, lost=lost):
                return  # nothing to stand on: neither head nor state is written
        except Exception:
            self._keep(state)
            raise
        self.states.save(state)
        self.writer.step("saved")

    def _work_and_publish(
        self, state: ClusterState, seen: HeadSeen, now: int, *, lost: bool
    ) -> bool:
        """The run's work; False when it stopped before publishing anything: the state was
        ``lost`` (a head this sync signed, no state) and the listing failed, so a head made
        from the fresh state would drop every published order."""
        ctx, budget, tally = self.ctx, self.budget, self.tally
        audit = Audit(ctx, self.store, state, now, budget=budget, tally=tally)
        stored: frozenset[str] | None = None
        if audit.due(forced=self.verify_store):
            stored = audit.list_objects()
            audit.check(stored, verify=self.verify_store)
            self.writer.step("audited")
        provider = self.open_provider()
        # where the order source must stand at least: as the state remembers it, or, with
        # the state lost, at revision 1 (an ACME registry existed: a missing one is refused)
        floor = SourceRevision(state.registry_revision, state.registry_write_id)
        provider.expect_revision(self.cluster, SourceRevision(1) if lost else floor)
        try:
            tally.count(provider_calls=1)
            listing: Sequence[ProviderOrder] | None = provider.list_orders(self.cluster)
        except ProviderError as err:
            log.warning("cluster %s: listing failed, nothing removed: %s", self.cluster, err)
            tally.error(f"cluster:{self.cluster}", err)
            listing = None
            if lost:
                log.warning("cluster %s: no sync state and no listing: nothing published, "
                            "the head in the store stays", self.cluster)  # fmt: skip
                return False
        self.writer.step("listed")
        if listing is not None:
            self._remember_revision(state, provider)
            self._work(state, listing, now, provider)
            self._remember_revision(state, provider)
        publisher = Publisher(
            ctx, self.writer, state, now, budget=budget, tally=tally, damaged=audit.damaged
        )
        publisher.rewrap_bundles()
        publisher.publish(seen)
        publisher.collect_garbage(seen, stored)
        if listing is not None:
            self._forget_removed(listing, provider)
        try:
            check = FleetCheck(ctx, self.store, state, now, budget=budget, tally=tally)
            checked = check.run_if_due()
        except RUN_FATAL:
            raise
        except Exception as err:  # noqa: BLE001 - published work stays published and recorded
            log.warning("cluster %s: fleet check failed: %s", self.cluster, type(err).__name__)
            tally.error(f"cluster:{self.cluster}", err)
            checked = False
        if checked:
            self.writer.step("fleet-checked")
        return True

    def _keep(self, state: ClusterState) -> None:
        """After a failure of any kind mid-run, save what the state records: each record
        is made after the write it describes, so it is safe to keep, and a run that loses
        it would redo (and republish) that work. Not when the lease is lost."""
        if not self.lease.held:
            return
        try:
            if self.states.save(state):
                log.warning("cluster %s: state saved after the failure", self.cluster)
        except Exception as err:  # noqa: BLE001 - the failure itself is what gets reported
            log.warning(
                "cluster %s: the state could not be saved after the failure (%s)",
                self.cluster,
                type(err).__name__,
            )

    def _work(
        self, state: ClusterState, listing: Sequence[ProviderOrder], now: int, provider: Provider
    ) -> None:
        self.tally.count(orders_seen=len(listing))
        plan = plan_cluster(
            self.cluster,
            listing,
            state,
            now=now,
            key_type_for=self.ctx.policy.key_type_for,
            renew_days=self.ctx.policy.renew_days,
            renew_at=self._renewal_times(state, provider),
        )
        for name, reason in plan.invalid.items():
            self.tally.error(name, f"order refused: {reason}")
        self._confirm_removals(state, plan.missing, now, provider)
        for name in plan.drop_pending:
            self.writer.retire(pending_key(self.cluster, state.pending.pop(name).object))
        issuer = Issuer(
            self.ctx, self.writer, provider, state, budget=self.budget, tally=self.tally
        )
        issuer.generate(plan.issue, now)
        issuer.collect(plan.resume)

    def _remember_revision(self, state: ClusterState, provider: Provider) -> None:
        """Record where the order source stood at its last read (the next run holds it to
        that); a provider refuses a source that went back, so this never goes down."""
        seen = provider.seen_revision(self.cluster)
        if seen.number and seen.number >= state.registry_revision:
            state.registry_revision, state.registry_write_id = seen.number, seen.write_id

    def _forget_removed(self, listing: Sequence[ProviderOrder], provider: Provider) -> None:
        """Let the provider drop what it keeps of removed orders (the ACME state's records),
        once the head that tombstones them is published; a failure leaves them for later."""
        if self.budget.out_of_time():
            return
        try:
            provider.forget_removed(self.cluster, [order.name for order in listing])
        except RUN_FATAL:
            raise
        except CertfleetError as err:
            log.warning("cluster %s: records of removed orders kept: %s", self.cluster, err)

    def _renewal_times(self, state: ClusterState, provider: Provider) -> Mapping[str, int]:
        """Renewal times the provider suggests (ACME ARI); none when it has no opinion."""
        if not state.orders:
            return {}
        try:
            return provider.renewal_times(self.cluster, sorted(state.orders))
        except CertfleetError as err:
            log.warning("cluster %s: renewal times unavailable: %s", self.cluster, err)
            return {}

    def _read_head(self) -> HeadSeen:
        seen = read_head(
            self.store,
            self.cluster,
            self.ctx.settings.signing_key.public_key(),
            now_ms=int(self.ctx.clock() * 1000),
        )
        if seen.problem is not None and seen.head is None:
            log.warning("cluster %s: the stored head is unreadable: %s", self.cluster, seen.problem)
        elif seen.problem is not None:
            log.warning("cluster %s: re-signing the head with the configured key: %s",
                        self.cluster, seen.problem)  # fmt: skip
        return seen

    # -- removals -----------------------------------------------------------------------

    def _confirm_removals(
        self, state: ClusterState, missing: Sequence[str], now: int, provider: Provider
    ) -> None:
        """Tombstone an order only on the provider's 404 or when it moved to another cluster."""
        for name in missing:
            if self.budget.out_of_time():
                return
            try:
                self.tally.count(provider_calls=1)
                order = provider.get_order(name)
            except ProviderNotFound:
                order = None
            except RUN_FATAL:
                raise
            except Exception as err:  # noqa: BLE001 - ProviderError, or anything odd: that order's
                self.tally.error(name, err)
                continue
            if order is not None and order.cluster == self.cluster:
                continue  # the listing missed it: keep everything
            record = state.orders.pop(name, None)
            if record is not None:
                self.writer.retire(bundle_key(self.cluster, record.bundle))
                state.tombstones[name] = now
                self.tally.count(tombstones=1)
            pending = state.pending.pop(name, None)
            if pending is not None:
                self.writer.retire(pending_key(self.cluster, pending.object))
            state.rekey.discard(name)
            self.writer.step("removed")
