"""``certfleet-agent``: the command line of the node agent.

    certfleet-agent [--config FILE] [--once | --check-config] [--verbose]

Exit status: 0 when everything is installed or deferred, 1 when something was refused or
failed (after everything else was installed) or the agent could not run, 2 for a usage or
config error. ``--check-config`` reads the config file and nothing else (no state
directory, no network) and names file, line and option for every error.

``build_parser`` and ``run`` are the seams for daemon options (pidfile, syslog, readyfd,
status): add arguments to the parser, and steps around ``run_daemon``.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from certfleet.config import AgentConfig, ConfigError, load_agent_config
from certfleet.errors import CertfleetError
from node_agent.agent import Agent
from node_agent.loop import Schedule, run_loop

log = logging.getLogger("node_agent")

DEFAULT_CONFIG = "/etc/certfleet/certfleet-agent.conf"
EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="certfleet-agent",
        description="Pull certificates and keys published by certfleet, verify and install them.",
    )
    parser.add_argument(
        "--config", default=DEFAULT_CONFIG, metavar="FILE", help=f"default {DEFAULT_CONFIG}"
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="run one poll and exit")
    mode.add_argument(
        "--check-config",
        action="store_true",
        help="check the config's syntax, types and values (no disk, no network) and exit",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    return parser


def configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not verbose:
        for noisy in ("botocore", "boto3", "urllib3", "s3transfer"):
            logging.getLogger(noisy).setLevel(logging.WARNING)


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
    result = Agent(config).poll_once()
    for problem in result.problems:
        print(f"certfleet-agent: {problem.kind}: {problem.message}", file=sys.stderr)
    return EXIT_OK if result.ok else EXIT_PROBLEMS


def install_stop_handlers(stop: threading.Event) -> None:
    """SIGTERM and SIGINT finish the current step, then the loop ends."""

    def handler(signum: int, frame: FrameType | None) -> None:
        log.info("signal %d: stopping after the current step", signum)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def run_daemon(config: AgentConfig, stop: threading.Event) -> int:
    agent = Agent(config)
    log.info(
        "certfleet-agent polling %s every %.0f s (node id %s)",
        agent.store.url,
        config.poll_interval,
        agent.node_id,
    )
    run_loop(agent.poll_once, Schedule(config.poll_interval), stop)
    log.info("certfleet-agent stopped")
    return EXIT_OK


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    if config is None:
        return EXIT_USAGE
    if args.check_config:
        print(f"{args.config}: OK")
        return EXIT_OK
    try:
        if args.once:
            return run_once(config)
        stop = threading.Event()
        install_stop_handlers(stop)
        return run_daemon(config, stop)
    except CertfleetError as err:
        print(f"certfleet-agent: {err}", file=sys.stderr)
        return EXIT_PROBLEMS


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.check_config:
        configure_logging(args.verbose)
    return run(args)
