"""``certfleet clusters add | list | show``: the clusters of the sync config.

``clusters add`` and ``clusters show`` print on stdout only the stanza for the agents'
config (so it can be redirected into a file); everything else goes to stderr. ``show``
prints the stanza of a cluster that already exists, for a server added later: while a
cluster secret is being rotated the sync config lists several secrets (newest first), and
the stanza lists them all in the same order, as a node needs them then.

``clusters add NAME --secret ID:BASE64`` adopts an existing secret instead of making one:
the one ``sslmate clusters add`` printed, so the nodes of an SSLMate cluster keep the
secret they have. It is checked like any cluster secret (base64url or standard base64, 32
bytes), written back in the canonical base64url form, and never shown in an error.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from certfleet.bundle import ClusterSecret, FormatError, validate_cluster_name
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
        help="add a cluster with a new (or an existing) secret; print its agent config stanza",
        description="Add a cluster with a new random secret (or, with --secret, an existing "
        "one) to the sync config (--config) and print on stdout only the cluster stanza for "
        "the agents' config.",
    )
    add.add_argument("name", metavar="NAME")
    add.add_argument(
        "--secret",
        metavar="ID:BASE64",
        help="adopt this existing cluster secret (e.g. the one `sslmate clusters add` "
        "printed) instead of making a new one; '-' reads it from stdin",
    )
    add.set_defaults(run=run_add)
    listing = actions.add_parser("list", help="list the sync config's clusters")
    listing.set_defaults(run=run_list)
    show = actions.add_parser(
        "show",
        help="print an existing cluster's agent config stanza",
        description="Print on stdout only the cluster stanza for the agents' config of a "
        "cluster of the sync config (--config): its secrets (all of them, newest first, "
        "during a rotation) and the publisher key.",
    )
    show.add_argument("name", metavar="NAME")
    show.set_defaults(run=run_show)


def run_add(args: argparse.Namespace, ctx: Context) -> int:
    name = validate_cluster_name(args.name)
    path = _config_path(args)
    original = read_config_text(path)
    config = parse_sync_config(original, str(path))
    if name in config.cluster_names:
        raise UsageError(f"{path} already has a cluster {name!r}")
    secret = _given_secret(args.secret, ctx) if args.secret else None
    if secret is not None:
        for other in config.clusters:
            if secret in other.secrets or any(secret.key == s.key for s in other.secrets):
                raise UsageError(f"--secret is already a secret of cluster {other.name!r}")
    else:
        secret = ClusterSecret.generate(new_secret_id())
    text = with_cluster(original, name, secret.export())
    parse_sync_config(text, str(path))  # what is written must load
    write_private(path, text, overwrite=True)
    publisher = config.signing_key.public_key().export()
    if args.json:
        ctx.say(json.dumps({"cluster": name, "secret": secret.export(), "publisher": publisher}))
    else:
        ctx.stdout.write(agent_stanza(name, [secret.export()], publisher))
    if args.secret:
        ctx.note(
            f"added cluster {name!r} with the existing secret (id {secret.id}) to {path}; "
            "its nodes keep their secret and add the stanza's publisher line"
        )
    else:
        ctx.note(
            f"added cluster {name!r} (secret id {secret.id}) to {path}; "
            "put the stanza above into each of its nodes' certfleet-agent.conf"
        )
    return 0


def _given_secret(text: str, ctx: Context) -> ClusterSecret:
    """The ``--secret`` value ('-': the first line of stdin), checked; errors never echo it."""
    if text == "-":
        text = ctx.stdin.readline()
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1]  # pasted with the config file's quotes
    try:
        return ClusterSecret.parse(text)
    except FormatError as err:
        raise UsageError(f"--secret: {err}") from err


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


def run_show(args: argparse.Namespace, ctx: Context) -> int:
    config = load_sync_config(_config_path(args))
    if args.name not in config.cluster_names:
        raise UsageError(
            f"{config.source} has no cluster {args.name!r} "
            f"(clusters: {', '.join(config.cluster_names) or 'none'})"
        )
    secrets = [secret.export() for secret in config.cluster(args.name).secrets]
    publisher = config.signing_key.public_key().export()
    if args.json:
        ctx.say(json.dumps({"cluster": args.name, "secrets": secrets, "publisher": publisher}))
    else:
        ctx.stdout.write(agent_stanza(args.name, secrets, publisher))
    if len(secrets) > 1:
        ctx.note(
            f"cluster {args.name!r} has {len(secrets)} secrets (a rotation is under way): "
            "the stanza lists them all, newest first, as its nodes need them until the old "
            "one is retired"
        )
    return 0


def agent_stanza(name: str, secrets: Sequence[str], publisher: str) -> str:
    """The ``cluster`` block for a node agent's config: one secret as a string, several
    (during a rotation, newest first) as a list."""
    quoted = [hcl_string(secret, "secret", secret=True) for secret in secrets]
    secret = quoted[0] if len(quoted) == 1 else f"[{', '.join(quoted)}]"
    return (
        f'cluster "{name}" {{\n'
        f"  secret    = {secret}\n"
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
