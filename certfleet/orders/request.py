"""Parsing order request bodies and building order answers (docs/api.md "Orders").

A create request (``POST /orders``) is ``{"cluster", "name"?}`` plus exactly one of

- ``"dns_names": ["example.com", "www.example.com"]`` — approvals take their defaults:
  ``http``, or ``dns`` for ``*.`` names (wildcards cannot be approved over HTTP);
- ``"identifiers": [{"type": "dns", "value": "...", "approval": "http"|"dns"}]``.

A request carrying both is refused (400 ``conflicting_fields``); so is an unknown field.
A change request (``PATCH /orders/{name}``) carries the new full set in either form (with
``dns_names``, a name the order already has keeps its approval). Names are checked as
``certfleet.bundle.names`` says (DNS names stored lowercase), at most
:data:`MAX_IDENTIFIERS` per order; ``unsafe_names`` (the sandbox's ``--unsafe-names``)
lets any non-empty string through, to test consumers' defences.

An order answer carries both ``identifiers`` and ``dns_names``, in the same order.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from certfleet.bundle.errors import UnsafeNameError
from certfleet.bundle.names import validate_cluster_name, validate_dns_name, validate_order_name
from certfleet.orders.errors import OrderRequestError

APPROVALS = ("http", "dns")
MAX_IDENTIFIERS = 100


@dataclass(frozen=True)
class Identifier:
    """One DNS name of an order (lowercase) and how its control is approved."""

    value: str
    approval: str


@dataclass(frozen=True)
class OrderRequest:
    """A parsed create request; ``name`` None means "the first DNS name"."""

    cluster: str
    identifiers: tuple[Identifier, ...]
    name: str | None = None

    @property
    def order_name(self) -> str:
        return self.identifiers[0].value if self.name is None else self.name


@dataclass(frozen=True)
class OrderChange:
    """A parsed change request: what to set (None: leave as it is).

    ``approvals_given`` is False when the names came as ``dns_names``: then
    :meth:`identifiers_for` keeps the approval of names the order already has.
    """

    cluster: str | None = None
    identifiers: tuple[Identifier, ...] | None = None
    approvals_given: bool = True

    def identifiers_for(self, current: Sequence[Identifier]) -> tuple[Identifier, ...]:
        """The order's new identifiers, given its ``current`` ones."""
        if self.identifiers is None:
            return tuple(current)
        if self.approvals_given:
            return self.identifiers
        kept = {ident.value: ident.approval for ident in current}
        return tuple(Identifier(i.value, kept.get(i.value, i.approval)) for i in self.identifiers)


def is_wildcard(dns_name: str) -> bool:
    return dns_name.startswith("*.")


def default_approval(dns_name: str) -> str:
    """``dns`` for ``*.`` names (the only approval wildcards may use), ``http`` otherwise."""
    return "dns" if is_wildcard(dns_name) else "http"


def check_approval(dns_name: str, approval: object) -> str:
    """``approval`` if it is one of :data:`APPROVALS` and allowed for ``dns_name``."""
    if approval not in APPROVALS:
        raise OrderRequestError(400, "invalid_approval", "approval must be http or dns")
    if approval == "http" and is_wildcard(dns_name):
        raise OrderRequestError(
            422,
            "approval_not_allowed",
            f"{dns_name}: wildcard names cannot use http approval; use dns",
        )
    return str(approval)


def parse_create(body: object, *, unsafe_names: bool = False) -> OrderRequest:
    """A ``POST /orders`` body; :class:`OrderRequestError` for anything else."""
    fields = _object(body, ("cluster", "name", "identifiers", "dns_names"))
    if "cluster" not in fields:
        raise OrderRequestError(400, "missing_field", "missing fields: cluster")
    cluster = _cluster(fields["cluster"])
    identifiers, _ = _names(fields, unsafe_names, required=True)
    assert identifiers is not None  # required=True
    name = fields.get("name")
    if name is not None:
        if not isinstance(name, str) or not name:
            raise OrderRequestError(400, "invalid_order_name", "name must be a non-empty string")
        if not unsafe_names:
            _checked(validate_order_name, name, "invalid_order_name")
    elif not unsafe_names:
        _checked(validate_order_name, identifiers[0].value, "invalid_order_name")
    return OrderRequest(cluster, identifiers, name)


def parse_change(
    body: object, *, unsafe_names: bool = False, allow_cluster: bool = True
) -> OrderChange:
    """A ``PATCH /orders/{name}`` body: the new full name set and/or (if allowed) cluster."""
    allowed = ("identifiers", "dns_names") + (("cluster",) if allow_cluster else ())
    fields = _object(body, allowed)
    identifiers, approvals_given = _names(fields, unsafe_names, required=False)
    cluster = _cluster(fields["cluster"]) if "cluster" in fields else None
    if identifiers is None and cluster is None:
        what = "identifiers (or dns_names)" + (" and/or cluster" if allow_cluster else "")
        raise OrderRequestError(400, "invalid_request", f"give {what} to change")
    return OrderChange(cluster, identifiers, approvals_given)


