"""What each APIv3 call of docs/sandbox.md "Endpoints" does in the sandbox, minus HTTP.

Order bodies are parsed, and order answers built, by ``certfleet.orders`` (shared with the
order API over the registry): ``dns_names`` or ``identifiers``, answers with both.

Methods take the parsed JSON body or query and return the JSON answer (a dict), or raise
:class:`ApiError` with the status and APIv3-style ``code`` to serve. Times in answers are
RFC 3339 in UTC with whole seconds, e.g. ``2026-01-31T12:00:00Z``; ``serial`` is lowercase
hexadecimal without separators.
"""

from __future__ import annotations

import dataclasses
import datetime
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

from cryptography.hazmat.primitives import serialization

from certfleet.bundle.errors import UnsafeNameError
from certfleet.bundle.names import validate_cluster_name
from certfleet.orders import OrderRequestError, order_answer, parse_change, parse_create
from certfleet.orders.page import encode_cursor, page_after, page_limit
from certfleet.orders.request import rfc3339
from certfleet.sandbox.ca import SandboxCa
from certfleet.sandbox.csr import check_csr
from certfleet.sandbox.errors import ApiError
from certfleet.sandbox.state import CertRecord, OrderBook, OrderRecord

MAX_POLL = 60.0
_KEPT_CERTS = 10  # per order; older CSRs are forgotten


