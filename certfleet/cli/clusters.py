"""``certfleet clusters add | list``: the clusters of the sync config.

``clusters add`` prints on stdout only the stanza for the agents' config (so it can be
redirected into a file); everything else goes to stderr.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from certfleet.bundle import ClusterSecret, validate_cluster_name
from certfleet.cli.context import Context
from certfleet.cli.errors import UsageError
from certfleet.cli.syncfile import hcl_string, new_secret_id, with_cluster, write_private
from certfleet.config.hcl import read_config_text
from certfleet.config.sync import SyncConfig, load_sync_config, parse_sync_config


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subparsers.add_parser("clusters", help="add or list the sync config's clusters")
    actions = parser.add_subparsers(dest="clusters_command", metavar="ACTION", required=True)
    add = actions.add_parser(
        "add",
        help="add a cluster with a new secret; print its agent config stanza",
        description="Add a cluster with a new random secret to the sync config (--config) "
        "and print on stdout only the cluster stanza for the agents' config.",
    )
    add.add_argument("name", metavar="NAME")
    add.set_defaults(run=run_add)
    listing = actions.add_parser("list", help="list the sync config's clusters")
    listing.set_defaults(run=run_list)


def run_add(args: argparse.Namespace, ctx: Context) -> int:
    name = validate_cluster_name(args.name)
    path = _config_path(args)
    original = read_config_text(path)
    config = parse_sync_config(original, str(path))
    if name in config.cluster_names:
        raise UsageError(f"{path} already has a cluster {name!r}")
    secret = ClusterSecret.generate(new_secret_id())
    text = with_cluster(original, name, secret.export())
    parse_sync_config(text, str(path))  # what is written must load
    write_private(path, text, overwrite=True)
    publisher = config.signing_key.public_key().export()
    if args.json:
        ctx.say(json.dumps({"cluster": name, "secret": secret.export(), "publisher": publisher}))
    else:
        ctx.stdout.write(agent_stanza(name, secret.export(), publisher))
    ctx.note(
        f"added cluster {name!r} (secret id {secret.id}) to {path}; "
        "put the stanza above into each of its nodes' certfleet-agent.conf"
    )
    return 0


def run_list(args: argparse.Namespace, ctx: Context) -> int:
    config = load_sync_config(_config_path(args))
    publisher = config.signing_key.public_key().export()
    if args.json:
        rows = [
            {"name": c.name, "secret_ids": [s.id for s in c.secrets], "key_type": c.key_type}
            for c in config.clusters
        ]
        ctx.say(json.dumps({"publisher": publisher, "clusters": rows}, indent=2))
        return 0
    if not config.clusters:
        ctx.note(f"no clusters in {config.source}; add one with certfleet clusters add NAME")
        return 0
    width = max(len("CLUSTER"), *(len(c.name) for c in config.clusters))
    ctx.say(f"{'CLUSTER'.ljust(width)}  KEY TYPE  SECRET IDS (newest first)")
    for c in config.clusters:
        ids = " ".join(s.id for s in c.secrets)
        ctx.say(f"{c.name.ljust(width)}  {c.key_type:<8}  {ids}")
    ctx.note(f"publisher {publisher}")
    return 0


def agent_stanza(name: str, secret: str, publisher: str) -> str:
    """The ``cluster`` block for a node agent's config."""
    return (
        f'cluster "{name}" {{\n'
        f"  secret    = {hcl_string(secret, 'secret', secret=True)}\n"
        f"  publisher = {hcl_string(publisher, 'publisher')}\n"
        "}\n"
    )


def cluster_names(config_path: str) -> tuple[str, ...]:
    """The names of the clusters in the sync config at ``config_path``."""
    config: SyncConfig = load_sync_config(config_path)
    return config.cluster_names


def _config_path(args: argparse.Namespace) -> Path:
    if not args.config:
        raise UsageError(f"clusters {args.clusters_command} needs --config FILE (the sync config)")
    return Path(args.config)
