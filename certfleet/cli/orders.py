"""``certfleet add | edit | list | show | rm``: managing orders through the APIv3, or, with
a sync config in ACME mode, in the order registry (``certfleet.cli.orderstore``).

Every name on the command line is checked against docs/format.md "Text forms and names"
before any request is made; a refusal names the name and the rule (exit 2). ``show`` and
``rm`` take any order name the API holds, so that an order with an unsafe name (which the
sync refuses to publish) can still be inspected and removed.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from certfleet.apiv3 import Identifier, Order
from certfleet.bundle import validate_cluster_name, validate_dns_name, validate_order_name
from certfleet.cli.context import Context
from certfleet.cli.display import order_details, order_table
from certfleet.cli.errors import UsageError
from certfleet.cli.orderstore import (
    MixedBackend,
    OrderBackend,
    api_backend,
    registry_backend,
)
from certfleet.cli.settings import resolve_api
from certfleet.config.sync import load_sync_config
from certfleet.registry.mode import acme_clusters

APPROVALS = ("http", "dns")


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    add = subparsers.add_parser(
        "add",
        help="order a certificate for DNS names",
        description="Create an order. The order name defaults to the first DNS name; the "
        "approval defaults to dns for *. names and http otherwise.",
    )
    add.add_argument("--cluster", metavar="C", help="the cluster that manages the order")
    add.add_argument("--name", metavar="N", help="the order name (default: first DNS name)")
    add.add_argument("--approval", choices=APPROVALS)
    add.add_argument("dns_names", nargs="+", metavar="DNS_NAME")
    add.set_defaults(run=run_add)

    edit = subparsers.add_parser("edit", help="change an order's DNS names or approval")
    edit.add_argument("--add-dnsname", action="append", default=[], metavar="D")
    edit.add_argument("--rm-dnsname", action="append", default=[], metavar="D")
    edit.add_argument("--approval", choices=APPROVALS, help="for every DNS name of the order")
    edit.add_argument("order", metavar="ORDER")
    edit.set_defaults(run=run_edit)

    listing = subparsers.add_parser("list", help="list orders")
    listing.add_argument("--cluster", metavar="C", help="only this cluster's orders")
    listing.set_defaults(run=run_list)

    show = subparsers.add_parser("show", help="show one order")
    show.add_argument("order", metavar="ORDER")
    show.set_defaults(run=run_show)

    remove = subparsers.add_parser("rm", help="remove an order")
    remove.add_argument("order", metavar="ORDER")
    remove.set_defaults(run=run_rm)


def run_add(args: argparse.Namespace, ctx: Context) -> int:
    names = _dns_names(args.dns_names)
    order_name = validate_order_name(args.name if args.name is not None else names[0])
    identifiers = [Identifier(name, _approval(name, args.approval)) for name in names]
    cluster = validate_cluster_name(args.cluster) if args.cluster is not None else None
    with _backend(args, ctx) as backend:
        if cluster is None:
            cluster = _default_cluster(args.config)
        order = backend.create(identifiers, cluster, order_name)
    _print_order(order, args, ctx)
    return 0


def run_edit(args: argparse.Namespace, ctx: Context) -> int:
    name = validate_order_name(args.order)
    adds = _dns_names(args.add_dnsname)
    removes = _dns_names(args.rm_dnsname)
    if not adds and not removes and args.approval is None:
        raise UsageError("nothing to change: give --add-dnsname, --rm-dnsname or --approval")
    both = sorted(set(adds) & set(removes))
    if both:
        raise UsageError(f"DNS name {both[0]!r} is both added and removed")
    with _backend(args, ctx) as backend:
        order = backend.get(name)
        wanted = _edited(order, adds, removes, args.approval, ctx)
        if wanted == list(order.identifiers):
            ctx.note(f"order {name!r} already has these DNS names and approvals; nothing sent")
            updated = order
        else:
            updated = backend.update(name, wanted)
    _print_order(updated, args, ctx)
    return 0


def run_list(args: argparse.Namespace, ctx: Context) -> int:
    cluster = validate_cluster_name(args.cluster) if args.cluster is not None else None
    with _backend(args, ctx) as backend:
        orders = backend.orders(cluster)
    if args.json:
        ctx.say(json.dumps([order.to_json() for order in orders], indent=2))
    elif orders:
        ctx.say(order_table(orders))
    else:
        ctx.note("no orders" + (f" in cluster {cluster!r}" if cluster else ""))
    return 0


def run_show(args: argparse.Namespace, ctx: Context) -> int:
    name = _any_order_name(args.order)
    with _backend(args, ctx) as backend:
        order = backend.get(name)
        details = backend.details(order)
    if args.json:
        document = order.to_json()
        if details:
            document["acme"] = details
        ctx.say(json.dumps(document, indent=2))
    else:
        labels = {"status": "acme", "unreadable": "acme", "problem": "problem"}
        rows = [
            f"{labels.get(label, label.replace('_', ' ')):<10} {value}"
            for label, value in details.items()
        ]
        ctx.say("\n".join([order_details(order), *rows]))
    return 0


def run_rm(args: argparse.Namespace, ctx: Context) -> int:
    name = _any_order_name(args.order)
    with _backend(args, ctx) as backend:
        backend.delete(name)
    if args.json:
        ctx.say(json.dumps({"removed": name}))
    else:
        ctx.say(f"removed order {name}")
    return 0


def _edited(
    order: Order, adds: list[str], removes: list[str], approval: str | None, ctx: Context
) -> list[Identifier]:
    """The order's new full identifier set."""
    current = [ident.value for ident in order.identifiers]
    for name in removes:
        if name not in current:
            raise UsageError(f"order {order.name!r} has no DNS name {name!r} to remove")
    result = [ident for ident in order.identifiers if ident.value not in removes]
    for name in adds:
        if name in current:
            ctx.note(f"order {order.name!r} already has DNS name {name!r}")
        else:
            result.append(Identifier(name, _approval(name, approval)))
    if approval is not None:
        result = [Identifier(i.value, _approval(i.value, approval), i.type) for i in result]
    if not result:
        raise UsageError(
            f"order {order.name!r} would have no DNS names left; remove it with certfleet rm"
        )
    return result


