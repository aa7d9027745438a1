"""``certfleet acme thumbprint``: the ACME account key's RFC 7638 thumbprint, no network.

Frontends answer HTTP-01 with ``TOKEN.THUMBPRINT`` (docs/acme.md); this prints exactly the
thumbprint on stdout, nothing else, so that ``$(certfleet acme thumbprint ...)`` works.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from certfleet.cli.context import Context
from certfleet.cli.errors import UsageError
from certfleet.config.accountkey import load_account_key, thumbprint
from certfleet.config.sync import load_sync_config


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subparsers.add_parser("acme", help="the ACME provider's account")
    commands = parser.add_subparsers(dest="acme_command", metavar="COMMAND", required=True)
    thumb = commands.add_parser(
        "thumbprint",
        help="print the account key's RFC 7638 thumbprint (for HTTP-01 snippets)",
        description="Print only the thumbprint (base64url) of the sync config's ACME "
        "account key; no network.",
    )
    thumb.set_defaults(run=run_thumbprint)


def run_thumbprint(args: argparse.Namespace, ctx: Context) -> int:
    if not args.config:
        raise UsageError("acme thumbprint needs --config FILE: the sync config")
    config = load_sync_config(Path(args.config))
    if config.acme is None:
        raise UsageError(f"{args.config} has no acme block (certfleet init --provider acme)")
    value = thumbprint(load_account_key(config.acme.account_key))
    ctx.say(json.dumps({"thumbprint": value}) if args.json else value)
    return 0
