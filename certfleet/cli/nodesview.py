"""How ``certfleet nodes`` (``certfleet.cli.nodes``) shows what it read.

Per cluster, a line for its head, then one row per node, problems first: status, hostname
(for an ack that cannot be opened, the hostname label in front of it, opened with the
signing key, marked ``(unverified)``), node id, applied head (``current``, ``behind D``: its
head is D older; ``never applied`` for a node that has not applied any head yet), when it
reported, its orders by state, and the on_update commands it still owes; below, the first
failed orders of each node with the agent's detail. With ``--order ORDER``, which serial of
that order each node has, against the serial the head publishes. With ``--json``, one
document (``json_document``; docs/operations.md lists its fields). Hostnames, order names
and details come from nodes and are printed escaped (control and bidirectional characters).
"""

from __future__ import annotations

import time
from typing import Any

from certfleet.cli.context import Context
from certfleet.sync.errors import printable
from certfleet.sync.nodereport import ClusterReport, NodeReport

MAX_SHOWN_FAILURES = 5


# -- human output ------------------------------------------------------------------------


def print_cluster(report: ClusterReport, now: int, ctx: Context) -> None:
    ctx.say(_cluster_line(report, now))
    if report.error is not None:
        return
    rows: list[tuple[str, ...]] = [
        (
            "STATUS",
            "HOSTNAME",
            "NODE ID",
            "APPLIED",
            "REPORTED",
            "INST DEFER FAIL RM",
            "ON_UPDATE OWED",
        )
    ]
    rows += [_node_row(node, now) for node in report.nodes]
    if report.nodes:
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
        for row in rows:
            cells = [cell.ljust(width) for cell, width in zip(row, widths)] + [row[-1]]
            ctx.say("  ".join(cells).rstrip())
    for node in report.nodes:
        for line in _node_details(node):
            ctx.say(line)
    if report.truncated:
        ctx.say(f"  only the first {len(report.nodes)} acks were read")
    summary = report.summary()
    parts = [
        f"{summary['nodes']} nodes",
        f"{summary['current']} current",
        f"{summary['behind']} behind",
        f"{summary['stale']} stale",
        f"{summary['failing']} with failures",
    ]
    parts += [f"{summary[k]} {k}" for k in ("ahead", "unreadable") if summary[k]]
    ctx.say(f"cluster {report.cluster}: " + ", ".join(parts))
    ctx.say("")


def _cluster_line(report: ClusterReport, now: int) -> str:
    line = f"cluster {report.cluster}"
    if report.error is not None:
        return f"{line}: error: {printable(report.error)}"
    published = report.published
    if published is not None:
        orders = "" if published.index is None else f", {len(published.index)} orders"
        line += (
            f": head generation {published.generation}, published "
            f"{_when(published.issued_at, now)}{orders}"
        )
    if report.problem is not None:
        line += f"\n  problem: {printable(report.problem)}"
    return line


def _node_row(node: NodeReport, now: int) -> tuple[str, ...]:
    if node.ack is None:
        return (
            node.status,
            _host(node),
            printable(node.node_id, 64),
            "-",
            "-",
            "-",
            f"{node.error_kind}: {printable(node.error or '')}",
        )
    ack, counts = node.ack, node.counts
    applied = node.applied
    if applied == "behind":
        applied = "never applied" if ack.generation == 0 else f"behind {_span(node.behind_seconds)}"
    numbers = " ".join(
        str(counts.get(state, 0)).rjust(len(label))
        for state, label in (
            ("installed", "INST"),
            ("deferred", "DEFER"),
            ("failed", "FAIL"),
            ("removed", "RM"),
        )
    )
    return (
        node.status,
        _host(node),
        node.node_id,
        applied,
        _when(ack.reported_at, now),
        numbers,
        " ".join(repr(command)[:80] for command in node.owed) or "-",
    )


def _host(node: NodeReport) -> str:
    """The node's hostname, escaped: the sealed one, else the unverified label."""
    if node.ack is not None:
        return printable(node.ack.hostname, 64) or "-"
    return f"{printable(node.label, 64)} (unverified)" if node.label else "-"


def _node_details(node: NodeReport) -> list[str]:
    """Why a node is failing: its first failed orders, with the agent's detail."""
    name = printable(node.hostname, 64) or node.node_id
    lines = [
        f"  {name} ({node.node_id}): {printable(order.order_name)} {order.state}: "
        f"{printable(order.detail)}"
        for order in node.failed[:MAX_SHOWN_FAILURES]
    ]
    if len(node.failed) > MAX_SHOWN_FAILURES:
        lines.append(f"  {name} ({node.node_id}): and {len(node.failed) - MAX_SHOWN_FAILURES} more")
    return lines


