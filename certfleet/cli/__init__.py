"""The admin CLI ``certfleet`` (README.md "Operate", docs/operations.md).

``main`` is the only place that reads the environment and the standard streams, and the
only place that configures logging; each subcommand module registers its parsers with
``set_defaults(run=FUNC)``, ``FUNC(args, ctx) -> exit code``. Exit codes: 0 success, 1 an
API or runtime error, 2 a usage, config or input error, 141 (128 + SIGPIPE, as the shell
reports for ``cat`` or ``grep``) with nothing on stderr when stdout is a pipe whose reader
closed it early (``certfleet list | head -1``; ``certfleet.pipe``). Errors are one line on
stderr that names what is wrong; no traceback (unless -vv), never a secret.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from certfleet import __version__
from certfleet.apiv3 import ApiError, Unauthorized
from certfleet.bundle import FormatError
from certfleet.cli import (
    acme,
    apikeys,
    clusters,
    doctor,
    init,
    nodes,
    orders,
    registry,
    sandbox,
    serve,
    sync,
)
from certfleet.cli.context import Context
from certfleet.cli.errors import CliError
from certfleet.config.errors import ConfigError
from certfleet.errors import CertfleetError
from certfleet.pipe import run_until_stdout_closes

log = logging.getLogger(__name__)

PROG = "certfleet"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Manage certfleet: the sync config, clusters, and orders at the "
        "certificate provider (SSLMate APIv3, or the local sandbox).",
    )
    parser.add_argument("--version", action="version", version=f"certfleet {__version__}")
    _add_common_options(parser, top=True)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in (
        init, clusters, orders, apikeys, serve, registry, sync, nodes, doctor, acme, sandbox,
    ):  # fmt: skip
        module.register(subparsers)
    for name, subparser in subparsers.choices.items():
        if name != sandbox.COMMAND:
            _add_common_everywhere(subparser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``certfleet`` command; returns the exit code."""
    return run_until_stdout_closes(lambda: _main(argv))


def _main(argv: Sequence[str] | None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == [sandbox.COMMAND]:
        return sandbox.delegate(args_list[1:])
    ctx = Context(
        environ={k: v for k, v in os.environ.items() if k.startswith("CERTFLEET_")},
        home=Path(os.path.expanduser("~")),
        stdin=sys.stdin,
        stdout=sys.stdout,
        stderr=sys.stderr,
    )
    parser = build_parser()
    try:
        args = parser.parse_args(args_list)
    except SystemExit as stop:  # --help, --version (0) or a usage error (2)
        return stop.code if isinstance(stop.code, int) else 2
    package = logging.getLogger("certfleet")
    level = package.level
    handler = _log_to(ctx.stderr, args.verbose)
    try:
        return _run(args, ctx)
    finally:
        package.removeHandler(handler)
        package.setLevel(level)


def _run(args: argparse.Namespace, ctx: Context) -> int:
    try:
        code: int = args.run(args, ctx)
        return code
    except BrokenPipeError:
        raise  # stdout's reader went away: main ends quietly (certfleet.pipe)
    except CliError as err:
        _error(ctx, str(err))
        return err.exit_code
    except (ConfigError, FormatError) as err:
        _error(ctx, str(err))
        return 2
    except Unauthorized as err:
        _error(ctx, f"{err} (check the API key)")
        return 1
    except ApiError as err:
        _error(ctx, str(err))
        return 1
    except CertfleetError as err:
        _error(ctx, str(err))
        return 1
    except OSError as err:
        where = f" {err.filename}" if err.filename else ""
        _error(ctx, f"{err.strerror or type(err).__name__}:{where}")
        return 1
    except KeyboardInterrupt:
        _error(ctx, "interrupted")
        return 130
    except Exception as err:
        log.debug("unexpected error", exc_info=True)
        _error(ctx, f"internal error ({type(err).__name__}); run with -vv for details")
        return 1


def _error(ctx: Context, message: str) -> None:
    ctx.note(f"{PROG}: error: {message}")


def _add_common_options(parser: argparse.ArgumentParser, *, top: bool = False) -> None:
    """``--config``, ``--json``, ``-v``: on the top parser with defaults, on subcommands
    with SUPPRESS so that a value given before the subcommand is not reset after it."""

    def default(value: Any) -> Any:
        return value if top else argparse.SUPPRESS

    options: list[tuple[tuple[str, ...], dict[str, Any]]] = [
        (("--config",), {"metavar": "FILE", "default": default(None), "help": "the sync config"}),
        (("--json",), {"action": "store_true", "default": default(False), "help": "JSON output"}),
        (
            ("-v", "--verbose"),
            {"action": "count", "default": default(0), "help": "more logging (-vv: debug)"},
        ),
    ]
    for flags, kwargs in options:
        try:
            parser.add_argument(*flags, **kwargs)
        except argparse.ArgumentError:
            pass  # the subcommand defines it itself


def _add_common_everywhere(parser: argparse.ArgumentParser) -> None:
    """The common options on ``parser`` and on every parser below it, so that they work
    after any word of a command: ``certfleet clusters --config F add NAME`` as well as
    ``certfleet clusters add NAME --config F``."""
    nested = [
        action for action in parser._actions if isinstance(action, argparse._SubParsersAction)
    ]
    _add_common_options(parser)
    for action in nested:
        for subparser in action.choices.values():
            _add_common_everywhere(subparser)


def _log_to(stream: Any, verbosity: int) -> logging.Handler:
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter(f"{PROG}: %(levelname)s: %(message)s"))
    package = logging.getLogger("certfleet")
    package.addHandler(handler)
    package.setLevel(
        logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    )
    return handler
