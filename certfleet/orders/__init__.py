"""What an order request and an order answer look like, shared by every order API.

The sandbox (``certfleet.sandbox``), the order API over the registry (``certfleet.serve``)
and the APIv3 client (``certfleet.apiv3``) parse and answer orders with these rules, so
the two request forms (``dns_names`` or ``identifiers``) and the answer (both fields,
consistent) are written once. docs/api.md describes them for users.
"""

from __future__ import annotations

from certfleet.orders.errors import OrderRequestError
from certfleet.orders.request import (
    APPROVALS,
    MAX_IDENTIFIERS,
    Identifier,
    OrderChange,
    OrderRequest,
    check_approval,
    default_approval,
    is_wildcard,
    order_answer,
    parse_change,
    parse_create,
    parse_identifiers,
)

__all__ = [
    "APPROVALS",
    "MAX_IDENTIFIERS",
    "Identifier",
    "OrderChange",
    "OrderRequest",
    "OrderRequestError",
    "check_approval",
    "default_approval",
    "is_wildcard",
    "order_answer",
    "parse_change",
    "parse_create",
    "parse_identifiers",
]
