"""``certfleet registry reseal``: the order registry after a rotation of the signing key.

The registry is sealed with a secret derived from the sync config's ``signing_key``; after
the key is replaced it opens only while ``previous_signing_key`` names the old key.
``reseal`` rewrites each ACME-mode cluster's registry sealed for the current key (a
conditional write; nothing else changes); the old key comes from ``previous_signing_key``,
or from the signing key of ``--previous-config OLD``.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from certfleet.bundle import ClusterSecret
from certfleet.cli.context import Context
from certfleet.cli.errors import UsageError
from certfleet.config.sync import load_sync_config
from certfleet.registry import OrderRegistry
from certfleet.registry.mode import acme_clusters, previous_registry_secrets, registry_secret
from certfleet.store import open_store


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subparsers.add_parser("registry", help="maintain the order registry (ACME mode)")
    actions = parser.add_subparsers(dest="registry_command", metavar="ACTION", required=True)
    reseal = actions.add_parser(
        "reseal",
        help="seal the registry for the current signing key after a rotation",
        description="Rewrite each ACME-mode cluster's order registry sealed for --config's "
        "signing key, reading it with the previous key's secret (previous_signing_key, or "
        "the signing key of --previous-config).",
    )
    reseal.add_argument(
        "--previous-config",
        metavar="FILE",
        help="the sync config before the rotation (default: previous_signing_key of --config)",
    )
    reseal.set_defaults(run=run_reseal)


def run_reseal(args: argparse.Namespace, ctx: Context) -> int:
    if args.config is None:
        raise UsageError("--config FILE is required: the sync config with the new signing key")
    config = load_sync_config(args.config)
    previous: tuple[ClusterSecret, ...]
    if args.previous_config is not None:
        previous = (registry_secret(load_sync_config(args.previous_config)),)
    else:
        previous = previous_registry_secrets(config)
    if not previous:
        raise UsageError(
            f"{args.config} has no previous_signing_key: set it to the old signing key, or "
            "give --previous-config OLD"
        )
    store = open_store(config.store, endpoint=config.store_endpoint)
    clusters = acme_clusters(config)
    registry = OrderRegistry(store, registry_secret(config), clusters, previous=previous)
    counts = {cluster: registry.reseal(cluster) for cluster in clusters}
    if args.json:
        ctx.say(json.dumps(counts))
    else:
        for cluster, count in counts.items():
            ctx.say(f"{cluster}: {count} orders sealed for the current signing key")
    if not clusters:
        ctx.note("no cluster is in ACME mode: nothing to reseal")
    return 0
