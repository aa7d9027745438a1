"""``certfleet-agent``: the command line of the node agent.

    certfleet-agent [--config FILE] [--once | --check-config | --status [--json]]
                    [--pidfile FILE] [--syslog] [--readyfd N] [--verbose]

Exit status: 0 when everything is installed or deferred (a daemon: when stopped by SIGTERM
or SIGINT), 1 when something was refused or failed (after everything else was installed),
the agent could not run, or the pid file names a running agent; 2 for a usage or config
error; 141 (128 + SIGPIPE, what the shell reports for ``cat`` or ``grep`` in the same spot),
with nothing on stderr, when stdout is a pipe whose reader closed it early
(``--status --json | head -1``; ``certfleet.pipe``). ``--check-config`` reads the config
file and nothing else (no state directory, no network) and names file, line and option for
every error. ``--status`` reads the config and the state directory, and nothing else (no
network, no writes).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import stat
import sys
import time
from collections.abc import Sequence

from certfleet import __version__
from certfleet.config import AgentConfig, ConfigError, load_agent_config
from certfleet.errors import CertfleetError, printable
from certfleet.pipe import run_until_stdout_closes
from node_agent.agent import Agent
from node_agent.daemon import Daemon
from node_agent.pidfile import PidFile
from node_agent.secretproof import prove_secrets, trust_digest
from node_agent.status import build_status, format_status

log = logging.getLogger("node_agent")

DEFAULT_CONFIG = "/etc/certfleet/certfleet-agent.conf"
SYSLOG_SOCKET = "/dev/log"
SYSLOG_IDENT = "certfleet-agent"
EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_USAGE = 2
_MAX_LOG_MESSAGE = 16 * 1024


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="certfleet-agent",
        description="Pull certificates and keys published by certfleet, verify and install them.",
    )
    parser.add_argument(
        "--config", default=DEFAULT_CONFIG, metavar="FILE", help=f"default {DEFAULT_CONFIG}"
    )
    parser.add_argument("--version", action="version", version=f"certfleet-agent {__version__}")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="run one poll and exit")
    mode.add_argument(
        "--check-config",
        action="store_true",
        help="check the config's syntax, types and values (no disk, no network) and exit",
    )
    mode.add_argument(
        "--status",
        action="store_true",
        help="show what this node holds, from its state directory only (no network)",
    )
    parser.add_argument("--json", action="store_true", help="with --status: print JSON")
    parser.add_argument(
        "--pidfile",
        metavar="FILE",
        help="write the PID here; refuse to start while the PID in it is a running agent",
    )
    parser.add_argument(
        "--syslog", action="store_true", help=f"log to syslog ({SYSLOG_SOCKET}), not stderr"
    )
    parser.add_argument(
        "--readyfd",
        type=int,
        metavar="N",
        help="write a newline to file descriptor N after the first poll, then close it",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    return parser


class EscapingFormatter(logging.Formatter):
    """Escapes every log message (``printable``): a message may quote a store server, an
    object or a command's output, and one log line must stay one line, without terminal
    escapes or bidi overrides. Tracebacks (the agent's own code) are kept as they are."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = printable(record.message, _MAX_LOG_MESSAGE)
        return super().formatMessage(record)


def configure_logging(verbose: bool, use_syslog: bool = False) -> None:
    level = logging.DEBUG if verbose else logging.INFO
    handler: logging.Handler | None = None
    fallback = ""
    if use_syslog:
        from logging.handlers import SysLogHandler  # only here: ~2 MB for an idle agent

        try:
            if not stat.S_ISSOCK(os.stat(SYSLOG_SOCKET).st_mode):
                raise OSError(f"{SYSLOG_SOCKET} is not a socket")
            handler = SysLogHandler(address=SYSLOG_SOCKET, facility=SysLogHandler.LOG_DAEMON)
        except OSError as err:
            fallback = f"cannot log to syslog at {SYSLOG_SOCKET} ({err}); logging to stderr"
        else:
            handler.ident = f"{SYSLOG_IDENT}[{os.getpid()}]: "
            handler.setFormatter(EscapingFormatter("%(levelname)s %(name)s: %(message)s"))
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(EscapingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])
    if not verbose:
        for noisy in ("botocore", "boto3", "urllib3", "s3transfer"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    if fallback:
        log.warning("%s", fallback)


def load_config(path: str) -> AgentConfig | None:
    """The config, or None after printing its errors (the caller exits 2)."""
    try:
        config = load_agent_config(path)
    except ConfigError as err:
        print(err, file=sys.stderr)
        return None
    for notice in config.notices:
        print(f"notice: {notice}", file=sys.stderr)
    return config


def run_once(config: AgentConfig) -> int:
    agent = Agent(config)
    # Only the clusters whose secrets changed since they were last proven: an idle run from
    # cron stays one conditional GET per head.
    digests = {trust.name: trust_digest(trust) for trust in config.clusters}
    unproven = [name for name, digest in digests.items() if agent.proven(name) != digest]
    if unproven:
        proof = prove_secrets(config, agent.store, clusters=unproven)
        for notice in proof.notices:
            print(f"certfleet-agent: notice: {printable(notice)}", file=sys.stderr)
        if not proof.ok:
            for error in proof.errors:
                print(f"certfleet-agent: config error: {printable(error)}", file=sys.stderr)
            return EXIT_USAGE
        for name in proof.proven:
            agent.remember_proven(name, digests[name])
    result = agent.poll_once()
    for problem in result.problems:
        print(f"certfleet-agent: {problem.kind}: {printable(problem.message)}", file=sys.stderr)
    return EXIT_OK if result.ok else EXIT_PROBLEMS


def run_status(config: AgentConfig, as_json: bool) -> int:
    status = build_status(config, now=int(time.time()))
    if as_json:
        print(json.dumps(status, indent=2, sort_keys=True))
    else:
        sys.stdout.write(format_status(status))
    return EXIT_OK


def ready_notifier(fd: int) -> None:
    """Write the readiness newline to ``fd`` and close it (``--readyfd``)."""
    try:
        os.write(fd, b"\n")
        os.close(fd)
    except OSError as err:
        log.warning("cannot signal readiness on file descriptor %d: %s", fd, err)
        return
    log.debug("readiness signalled on file descriptor %d", fd)


def run_daemon(config_path: str, config: AgentConfig, readyfd: int | None) -> int:
    ready = None if readyfd is None else (lambda: ready_notifier(readyfd))
    daemon = Daemon(config_path, config, ready=ready)
    daemon.install_signal_handlers()  # SIGTERM during the proof cancels its store requests
    if not daemon.prove_start():
        print(f"certfleet-agent: {config_path}: a cluster secret opens nothing in the store "
              "(see the errors above); not started", file=sys.stderr)  # fmt: skip
        return EXIT_USAGE
    return EXIT_OK if daemon.run() else EXIT_PROBLEMS


def _check_usage(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.json and not args.status:
        parser.error("--json goes with --status")
    if args.readyfd is not None:
        if args.once or args.check_config or args.status:
            parser.error("--readyfd goes with the daemon (no --once, --check-config, --status)")
        try:
            os.fstat(args.readyfd)
        except OSError:
            parser.error(f"--readyfd {args.readyfd}: not an open file descriptor")


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    if config is None:
        return EXIT_USAGE
    if args.check_config:
        print(f"{args.config}: OK")
        return EXIT_OK
    pidfile = PidFile(args.pidfile) if args.pidfile and not args.status else None
    try:
        if args.status:
            return run_status(config, args.json)
        if pidfile is not None:
            pidfile.acquire()
        if args.once:
            return run_once(config)
        return run_daemon(args.config, config, args.readyfd)
    except CertfleetError as err:
        if args.syslog:
            log.error("%s", err)
        print(f"certfleet-agent: {err}", file=sys.stderr)
        return EXIT_PROBLEMS
    finally:
        if pidfile is not None:
            pidfile.release()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_usage(parser, args)
    if not (args.check_config or args.status):
        configure_logging(args.verbose, args.syslog)
    return run_until_stdout_closes(lambda: run(args))
