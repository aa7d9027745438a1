"""Sync engine figures: no-change runs over N orders, new-order throughput, budgeted runs.

Run: .venv/bin/python bench/bench_sync.py [--sizes 1000,10000] [--new 100]
                                          [--resume 1000] [--budget 10] [--json]

Starts its own SeaweedFS (``weed mini``) and sandbox on 127.0.0.1. For each size N, a
cluster of N orders is bulk-created straight in the sandbox's data directory and
published by a first run (timed, but not the point); then a run with nothing to change is
measured: wall time, provider calls, store reads and writes. Its peak memory is measured
on a second, identical no-change run under ``tracemalloc`` (the peak of Python's own
allocations during the run, above what was allocated before it; not the process RSS, and
not traced during the timed run, which tracing would slow down). Then ``--new`` fresh
orders are issued in each of two clusters, one RSA-2048 and one ECDSA P-256, and orders
per second reported.

The no-change figures at 100,000 orders are estimated, not measured: a straight line
through the two largest sizes (``no_change_estimate_100000``), because the first
publication of 100,000 orders alone takes about half an hour here. Every figure of a
no-change run is linear in N (one listing, one state, one comparison per order).

``--resume N`` (default 1,000) new orders are then published by runs of ``--budget`` seconds
each (the deadline ``certfleet sync --max-seconds`` sets), until a run publishes nothing;
then a run with ``verify_store`` reads back every object the head references. Reported: runs,
orders per run, whether every order was published once and the store verified, and the runs
100,000 new orders would take with a 300 s budget at the measured rate.

Human-readable lines go to stdout; with ``--json`` the last stdout line is one JSON object:
``{"no_change": [{"orders", "wall_seconds", "provider_calls", "store_reads",
"store_writes", "peak_memory_mb"}, ...], "new_orders": {"rsa": {"orders",
"orders_per_second"}, "ecdsa": {...}}, "peak_memory_method": "tracemalloc"}``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import tracemalloc
from functools import partial
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from certfleet.apiv3 import ApiClient
from certfleet.bundle import ClusterSecret, SigningKey
from certfleet.config.sync import ClusterSyncConfig, SyncConfig
from certfleet.sandbox.state import bulk_create, numbered_specs
from certfleet.store import open_store
from certfleet.sync import RunSummary, run_sync
from certfleet.sync.apiv3_provider import ApiV3Provider
from tests.plugins.binaries import require_binary
from tests.plugins.sandbox import Sandbox
from tests.plugins.seaweedfs import SeaweedFS

MB = 1024 * 1024
RESUME_LIMIT_SECONDS = 300.0  # the budgeted runs give up after this long (and say so)


def line(label: str, summary: RunSummary) -> str:
    return (
        f"{label}: {summary.duration:.2f} s, {summary.orders_seen} orders seen, "
        f"{summary.certificates_published} published, provider calls {summary.provider_calls}, "
        f"store reads {summary.store_reads}, writes {summary.store_writes}, "
        f"requests {summary.store_requests}, errors {len(summary.errors)}"
    )


def traced_peak_mb(action: Callable[[], RunSummary]) -> tuple[RunSummary, float]:
    """Run ``action`` under tracemalloc: its summary, and the peak in MB of the memory
    allocated during it (objects that existed before it are not counted)."""
    tracemalloc.start()
    try:
        summary = action()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return summary, peak / MB


def estimate(rows: list[dict[str, Any]], orders: int) -> dict[str, Any] | None:
    """The no-change figures at ``orders``, on the line through the two largest sizes."""
    if len(rows) < 2:
        return None
    small, large = sorted(rows, key=lambda row: row["orders"])[-2:]
    span = large["orders"] - small["orders"]
    if span <= 0:
        return None
    found: dict[str, Any] = {"orders": orders, "method": "linear, from the two largest sizes"}
    for key in ("wall_seconds", "peak_memory_mb", "store_reads", "store_writes"):
        slope = max(0.0, (large[key] - small[key]) / span)  # noise may make it negative
        found[key] = round(large[key] + slope * (orders - large["orders"]), 1)
    return found


def budgeted(
    config: SyncConfig, store: Any, provider: ApiV3Provider, orders: int, budget: float
) -> dict[str, Any]:
    """Publish ``orders`` new orders by runs of ``budget`` seconds until one publishes nothing;
    then a run that verifies the store."""
    runs: list[dict[str, Any]] = []
    give_up = time.monotonic() + RESUME_LIMIT_SECONDS
    while time.monotonic() < give_up:
        summary = run_sync(
            config, store=store, provider=provider, clusters=["resume"],
            deadline=time.monotonic() + budget,
        )  # fmt: skip
        runs.append({
            "published": summary.certificates_published,
            "wall_seconds": round(summary.duration, 2),
            "complete": summary.complete,
            "errors": len(summary.errors),
        })  # fmt: skip
        if summary.certificates_published == 0 and summary.complete:
            break
    else:
        return {"error": f"not done after {RESUME_LIMIT_SECONDS} s", "per_run": runs}
    verified = run_sync(config, store=store, provider=provider, clusters=["resume"],
                        verify_store=True)  # fmt: skip
    # The runs that worked: all but the last, which found nothing left (a run may publish
    # nothing while it waits on certificates whose keys it stored).
    working = runs[:-1] or runs
    published = sum(run["published"] for run in runs)
    per_run = published / len(working)
    seconds = sum(run["wall_seconds"] for run in working)
    rate = published / seconds if seconds else 0.0
    per_300 = rate * (300 - 5)  # the run's reserve: at most 5 s
    return {
        "orders": orders,
        "budget_seconds": budget,
        "runs": len(runs),
        "published": published,
        "published_once_each": published == orders,
        "orders_per_run": round(per_run, 1),
        "orders_per_second": round(rate, 1),
        "errors": sum(run["errors"] for run in runs),
        "verify_store_ok": verified.ok and not verified.errors,
        "verify_run_published": verified.certificates_published,
        "estimated_runs_for_100000_at_300_s": (
            -(-100_000 // int(per_300)) if per_300 >= 1 else None
        ),
        "per_run": runs,
    }


def sizes_option(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError as err:
        raise argparse.ArgumentTypeError("expected sizes like 1000,10000") from err
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError("expected positive sizes like 1000,10000")
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--sizes", type=sizes_option, default=(1_000, 10_000), help="default 1000,10000"
    )
    parser.add_argument("--new", type=int, default=100, help="new orders per key type")
    parser.add_argument("--resume", type=int, default=1000, help="orders of the budgeted runs")
    parser.add_argument("--budget", type=float, default=10.0, help="seconds per budgeted run")
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="certfleet-bench-sync-"))
    weed = SeaweedFS(require_binary("weed"), work / "weed")
    weed.data_dir.mkdir()
    weed.start()
    os.environ.update(weed.env)
    data = work / "sandbox"
    started = time.monotonic()
    for size in args.sizes:
        bulk_create(data, numbered_specs(f"big{size}", size, domain=f"big{size}.test"))
    print(f"bulk-created {sum(args.sizes)} orders in {time.monotonic() - started:.1f} s")
    for cluster in ("rsa", "ecdsa"):
        bulk_create(data, numbered_specs(cluster, args.new, domain=f"{cluster}.test"))
    if args.resume:
        bulk_create(data, numbered_specs("resume", args.resume, domain="resume.test"))
    sandbox = Sandbox(data, [])
    sandbox.start()
    figures: dict[str, Any] = {
        "no_change": [],
        "new_orders": {},
        "peak_memory_method": "tracemalloc",
    }
    try:
        clusters = tuple(
            ClusterSyncConfig(name, (ClusterSecret.generate("k1"),), key_type=key_type)
            for name, key_type in (
                *((f"big{size}", "ecdsa") for size in args.sizes),
                ("rsa", "rsa"),
                ("ecdsa", "ecdsa"),
                ("resume", "ecdsa"),
            )
        )
        config = SyncConfig(
            store=f"s3://{weed.bucket}/bench",
            store_endpoint=weed.endpoint,
            signing_key=SigningKey.generate(),
            api_key=sandbox.api_key,
            api_endpoint=sandbox.url,
            clusters=clusters,
        )
        store = open_store(config.store, endpoint=config.store_endpoint)
        provider = ApiV3Provider(ApiClient(sandbox.url, sandbox.api_key))

        def sync(cluster: str) -> RunSummary:
            return run_sync(config, store=store, provider=provider, clusters=[cluster])

        for size in args.sizes:
            cluster = f"big{size}"
            print(line(f"first run, {size} new ECDSA orders", sync(cluster)), flush=True)
            quiet = sync(cluster)
            print(line(f"no-change run, {size} orders", quiet))
            traced, peak_mb = traced_peak_mb(partial(sync, cluster))
            print(
                f"  no-change run under tracemalloc: peak {peak_mb:.1f} MB, "
                f"{traced.duration:.2f} s, writes {traced.store_writes}",
                flush=True,
            )
            figures["no_change"].append({
                "orders": quiet.orders_seen,
                "wall_seconds": round(quiet.duration, 3),
                "provider_calls": quiet.provider_calls,
                "store_reads": quiet.store_reads,
                "store_writes": quiet.store_writes,
                "peak_memory_mb": round(peak_mb, 1),
            })  # fmt: skip
        for cluster in ("rsa", "ecdsa"):
            summary = sync(cluster)
            rate = summary.certificates_published / summary.duration
            print(line(f"{args.new} new {cluster.upper()} orders", summary))
            print(f"  new-order throughput {cluster.upper()}: {rate:.1f} orders/s", flush=True)
            figures["new_orders"][cluster] = {
                "orders": summary.certificates_published,
                "orders_per_second": round(rate, 1),
            }
        figures["no_change_estimate_100000"] = estimate(figures["no_change"], 100_000)
        if args.resume:
            try:
                figures["resume"] = budgeted(config, store, provider, args.resume, args.budget)
            except Exception as err:  # noqa: BLE001 (recorded; the other figures stand)
                figures["resume"] = {"error": f"{type(err).__name__}: {err}"}
            print(f"budgeted runs: {figures['resume']}", flush=True)
        provider.close()
    finally:
        sandbox.stop()
        weed.stop()
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(figures, separators=(",", ":")))


if __name__ == "__main__":
    main()
