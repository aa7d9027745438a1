"""Issuance for one cluster run: from a plan's ``issue`` list to verified bundles.

Key first, CSR second: each new private key is sealed into a pending-key object and the
state recording it is saved **before** its CSR is submitted (in batches of ``KEY_BATCH``),
so a crash never loses a key the CA may certify, and a resumed run collects that key's
certificate instead of making a second key. Certificates are then collected (waiting at
most ``issue_wait`` in all), verified against the key and the order's names, and sealed
into a content-addressed bundle; the order's record in the state then points at it.
One order's failure is counted in the tally and never stops the others.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from certfleet.bundle import (
    Bundle,
    PendingKey,
    content_hash_hex,
    open_pending,
    seal_bundle,
    seal_pending,
)
from certfleet.sync.budget import Budget
from certfleet.sync.context import RunContext
from certfleet.sync.errors import RUN_FATAL, StateError
from certfleet.sync.keypair import (
    PrivateKey,
    build_csr,
    generate_key,
    load_private_key,
    private_key_pem,
    pubkey_hash,
)
from certfleet.sync.layout import PENDING_MAX_BYTES, bundle_key, pending_key
from certfleet.sync.plan import IMMEDIATE_REASONS, Issue
from certfleet.sync.provider import IssuedCert, Provider, ProviderError, ProviderNotFound
from certfleet.sync.renewal import install_after
from certfleet.sync.state import ClusterState, OrderRecord, PendingRecord, read_bytes
from certfleet.sync.summary import RunTally
from certfleet.sync.verifier import verify_issued
from certfleet.sync.writer import RunWriter

log = logging.getLogger(__name__)

KEY_BATCH = 100


class Issuer:
    """Issuance for one cluster run (``ctx``): pending keys, CSRs and certificates from
    ``provider``, written through ``writer`` into ``state``, counted into ``tally``, within
    the ``budget``."""

    def __init__(
        self,
        ctx: RunContext,
        writer: RunWriter,
        provider: Provider,
        state: ClusterState,
        *,
        budget: Budget,
        tally: RunTally,
    ) -> None:
        self.ctx = ctx
        self.writer = writer
        self.provider = provider
        self.state = state
        self.budget = budget
        self.tally = tally
        self.cluster = ctx.cluster
        self._keys: dict[str, PrivateKey] = {}
        self._submitted: set[str] = set()

    # -- keys and CSRs ------------------------------------------------------------------

    def generate(self, issues: Sequence[Issue], now: int) -> None:
        """Store a pending key for each issue, then submit the CSRs batch by batch."""
        batch: list[Issue] = []
        for issue in issues:
            if self.budget.out_of_time():
                break
            try:
                self._store_pending_key(issue, now)
            except RUN_FATAL:
                raise
            except Exception as err:  # noqa: BLE001 - one order's failure, of any kind, is its own
                self.tally.error(issue.order.name, err)
                continue
            batch.append(issue)
            if len(batch) >= KEY_BATCH:
                self._submit(batch)
                batch = []
        if batch:
            self._submit(batch)

    def _store_pending_key(self, issue: Issue, now: int) -> None:
        ctx, writer, state, order = self.ctx, self.writer, self.state, issue.order
        key_type = ctx.policy.key_type_for(order.name)
        key = self._reused_key(issue, key_type) or generate_key(key_type)
        pending = PendingKey(
            order.name, key_type, private_key_pem(key), pubkey_hash(key), order.dns_names, now
        )
        sealed = seal_pending(pending, cluster=self.cluster, secrets=[ctx.keys.current])
        digest = content_hash_hex(sealed)
        writer.put_content(pending_key(self.cluster, digest), sealed)
        self.tally.count(keys_generated=1)
        state.pending[order.name] = PendingRecord(
            digest, pending.pubkey_hash, order.dns_names, key_type, now, issue.reason
        )
        state.rekey.discard(order.name)
        self._keys[order.name] = key
        writer.step("pending-key")

    def _reused_key(self, issue: Issue, key_type: str) -> PrivateKey | None:
        """The current key, for a renewal of an order configured with ``reuse_key``."""
        record = self.state.orders.get(issue.order.name)
        if (
            issue.reason != "renewal"
            or record is None
            or record.key_type != key_type
            or not self.ctx.policy.reuse_key_for(issue.order.name)
        ):
            return None
        bundle = self.writer.open_bundle(issue.order.name, record)
        return load_private_key(bundle.private_key_pem)

    def _submit(self, batch: Sequence[Issue]) -> None:
        """Persist the batch's pending keys, then submit their CSRs."""
        self.writer.save_state(self.state)
        self.writer.step("pending-saved")
        for issue in batch:
            name = issue.order.name
            try:
                self._submit_one(name, self.state.pending[name])
            except RUN_FATAL:
                raise
            except Exception as err:  # noqa: BLE001 - that order's failure
                self.tally.error(name, err)

    def _submit_one(self, name: str, pending: PendingRecord) -> None:
        key = self._key(name, pending)
        self.tally.count(provider_calls=1)
        answered = self.provider.submit_csr(name, build_csr(key, pending.dns_names))
        self.tally.count(csrs_submitted=1)
        if answered != pending.pubkey_hash:
            raise ProviderError("submit CSR", f"order {name}", "answered another public key hash")
        self._submitted.add(name)
        self.writer.step("csr")

    def _key(self, name: str, pending: PendingRecord) -> PrivateKey:
        key = self._keys.get(name)
        if key is None:
            data = read_bytes(
                self.writer.store,
                pending_key(self.cluster, pending.object),
                max_bytes=PENDING_MAX_BYTES,
            )
            opened = open_pending(
                data, cluster=self.cluster, order_name=name, secrets=[self.ctx.keys.current]
            )
            if opened.pubkey_hash != pending.pubkey_hash:
                raise StateError(self.cluster, f"pending key of {name} does not match its record")
            key = self._keys[name] = load_private_key(opened.private_key_pem)
        return key

    # -- certificates -------------------------------------------------------------------

    def collect(self, resume: Sequence[str]) -> None:
        """Fetch the certificate of each resumed order, then of each CSR submitted by this
        run, waiting at most ``issue_wait`` in all."""
        budget = self.budget
        until = budget.until(self.ctx.settings.issue_wait)
        for name in dict.fromkeys([*resume, *sorted(self._submitted)]):
            if name not in self.state.pending or budget.out_of_time():
                continue
            try:
                self._collect_one(name, budget.remaining(until))
            except RUN_FATAL:
                raise
            except Exception as err:  # noqa: BLE001 - that order's failure
                self.tally.error(name, err)

    def _fetch(self, name: str, pending: PendingRecord, wait: float) -> IssuedCert | None:
        self.tally.count(provider_calls=1)
        return self.provider.fetch_certificate(name, pending.pubkey_hash, wait=wait)

    def _collect_one(self, name: str, wait: float) -> None:
        ctx, writer, state = self.ctx, self.writer, self.state
        pending = state.pending[name]
        key = self._key(name, pending)
        try:
            cert = self._fetch(name, pending, wait)
        except ProviderNotFound:
            if name in self._submitted:
                raise
            self._submit_one(name, pending)  # stored before a crash, never submitted
            cert = self._fetch(name, pending, wait)
        if cert is None:
            log.info("cluster %s: certificate of %s still pending", self.cluster, name)
            return
        verified = verify_issued(
            order_name=name,
            key=key,
            dns_names=pending.dns_names,
            certificate_pem=cert.certificate_pem,
            chain_pem=cert.chain_pem,
            now=int(ctx.clock()),
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
            verified.certificate_pem, verified.chain_pem, serial, verified.not_before,
            verified.not_after,
        )  # fmt: skip
        sealed = seal_bundle(bundle, cluster=self.cluster, secrets=ctx.secrets)
        digest = content_hash_hex(sealed)
        writer.put_content(bundle_key(self.cluster, digest), sealed)
        writer.step("bundle")
        immediate = previous is None or pending.reason in IMMEDIATE_REASONS
        if previous is not None:
            writer.retire(bundle_key(self.cluster, previous.bundle))
        writer.retire(pending_key(self.cluster, pending.object))
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
                verified.not_before, int(ctx.settings.skew_margin), immediate=immediate
            ),
            secret_ids=tuple(secret.id for secret in ctx.secrets),
        )
        self.tally.count(certificates_published=1)
