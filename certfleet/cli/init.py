"""``certfleet init``: write a new sync config with a new publisher signing key."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from certfleet.bundle import SigningKey
from certfleet.cli.context import Context
from certfleet.cli.errors import UsageError
from certfleet.cli.syncfile import MODE, render_sync_config, write_private
from certfleet.config.sync import STORE_SCHEMES, parse_sync_config


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subparsers.add_parser(
        "init",
        help="write a new sync config (mode 0600) with a new signing key",
        description="Write the sync config named by --config: API key and endpoint, store, "
        "and a new Ed25519 publisher signing key. An existing file is kept unless --force.",
    )
    parser.add_argument(
        "--store", required=True, metavar="URL", help="s3://BUCKET/PREFIX or file:///PATH"
    )
    parser.add_argument("--store-endpoint", metavar="URL", help="for S3-compatible stores")
    parser.add_argument("--api-endpoint", required=True, metavar="URL")
    parser.add_argument(
        "--api-key", required=True, metavar="KEY", help="the provider API key; '-' reads stdin"
    )
    parser.add_argument("--force", action="store_true", help="replace an existing config")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, ctx: Context) -> int:
    if not args.config:
        raise UsageError("init needs --config FILE: the sync config to write")
    path = Path(args.config)
    api_key = ctx.stdin.readline().strip() if args.api_key == "-" else args.api_key
    if not api_key:
        raise UsageError("--api-key is empty")
    _check_url(args.api_endpoint, "--api-endpoint", ("http", "https"))
    _check_url(args.store, "--store", STORE_SCHEMES)
    if args.store_endpoint:
        _check_url(args.store_endpoint, "--store-endpoint", ("http", "https"))
    signing_key = SigningKey.generate()
    text = render_sync_config(
        api_key=api_key,
        api_endpoint=args.api_endpoint,
        store=args.store,
        store_endpoint=args.store_endpoint,
        signing_key=signing_key.export(),
    )
    parse_sync_config(text, str(path))  # what is written must load
    if path.exists() and not args.force:
        raise UsageError(f"{path} already exists; pass --force to replace it")
    try:
        write_private(path, text, overwrite=args.force)
    except FileExistsError as err:
        raise UsageError(f"{path} already exists; pass --force to replace it") from err
    publisher = signing_key.public_key().export()
    if args.json:
        ctx.say(json.dumps({"config": str(path), "mode": f"{MODE:04o}", "publisher": publisher}))
    else:
        ctx.say(f"wrote {path} (mode {MODE:04o}) with a new signing key")
        ctx.say(f"publisher {publisher}")
        ctx.note(f"next: certfleet clusters add NAME --config {path}")
    return 0


def _check_url(value: str, option: str, schemes: tuple[str, ...]) -> None:
    parts = urlsplit(value)
    if parts.scheme not in schemes or not (parts.netloc or parts.path):
        raise UsageError(
            f"{option} {value!r} is not a URL of scheme {', '.join(s + '://' for s in schemes)}"
        )