def _dns_names(raw: Sequence[str]) -> list[str]:
    """Validated, lowercased DNS names; a name given twice is refused."""
    names: list[str] = []
    for item in raw:
        name = validate_dns_name(item)
        if name in names:
            raise UsageError(f"DNS name {name!r} is given twice")
        names.append(name)
    return names


def _approval(name: str, wanted: str | None) -> str:
    wildcard = name.startswith("*.")
    if wanted is None:
        return "dns" if wildcard else "http"
    if wanted == "http" and wildcard:
        raise UsageError(
            f"DNS name {name!r}: wildcard names cannot use http approval (SSLMate's rule); "
            "use --approval dns"
        )
    return wanted


def _any_order_name(name: str) -> str:
    if not name or len(name) > 1000:
        raise UsageError("ORDER must be a non-empty order name")
    return name


def _default_cluster(config_path: str | None) -> str:
    """Without --cluster: the sync config's cluster, when it has exactly one."""
    if config_path is not None:
        from certfleet.cli.clusters import cluster_names

        names = cluster_names(config_path)
        if len(names) == 1:
            return names[0]
    raise UsageError("add needs --cluster C: the cluster whose nodes will serve the order")


@contextmanager
def _backend(args: argparse.Namespace, ctx: Context) -> Iterator[OrderBackend]:
    """The registry when ``--config`` is a sync config in ACME mode, else the APIv3."""
    acme: tuple[str, ...] = ()
    if args.config is not None:
        config = load_sync_config(args.config)
        acme = acme_clusters(config)
        if acme and len(acme) == len(config.clusters):
            yield registry_backend(config)
            return
    settings = resolve_api(args.config, ctx.environ, ctx.home)
    with api_backend(settings) as backend:
        if acme:
            yield MixedBackend(registry_backend(config), backend, acme)
        else:
            yield backend


def _print_order(order: Order, args: argparse.Namespace, ctx: Context) -> None:
    if args.json:
        ctx.say(json.dumps(order.to_json(), indent=2))
    else:
        ctx.say(order_details(order))
