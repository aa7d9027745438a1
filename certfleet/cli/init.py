"""``certfleet init``: write a new sync config with a new publisher signing key (and, with
``--provider acme``, a new ACME account key)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from certfleet.bundle import SigningKey
from certfleet.cli.context import Context
from certfleet.cli.errors import UsageError
from certfleet.cli.syncfile import MODE, render_acme_config, render_sync_config, write_private
from certfleet.config.accountkey import account_key_text, generate_account_key
from certfleet.config.sync import STORE_SCHEMES, parse_sync_config


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subparsers.add_parser(
        "init",
        help="write a new sync config (mode 0600) with a new signing key",
        description="Write the sync config named by --config: API key and endpoint (or, with "
        "--provider acme, the ACME directory, e-mail and a new EC P-256 account key), store, "
        "and a new Ed25519 publisher signing key; no network. An existing file is kept "
        "unless --force.",
    )
    parser.add_argument(
        "--store", required=True, metavar="URL", help="s3://BUCKET/PREFIX or file:///PATH"
    )
    parser.add_argument("--store-endpoint", metavar="URL", help="for S3-compatible stores")
    parser.add_argument(
        "--provider", choices=("sslmate", "acme"), default="sslmate", help="default: sslmate"
    )
    parser.add_argument("--api-endpoint", metavar="URL", help="APIv3 (required for sslmate)")
    parser.add_argument(
        "--api-key", metavar="KEY", help="the provider API key; '-' reads stdin (sslmate)"
    )
    parser.add_argument("--acme-directory", metavar="URL", help="the ACME CA's directory URL")
    parser.add_argument("--acme-email", metavar="EMAIL", help="contact for the ACME account")
    parser.add_argument(
        "--acme-ca-bundle", metavar="FILE", help="trust for the ACME server's own HTTPS"
    )
    parser.add_argument("--force", action="store_true", help="replace an existing config")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, ctx: Context) -> int:
    if not args.config:
        raise UsageError("init needs --config FILE: the sync config to write")
    path = Path(args.config)
    _check_url(args.store, "--store", STORE_SCHEMES)
    if args.store_endpoint:
        _check_url(args.store_endpoint, "--store-endpoint", ("http", "https"))
        if not args.store.startswith("s3://"):
            raise UsageError("--store-endpoint applies to s3:// stores only")
    signing_key = SigningKey.generate()
    if args.provider == "acme":
        text = _acme_config(args, signing_key)
    else:
        if not args.api_endpoint or not args.api_key:
            raise UsageError("init needs --api-endpoint and --api-key (or --provider acme)")
        api_key = ctx.stdin.readline().strip() if args.api_key == "-" else args.api_key
        if not api_key:
            raise UsageError("--api-key is empty")
        _check_url(args.api_endpoint, "--api-endpoint", ("http", "https"))
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
        if args.provider == "acme":
            ctx.note(f"then: certfleet acme thumbprint --config {path} (for HTTP-01)")
    return 0


def _acme_config(args: argparse.Namespace, signing_key: SigningKey) -> str:
    """The text of a new ACME-mode sync config, with a new EC P-256 account key."""
    if not args.acme_directory or not args.acme_email:
        raise UsageError("--provider acme needs --acme-directory URL and --acme-email EMAIL")
    _check_url(args.acme_directory, "--acme-directory", ("http", "https"))
    if args.acme_ca_bundle and not Path(args.acme_ca_bundle).is_file():
        raise UsageError(f"--acme-ca-bundle {args.acme_ca_bundle!r} is not a file")
    return render_acme_config(
        store=args.store,
        store_endpoint=args.store_endpoint,
        signing_key=signing_key.export(),
        directory=args.acme_directory,
        email=args.acme_email,
        account_key=account_key_text(generate_account_key()),
        ca_bundle=str(Path(args.acme_ca_bundle).resolve()) if args.acme_ca_bundle else None,
    )


def _check_url(value: str, option: str, schemes: tuple[str, ...]) -> None:
    parts = urlsplit(value)
    if parts.scheme not in schemes or not (parts.netloc or parts.path):
        raise UsageError(
            f"{option} {value!r} is not a URL of scheme {', '.join(s + '://' for s in schemes)}"
        )
