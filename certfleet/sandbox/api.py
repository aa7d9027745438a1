"""What each APIv3 call of docs/sandbox.md "Endpoints" does in the sandbox, minus HTTP.

Methods take the parsed JSON body or query and return the JSON answer (a dict), or raise
:class:`ApiError` with the status and APIv3-style ``code`` to serve. Times in answers are
RFC 3339 in UTC with whole seconds, e.g. ``2026-01-31T12:00:00Z``; ``serial`` is lowercase
hexadecimal without separators.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime
import threading
import time
from collections.abc import Callable, Mapping

from cryptography.hazmat.primitives import serialization

from certfleet.bundle.errors import UnsafeNameError
from certfleet.bundle.names import validate_cluster_name, validate_dns_name, validate_order_name
from certfleet.sandbox.ca import SandboxCa
from certfleet.sandbox.csr import check_csr
from certfleet.sandbox.errors import ApiError
from certfleet.sandbox.state import CertRecord, Identifier, OrderBook, OrderRecord

MAX_POLL = 60.0
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_IDENTIFIERS = 100
_KEPT_CERTS = 10  # per order; older CSRs are forgotten


def rfc3339(timestamp: float) -> str:
    """``timestamp`` (Unix seconds) as RFC 3339 UTC with whole seconds."""
    moment = datetime.datetime.fromtimestamp(int(timestamp), datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def encode_cursor(name: str) -> str:
    return base64.urlsafe_b64encode(name.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    try:
        return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, ValueError) as err:
        raise ApiError(400, "invalid_cursor", "after is not a cursor this API returned") from err


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
        fields = _object(body, required=("cluster", "identifiers"), optional=("name",))
        cluster = self._cluster(fields["cluster"])
        identifiers = self._identifiers(fields["identifiers"])
        name = fields.get("name", identifiers[0].value)
        if not isinstance(name, str) or not name:
            raise ApiError(400, "invalid_order_name", "name must be a non-empty string")
        if not self._unsafe:
            self._checked(validate_order_name, name, "invalid_order_name")
        with self._book.lock:
            if self._book.get(name) is not None:
                raise ApiError(409, "order_exists", f"an order named {name!r} already exists")
            now = self._clock()
            order = OrderRecord(name, cluster, identifiers, created_at=now, updated_at=now)
            self._book.put(order)
        return self._order_json(order)

    def list_orders(self, query: Mapping[str, list[str]]) -> dict[str, object]:
        """``GET /orders?cluster=C&limit=N&after=CURSOR``, by name; ``next`` null at the end."""
        cluster = query.get("cluster", [None])[-1]
        if cluster is not None:
            self._cluster(cluster)
        raw_limit = query.get("limit", [str(DEFAULT_LIMIT)])[-1]
        try:
            limit = min(int(raw_limit), MAX_LIMIT)
        except ValueError as err:
            raise ApiError(400, "invalid_limit", "limit must be an integer") from err
        if limit < 1:
            raise ApiError(400, "invalid_limit", "limit must be at least 1")
        after = query.get("after", [None])[-1]
        orders, last = self._book.page(
            cluster, None if after is None else decode_cursor(after), limit
        )
        return {
            "orders": [self._order_json(o) for o in orders],
            "next": None if last is None else encode_cursor(last),
        }

    def get_order(self, name: str) -> dict[str, object]:
        """``GET /orders/{name}``; 404 ``not_found``."""
        return self._order_json(self._order(name))

    def patch_order(self, name: str, body: object) -> dict[str, object]:
        """``PATCH /orders/{name}``: ``identifiers`` (the full new set) and/or ``cluster``."""
        fields = _object(body, required=(), optional=("identifiers", "cluster"))
        if not fields:
            raise ApiError(400, "invalid_request", "give identifiers and/or cluster to change")
        cluster = self._cluster(fields["cluster"]) if "cluster" in fields else None
        identifiers = self._identifiers(fields["identifiers"]) if "identifiers" in fields else None
        with self._book.lock:
            order = self._order(name)
            changed = dataclasses.replace(
                order,
                cluster=order.cluster if cluster is None else cluster,
                identifiers=order.identifiers if identifiers is None else identifiers,
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
        fields = _object(body, required=("csr",), optional=())
        pem = fields["csr"]
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
        return {
            "name": order.name,
            "cluster": order.cluster,
            "identifiers": [
                {"type": "dns", "value": i.value, "approval": i.approval} for i in order.identifiers
            ],
            "state": state,
            "created_at": rfc3339(order.created_at),
            "updated_at": rfc3339(order.updated_at),
        }

    def _cluster(self, value: object) -> str:
        if not isinstance(value, str):
            raise ApiError(400, "invalid_cluster", "cluster must be a string")
        return self._checked(validate_cluster_name, value, "invalid_cluster")

    def _identifiers(self, raw: object) -> tuple[Identifier, ...]:
        if not isinstance(raw, list) or not raw:
            raise ApiError(400, "invalid_request", "identifiers must be a non-empty list")
        if len(raw) > MAX_IDENTIFIERS:
            raise ApiError(400, "too_many_identifiers", f"at most {MAX_IDENTIFIERS} identifiers")
        found: list[Identifier] = []
        for item in raw:
            fields = _object(item, required=("value",), optional=("type", "approval"))
            if fields.get("type", "dns") != "dns":
                raise ApiError(400, "unsupported_identifier", "identifier type must be dns")
            value = fields["value"]
            if not isinstance(value, str) or not value:
                raise ApiError(400, "invalid_dns_name", "identifier value must be a string")
            if not self._unsafe:
                value = self._checked(validate_dns_name, value, "invalid_dns_name")
            approval = fields.get("approval", "dns" if _is_wildcard(value) else "http")
            if approval not in ("http", "dns"):
                raise ApiError(400, "invalid_approval", "approval must be http or dns")
            if approval == "http" and _is_wildcard(value):
                raise ApiError(
                    422,
                    "approval_not_allowed",
                    f"{value}: wildcard names cannot use http approval; use dns",
                )
            if any(f.value == value for f in found):
                raise ApiError(400, "duplicate_identifier", f"{value} is listed twice")
            found.append(Identifier(value, approval))
        return tuple(found)

    @staticmethod
    def _checked(check: Callable[[str], str], value: str, code: str) -> str:
        try:
            return check(value)
        except UnsafeNameError as err:
            raise ApiError(400, code, str(err)) from err


def _is_wildcard(dns_name: str) -> bool:
    return dns_name.startswith("*.")


def _object(
    body: object, required: tuple[str, ...], optional: tuple[str, ...]
) -> dict[str, object]:
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_request", "expected a JSON object")
    unknown = sorted(set(body) - set(required) - set(optional))
    if unknown:
        raise ApiError(400, "unknown_field", f"unknown fields: {', '.join(unknown)}")
    missing = [k for k in required if k not in body]
    if missing:
        raise ApiError(400, "missing_field", f"missing fields: {', '.join(missing)}")
    return body
