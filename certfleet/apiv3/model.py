"""What the APIv3 answers, as frozen dataclasses, and their strict parsing from JSON.

Parsing is strict about what the client relies on (names, identifiers, states, PEM
fields) and lenient about the rest: an unknown extra field is ignored, so the provider
may add fields without breaking the client. A 2xx answer that lacks a required field is a
``MalformedResponse``, never a half-filled object.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from certfleet.apiv3.errors import MalformedResponse
from certfleet.orders import default_approval


@dataclass(frozen=True)
class Identifier:
    """One DNS name of an order and how its control is approved (``http`` or ``dns``)."""

    value: str
    approval: str
    type: str = "dns"

    def to_json(self) -> dict[str, str]:
        return {"type": self.type, "value": self.value, "approval": self.approval}


@dataclass(frozen=True)
class Order:
    """An order: a named set of DNS names, managed by a cluster."""

    name: str
    cluster: str | None
    identifiers: tuple[Identifier, ...]
    state: str
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @property
    def dns_names(self) -> tuple[str, ...]:
        return tuple(ident.value for ident in self.identifiers if ident.type == "dns")

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "cluster": self.cluster,
            "identifiers": [ident.to_json() for ident in self.identifiers],
            "dns_names": list(self.dns_names),
            "state": self.state,
            "created_at": _format_time(self.created_at),
            "updated_at": _format_time(self.updated_at),
        }


@dataclass(frozen=True)
class OrderPage:
    """One page of ``GET /orders``; ``next`` is the cursor of the following page, or None."""

    orders: tuple[Order, ...]
    next: str | None


@dataclass(frozen=True)
class CsrResult:
    """The answer to a CSR submission: the key's SPKI SHA-256 (hex) and the issuance state."""

    pubkey_hash: str
    state: str


@dataclass(frozen=True)
class CertResult:
    """A certificate for one key: ``pending`` (ask again after ``retry_after`` seconds) or
    ``issued`` (``crt`` leaf PEM, ``chain`` intermediates PEM, issuer of the leaf first)."""

    state: str
    retry_after: float | None = None
    crt: str | None = None
    chain: tuple[str, ...] = ()
    serial: str | None = None
    not_before: datetime | None = None
    not_after: datetime | None = None

    @property
    def issued(self) -> bool:
        return self.state == "issued"


def parse_order(data: Any, call: str) -> Order:
    """An order answered with ``identifiers``, ``dns_names`` (approvals then take their
    defaults: ``dns`` for ``*.`` names, ``http`` otherwise), or both (``identifiers`` wins)."""
    obj = _object(data, call, "order")
    identifiers = obj.get("identifiers")
    if identifiers is None and isinstance(obj.get("dns_names"), list):
        identifiers = [
            {"type": "dns", "value": name, "approval": default_approval(name)}
            if isinstance(name, str)
            else name
            for name in obj["dns_names"]
        ]
    if not isinstance(identifiers, list):
        raise _malformed(call, "order has neither an identifiers nor a dns_names list")
    cluster = obj.get("cluster")
    if cluster is not None and not isinstance(cluster, str):
        raise _malformed(call, "order cluster is not a string")
    return Order(
        name=_string(obj, "name", call),
        cluster=cluster,
        identifiers=tuple(_parse_identifier(item, call) for item in identifiers),
        state=_string(obj, "state", call),
        created_at=_time(obj.get("created_at"), "created_at", call),
        updated_at=_time(obj.get("updated_at"), "updated_at", call),
    )


def parse_order_page(data: Any, call: str) -> OrderPage:
    obj = _object(data, call, "order list")
    orders = obj.get("orders")
    if not isinstance(orders, list):
        raise _malformed(call, "answer has no orders list")
    cursor = obj.get("next")
    if cursor is not None and not isinstance(cursor, (str, int)):
        raise _malformed(call, "next cursor is neither a string nor null")
    return OrderPage(
        orders=tuple(parse_order(item, call) for item in orders),
        next=None if cursor is None or cursor == "" else str(cursor),
    )


def parse_csr_result(data: Any, call: str) -> CsrResult:
    obj = _object(data, call, "CSR result")
    return CsrResult(
        pubkey_hash=_string(obj, "pubkey_hash", call), state=_string(obj, "state", call)
    )


def parse_cert_result(data: Any, call: str) -> CertResult:
    obj = _object(data, call, "certificate")
    state = _string(obj, "state", call)
    retry_after = obj.get("retry_after")
    if retry_after is not None and (
        isinstance(retry_after, bool) or not isinstance(retry_after, (int, float))
    ):
        raise _malformed(call, "retry_after is not a number")
    if state != "issued":
        return CertResult(
            state=state, retry_after=None if retry_after is None else float(retry_after)
        )
    chain = obj.get("chain", [])
    if isinstance(chain, str):
        chain = [chain]
    if not isinstance(chain, list) or not all(isinstance(pem, str) for pem in chain):
        raise _malformed(call, "chain is not a list of PEM strings")
    serial = obj.get("serial")
    return CertResult(
        state=state,
        crt=_string(obj, "crt", call),
        chain=tuple(chain),
        serial=None if serial is None else str(serial),
        not_before=_time(obj.get("not_before"), "not_before", call),
        not_after=_time(obj.get("not_after"), "not_after", call),
    )


def _parse_identifier(data: Any, call: str) -> Identifier:
    obj = _object(data, call, "identifier")
    return Identifier(
        type=_string(obj, "type", call),
        value=_string(obj, "value", call),
        approval=str(obj.get("approval") or ""),
    )


def _object(data: Any, call: str, what: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise _malformed(call, f"{what} is not a JSON object")
    return data


def _string(obj: dict[str, Any], key: str, call: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise _malformed(call, f"field {key!r} is missing or not a string")
    return value


def _time(value: Any, key: str, call: str) -> datetime | None:
    """An RFC 3339 string (``Z`` accepted, as 3.9's fromisoformat does not) or Unix seconds."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value, tz=timezone.utc)
        except (OverflowError, OSError, ValueError) as err:  # huge, infinite or NaN
            raise _malformed(call, f"field {key!r} is not a time") from err
    if isinstance(value, str):
        text = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError as err:
            raise _malformed(call, f"field {key!r} is not an RFC 3339 time") from err
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
    raise _malformed(call, f"field {key!r} is not a time")


def _format_time(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def _malformed(call: str, message: str) -> MalformedResponse:
    return MalformedResponse(call, message)
