"""``certfleet doctor --api``: check, read-only, that the provider answers as modeled.

The API key and endpoint come from where every order command finds them (``--config``, the
environment, ``~/.certfleet``, ``~/.sslmate``); the cluster from ``--cluster``, else the sync
config's first cluster, else none (the listing of every order). The report goes to stdout,
one line per call (``--json``: one document); the provider's text in it is escaped. Exit 0
when every exercised call answered as modeled, 1 otherwise, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from certfleet.apiv3 import ApiClient, RetryPolicy
from certfleet.apiv3.conformance import AS_MODELED, DIFFERENT, SKIPPED, check_api, failed
from certfleet.bundle import validate_cluster_name
from certfleet.cli.context import Context
from certfleet.cli.errors import UsageError
from certfleet.cli.settings import resolve_api
from certfleet.config.sync import load_sync_config

COMMAND = "doctor"
DOCTOR_RETRY = RetryPolicy(max_attempts=2, max_seconds=20.0, base_delay=0.5, max_delay=2.0)
_SHOWN = {
    AS_MODELED: "answered as modeled",
    DIFFERENT: "ANSWERED DIFFERENTLY",
    SKIPPED: "skipped",
}


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subparsers.add_parser(
        COMMAND,
        help="check, read-only, that the provider answers the APIv3 calls as modeled",
        description="With --api: send each read-only APIv3 call certfleet uses (list a "
        "cluster's orders, get an order, an unknown order, an unknown certificate, Basic "
        "and no auth) and report per call: answered as modeled, answered differently (how), "
        "or not reachable. Nothing is written. Exit 0 when every call answered as modeled.",
    )
    parser.add_argument(
        "--api", action="store_true", help="check the provider's APIv3 (the only check so far)"
    )
    parser.add_argument("--cluster", metavar="C", help="the cluster whose orders are listed")
    parser.set_defaults(run=run_doctor)


def run_doctor(args: argparse.Namespace, ctx: Context) -> int:
    if not args.api:
        raise UsageError("doctor needs --api (what to check)")
    settings = resolve_api(args.config, ctx.environ, ctx.home)
    cluster = _cluster(args)
    try:
        client = ApiClient(
            settings.endpoint, settings.api_key, retry=DOCTOR_RETRY, read_timeout=15.0
        )
    except ValueError as err:
        raise UsageError(
            f"API endpoint {settings.endpoint!r} (from {settings.source}): {err}"
        ) from err
    with client:
        findings = check_api(client, settings.api_key, cluster)
    bad = failed(findings)
    exercised = [f for f in findings if f.outcome != SKIPPED]
    if args.json:
        document = {
            "endpoint": settings.endpoint,
            "cluster": cluster,
            "ok": not bad,
            "calls": [finding.to_json() for finding in findings],
        }
        ctx.say(json.dumps(document, indent=2))
    else:
        where = "every cluster" if cluster is None else f"cluster {cluster}"
        ctx.say(f"APIv3 at {settings.endpoint} (key from {settings.source}), {where}:")
        width = max(len(f.call) for f in findings)
        for finding in findings:
            outcome = _SHOWN.get(finding.outcome, "NOT REACHABLE")
            ctx.say(
                f"  {finding.source:<10}  {finding.call.ljust(width)}  {outcome}: "
                f"{_printable(finding.detail)}"
            )
        if bad:
            ctx.say(f"{len(bad)} of {len(exercised)} calls did not answer as modeled")
        else:
            ctx.say(f"all {len(exercised)} calls answered as modeled")
    return 1 if bad else 0


def _cluster(args: argparse.Namespace) -> str | None:
    if args.cluster is not None:
        return validate_cluster_name(args.cluster)
    if args.config is not None:
        names = load_sync_config(args.config).cluster_names
        return names[0] if names else None
    return None


def _printable(text: str, limit: int = 300) -> str:
    """``text`` with non-printable characters escaped, cut to about ``limit`` characters."""
    shown = "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)
    return shown if len(shown) <= limit else shown[:limit] + "...(cut)"
