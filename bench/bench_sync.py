"""Sync engine figures: no-change runs over N orders, and new-order throughput RSA vs ECDSA.

Run: .venv/bin/python bench/bench_sync.py [--sizes 1000,10000] [--new 100] [--json]

Starts its own SeaweedFS (``weed mini``) and sandbox on 127.0.0.1. For each size N, a
cluster of N orders is bulk-created straight in the sandbox's data directory and
published by a first run (timed, but not the point); then a run with nothing to change is
measured: wall time, provider calls, store reads and writes. Its peak memory is measured
on a second, identical no-change run under ``tracemalloc`` (the peak of Python's own
allocations during the run, above what was allocated before it; not the process RSS, and
not traced during the timed run, which tracing would slow down). Then ``--new`` fresh
orders are issued in each of two clusters, one RSA-2048 and one ECDSA P-256, and orders
per second reported.

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
    parser.add_argument("--sizes", type=sizes_option, default=(10_000,), help="default 10000")
    parser.add_argument("--new", type=int, default=100, help="new orders per key type")
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
        provider.close()
    finally:
        sandbox.stop()
        weed.stop()
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(figures, separators=(",", ":")))


if __name__ == "__main__":
    main()
