"""``certfleet nodes``: what every node of the fleet reports in its ack.

For each cluster of the sync config (or those named by ``--cluster``) it reads the head,
verified with the sync's own signing key, and every ``acks/<node-id>``, opened with the
cluster's secrets (``certfleet.sync.fleet``), and prints one row per node, problems first:
status, hostname, node id, applied head (``current``, ``behind D``: its head is D older),
when it reported, its orders by state, and the on_update commands it still owes.
``--order ORDER`` lists instead which serial of that order each node has, against the
serial the head publishes. ``--forget NODE_ID`` deletes a decommissioned node's ack.

Exit codes: 0 when the command worked; 1 when a store could not be read or, with
``--check``, when any node is stale, failing, ahead of the head or unreadable, when a
cluster has no verified, unexpired head, or (with ``--order``) when a node does not have
the published serial installed; 2 for usage and config errors. Hostnames, order names and
details come from nodes and are printed escaped.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from certfleet.bundle import FormatError, validate_cluster_name
from certfleet.cli.context import Context
from certfleet.cli.errors import CliError, UsageError
from certfleet.config.duration import parse_duration
from certfleet.config.errors import DurationError
from certfleet.config.sync import ClusterSyncConfig, SyncConfig, load_sync_config
from certfleet.store import ObjectNotFound, Store, open_store
from certfleet.sync.errors import printable
from certfleet.sync.fleet import ClusterReport, NodeReport, ack_key, read_cluster

MAX_SHOWN_FAILURES = 5


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    nodes = subparsers.add_parser(
        "nodes",
        help="show what each node reports in its ack (which head, which orders failed)",
        description="Read every node's ack in the store of the sync config (--config) and "
        "show, per node, the head it applied, its orders by state and owed on_update "
        "commands; problems first.",
    )
    nodes.add_argument(
        "--cluster", action="append", default=[], metavar="C", help="only this cluster"
    )
    nodes.add_argument(
        "--stale-after",
        metavar="DURATION",
        help="a node behind a head out for longer than this is stale (default: the sync "
        "config's fleet_stale_after, 1h unless set)",
    )
    nodes.add_argument(
        "--check",
        action="store_true",
        help="exit 1 when any node is stale, failing, ahead or unreadable",
    )
    nodes.add_argument("--order", metavar="ORDER", help="which serial of ORDER each node has")
    nodes.add_argument(
        "--forget", metavar="NODE_ID", help="delete this node's ack (needs one --cluster)"
    )
    nodes.set_defaults(run=run)


def run(args: argparse.Namespace, ctx: Context) -> int:
    stale_after: float | None = None
    if args.stale_after is not None:
        try:
            stale_after = parse_duration(args.stale_after)
        except DurationError as err:
            raise UsageError(f"--stale-after {args.stale_after!r}: {err}") from err
    if not args.config:
        raise UsageError("nodes needs --config FILE (the sync config)")
    config = load_sync_config(Path(args.config))
    clusters = _clusters(config, args.cluster)
    store = open_store(config.store, endpoint=config.store_endpoint)
    if args.forget is not None:
        return _forget(store, args, ctx, clusters)
    now = int(time.time())
    publisher = config.signing_key.public_key()
    limits = {c.name: _stale_after(stale_after, c, config) for c in clusters}
    reports = [
        read_cluster(store, c.name, c.secrets, publisher, now=now, stale_after=limits[c.name])
        for c in clusters
    ]
    if args.json:
        ctx.say(json.dumps(_document(reports, args.order, now, limits), indent=2))
    elif args.order is not None:
        for report in reports:
            _print_order(report, args.order, ctx)
    else:
        for report in reports:
            _print_cluster(report, now, ctx)
    if any(report.error is not None for report in reports):
        return 1
    if args.check and not all(_passes(report, args.order) for report in reports):
        return 1
    return 0


def _clusters(config: SyncConfig, names: list[str]) -> list[ClusterSyncConfig]:
    if not config.clusters:
        raise UsageError(f"{config.source} has no cluster; add one with certfleet clusters add")
    for name in names:
        validate_cluster_name(name)
        if name not in config.cluster_names:
            raise UsageError(
                f"--cluster {name!r} is not in {config.source} "
                f"(clusters: {', '.join(config.cluster_names)})"
            )
    wanted = set(names)
    return [c for c in config.clusters if not wanted or c.name in wanted]


def _passes(report: ClusterReport, order: str | None) -> bool:
    if not report.healthy:
        return False
    if order is None:
        return True
    published = report.published
    entry = published.index.get(order) if published and published.index else None
    if entry is None:
        return True  # not an order of this cluster
    return all(node.order(order, published) == ("installed", entry.serial) for node in report.nodes)


# -- --forget --------------------------------------------------------------------------


def _forget(
    store: Store, args: argparse.Namespace, ctx: Context, clusters: list[ClusterSyncConfig]
) -> int:
    if len(args.cluster) != 1:
        raise UsageError("--forget NODE_ID needs exactly one --cluster C")
    try:
        key = ack_key(clusters[0].name, args.forget)
    except FormatError as err:
        raise UsageError(f"--forget {printable(args.forget)!r}: {err.reason}") from err
    try:
        store.get(key)
    except ObjectNotFound as err:
        raise CliError(f"cluster {clusters[0].name} has no ack of node {args.forget}") from err
    store.delete(key)
    if args.json:
        ctx.say(json.dumps({"cluster": clusters[0].name, "forgotten": args.forget}))
    else:
        ctx.say(f"cluster {clusters[0].name}: deleted the ack of node {args.forget}")
    ctx.note("a node that still runs writes a new ack after its next change")
    return 0


# -- human output ------------------------------------------------------------------------


def _print_cluster(report: ClusterReport, now: int, ctx: Context) -> None:
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
            "-",
            printable(node.node_id, 64),
            "-",
            "-",
            "-",
            f"{node.error_kind}: {printable(node.error or '')}",
        )
    ack, counts = node.ack, node.counts
    applied = node.applied
    if applied == "behind":
        applied = f"behind {_span(node.behind_seconds)}"
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
        printable(ack.hostname, 64) or "-",
        node.node_id,
        applied,
        _when(ack.reported_at, now),
        numbers,
        " ".join(repr(command)[:80] for command in node.owed) or "-",
    )


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


def _print_order(report: ClusterReport, order: str, ctx: Context) -> None:
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
                printable(node.hostname, 64) or "-",
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


def _stale_after(given: float | None, cluster: ClusterSyncConfig, config: SyncConfig) -> float:
    """``--stale-after`` if given, else the cluster's ``fleet_stale_after``, else the top's."""
    if given is not None:
        return given
    if cluster.fleet_stale_after is not None:
        return cluster.fleet_stale_after
    return config.fleet_stale_after


# -- --json ------------------------------------------------------------------------------


def _document(
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
    return {
        "node_id": node.node_id,
        "hostname": node.hostname if ack else None,
        "status": node.status,
        "problems": list(node.problems),
        "applied": node.applied,
        "generation": ack.generation if ack else None,
        "behind_seconds": node.behind_seconds,
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
