"""How orders look on a terminal; ``--json`` output is ``Order.to_json()`` instead."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone

from certfleet.apiv3 import Order


def order_details(order: Order) -> str:
    """``certfleet show``: one ``label  value`` line per field, one line per DNS name."""
    rows = [
        ("order", order.name),
        ("cluster", order.cluster or "-"),
        ("state", order.state),
        ("created", _time(order.created_at)),
        ("updated", _time(order.updated_at)),
    ]
    for index, ident in enumerate(order.identifiers):
        rows.append(("dns names" if index == 0 else "", f"{ident.value} ({ident.approval})"))
    return "\n".join(f"{label:<10} {value}".rstrip() for label, value in rows)


def order_table(orders: Sequence[Order]) -> str:
    """``certfleet list``: a header and one row per order, columns sized to fit."""
    rows = [("NAME", "CLUSTER", "STATE", "DNS NAMES")]
    rows += [(o.name, o.cluster or "-", o.state, " ".join(o.dns_names)) for o in orders]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths)) + "  " + row[3]
        for row in rows
    )


def _time(value: datetime | None) -> str:
    return (
        "-" if value is None else value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    )
