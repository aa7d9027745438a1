"""``certfleet sandbox``: the local APIv3 test double; every argument goes to
``certfleet.sandbox.main``."""

from __future__ import annotations

import argparse
from typing import Any

from certfleet.cli.context import Context

COMMAND = "sandbox"


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """List the subcommand in ``certfleet --help``; ``main`` hands it over before parsing."""
    parser = subparsers.add_parser(
        COMMAND,
        help="run the local APIv3 sandbox (a test double, not SSLMate)",
        add_help=False,
    )
    parser.add_argument("arguments", nargs=argparse.REMAINDER)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, ctx: Context) -> int:
    return delegate(list(args.arguments))


def delegate(argv: list[str]) -> int:
    from certfleet import sandbox

    try:
        return sandbox.main(argv)
    except SystemExit as stop:  # its argparse: --help (0) or bad options (2)
        return stop.code if isinstance(stop.code, int) else 2
