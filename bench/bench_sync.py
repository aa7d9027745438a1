"""Sync engine figures: a 10,000-order no-change run, and new-order throughput RSA vs ECDSA.

Run: .venv/bin/python bench/bench_sync.py [--orders 10000] [--new 100]

Starts its own SeaweedFS (``weed mini``) and sandbox on 127.0.0.1. The big cluster's
orders are bulk-created straight in the sandbox's data directory, published by a first
(timed, but not the point) run, then a second run with nothing to change is measured:
wall time, provider calls, store reads and writes. Then ``--new`` fresh orders are issued
in each of two clusters, one RSA-2048 and one ECDSA P-256, and orders per second reported.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

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


def line(label: str, summary: RunSummary) -> str:
    return (
        f"{label}: {summary.duration:.2f} s, {summary.orders_seen} orders seen, "
        f"{summary.certificates_published} published, provider calls {summary.provider_calls}, "
        f"store reads {summary.store_reads}, writes {summary.store_writes}, "
        f"requests {summary.store_requests}, errors {len(summary.errors)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--orders", type=int, default=10_000)
    parser.add_argument("--new", type=int, default=100)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="certfleet-bench-sync-"))
    weed = SeaweedFS(require_binary("weed"), work / "weed")
    weed.data_dir.mkdir()
    weed.start()
    os.environ.update(weed.env)
    data = work / "sandbox"
    started = time.monotonic()
    made = bulk_create(data, numbered_specs("big", args.orders, domain="big.test"))
    print(f"bulk-created {made} orders in {time.monotonic() - started:.1f} s")
    for cluster in ("rsa", "ecdsa"):
        bulk_create(data, numbered_specs(cluster, args.new, domain=f"{cluster}.test"))
    sandbox = Sandbox(data, [])
    sandbox.start()
    try:
        clusters = tuple(
            ClusterSyncConfig(name, (ClusterSecret.generate("k1"),), key_type=key_type)
            for name, key_type in (("big", "ecdsa"), ("rsa", "rsa"), ("ecdsa", "ecdsa"))
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

        print(line(f"first run, {args.orders} new ECDSA orders", sync("big")))
        quiet = sync("big")
        print(line(f"no-change run, {args.orders} orders", quiet))
        for cluster in ("rsa", "ecdsa"):
            summary = sync(cluster)
            rate = summary.certificates_published / summary.duration
            print(line(f"{args.new} new {cluster.upper()} orders", summary))
            print(f"  new-order throughput {cluster.upper()}: {rate:.1f} orders/s")
        provider.close()
    finally:
        sandbox.stop()
        weed.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
