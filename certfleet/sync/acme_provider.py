"""The ACME provider: orders from the order registry, certificates from an RFC 8555 CA.

It adapts ``certfleet.acme`` to the engine's ``Provider`` seam, for one cluster:

- ``list_orders`` / ``get_order`` read the order registry in the store (no CA request:
  a sync with nothing to issue or renew talks to no CA), held by ``expect_revision`` to
  the revision the sync acted on last: a registry deleted, older, or not descending from
  it, is a
  ``ProviderError`` (the cluster's listing fails, nothing is removed), never "no order";
- ``submit_csr`` creates an ACME order for the CSR's names (its URL saved in the ACME
  state before anything else), with ``replaces`` naming the current certificate when the
  CA offers ARI, and the configured ``profile`` when the CA lists it; then answers the
  challenges. Submitting the same key again while its order lives is a no-op;
- ``fetch_certificate`` resumes the order from its URL: polls, finalizes, downloads.
  An order the CA marked invalid is forgotten, its problem document kept in the state and
  reported, and the name waits (``certfleet.acme.retry``) before a new order;
  ``rateLimited`` and 503 wait for the CA's Retry-After, for that order only;
- ``renewal_times`` gives the renewal time the CA suggests by ARI (RFC 9773), asked again
  only when the CA's Retry-After has passed; without ARI the engine's own rule (a third of
  the lifetime left) applies;
- ``forget_removed`` (after the run has published its head) drops the ACME state records
  of orders no longer in the registry: neither in the run's listing nor in a second
  reading of the registry, and not touched by this run. The authorizations of a removed
  order's ACME order that is still unfinalized at the CA are deactivated first (RFC 8555
  section 7.5.2), once: a failure is logged and the record dropped anyway (the CA expires
  them); no CA request when no removed order had one in flight. Its DNS-01 values were
  removed at the end of the run that added them, as every run's are.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Mapping, Sequence
from typing import Callable, Optional, Protocol

from cryptography import x509

from certfleet.acme.certs import cert_id, csr_names, csr_pubkey_hash, split_chain
from certfleet.acme.client import AcmeClient
from certfleet.acme.errors import AcmeError
from certfleet.acme.flow import Challenge, DnsChallengeWriter, OrderFlow
from certfleet.acme.retry import retry_at
from certfleet.acme.state import AcmeState, AcmeStateConflict, AcmeStateStore, OrderState
from certfleet.config.acme import AcmeConfig
from certfleet.errors import CertfleetError, printable
from certfleet.sync.errors import ConcurrentWriteError
from certfleet.sync.provider import (
    IssuedCert,
    Provider,
    ProviderError,
    ProviderNotFound,
    ProviderOrder,
    SourceRevision,
)

log = logging.getLogger(__name__)

ARI_RETRY_MIN = 3600.0
# ACME order states in which its authorizations have not served a certificate yet
UNFINALIZED = ("pending", "ready")
# Deactivating the authorizations of removed orders starts no request after this many seconds
DEACTIVATION_TIME = 30.0


class RegisteredIdentifier(Protocol):
    @property
    def value(self) -> str: ...

    @property
    def approval(self) -> str: ...


class RegisteredOrder(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def cluster(self) -> str: ...

    @property
    def identifiers(self) -> Sequence[RegisteredIdentifier]: ...


class OrderSource(Protocol):
    """The order registry (``certfleet.registry.OrderRegistry``) as this provider uses it."""

    def list(self, cluster: str) -> Sequence[RegisteredOrder]: ...

    def get(self, name: str) -> RegisteredOrder: ...

    def hold(self, cluster: str, revision: int, write_id: str = "") -> None: ...

    def revision(self, cluster: str) -> tuple[int, str]: ...


class AcmeProvider(Provider):
    """The ``Provider`` of one cluster in ACME mode (see the module docstring)."""

    def __init__(
        self,
        *,
        cluster: str,
        registry: OrderSource,
        not_found: tuple[type[Exception], ...],
        client: AcmeClient,
        config: AcmeConfig,
        states: AcmeStateStore,
        dns: Optional[Callable[[], DnsChallengeWriter]] = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        deactivation_time: float = DEACTIVATION_TIME,
    ) -> None:
        self.cluster = cluster
        self._registry = registry
        self._not_found = not_found
        self._failures: tuple[type[Exception], ...] = (CertfleetError, *not_found)
        self.client = client
        self._config = config
        self._states = states
        self._dns = dns
        self._clock = clock
        self._sleep = sleep
        self._deactivation_time = deactivation_time
        self._state: AcmeState | None = None
        self._approvals: dict[str, dict[str, str]] = {}
        self._flows: dict[str, OrderFlow] = {}
        self._account_ready = False
        self._writer: DnsChallengeWriter | None = None
        self._deferred: list[tuple[str, OrderFlow, list[Challenge]]] = []
        self._removal_seen = False

    # -- the registry ------------------------------------------------------------------

    def _provider_order(self, order: RegisteredOrder) -> ProviderOrder:
        approvals = {ident.value: ident.approval for ident in order.identifiers}
        self._approvals[order.name] = approvals
        return ProviderOrder(order.name, order.cluster, tuple(approvals))

    def expect_revision(self, cluster: str, revision: SourceRevision) -> None:
        """Every later read of the registry refuses one older than ``revision``, gone, or
        not descending from it."""
        self._registry.hold(cluster, revision.number, revision.write_id)

    def seen_revision(self, cluster: str) -> SourceRevision:
        return SourceRevision(*self._registry.revision(cluster))

    def list_orders(self, cluster: str) -> Sequence[ProviderOrder]:
        try:
            return [self._provider_order(order) for order in self._registry.list(cluster)]
        except self._failures as err:
            raise ProviderError("list orders", f"cluster {cluster}", str(err)) from err

    def get_order(self, name: str) -> ProviderOrder:
        try:
            return self._provider_order(self._registry.get(name))
        except self._not_found as err:
            self._removal_seen = True  # forget_removed reads the ACME state for it
            raise ProviderNotFound("get order", f"order {name}") from err
        except CertfleetError as err:
            raise ProviderError("get order", f"order {name}", str(err)) from err

    # -- state -------------------------------------------------------------------------

    @property
    def state(self) -> AcmeState:
        if self._state is None:
            self._state = self._states.load()
        return self._state

    def _save(self) -> None:
        try:
            self._states.save(self.state)
        except AcmeStateConflict as err:  # another sync: this cluster's run ends here
            raise ConcurrentWriteError(
                self.cluster, "(ACME) was changed by another writer"
            ) from err

    def _account(self) -> None:
        """Register the account at first use (terms agreed, EAB when configured); later
        calls in this run do nothing."""
        if self._account_ready:
            return
        state, client = self.state, self.client
        thumb = _thumbprint(client)
        if state.account_url and state.account_thumbprint == thumb:
            client.use_account(state.account_url)
            self._account_ready = True
            return
        config = self._config
        state.account_url = client.register(config.email, config.eab_kid, config.eab_hmac_key)
        state.account_thumbprint = thumb
        self._account_ready = True
        self._save()
        log.info("cluster %s: ACME account %s", self.cluster, state.account_url)

    def _fail(self, name: str, record: OrderState, err: AcmeError, operation: str) -> ProviderError:
        """Record a failure (problem, attempts, retry_at), forget the order if it is dead."""
        now = self._clock()
        code = err.problem.code if err.problem is not None else None
        status = err.problem.status if err.problem is not None else None
        record.attempts += 1
        record.retry_at = retry_at(
            now, record.attempts, code=code, status=status, retry_after=err.retry_after
        )
        record.problem = err.problem.as_json() if err.problem is not None else {
            "type": "about:blank", "detail": err.reason,
        }  # fmt: skip
        if not (code == "rateLimited" or status == 503 or err.transient):
            record.forget_order()  # dead: the next attempt makes a new order
        if code == "accountDoesNotExist":
            self.state.account_url = None  # registered again at the next attempt
            self._account_ready = False
        self._save()
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.retry_at))
        return ProviderError(operation, f"order {name}", f"next attempt after {when}: {err.reason}")

    def _waiting(self, name: str, record: OrderState, operation: str) -> ProviderError | None:
        if record.retry_at <= self._clock():
            return None
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.retry_at))
        problem = (record.problem or {}).get("detail") or (record.problem or {}).get("type")
        return ProviderError(operation, f"order {name}", f"waiting until {when} after: {problem}")

    # -- issuance ----------------------------------------------------------------------

    def _flow(self, name: str, record: OrderState) -> OrderFlow:
        flow = self._flows.get(name)
        if flow is None or flow.record is not record:
            flow = self._flows[name] = OrderFlow(
                self.client,
                record,
                approvals=self._approvals.get(name, {}),
                dns=None if self._dns is None else self._dns_writer,
                save=self._save,
                sleep=self._sleep,
            )
        return flow

    def _dns_writer(self) -> DnsChallengeWriter:
        """The run's one DNS-01 writer (made at first use; cleaned up by ``close``)."""
        if self._writer is None:
            assert self._dns is not None
            self._writer = self._dns()
        return self._writer

    def _answer_deferred(self) -> None:
        """Wait once until every DNS-01 value added so far is served, then answer those
        challenges; an order whose answer fails is recorded as failed, the others go on."""
        if not self._deferred:
            return
        deferred, self._deferred = self._deferred, []
        try:
            deferred[0][1].wait_served()
        except AcmeError as err:
            for name, flow, _ in deferred:
                self._fail(name, flow.record, err, "DNS-01")
            return
        for name, flow, bodies in deferred:
            try:
                flow.answer_dns(bodies)
            except AcmeError as err:
                self._fail(name, flow.record, err, "DNS-01")

    def submit_csr(self, order_name: str, csr_pem: bytes) -> str:
        pubkey = csr_pubkey_hash(csr_pem)
        names = csr_names(csr_pem)
        record = self.state.order(order_name)
        if record.pubkey_hash == pubkey and record.url:
            return pubkey
        limited = (record.problem or {}).get("type", "").endswith(":rateLimited")
        if record.names is not None and tuple(record.names) != names and not limited:
            # the order's names changed since it failed: a new order, not a retry
            record.attempts, record.retry_at, record.problem = 0, 0.0, None
        waiting = self._waiting(order_name, record, "submit CSR")
        if waiting is not None:
            raise waiting
        record.forget_order()
        record.names = list(names)
        try:
            self._account()
            profile = self._config.profile
            if profile is not None and profile not in self.client.profiles:
                log.info("the CA does not list profile %s: ordering without it", profile)
                profile = None
            replaces = record.cert_id if record.cert_id and self.client.has_ari else None
            flow = self._flow(order_name, record)
            pending_dns = flow.start(names, csr_pem, pubkey, profile=profile, replaces=replaces)
            if pending_dns:
                self._deferred.append((order_name, flow, pending_dns))
        except AcmeError as err:
            raise self._fail(order_name, record, err, "submit CSR") from err
        return pubkey

    def fetch_certificate(
        self, order_name: str, pubkey_hash: str, *, wait: float
    ) -> Optional[IssuedCert]:
        self._answer_deferred()  # the DNS-01 orders submitted by this run, in one wait
        record = self.state.order(order_name)
        if record.pubkey_hash != pubkey_hash or not record.url or not record.csr_pem:
            waiting = self._waiting(order_name, record, "fetch certificate")
            if waiting is not None:
                raise waiting
            raise ProviderNotFound("fetch certificate", f"order {order_name}")
        waiting = self._waiting(order_name, record, "fetch certificate")
        if waiting is not None:
            raise waiting  # a rate limit or an outage: the order is kept, and waits
        flow = self._flow(order_name, record)
        until = time.monotonic() + max(0.0, wait)
        try:
            self._account()
            chain = flow.finish(until, record.csr_pem.encode("ascii"))
        except AcmeError as err:
            raise self._fail(order_name, record, err, "ACME order") from err
        if chain is None:
            return None
        try:
            leaf_pem, intermediates = split_chain(chain)
            leaf = x509.load_pem_x509_certificate(leaf_pem)
        except ValueError as err:
            raise ProviderError("fetch certificate", f"order {order_name}", str(err)) from err
        record.forget_order()
        record.problem, record.attempts, record.retry_at = None, 0, 0.0
        try:
            record.cert_id = cert_id(leaf_pem)
        except (ValueError, x509.ExtensionNotFound):
            record.cert_id = None
        record.renew_at = None
        # without ARI at this CA, never ask (the directory is at hand now, fetched anyway)
        record.ari_next_check = (
            0 if self.client.has_ari else int(leaf.not_valid_after_utc.timestamp())
        )
        self._save()
        return IssuedCert(
            certificate_pem=leaf_pem,
            chain_pem=intermediates,
            serial=format(leaf.serial_number, "x"),
            not_before=int(leaf.not_valid_before_utc.timestamp()),
            not_after=int(leaf.not_valid_after_utc.timestamp()),
        )

    # -- renewal -----------------------------------------------------------------------

    def renewal_times(self, cluster: str, names: Sequence[str]) -> Mapping[str, int]:
        """The CA's suggested renewal time (ARI) of each published order that has one.

        Asks the CA only for orders whose last answer's Retry-After has passed; none at
        all when the directory offers no ``renewalInfo`` (known only once fetched: the
        directory is not fetched for this alone).
        """
        now = int(self._clock())
        times: dict[str, int] = {}
        due = []
        for name in names:
            record = self.state.orders.get(name)
            if record is None or record.cert_id is None:
                continue
            if record.ari_next_check <= now:
                due.append((name, record))
            elif record.renew_at is not None:
                times[name] = record.renew_at
        changed = False
        for name, record in due:
            try:
                info = self.client.renewal_info(record.cert_id or "")
            except AcmeError as err:
                log.warning("cluster %s: renewal info of %s: %s", cluster, name, err)
                record.ari_next_check = now + int(ARI_RETRY_MIN)
                changed = True
                continue
            # a fixed point in the window (its middle) keeps runs deterministic
            record.renew_at = int((info.start + info.end) / 2)
            record.ari_next_check = now + int(max(ARI_RETRY_MIN, info.retry_after))
            changed = True
            times[name] = record.renew_at
        if changed:
            self._save()
        return times

    # -- removed orders ----------------------------------------------------------------

    def forget_removed(self, cluster: str, listed: Collection[str]) -> list[str]:
        """Drop the records of orders that no longer exist (see the module docstring);
        returns their names. The ACME state is read for this only when the registry
        answered "no such order" in this run (otherwise, a record left behind is dropped by
        the next run that reads the state for its own work)."""
        if self._state is None and not self._removal_seen:
            return []
        state = self.state
        candidates = [n for n in state.orders if n not in listed and n not in self._flows]
        if not candidates:
            return []
        try:  # the registry read again: an order added back meanwhile keeps its record
            orders = self._registry.list(cluster)
        except self._failures as err:
            raise ProviderError("list orders", f"cluster {cluster}", str(err)) from err
        present = {order.name for order in orders}
        gone = [name for name in candidates if name not in present]
        in_use = {ident.value for order in orders for ident in order.identifiers}
        self._deactivate_abandoned(cluster, gone, in_use)
        dropped = state.forget(gone)
        if dropped:
            self._save()
            log.info("cluster %s: ACME records of removed orders dropped: %s",
                     cluster, ", ".join(dropped))  # fmt: skip
        return dropped

    def _deactivate_abandoned(self, cluster: str, names: Sequence[str], in_use: set[str]) -> None:
        """Deactivate the authorizations of the ACME orders that removed orders leave
        pending at the CA (not yet finalized: no certificate was issued with them), so the
        CA keeps no authorization for a name given up. Once: a failure is logged, and the
        record is dropped all the same (the authorization then expires at the CA). An
        authorization of a name that an order of the cluster still has is left alone (a CA
        may share it between orders). No CA request when no such order is in flight."""
        state = self.state
        abandoned = [
            (name, record)
            for name in sorted(names)
            if (record := state.orders.get(name)) is not None
            and record.url
            and record.status in UNFINALIZED
        ]
        if not abandoned:
            return
        if not state.account_url or state.account_thumbprint != _thumbprint(self.client):
            log.info("cluster %s: no account of this key: %d abandoned ACME order(s) left to "
                     "expire at the CA", cluster, len(abandoned))  # fmt: skip
            return
        self.client.use_account(state.account_url)
        until = time.monotonic() + self._deactivation_time
        for index, (name, record) in enumerate(abandoned):
            if time.monotonic() > until:
                left = len(abandoned) - index
                log.warning("cluster %s: out of time: authorizations of %d removed order(s) "
                            "left to expire at the CA", cluster, left)  # fmt: skip
                return
            names_of = set(record.names or ())
            try:
                count = self._deactivate_order(record.url or "", names_of, in_use, until)
            except AcmeError as err:
                log.warning("cluster %s: authorizations of removed order %s left to expire at "
                            "the CA: %s", cluster, printable(name), err)  # fmt: skip
                if err.transient:  # the CA is unwell: the others are left to expire too
                    return
                continue
            log.info("cluster %s: removed order %s: %d authorization(s) deactivated at the CA",
                     cluster, printable(name), count)  # fmt: skip

    def _deactivate_order(self, url: str, names: set[str], in_use: set[str], until: float) -> int:
        """Deactivate the authorizations of the ACME order at ``url`` if the CA still has it
        unfinalized, but none of a name in ``in_use``, starting no request after ``until``
        (``time.monotonic()``); returns how many were deactivated."""
        try:
            order = self.client.order(url)
        except AcmeError as err:
            if err.status == 404:
                return 0  # the CA forgot it already
            raise
        if order.status is None or order.status.name not in UNFINALIZED:
            return 0  # finalized, invalid or expired: nothing pending is left at the CA
        count = 0
        for authz_url in order.authorizations or ():
            if time.monotonic() > until:
                raise AcmeError("authorization deactivation", "out of time", transient=True)
            if names & in_use:  # which name is this authorization's? ask before touching it
                authz = self.client.authorization(authz_url)
                value = getattr(authz.identifier, "value", None)
                if value is None or ("*." if authz.wildcard else "") + str(value) in in_use:
                    continue
            if self.client.deactivate(authz_url) == "deactivated":
                count += 1
        return count

    def close(self) -> None:
        """End of the run: remove every DNS-01 value this run added, close connections."""
        if self._writer is not None:
            self._writer.cleanup()
            self._writer = None
        self.client.close()


def _thumbprint(client: AcmeClient) -> str:
    return str(client.jwk.thumbprint().hex())