def print_order(report: ClusterReport, order: str, ctx: Context) -> None:
    shown = printable(order)
    if report.error is not None or report.published is None or report.published.index is None:
        ctx.say(_cluster_line(report, int(time.time())))
        return
    entry = report.published.index.get(order)
    if entry is None:
        ctx.say(f"cluster {report.cluster}: the head publishes no order {shown}")
        return
    ctx.say(f"cluster {report.cluster}: order {shown}, published serial {entry.serial}")
    rows = [("SERIAL", "", "STATE", "HOSTNAME", "NODE ID")]
    for node in report.nodes:
        state, serial = node.order(order, report.published)
        mark = "(published)" if serial == entry.serial else "(old)" if serial else ""
        rows.append(
            (
                serial or "-",
                mark,
                state,
                _host(node),
                printable(node.node_id, 64),
            )
        )
    rows[1:] = sorted(rows[1:], key=lambda row: (row[1] == "(published)", row[0], row[3]))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        ctx.say("  ".join([c.ljust(w) for c, w in zip(row, widths)] + [row[4]]).rstrip())
    ctx.say("")


def _when(seconds: int, now: int) -> str:
    stamp = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(seconds))
    age = now - seconds
    return f"{stamp} ({_span(age)} ago)" if age >= 0 else f"{stamp} (in {_span(-age)})"


def _span(seconds: int) -> str:
    """``42s``, ``5m``, ``2h10m``, ``3d4h``: two units at most."""
    units = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))
    parts: list[str] = []
    for name, size in units:
        if seconds >= size or (name == "s" and not parts):
            parts.append(f"{seconds // size}{name}")
            seconds %= size
        if len(parts) == 2 or (parts and seconds == 0):
            break
    return "".join(parts)


# -- --json ------------------------------------------------------------------------------


def json_document(
    reports: list[ClusterReport], order: str | None, now: int, limits: dict[str, float]
) -> dict[str, Any]:
    """The ``--json`` document; docs/operations.md lists its fields."""
    clusters = []
    for report in reports:
        document = _cluster_json(report, order, now)
        document["stale_after"] = limits[report.cluster]
        clusters.append(document)
    return {"now": now, "clusters": clusters}


def _cluster_json(report: ClusterReport, order: str | None, now: int) -> dict[str, Any]:
    published = report.published
    head = None
    if published is not None:
        head = {
            "generation": published.generation,
            "issued_at": published.issued_at,
            "valid_until": published.valid_until,
            "orders": None if published.index is None else len(published.index),
        }
    document: dict[str, Any] = {
        "cluster": report.cluster,
        "error": report.error,
        "problem": report.problem,
        "head": head,
        "ok": report.healthy,
        "summary": report.summary(),
        "truncated": report.truncated,
        "nodes": [_node_json(node, now) for node in report.nodes],
    }
    if order is not None:
        entry = published.index.get(order) if published and published.index else None
        document["order"] = {
            "name": order,
            "published_serial": entry.serial if entry else None,
            "nodes": [
                dict(
                    zip(
                        ("node_id", "hostname", "state", "serial"),
                        (node.node_id, node.hostname, *node.order(order, published)),
                    )
                )
                for node in report.nodes
            ],
        }
    return document


def _node_json(node: NodeReport, now: int) -> dict[str, Any]:
    ack = node.ack
    never = ack is not None and ack.generation == 0
    return {
        "node_id": node.node_id,
        "hostname": ack.hostname if ack else None,
        "hostname_label": node.label or None,  # an unreadable ack's label: unverified
        "status": node.status,
        "problems": list(node.problems),
        "applied": node.applied,
        "generation": ack.generation if ack else None,
        "behind_seconds": None if never else node.behind_seconds,
        "never_applied": never,
        "stale": node.stale,
        "reported_at": ack.reported_at if ack else None,
        "age_seconds": now - ack.reported_at if ack else None,
        "orders": dict(node.counts),
        "on_update_owed": list(node.owed),
        "failures": [
            {"order": o.order_name, "state": o.state, "serial": o.serial, "detail": o.detail}
            for o in node.failed
        ],
        "error": node.error,
        "error_kind": node.error_kind,
    }
