"""``certfleet sync`` (one pass, or a loop) and ``certfleet rekey``.

``sync --once`` runs one pass (for cron or a Lambda-like scheduler); ``--interval 60s``
runs a pass every interval until SIGTERM or SIGINT: the signal sets an Event, every sleep
is ``stop.wait``, so shutdown is immediate between passes; a pass that fails is logged
and retried with a growing backoff. ``--max-seconds N`` is each pass's time budget. The
exit code of ``--once`` is 0 when every order went through (a cluster whose lease another
run holds is skipped, not an error), 1 when an order or cluster failed; 2 for usage and
config errors. With ``--json`` the pass's summary is printed as one JSON object. A pass
that checked a cluster's fleet (``certfleet.sync.fleetcheck``) prints its figures; nodes
with problems do not change the exit code (the run summary's ``fleet_problem_nodes``).
``--verify-store`` makes the pass list the store and read back every object the heads
reference, repairing what is missing or corrupted (``certfleet.sync.audit``).

``rekey --cluster C [ORDER...]`` marks every order of the cluster, or the ORDERs given,
for a new key at the next sync. An ORDER the cluster's sync state does not hold (no key to
replace: a misspelt name, another cluster's order) is refused with exit 2, naming it, and
nothing is marked (``mark_rekey``).
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import signal
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from certfleet.cli.context import Context
from certfleet.cli.errors import UsageError
from certfleet.config.duration import parse_duration
from certfleet.config.errors import DurationError
from certfleet.config.sync import SyncConfig, load_sync_config
from certfleet.sync import RunSummary, UnknownOrderError, mark_rekey, run_sync
from certfleet.sync.errors import printable
from certfleet.sync.summary import FLEET_FIGURES

log = logging.getLogger(__name__)

MAX_BACKOFF = 600.0


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    sync = subparsers.add_parser(
        "sync",
        help="run the central sync: poll the provider, publish bundles",
        description="Poll the provider, make keys and CSRs, publish encrypted bundles and "
        "signed heads to the store of the sync config (--config).",
    )
    mode = sync.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="run one pass and exit (default)")
    mode.add_argument("--interval", metavar="DURATION", help='loop, one pass every "60s", "5m"')
    sync.add_argument(
        "--max-seconds", type=float, metavar="N", help="time budget of each pass, in seconds"
    )
    sync.add_argument(
        "--verify-store",
        action="store_true",
        help="also check every published object now (list, read, hash) and repair what is "
        "missing or corrupted",
    )
    sync.set_defaults(run=run_sync_command)
    rekey = subparsers.add_parser(
        "rekey",
        help="make the next sync replace keys",
        description="Mark every order of the cluster (or the ORDERs given) so that the next "
        "sync generates new keys for them, e.g. after a node was compromised.",
    )
    rekey.add_argument("--cluster", required=True, help="the cluster")
    rekey.add_argument(
        "orders",
        nargs="*",
        metavar="ORDER",
        help="only these orders (each one the sync has published; others are refused)",
    )
    rekey.set_defaults(run=run_rekey_command)


def _config(args: argparse.Namespace, ctx: Context) -> SyncConfig:
    if not args.config:
        raise UsageError(f"{args.command} needs --config FILE (the sync config)")
    config = load_sync_config(Path(args.config))
    if not config.api_key and ctx.environ.get("CERTFLEET_API_KEY"):
        config = replace(config, api_key=ctx.environ["CERTFLEET_API_KEY"])
    return config


def run_sync_command(args: argparse.Namespace, ctx: Context) -> int:
    if args.max_seconds is not None and args.max_seconds <= 0:
        raise UsageError("--max-seconds must be a positive number of seconds")
    interval = None
    if args.interval is not None:
        try:
            interval = parse_duration(args.interval)
        except DurationError as err:
            raise UsageError(f"--interval {args.interval!r}: {err}") from err
        if interval <= 0:
            raise UsageError("--interval must be longer than 0s")
    config = _config(args, ctx)
    if not config.clusters:
        raise UsageError(f"{config.source} has no cluster; add one with certfleet clusters add")
    if interval is None:
        summary = _pass(config, args.max_seconds, verify_store=args.verify_store)
        _report(summary, args, ctx)
        return 0 if summary.ok else 1
    _loop(config, args, ctx, interval)
    return 0


def _pass(config: SyncConfig, max_seconds: float | None, *, verify_store: bool) -> RunSummary:
    deadline = None if max_seconds is None else time.monotonic() + max_seconds
    return run_sync(config, deadline=deadline, verify_store=verify_store)


def _loop(config: SyncConfig, args: argparse.Namespace, ctx: Context, interval: float) -> None:
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        log.info("signal %s: stopping after the current pass", signum)
        stop.set()

    in_main = threading.current_thread() is threading.main_thread()
    previous = (
        {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)} if in_main else {}
    )
    failures = 0
    verify_store = args.verify_store  # until one pass completes
    jitter = random.Random()  # noqa: S311 - spreading wake-ups, not cryptography
    try:
        while not stop.is_set():
            delay = interval
            try:
                summary = _pass(config, args.max_seconds, verify_store=verify_store)
                _report(summary, args, ctx)
                failures = 0
                verify_store = verify_store and not summary.complete
            except Exception as err:
                failures += 1
                delay = min(MAX_BACKOFF, interval * 2**failures)
                log.error("sync pass failed (%s); next try in %.0fs", err, delay)
                log.debug("sync pass failure", exc_info=True)
            stop.wait(delay + jitter.uniform(0, min(5.0, interval / 10)))
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _report(summary: RunSummary, args: argparse.Namespace, ctx: Context) -> None:
    if args.json:
        ctx.say(json.dumps(summary.as_dict(), sort_keys=True))
        ctx.stdout.flush()
        return
    ctx.say(
        f"sync: {summary.orders_seen} orders seen, {summary.keys_generated} keys generated, "
        f"{summary.csrs_submitted} CSRs submitted, {summary.certificates_published} "
        f"certificates published, {summary.tombstones} tombstones, generation "
        f"{summary.generation}, {summary.duration:.1f}s"
    )
    for cluster, figures in sorted(summary.fleet.items()):
        counts = ", ".join(f"{figures[name]} {name}" for name in FLEET_FIGURES[1:-1])
        problems = figures["problem_nodes"]
        hint = f" (certfleet nodes --cluster {cluster})" if problems else ""
        line = f"fleet {cluster}: {figures['nodes']} nodes, {counts}; {problems} with problems"
        ctx.say(line + hint)
    if summary.objects_verified or summary.objects_repaired:
        ctx.note(
            f"store: {summary.objects_verified} objects verified, {summary.objects_repaired} "
            "missing or corrupted (rewritten, or their orders get new keys)"
        )
    for cluster in summary.skipped:
        ctx.note(f"cluster {cluster}: another sync holds the lease; skipped")
    if not summary.complete:
        ctx.note("time budget used up or lease held: the next run continues")
    for subject, message in sorted(summary.errors.items()):
        ctx.note(f"error: {printable(subject)}: {message}")
    ctx.stdout.flush()


def run_rekey_command(args: argparse.Namespace, ctx: Context) -> int:
    config = _config(args, ctx)
    if args.cluster not in config.cluster_names:
        raise UsageError(
            f"--cluster {args.cluster!r} is not in {config.source} "
            f"(clusters: {', '.join(config.cluster_names) or 'none'})"
        )
    try:
        marked = mark_rekey(config, args.cluster, args.orders or None)
    except UnknownOrderError as err:
        raise UsageError(str(err)) from err
    if args.json:
        ctx.say(json.dumps({"cluster": args.cluster, "marked": list(marked)}))
    else:
        ctx.say(
            f"cluster {args.cluster}: {len(marked)} orders marked; "
            "the next sync gives them new keys"
        )
    return 0
