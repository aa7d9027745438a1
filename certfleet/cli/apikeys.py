"""``certfleet api-keys add | list | rm`` and ``certfleet http-config``: the order API's keys.

``add`` prints the new key ``<id>_<secret>`` on stdout only, once; the config (the sync
config, or the HTTP-side config of ``certfleet.config.serve``) keeps only its SHA-256 and
the clusters it may touch. ``http-config`` prints the HTTP-side config made from a sync
config: the store, the derived registry secret, the ACME thumbprint, the ACME clusters
and the key hashes, and nothing that can sign or decrypt a node's key.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

from certfleet.bundle import validate_cluster_name
from certfleet.cli.context import Context
from certfleet.cli.errors import UsageError
from certfleet.cli.syncfile import write_private
from certfleet.config.hcl import read_config_text
from certfleet.config.serve import ServeConfig, is_sync_config, validate_key_name
from certfleet.config.sync import parse_sync_config
from certfleet.serve.apikey import generate_key
from certfleet.serve.settings import api_key_block, http_config_text, parse_settings


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subparsers.add_parser("api-keys", help="manage the order API's keys")
    actions = parser.add_subparsers(dest="api_keys_command", metavar="ACTION", required=True)
    add = actions.add_parser(
        "add",
        help="make a new key; print it once",
        description="Make a new order API key and print it (<id>_<secret>) on stdout only, "
        "once; the config (--config) keeps only its SHA-256 and the clusters it may touch "
        "(none given: every cluster).",
    )
    add.add_argument("name", metavar="NAME")
    add.add_argument(
        "--cluster", action="append", default=[], metavar="C", help="a cluster it may touch"
    )
    add.set_defaults(run=run_add)
    listing = actions.add_parser("list", help="list the keys (names, ids, clusters)")
    listing.set_defaults(run=run_list)
    remove = actions.add_parser("rm", help="remove a key")
    remove.add_argument("name", metavar="NAME")
    remove.set_defaults(run=run_rm)

    http = subparsers.add_parser(
        "http-config",
        help="print the order API's own config, made from the sync config",
        description="Print on stdout the config for certfleet serve or the Lambda's HTTP "
        "function: the store, the registry secret derived from the signing key, the ACME "
        "thumbprint, the clusters in ACME mode and the API key hashes. It holds neither the "
        "signing key nor a cluster secret nor the ACME account key.",
    )
    http.set_defaults(run=run_http_config)


def run_add(args: argparse.Namespace, ctx: Context) -> int:
    path = _config_path(args)
    try:
        name = validate_key_name(args.name)
    except ValueError as err:
        raise UsageError(str(err)) from err
    clusters = tuple(validate_cluster_name(c) for c in args.cluster)
    original = read_config_text(path)
    config = _settings(original, path)
    if any(entry.name == name for entry in config.api_keys):
        raise UsageError(f"{path} already has an API key named {name!r}")
    known = _known_clusters(original, path, config)
    for cluster in clusters:
        if cluster not in known:
            raise UsageError(f"{path} has no cluster {cluster!r} (clusters: {', '.join(known)})")
    if len(set(clusters)) != len(clusters):
        raise UsageError("a cluster is given twice")
    made = generate_key(name, clusters)
    entry = made.entry
    body = original.rstrip("\n")
    text = (body + "\n\n" if body else "") + api_key_block(
        entry.name, entry.id, entry.sha256, entry.clusters
    )
    parse_settings(text, str(path))  # what is written must load
    write_private(path, text, overwrite=True)
    if args.json:
        ctx.say(json.dumps({"name": name, "id": entry.id, "key": made.key, "clusters": clusters}))
    else:
        ctx.say(made.key)
    ctx.note(
        f"added API key {name!r} (id {entry.id}) to {path}; the key is shown only now, the "
        "config keeps its SHA-256"
    )
    return 0


def run_list(args: argparse.Namespace, ctx: Context) -> int:
    path = _config_path(args)
    config = _settings(read_config_text(path), path)
    if args.json:
        listed = [
            {"name": e.name, "id": e.id, "clusters": list(e.clusters)} for e in config.api_keys
        ]
        ctx.say(json.dumps(listed, indent=2))
    elif config.api_keys:
        rows = [("NAME", "ID", "CLUSTERS")]
        rows += [(e.name, e.id, " ".join(e.clusters) or "(all)") for e in config.api_keys]
        widths = [max(len(row[i]) for row in rows) for i in range(2)]
        for row in rows:
            ctx.say(f"{row[0].ljust(widths[0])}  {row[1].ljust(widths[1])}  {row[2]}")
    else:
        ctx.note(f"no API keys in {path}")
    return 0


def run_rm(args: argparse.Namespace, ctx: Context) -> int:
    path = _config_path(args)
    original = read_config_text(path)
    config = _settings(original, path)
    if not any(entry.name == args.name for entry in config.api_keys):
        raise UsageError(f"{path} has no API key named {args.name!r:.80}")
    block = re.compile(
        r'(?m)^[ \t]*order_api_key[ \t]+"' + re.escape(args.name) + r'"[ \t]*\{[^{}]*\}[ \t]*\n?'
    )
    text, count = block.subn("", original)
    remaining = _settings(text, path) if count == 1 else None
    if remaining is None or any(e.name == args.name for e in remaining.api_keys):
        raise UsageError(
            f"cannot find the order_api_key {args.name!r} block in {path} as certfleet writes "
            "it; remove it by hand"
        )
    write_private(path, re.sub(r"\n{3,}", "\n\n", text), overwrite=True)
    if args.json:
        ctx.say(json.dumps({"removed": args.name}))
    else:
        ctx.say(f"removed API key {args.name}")
    return 0


def run_http_config(args: argparse.Namespace, ctx: Context) -> int:
    path = _config_path(args)
    config = _settings(read_config_text(path), path)
    ctx.say(http_config_text(config).rstrip("\n"))
    if not config.clusters:
        ctx.note(f"note: no cluster of {path} is in ACME mode: that order API serves no orders")
    return 0


def _settings(text: str, path: Path) -> ServeConfig:
    return parse_settings(text, str(path))


def _known_clusters(text: str, path: Path, config: ServeConfig) -> tuple[str, ...]:
    if is_sync_config(text, str(path)):
        return parse_sync_config(text, str(path)).cluster_names
    return config.clusters


def _config_path(args: argparse.Namespace) -> Path:
    if args.config is None:
        raise UsageError("--config FILE is required: the sync config or the order API's config")
    return Path(args.config)
