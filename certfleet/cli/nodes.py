"""``certfleet nodes``: what every node of the fleet reports in its ack.

For each cluster of the sync config (or those named by ``--cluster``) it reads the head,
verified with the sync's own signing key, and every ``acks/<node-id>``, opened with the
cluster's secrets (``certfleet.sync.nodereport``), and prints one row per node, problems first
(``certfleet.cli.nodesview`` renders the tables and the ``--json`` document).
``--order ORDER`` lists instead which serial of that order each node has, against the
serial the head publishes. ``--forget NODE_ID`` deletes a decommissioned node's ack.

Exit codes: 0 when the command worked; 1 when a store could not be read or, with
``--check``, when any node is stale, failing, ahead of the head or unreadable, when a
cluster has no verified, unexpired head, or (with ``--order``) when a node does not have
the published serial installed; 2 for usage and config errors.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from certfleet.bundle import FormatError, validate_cluster_name
from certfleet.cli import nodesview
from certfleet.cli.context import Context
from certfleet.cli.errors import CliError, UsageError
from certfleet.config.duration import parse_duration
from certfleet.config.errors import DurationError
from certfleet.config.sync import ClusterSyncConfig, SyncConfig, load_sync_config
from certfleet.store import ObjectNotFound, ObjectTooLarge, Store, open_store
from certfleet.sync.errors import printable
from certfleet.sync.fleetcheck import stale_after as fleet_stale_after
from certfleet.sync.layout import ACK_MAX_BYTES, ack_key
from certfleet.sync.nodereport import ClusterReport, read_cluster


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
    limits = {
        c.name: fleet_stale_after(c, config) if stale_after is None else stale_after
        for c in clusters
    }
    reports = [
        read_cluster(
            store,
            c.name,
            c.secrets,
            publisher,
            now=now,
            stale_after=limits[c.name],
            signing_key=config.signing_key,
        )
        for c in clusters
    ]
    if args.json:
        ctx.say(json.dumps(nodesview.json_document(reports, args.order, now, limits), indent=2))
    elif args.order is not None:
        for report in reports:
            nodesview.print_order(report, args.order, ctx)
    else:
        for report in reports:
            nodesview.print_cluster(report, now, ctx)
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
        store.get(key, max_bytes=ACK_MAX_BYTES)
    except ObjectTooLarge:
        pass  # it exists: an oversized ack is one to forget
    except ObjectNotFound as err:
        raise CliError(f"cluster {clusters[0].name} has no ack of node {args.forget}") from err
    store.delete(key)
    if args.json:
        ctx.say(json.dumps({"cluster": clusters[0].name, "forgotten": args.forget}))
    else:
        ctx.say(f"cluster {clusters[0].name}: deleted the ack of node {args.forget}")
    ctx.note("a node that still runs writes a new ack after its next change")
    return 0
