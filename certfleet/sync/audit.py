"""Finding published objects that went missing or were corrupted, and scheduling repairs.

A run audits the store when a sweep is due (every max(``gc_grace``, 6 h): the listing
the garbage collector needs anyway) or when asked to (``verify_store``, the CLI's
``--verify-store``). The audit lists the cluster's bundles, shards and pending keys once,
**before** the run's work, and compares that listing with what the state references (the
state is what the next head is built from):

- a missing **shard** is rewritten: the publisher re-seals it from the state (a new
  object, so a new hash) and the head is re-signed to reference it;
- a missing **bundle** cannot be rebuilt: the sync never keeps an order's private key
  outside its bundle. The order is marked for a new key (as ``certfleet rekey`` does), so
  the same run issues and publishes a new key and certificate; nodes that still hold the
  old one keep serving it until the new one's ``install_after``. An order that already
  has a pending key (a renewal under way) is left to that key;
- a missing **pending key** is dropped (its order is planned again; a ``rekey`` mark it
  carried is restored), instead of failing that order on every run.

Corruption (other bytes under a content-addressed key) is only visible by reading the
object, which costs one GET per object: ``verify_store`` reads every referenced object
once and compares its SHA-256 with its key (and checks each bundle's certificates as an
agent would: one certificate per entry, a server leaf, the chain in order; a bundle that
fails, published by an older version, gets a new key and certificate), within the run's
time budget (what it did not reach is left for the next ``verify_store``). A corrupted
object is repaired like a missing one. The periodic sweep does not read objects: agents
detect a bad object themselves ("integrity check failed"), and that is when an operator runs
``certfleet sync --verify-store``.

The listing is handed back to the publisher, which records what no state entry references
any more (orphans of a crashed run) for garbage collection at the end of the run. What the
state references is ``referenced_objects``, for both.
"""

from __future__ import annotations

import hashlib
import logging

from certfleet.bundle import FormatError, open_bundle
from certfleet.store import ObjectNotFound, Store
from certfleet.sync.budget import Budget
from certfleet.sync.context import RunContext
from certfleet.sync.layout import (
    BUNDLE_MAX_BYTES,
    SHARD_MAX_BYTES,
    bundle_key,
    bundles_prefix,
    pending_key,
    pending_prefix,
    shard_key,
    shards_prefix,
)
from certfleet.sync.state import ClusterState, read_bytes
from certfleet.sync.summary import RunTally
from certfleet.sync.verifier import published_problem

log = logging.getLogger(__name__)

MIN_SWEEP_INTERVAL = 6 * 3600


def referenced_objects(cluster: str, state: ClusterState) -> dict[str, str]:
    """Each object key of ``cluster`` that ``state`` references, with what it is, for log
    lines: shards first (few, and each holds many entries), then bundles, then pending keys.
    The audit checks these are in the store; the sweep deletes the listed objects that are
    not among them (``Publisher.collect_garbage``)."""
    keys = {shard_key(cluster, rec.object): f"shard {i}" for i, rec in enumerate(state.shards)}
    keys.update({bundle_key(cluster, rec.bundle): "bundle" for rec in state.orders.values()})
    keys.update({pending_key(cluster, rec.object): "pending key" for rec in state.pending.values()})
    return keys


class Audit:
    """The store audit of one cluster run (``ctx``) at its time ``now``: it reads ``store``
    (never writes), repairs ``state``, counts into ``tally`` and stops verifying when the
    ``budget`` is spent; ``damaged`` collects the object keys found missing or corrupted
    (the publisher rewrites the shards among them)."""

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
        self.damaged: set[str] = set()

    def due(self, forced: bool) -> bool:
        """True when this run must list the store: forced, or the periodic sweep is due."""
        interval = max(self.ctx.settings.gc_grace, MIN_SWEEP_INTERVAL)
        return forced or self.now - self.state.last_sweep >= interval

    def list_objects(self) -> frozenset[str]:
        """Every bundle, shard and pending key of the cluster in the store (all pages)."""
        store = self.store
        prefixes = (bundles_prefix(self.cluster), shards_prefix(self.cluster))
        keys = [key for prefix in prefixes for key in store.list(prefix)]
        keys.extend(store.list(pending_prefix(self.cluster)))
        return frozenset(keys)

    def check(self, listed: frozenset[str], *, verify: bool) -> None:
        """Schedule repairs for referenced objects absent from ``listed``; with ``verify``,
        also read every present one and compare its hash with its key. Repairs are counted
        in the summary (``objects_repaired``) and logged as warnings, not order errors: the
        run goes on to carry them out."""
        referenced = referenced_objects(self.cluster, self.state)
        for key, label in sorted(referenced.items()):
            if key not in listed:
                log.warning("cluster %s: %s %s is missing from the store", self.cluster, label, key)
                self.damaged.add(key)
        if verify:
            self._verify([key for key in referenced if key not in self.damaged])
        self._repair()

    def _verify(self, keys: list[str]) -> None:
        bundles = {
            bundle_key(self.cluster, rec.bundle): name for name, rec in self.state.orders.items()
        }
        for key in keys:
            if self.budget.out_of_time():
                log.warning(
                    "cluster %s: store verification stopped by the time budget", self.cluster
                )
                return
            try:
                cap = BUNDLE_MAX_BYTES if "/bundles/" in key else SHARD_MAX_BYTES
                data = read_bytes(self.store, key, max_bytes=cap)
            except ObjectNotFound:
                log.warning("cluster %s: %s is missing from the store", self.cluster, key)
                self.damaged.add(key)
                continue
            self.tally.count(objects_verified=1)
            if hashlib.sha256(data).hexdigest() != key.rsplit("/", 1)[1]:
                log.warning("cluster %s: %s does not match its hash", self.cluster, key)
                self.damaged.add(key)
            elif key in bundles:
                self._check_certificates(bundles[key], key, data)

    def _check_certificates(self, name: str, key: str, data: bytes) -> None:
        """A bundle whose certificates agents would refuse (published by a version that
        did not normalise chains or check the leaf) is repaired like a lost one."""
        secrets = self.ctx.secrets
        try:
            bundle = open_bundle(data, cluster=self.cluster, order_name=name, secrets=secrets)
        except FormatError:
            return  # sealed for other secrets: re-wrapping deals with it
        problem = published_problem(bundle.certificate_pem, bundle.chain_pem)
        if problem is not None:
            log.warning("cluster %s: order %r: agents refuse its bundle (%s): a new key follows",
                        self.cluster, name, problem)  # fmt: skip
            self.damaged.add(key)

    def _repair(self) -> None:
        """Pending keys: dropped; then bundles: a new key for the order, unless a pending
        key (a renewal under way) will replace it anyway. (Shards: the publisher.)"""
        state, cluster, tally = self.state, self.cluster, self.tally
        for name, pending in sorted(state.pending.items()):
            if pending_key(cluster, pending.object) in self.damaged:
                del state.pending[name]
                if pending.reason == "rekey":
                    state.rekey.add(name)
                log.warning("cluster %s: order %r: pending key lost, planned again", cluster, name)
        for name, record in sorted(state.orders.items()):
            if bundle_key(cluster, record.bundle) in self.damaged and name not in state.pending:
                state.rekey.add(name)
                log.warning("cluster %s: order %r: bundle lost, a new key follows", cluster, name)
        tally.count(objects_repaired=len(self.damaged))
