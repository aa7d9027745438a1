"""One sync run for one cluster (DESIGN.md "Sync engine").

The order of writes is what makes a crash at any instant safe:

1. the lease (``lease``); every later write is conditional or content-addressed;
2. a new key is sealed into a pending-key object and recorded in the state **before** its
   CSR is submitted, so a crash never loses a key the CA may certify, and a resumed run
   collects that key's certificate instead of making a second key;
3. bundles, then only the shards whose plaintext changed, then the head by
   compare-and-swap on the ETag read at the start, with ``next_generation`` of the higher
   of the head's and the state's generation (a crash between head and state loses none);
4. the state, recording what the head now references and what stopped being referenced
   (with the time, for garbage collection after ``gc_grace``).

An object written by a run that crashed before recording it is found by the periodic
sweep and collected like any other unreferenced object.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Callable, Optional

from certfleet.bundle import (
    Bundle,
    FormatError,
    Head,
    PendingKey,
    content_hash_hex,
    open_bundle,
    open_pending,
    peek_head,
    seal_bundle,
    seal_pending,
)
from certfleet.errors import CertfleetError
from certfleet.store import ObjectNotFound, PreconditionFailed, Store
from certfleet.sync.errors import StateError
from certfleet.sync.keypair import (
    PrivateKey,
    build_csr,
    generate_key,
    load_private_key,
    private_key_pem,
    pubkey_hash,
)
from certfleet.sync.layout import bundle_key, head_key, pending_key
from certfleet.sync.lease import Lease
from certfleet.sync.plan import IMMEDIATE_REASONS, Issue, plan_cluster
from certfleet.sync.provider import Provider, ProviderError, ProviderNotFound, ProviderOrder
from certfleet.sync.publisher import Publisher
from certfleet.sync.renewal import install_after
from certfleet.sync.settings import ClusterPolicy, SyncSettings
from certfleet.sync.state import (
    ClusterState,
    OrderRecord,
    PendingRecord,
    StateStore,
    read_bytes,
)
from certfleet.sync.summary import Tally
from certfleet.sync.verifier import verify_issued

log = logging.getLogger(__name__)

Checkpoint = Callable[[str], None]
Clock = Callable[[], float]
KEY_BATCH = 100
MAX_RESERVE = 5.0


@dataclass(frozen=True)
class HeadSeen:
    """The head found at the start of a run (``None`` fields when there is none)."""

    etag: Optional[str]
    head: Optional[Head]


class ClusterRun:
    """Runs the sync once for one cluster; counts into ``tally``."""

    def __init__(
        self,
        *,
        cluster: str,
        policy: ClusterPolicy,
        settings: SyncSettings,
        store: Store,
        provider: Provider,
        clock: Clock,
        deadline: float | None,
        tally: Tally,
        checkpoint: Checkpoint,
    ) -> None:
        self.cluster = cluster
        self.policy = policy
        self.settings = settings
        self.store = store
        self.provider = provider
        self.clock = clock
        self.deadline = deadline
        self.tally = tally
        self._checkpoint = checkpoint
        self.secrets = tuple(policy.secrets)
        self.lease = Lease(store, cluster, duration=settings.lease_duration, clock=clock)
        self.states = StateStore(store, cluster, self.secrets)
        left = float("inf") if deadline is None else deadline - time.monotonic()
        self._reserve = min(MAX_RESERVE, max(0.0, left) / 4)
        self._keys: dict[str, PrivateKey] = {}
        self._submitted: set[str] = set()
        self._retired: list[str] = []

    # -- flow ---------------------------------------------------------------------------

    def run(self) -> None:
        """Take the lease, do the work, release the lease (not on a simulated crash)."""
        self.lease.acquire()
        self.step("lease")
        try:
            self._run_locked()
        except Exception:
            self.lease.release()
            raise
        self.lease.release()

    def retire(self, key: str) -> None:
        """Note an object that the next head (or state) no longer references."""
        self._retired.append(key)

    def step(self, name: str) -> None:
        """A point where a crash may be injected; also keeps the lease fresh."""
        self._checkpoint(name)
        self.lease.refresh()

    def out_of_time(self) -> bool:
        if self.deadline is None:
            return False
        if time.monotonic() >= self.deadline - self._reserve:
            self.tally.complete = False
            return True
        return False

    def _run_locked(self) -> None:
        state = self.states.load()
        seen = self._read_head()
        self.step("loaded")
        now = int(self.clock())
        try:
            listing: Sequence[ProviderOrder] | None = self.provider.list_orders(self.cluster)
        except ProviderError as err:
            log.warning("cluster %s: listing failed, nothing removed: %s", self.cluster, err)
            self.tally.error(f"cluster:{self.cluster}", err)
            listing = None
        self.step("listed")
        if listing is not None:
            self._work(state, listing, now)
        publisher = Publisher(self, state, now)
        publisher.rewrap_bundles()
        publisher.publish(seen, self._retired)
        publisher.collect_garbage(seen)
        self.states.save(state)
        self.step("saved")

    def _work(self, state: ClusterState, listing: Sequence[ProviderOrder], now: int) -> None:
        self.tally.orders_seen += len(listing)
        plan = plan_cluster(
            self.cluster,
            listing,
            state,
            now=now,
            key_type_for=self.policy.key_type_for,
            renew_days=self.policy.renew_days,
        )
        for name, reason in plan.invalid.items():
            self.tally.errors[name] = f"order refused: {reason}"
        self._confirm_removals(state, plan.missing, now)
        for name in plan.drop_pending:
            self.retire(pending_key(self.cluster, state.pending.pop(name).object))
        self._generate(state, plan.issue, now)
        self._collect(state, [*plan.resume, *sorted(self._submitted)])

    def _read_head(self) -> HeadSeen:
        try:
            stored = self.store.get(head_key(self.cluster))
        except ObjectNotFound:
            return HeadSeen(None, None)
        if stored is None:  # only possible with if_none_match, which is not given
            return HeadSeen(None, None)
        try:
            return HeadSeen(stored.etag, peek_head(stored.data))
        except FormatError as err:
            log.warning("cluster %s: the stored head is unreadable: %s", self.cluster, err)
            return HeadSeen(stored.etag, None)

    # -- removals -----------------------------------------------------------------------

    def _confirm_removals(self, state: ClusterState, missing: Sequence[str], now: int) -> None:
        """Tombstone an order only on the provider's 404 or when it moved to another cluster."""
        for name in missing:
            if self.out_of_time():
                return
            try:
                order = self.provider.get_order(name)
            except ProviderNotFound:
                order = None
            except ProviderError as err:
                self.tally.error(name, err)
                continue
            if order is not None and order.cluster == self.cluster:
                continue  # the listing missed it: keep everything
            record = state.orders.pop(name, None)
            if record is not None:
                self.retire(bundle_key(self.cluster, record.bundle))
                state.tombstones[name] = now
                self.tally.tombstones += 1
            pending = state.pending.pop(name, None)
            if pending is not None:
                self.retire(pending_key(self.cluster, pending.object))
            state.rekey.discard(name)
            self.step("removed")

    # -- keys and CSRs ------------------------------------------------------------------

    def _generate(self, state: ClusterState, issues: Sequence[Issue], now: int) -> None:
        batch: list[Issue] = []
        for issue in issues:
            if self.out_of_time():
                break
            try:
                self._store_pending_key(state, issue, now)
            except (CertfleetError, ValueError) as err:
                self.tally.error(issue.order.name, err)
                continue
            batch.append(issue)
            if len(batch) >= KEY_BATCH:
                self._submit(state, batch)
                batch = []
        if batch:
            self._submit(state, batch)

    def _store_pending_key(self, state: ClusterState, issue: Issue, now: int) -> None:
        order = issue.order
        key_type = self.policy.key_type_for(order.name)
        key = self._reused_key(state, issue, key_type) or generate_key(key_type)
        pending = PendingKey(
            order.name, key_type, private_key_pem(key), pubkey_hash(key), order.dns_names, now
        )
        sealed = seal_pending(pending, cluster=self.cluster, secrets=self.secrets)
        digest = content_hash_hex(sealed)
        try:
            self.store.put_if_absent(pending_key(self.cluster, digest), sealed)
        except PreconditionFailed:
            pass  # the same bytes are already there
        self.tally.keys_generated += 1
        state.pending[order.name] = PendingRecord(
            digest, pending.pubkey_hash, order.dns_names, key_type, now, issue.reason
        )
        state.rekey.discard(order.name)
        self._keys[order.name] = key
        self.step("pending-key")

    def _reused_key(self, state: ClusterState, issue: Issue, key_type: str) -> PrivateKey | None:
        """The current key, for a renewal of an order configured with ``reuse_key``."""
        record = state.orders.get(issue.order.name)
        if (
            issue.reason != "renewal"
            or record is None
            or record.key_type != key_type
            or not self.policy.reuse_key_for(issue.order.name)
        ):
            return None
        bundle = self._open_bundle(issue.order.name, record)
        return load_private_key(bundle.private_key_pem)

    def _open_bundle(self, name: str, record: OrderRecord) -> Bundle:
        data = read_bytes(self.store, bundle_key(self.cluster, record.bundle))
        return open_bundle(data, cluster=self.cluster, order_name=name, secrets=self.secrets)

    def _submit(self, state: ClusterState, batch: Sequence[Issue]) -> None:
        """Persist the batch's pending keys, then submit their CSRs."""
        self.states.save(state)
        self.step("pending-saved")
        for issue in batch:
            name = issue.order.name
            try:
                self._submit_one(name, state.pending[name])
            except (ProviderError, ValueError) as err:
                self.tally.error(name, err)

    def _submit_one(self, name: str, pending: PendingRecord) -> None:
        key = self._key(name, pending)
        answered = self.provider.submit_csr(name, build_csr(key, pending.dns_names))
        self.tally.csrs_submitted += 1
        if answered != pending.pubkey_hash:
            raise ProviderError("submit CSR", f"order {name}", "answered another public key hash")
        self._submitted.add(name)
        self.step("csr")

    def _key(self, name: str, pending: PendingRecord) -> PrivateKey:
        key = self._keys.get(name)
        if key is None:
            data = read_bytes(self.store, pending_key(self.cluster, pending.object))
            opened = open_pending(data, cluster=self.cluster, order_name=name, secrets=self.secrets)
            if opened.pubkey_hash != pending.pubkey_hash:
                raise StateError(self.cluster, f"pending key of {name} does not match its record")
            key = self._keys[name] = load_private_key(opened.private_key_pem)
        return key

    # -- certificates -------------------------------------------------------------------

    def _collect(self, state: ClusterState, names: Sequence[str]) -> None:
        """Fetch each pending certificate, waiting at most ``issue_wait`` in all."""
        until = time.monotonic() + self.settings.issue_wait
        if self.deadline is not None:
            until = min(until, self.deadline - self._reserve)
        for name in dict.fromkeys(names):
            if name not in state.pending or self.out_of_time():
                continue
            try:
                self._collect_one(state, name, max(0.0, until - time.monotonic()))
            except (CertfleetError, ValueError) as err:
                self.tally.error(name, err)

    def _collect_one(self, state: ClusterState, name: str, wait: float) -> None:
        pending = state.pending[name]
        key = self._key(name, pending)
        try:
            cert = self.provider.fetch_certificate(name, pending.pubkey_hash, wait=wait)
        except ProviderNotFound:
            if name in self._submitted:
                raise
            self._submit_one(name, pending)  # stored before a crash, never submitted
            cert = self.provider.fetch_certificate(name, pending.pubkey_hash, wait=wait)
        if cert is None:
            log.info("cluster %s: certificate of %s still pending", self.cluster, name)
            return
        now = int(self.clock())
        verified = verify_issued(
            order_name=name,
            key=key,
            dns_names=pending.dns_names,
            certificate_pem=cert.certificate_pem,
            chain_pem=cert.chain_pem,
            now=now,
        )
        previous = state.orders.get(name)
        serial = cert.serial or verified.serial
        if previous is not None and previous.serial == serial:
            raise ProviderError(
                "fetch certificate", f"order {name}", "the provider returned the current "
                "certificate again (reuse_key renewals need a provider that re-issues)",
            )  # fmt: skip
        bundle = Bundle(
            name, pending.dns_names, pending.key_type, private_key_pem(key),
            cert.certificate_pem, cert.chain_pem, serial, verified.not_before,
            verified.not_after,
        )  # fmt: skip
        sealed = seal_bundle(bundle, cluster=self.cluster, secrets=self.secrets)
        digest = content_hash_hex(sealed)
        try:
            self.store.put_if_absent(bundle_key(self.cluster, digest), sealed)
        except PreconditionFailed:
            pass  # the same bytes are already there
        self.step("bundle")
        immediate = previous is None or pending.reason in IMMEDIATE_REASONS
        if previous is not None:
            self.retire(bundle_key(self.cluster, previous.bundle))
        self.retire(pending_key(self.cluster, pending.object))
        del state.pending[name]
        state.tombstones.pop(name, None)
        state.orders[name] = OrderRecord(
            dns_names=pending.dns_names,
            key_type=pending.key_type,
            bundle=digest,
            pubkey_hash=pending.pubkey_hash,
            serial=serial,
            not_before=verified.not_before,
            not_after=verified.not_after,
            install_after=install_after(
                verified.not_before, int(self.settings.skew_margin), immediate=immediate
            ),
            secret_ids=tuple(secret.id for secret in self.secrets),
        )
        self.tally.certificates_published += 1

    def rewrap_bundle(self, state: ClusterState, name: str, record: OrderRecord) -> None:
        """Re-seal one order's bundle for the configured secrets (secret rotation)."""
        bundle = self._open_bundle(name, record)
        sealed = seal_bundle(bundle, cluster=self.cluster, secrets=self.secrets)
        digest = content_hash_hex(sealed)
        try:
            self.store.put_if_absent(bundle_key(self.cluster, digest), sealed)
        except PreconditionFailed:
            pass
        self.retire(bundle_key(self.cluster, record.bundle))
        state.orders[name] = replace(
            record, bundle=digest, secret_ids=tuple(secret.id for secret in self.secrets)
        )
        self.step("rewrapped")