class SandboxApi:
    """The orders and certificates behind the sandbox's HTTP endpoints."""

    def __init__(
        self,
        book: OrderBook,
        ca: SandboxCa,
        *,
        issue_delay: float = 0.0,
        cert_lifetime: float = 90 * 86400.0,
        unsafe_names: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._book = book
        self._ca = ca
        self._issue_delay = issue_delay
        self._lifetime = datetime.timedelta(seconds=cert_lifetime)
        self._unsafe = unsafe_names
        self._clock = clock

    # -- orders -------------------------------------------------------------------------

    def create_order(self, body: object) -> dict[str, object]:
        """``POST /orders``: 201 with the order; 409 ``order_exists``."""
        with _refused():
            request = parse_create(body, unsafe_names=self._unsafe)
        name = request.order_name
        with self._book.lock:
            if self._book.get(name) is not None:
                raise ApiError(409, "order_exists", f"an order named {name!r} already exists")
            now = self._clock()
            order = OrderRecord(
                name, request.cluster, request.identifiers, created_at=now, updated_at=now
            )
            self._book.put(order)
        return self._order_json(order)

    def list_orders(self, query: Mapping[str, list[str]]) -> dict[str, object]:
        """``GET /orders?cluster=C&limit=N&after=CURSOR``, by name; ``next`` null at the end."""
        cluster = query.get("cluster", [None])[-1]
        if cluster is not None:
            try:
                validate_cluster_name(cluster)
            except UnsafeNameError as err:
                raise ApiError(400, "invalid_cluster", str(err)) from err
        with _refused():
            limit = page_limit(query)
            after = page_after(query)
        orders, last = self._book.page(cluster, after, limit)
        return {
            "orders": [self._order_json(o) for o in orders],
            "next": None if last is None else encode_cursor(last),
        }

    def get_order(self, name: str) -> dict[str, object]:
        """``GET /orders/{name}``; 404 ``not_found``."""
        return self._order_json(self._order(name))

    def patch_order(self, name: str, body: object) -> dict[str, object]:
        """``PATCH /orders/{name}``: ``identifiers`` or ``dns_names`` (the full new set) and/or
        ``cluster``."""
        with _refused():
            change = parse_change(body, unsafe_names=self._unsafe)
        with self._book.lock:
            order = self._order(name)
            changed = dataclasses.replace(
                order,
                cluster=order.cluster if change.cluster is None else change.cluster,
                identifiers=change.identifiers_for(order.identifiers),
            )
            if changed != order:
                changed = dataclasses.replace(changed, updated_at=self._clock())
                self._book.put(changed)
        return self._order_json(changed)

    def delete_order(self, name: str) -> None:
        """``DELETE /orders/{name}``: the order and its certificates are gone."""
        with self._book.lock:
            self._order(name)
            self._book.delete(name)

    # -- certificates -------------------------------------------------------------------

    def submit_csr(self, name: str, body: object) -> tuple[bool, dict[str, object]]:
        """``POST /orders/{name}/csrs``: (whether new, ``{"pubkey_hash", "state"}``).

        The same public key for the same names again is a no-op.
        """
        if not isinstance(body, dict) or set(body) != {"csr"}:
            raise ApiError(400, "invalid_request", 'expected {"csr": PEM}')
        pem = body["csr"]
        if not isinstance(pem, str):
            raise ApiError(400, "invalid_csr", "csr must be a PEM string")
        with self._book.lock:
            order = self._order(name)
            checked = check_csr(pem, order.dns_names)
            known = order.cert(checked.pubkey_hash)
            if known is not None and set(known.names) == set(order.dns_names):
                return False, {"pubkey_hash": known.pubkey_hash, "state": self._state(known)}
            now = self._clock()
            record = CertRecord(
                pubkey_hash=checked.pubkey_hash,
                public_key_pem=checked.public_key_pem,
                names=tuple(order.dns_names),
                submitted_at=now,
                ready_at=now + self._issue_delay,
            )
            if self._issue_delay <= 0:
                record = self._signed(record)
            others = tuple(c for c in order.certs if c.pubkey_hash != record.pubkey_hash)
            self._book.put(dataclasses.replace(order, certs=(*others, record)[-_KEPT_CERTS:]))
        return True, {"pubkey_hash": record.pubkey_hash, "state": self._state(record)}

    def get_cert(
        self, name: str, pubkey_hash: str, poll: float, stop: threading.Event
    ) -> dict[str, object]:
        """``GET /orders/{name}/certs/{pubkey_hash}[?poll=S]``: pending or issued.

        With ``poll`` (at most 60 s) the answer waits until the certificate is issued or
        the time is up; ``stop`` cuts the wait short when the server shuts down.
        """
        deadline = self._clock() + min(max(poll, 0.0), MAX_POLL)
        while True:
            record = self._current_cert(name, pubkey_hash)
            now = self._clock()
            if record.crt_pem is not None:
                return {
                    "state": "issued",
                    "crt": record.crt_pem,
                    "chain": self._ca.chain_pem,
                    "serial": format(record.serial or 0, "x"),
                    "not_before": rfc3339(record.not_before or 0),
                    "not_after": rfc3339(record.not_after or 0),
                }
            if now >= deadline or stop.is_set():
                return {"state": "pending", "retry_after": max(1, int(record.ready_at - now + 1))}
            stop.wait(max(0.01, min(deadline, record.ready_at) - now))

    def root_pem(self) -> str:
        return self._ca.root_pem

    # -- inside -------------------------------------------------------------------------

    def _current_cert(self, name: str, pubkey_hash: str) -> CertRecord:
        with self._book.lock:
            order = self._order(name)
            record = order.cert(pubkey_hash)
            if record is None:
                raise ApiError(
                    404, "not_found", f"order {name!r} has no CSR with pubkey_hash {pubkey_hash}"
                )
            if record.crt_pem is None and self._clock() >= record.ready_at:
                record = self._signed(record)
                certs = tuple(record if c.pubkey_hash == pubkey_hash else c for c in order.certs)
                self._book.put(dataclasses.replace(order, certs=certs))
            return record

    def _signed(self, record: CertRecord) -> CertRecord:
        now = datetime.datetime.fromtimestamp(self._clock(), datetime.timezone.utc)
        public_key = serialization.load_pem_public_key(record.public_key_pem.encode())
        try:
            issued = self._ca.issue(public_key, list(record.names), now, self._lifetime)  # type: ignore[arg-type]
        except ValueError as err:
            raise ApiError(422, "unsupported_name", "X.509 cannot carry these names") from err
        return dataclasses.replace(
            record,
            crt_pem=issued.crt_pem,
            serial=issued.serial,
            not_before=issued.not_before.timestamp(),
            not_after=issued.not_after.timestamp(),
        )

    def _state(self, record: CertRecord) -> str:
        if record.crt_pem is not None or self._clock() >= record.ready_at:
            return "issued"
        return "pending"

    def _order(self, name: str) -> OrderRecord:
        order = self._book.get(name)
        if order is None:
            raise ApiError(404, "not_found", f"no order named {name!r}")
        return order

    def _order_json(self, order: OrderRecord) -> dict[str, object]:
        wanted = set(order.dns_names)
        matching = [c for c in order.certs if set(c.names) == wanted]
        state = self._state(matching[-1]) if matching else "awaiting_csr"
        return order_answer(
            name=order.name,
            cluster=order.cluster,
            identifiers=order.identifiers,
            state=state,
            created_at=order.created_at,
            updated_at=order.updated_at,
        )


@contextmanager
def _refused() -> Iterator[None]:
    """A refused request body as the sandbox's :class:`ApiError`."""
    try:
        yield
    except OrderRequestError as err:
        raise ApiError(err.status, err.code, err.message) from err
