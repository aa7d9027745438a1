"""``certfleet registry reseal``: the order registry after a rotation of the signing key.

The registry is sealed with a secret derived from the sync config's ``signing_key``; after
the key is replaced the registry no longer opens. ``reseal --previous-config OLD`` reads
each ACME-mode cluster's registry with the secret derived from OLD's signing key and
writes it back sealed for the current one (a conditional write; nothing else changes).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from certfleet.cli.context import Context
from certfleet.cli.errors import UsageError
from certfleet.config.sync import load_sync_config
from certfleet.registry import OrderRegistry
from certfleet.registry.mode import acme_clusters, registry_secret
from certfleet.store import open_store


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subparsers.add_parser("registry", help="maintain the order registry (ACME mode)")
    actions = parser.add_subparsers(dest="registry_command", metavar="ACTION", required=True)
    reseal = actions.add_parser(
        "reseal",
        help="seal the registry for the current signing key after a rotation",
        description="Read each ACME-mode cluster's order registry with the secret derived "
        "from --previous-config's signing key and write it sealed for --config's.",
    )
    reseal.add_argument(
        "--previous-config", required=True, metavar="FILE", help="the sync config before"
    )
    reseal.set_defaults(run=run_reseal)


def run_reseal(args: argparse.Namespace, ctx: Context) -> int:
    if args.config is None:
        raise UsageError("--config FILE is required: the sync config with the new signing key")
    config = load_sync_config(args.config)
    previous = registry_secret(load_sync_config(args.previous_config))
    store = open_store(config.store, endpoint=config.store_endpoint)
    clusters = acme_clusters(config)
    registry = OrderRegistry(store, registry_secret(config), clusters)
    counts = {cluster: registry.reseal(cluster, previous) for cluster in clusters}
    if args.json:
        ctx.say(json.dumps(counts))
    else:
        for cluster, count in counts.items():
            ctx.say(f"{cluster}: {count} orders sealed for the current signing key")
    if not clusters:
        ctx.note("no cluster is in ACME mode: nothing to reseal")
    return 0
