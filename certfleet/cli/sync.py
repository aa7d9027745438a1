"""``certfleet sync`` and ``certfleet rekey``: PLACEHOLDER, owned by the sync engine.

The sync engineer replaces this file. The contract with the dispatcher
(``certfleet.cli.__init__``): ``register(subparsers)`` adds the subcommands to the
argparse sub-parsers action and gives each parser ``set_defaults(run=FUNC)``, where
``FUNC(args: argparse.Namespace, ctx: certfleet.cli.context.Context) -> int`` returns the
exit code (or raises: ``UsageError``/``ConfigError`` → 2, any other ``CertfleetError`` → 1).
The dispatcher adds ``--config FILE``, ``--json`` and ``-v`` to every parser that lacks
them (``args.config``, ``args.json``, ``args.verbose``).
"""

from __future__ import annotations

import argparse
from typing import Any

from certfleet.cli.context import Context


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    sync = subparsers.add_parser("sync", help="run the central sync (not available yet)")
    sync.add_argument("--once", action="store_true")
    sync.add_argument("--interval")
    sync.add_argument("--max-seconds", type=float)
    sync.set_defaults(run=_unavailable)
    rekey = subparsers.add_parser("rekey", help="replace a cluster's keys (not available yet)")
    rekey.add_argument("--cluster", required=True)
    rekey.add_argument("orders", nargs="*", metavar="ORDER")
    rekey.set_defaults(run=_unavailable)


def _unavailable(args: argparse.Namespace, ctx: Context) -> int:
    ctx.note(f"certfleet: {args.command}: not available yet")
    return 1
