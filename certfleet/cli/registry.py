"""``certfleet registry reseal`` and ``certfleet registry restore``: the order registry's
upkeep.

The registry is sealed with a secret derived from the sync config's ``signing_key``; after
the key is replaced it opens only while ``previous_signing_key`` names the old key.
``reseal`` rewrites each ACME-mode cluster's registry sealed for the current key (a
conditional write; nothing else changes); the old key comes from ``previous_signing_key``,
or from the signing key of ``--previous-config OLD``.

``restore --cluster C`` rebuilds a cluster's registry that was deleted, put back to an
older copy, or made anew after a delete (the sync refuses all three, and removes nothing,
until this is done), from what the sync state knows: each published order's and each
pending key's order name and DNS names; when the sync state was deleted too, from the head
the sync signed (each published order's bundle names its DNS names). An approval comes
from the copy found when that copy has the name in that order, else it is the default of
``certfleet add`` (``dns`` for a ``*.`` name, ``http`` otherwise); the orders of the copy
found that the sync has not tombstoned are kept too. The revision written continues from
the one the sync acted on, as the write after it, so the next run accepts it.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from certfleet.bundle import ClusterSecret, Head, open_bundle, open_shard
from certfleet.bundle.layout import bundle_key, shard_key
from certfleet.cli.context import Context
from certfleet.cli.errors import CliError, UsageError
from certfleet.config.sync import SyncConfig, load_sync_config
from certfleet.errors import printable
from certfleet.orders.request import is_wildcard
from certfleet.registry import (
    Identifier,
    OrderRegistry,
    RegistryError,
    RegistryOrder,
    RegistryRead,
    descends,
)
from certfleet.registry.mode import acme_clusters, previous_registry_secrets, registry_secret
from certfleet.store import Store, open_store
from certfleet.sync.headseen import read_head
from certfleet.sync.layout import BUNDLE_MAX_BYTES, SHARD_MAX_BYTES, state_key
from certfleet.sync.sealing import SyncKeys
from certfleet.sync.state import StateStore


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
    restore = actions.add_parser(
        "restore",
        help="rebuild a cluster's deleted or rolled-back registry from the sync state",
        description="Write the order registry of --cluster again from the sync state (the "
        "published orders and pending keys: order names and DNS names; without a sync state, "
        "the published head), when it is missing, older than the revision the sync acted "
        "on, or made anew. Approvals: those of the copy found, "
        "else dns for *. names and http otherwise (as certfleet add). The next sync accepts "
        "it and issues nothing new for the orders it already publishes.",
    )
    restore.add_argument("--cluster", required=True, metavar="C", help="the cluster")
    restore.set_defaults(run=run_restore)


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


def run_restore(args: argparse.Namespace, ctx: Context) -> int:
    if args.config is None:
        raise UsageError("--config FILE is required: the sync config")
    config = load_sync_config(args.config)
    cluster = args.cluster
    clusters = acme_clusters(config)
    if cluster not in clusters:
        shown = ", ".join(clusters) or "none"
        raise UsageError(
            f"cluster {printable(cluster)!r} has no order registry in {args.config} "
            f"(clusters in ACME mode: {shown})"
        )
    store = open_store(config.store, endpoint=config.store_endpoint)
    known = _known(config, store, cluster, ctx)
    registry = OrderRegistry(
        store, registry_secret(config), clusters, previous=previous_registry_secrets(config)
    )
    try:
        found: RegistryRead | None = registry.read(cluster)
    except RegistryError as err:
        ctx.note(f"{err}: it is replaced")
        found = None
    if found is not None and found.revision and descends(found, known.revision, known.write_id):
        ctx.note(
            f"the order registry of cluster {cluster} is current (revision {found.revision}, "
            f"the sync acted on {known.revision}): nothing to restore"
        )
        if args.json:
            ctx.say(json.dumps({"cluster": cluster, "revision": found.revision, "restored": 0}))
        return 0
    orders = _rebuilt(cluster, known, () if found is None else found.orders)
    written = registry.restore(cluster, orders, after=known.revision, write_id=known.write_id)
    if args.json:
        ctx.say(
            json.dumps(
                {
                    "cluster": cluster,
                    "revision": written.revision,
                    "restored": len(written.orders),
                    "orders": [o.name for o in written.orders],
                }
            )
        )
    else:
        ctx.say(
            f"{cluster}: order registry restored at revision {written.revision} with "
            f"{len(written.orders)} orders"
        )
    return 0


@dataclass(frozen=True)
class Known:
    """What the sync knows of a cluster's orders: DNS names by order name, the names it
    removed, and the registry revision it acted on last with the id of the write that made
    it."""

    names: Mapping[str, tuple[str, ...]]
    removed: frozenset[str]
    revision: int = 0
    write_id: str = ""


def _known(config: SyncConfig, store: Store, cluster: str, ctx: Context) -> Known:
    """From the sync state (opened as the sync opens it); without one, from the published
    head (each order's bundle names its DNS names); CliError without either."""
    policy = next(c for c in config.clusters if c.name == cluster)
    states = StateStore(store, cluster, SyncKeys.of(config, policy.secrets))
    state = states.load(now_ms=int(time.time() * 1000), accept_old=True)
    if states.found:
        names = {name: record.dns_names for name, record in state.pending.items()}
        names.update((name, record.dns_names) for name, record in state.orders.items())
        return Known(names, frozenset(state.tombstones), state.registry_revision,
                     state.registry_write_id)  # fmt: skip
    seen = read_head(store, cluster, config.signing_key.public_key())
    if seen.head is None or not seen.signed:
        raise CliError(
            f"cluster {cluster} has no sync state ({state_key(cluster)}) and no head signed "
            "by this sync: there is nothing to rebuild the registry from; place the orders "
            f"again (certfleet add --cluster {cluster} ...)"
        )
    ctx.note(
        f"the sync state of cluster {cluster} ({state_key(cluster)}) is missing too: the "
        "orders are read from the published head; the next sync gives each a new key"
    )
    return _published(store, cluster, seen.head, policy.secrets)


def _published(store: Store, cluster: str, head: Head, secrets: Sequence[ClusterSecret]) -> Known:
    """Each order the head publishes, with the DNS names of its bundle, and its tombstones."""
    names: dict[str, tuple[str, ...]] = {}
    removed: set[str] = set()
    for index, digest in enumerate(head.shard_hashes):
        data = store.get(shard_key(cluster, digest.hex()), max_bytes=SHARD_MAX_BYTES).data
        shard = open_shard(data, cluster=cluster, index=index, secrets=secrets)
        removed.update(stone.order_name for stone in shard.tombstones)
        for entry in shard.entries:
            key = bundle_key(cluster, entry.bundle_hash.hex())
            sealed = store.get(key, max_bytes=BUNDLE_MAX_BYTES).data
            bundle = open_bundle(
                sealed, cluster=cluster, order_name=entry.order_name, secrets=secrets
            )
            names[entry.order_name] = bundle.dns_names
    return Known(names, frozenset(removed))


def _rebuilt(cluster: str, known: Known, copy: tuple[RegistryOrder, ...]) -> list[RegistryOrder]:
    """The orders of ``cluster`` as the sync knows them (see the module docstring)."""
    now = int(time.time())
    kept = {order.name: order for order in copy}
    orders = []
    for name, dns_names in sorted(known.names.items()):
        old = kept.get(name)
        approvals = {} if old is None else {i.value: i.approval for i in old.identifiers}
        identifiers = tuple(
            Identifier(value, approvals.get(value) or ("dns" if is_wildcard(value) else "http"))
            for value in dns_names
        )
        created = now if old is None else old.created_at
        orders.append(RegistryOrder(name, cluster, identifiers, created, now))
    for name, order in sorted(kept.items()):
        if name not in known.names and name not in known.removed:
            orders.append(order)
    return orders