def parse_identifiers(raw: object, *, unsafe_names: bool = False) -> tuple[Identifier, ...]:
    """An ``identifiers`` list: each ``{"type": "dns"?, "value", "approval"?}``."""
    items = _list(raw, "identifiers")
    found: list[Identifier] = []
    for item in items:
        fields = _object(item, ("type", "value", "approval"))
        if "value" not in fields:
            raise OrderRequestError(400, "missing_field", "missing fields: value")
        if fields.get("type", "dns") != "dns":
            raise OrderRequestError(400, "unsupported_identifier", "identifier type must be dns")
        value = _dns_name(fields["value"], unsafe_names)
        approval = check_approval(value, fields.get("approval", default_approval(value)))
        found.append(Identifier(value, approval))
    return _unique(found)


def _names_from_dns_names(raw: object, unsafe_names: bool) -> tuple[Identifier, ...]:
    items = _list(raw, "dns_names")
    found = []
    for item in items:
        value = _dns_name(item, unsafe_names)
        found.append(Identifier(value, default_approval(value)))
    return _unique(found)


def order_answer(
    *,
    name: str,
    cluster: str | None,
    identifiers: Sequence[Identifier],
    state: str,
    created_at: float,
    updated_at: float,
) -> dict[str, object]:
    """The JSON of an order: both ``identifiers`` and ``dns_names``; times RFC 3339 UTC."""
    return {
        "name": name,
        "cluster": cluster,
        "identifiers": [
            {"type": "dns", "value": i.value, "approval": i.approval} for i in identifiers
        ],
        "dns_names": [i.value for i in identifiers],
        "state": state,
        "created_at": rfc3339(created_at),
        "updated_at": rfc3339(updated_at),
    }


def rfc3339(timestamp: float) -> str:
    """``timestamp`` (Unix seconds) as RFC 3339 UTC with whole seconds."""
    moment = datetime.datetime.fromtimestamp(int(timestamp), datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


# -- inside -----------------------------------------------------------------------------


def _names(
    fields: dict[str, object], unsafe_names: bool, *, required: bool
) -> tuple[tuple[Identifier, ...] | None, bool]:
    if "identifiers" in fields and "dns_names" in fields:
        raise OrderRequestError(
            400, "conflicting_fields", "give either dns_names or identifiers, not both"
        )
    if "identifiers" in fields:
        return parse_identifiers(fields["identifiers"], unsafe_names=unsafe_names), True
    if "dns_names" in fields:
        return _names_from_dns_names(fields["dns_names"], unsafe_names), False
    if required:
        raise OrderRequestError(400, "missing_field", "missing fields: dns_names or identifiers")
    return None, True


def _list(raw: object, field: str) -> list[object]:
    if not isinstance(raw, list) or not raw:
        raise OrderRequestError(400, "invalid_request", f"{field} must be a non-empty list")
    if len(raw) > MAX_IDENTIFIERS:
        raise OrderRequestError(
            400, "too_many_identifiers", f"at most {MAX_IDENTIFIERS} DNS names per order"
        )
    return raw


def _dns_name(value: object, unsafe_names: bool) -> str:
    if not isinstance(value, str) or not value:
        raise OrderRequestError(400, "invalid_dns_name", "a DNS name must be a non-empty string")
    if unsafe_names:
        return value
    return _checked(validate_dns_name, value, "invalid_dns_name")


def _unique(found: list[Identifier]) -> tuple[Identifier, ...]:
    seen: set[str] = set()
    for ident in found:
        if ident.value in seen:
            shown = repr(ident.value)[:80]
            raise OrderRequestError(400, "duplicate_identifier", f"{shown} is listed twice")
        seen.add(ident.value)
    return tuple(found)


def _cluster(value: object) -> str:
    if not isinstance(value, str):
        raise OrderRequestError(400, "invalid_cluster", "cluster must be a string")
    return _checked(validate_cluster_name, value, "invalid_cluster")


def _checked(check: Callable[[str], str], value: str, code: str) -> str:
    try:
        return check(value)
    except UnsafeNameError as err:
        raise OrderRequestError(400, code, str(err)) from err


def _object(body: object, allowed: tuple[str, ...]) -> dict[str, object]:
    if not isinstance(body, dict):
        raise OrderRequestError(400, "invalid_request", "expected a JSON object")
    unknown = sorted(str(k) for k in set(body) - set(allowed))
    if unknown:
        shown = ", ".join(repr(k)[1:-1][:40] for k in unknown[:5])
        raise OrderRequestError(400, "unknown_field", f"unknown fields: {shown}")
    return body
