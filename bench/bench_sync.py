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

The no-change figures at ``--seeded`` orders (default 100,000; 0 skips them) are measured
on a cluster whose state is written straight into the store (``seed_state``: one record per
order, as a first run would leave it, but no bundles; a no-change run reads none), because
the first publication of 100,000 orders alone takes about half an hour here; a first run
then publishes its shards and head. Each measured run is a fresh process (``--child``), so
its peak RSS (``VmHWM``) is the run's own, the figure a Lambda's memory limit applies to:
a no-change run, the same under ``tracemalloc`` with the peak and what stays allocated per
phase (state load, provider listing, plan, publication, state save), and a run that removes
one order (a tombstone, one shard, the head and the whole state written). The line through
the two largest ``--sizes`` (``no_change_estimate_100000``) is kept beside it.

``--resume N`` (default 1,000) new orders are then published by runs of ``--budget`` seconds
each (the deadline ``certfleet sync --max-seconds`` sets), until a run publishes nothing;
then a run with ``verify_store`` reads back every object the head references. Reported: runs,
orders per run, whether every order was published once and the store verified, and the runs
100,000 new orders would take with a 300 s budget at the measured rate.

Human-readable lines go to stdout; with ``--json`` the last stdout line is one JSON object:
``{"no_change": [{"orders", "wall_seconds", "provider_calls", "store_reads",
"store_writes", "peak_memory_mb"}, ...], "new_orders": {"rsa": {"orders",
"orders_per_second"}, "ecdsa": {...}}, "peak_memory_method": "tracemalloc",
"seeded": {"orders", "no_change": {"wall_seconds", "store_requests", "peak_rss_mb", ...},
"no_change_traced": {"peak_memory_mb", "phases": [...]}, "one_removal": {...}}}``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
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
from certfleet.sync import RunSummary, engine, publisher, run_sync
from certfleet.sync.apiv3_provider import ApiV3Provider
from certfleet.sync.sealing import SyncKeys
from certfleet.sync.state import ClusterState, OrderRecord, StateStore
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


def seed_state(store: Any, config: SyncConfig, cluster: str, orders: int) -> None:
    """Write the state a first run over ``numbered_specs(cluster, orders)`` would leave:
    every order published (random bundle and key hashes, valid for 89 more days), the store
    swept and the fleet checked just now."""
    now = int(time.time())
    state = ClusterState.new()
    state.last_sweep = state.last_fleet_check = now
    secret_ids = tuple(secret.id for secret in config.cluster(cluster).secrets)
    for index in range(orders):
        name = f"host{index}.{cluster}.test"
        state.orders[name] = OrderRecord(
            (name,), "ecdsa", os.urandom(32).hex(), os.urandom(32).hex(), os.urandom(16).hex(),
            now - 86400, now + 89 * 86400, now - 86400, secret_ids,
        )  # fmt: skip
    keys = SyncKeys.of(config, config.cluster(cluster).secrets)
    StateStore(store, cluster, keys).save(state)


def peak_rss_mb() -> float:
    """This process's peak resident set (``VmHWM``; unlike ``ru_maxrss``, not inherited
    from the parent across ``fork``), in MB."""
    for text in Path("/proc/self/status").read_text().splitlines():
        if text.startswith("VmHWM:"):
            return round(int(text.split()[1]) / 1024, 1)
    return 0.0


TRACED_PHASES = (
    (StateStore, "load", "state load"),
    (ApiV3Provider, "list_orders", "provider listing"),
    (engine, "plan_cluster", "plan"),
    (publisher.Publisher, "publish", "shards and head"),
    (StateStore, "save", "state save"),
)


def child(spec: dict[str, Any]) -> None:
    """One sync run of ``spec["cluster"]`` in this fresh process; prints its figures."""
    os.environ.update(spec["env"])
    config = SyncConfig(
        store=spec["store"], store_endpoint=spec["endpoint"],
        signing_key=SigningKey.parse(spec["signing_key"]), api_key=spec["api_key"],
        api_endpoint=spec["api_url"],
        clusters=(ClusterSyncConfig(spec["cluster"], (ClusterSecret.parse(spec["secret"]),),
                                    key_type="ecdsa"),),
    )  # fmt: skip
    store = open_store(config.store, endpoint=config.store_endpoint)
    provider = ApiV3Provider(ApiClient(config.api_endpoint, spec["api_key"]))
    phases: list[dict[str, Any]] = []
    if spec["traced"]:
        for owner, attribute, label in TRACED_PHASES:
            setattr(owner, attribute, traced_phase(getattr(owner, attribute), label, phases))
        tracemalloc.start()
    rss_before = peak_rss_mb()
    summary = run_sync(config, store=store, provider=provider, clusters=[spec["cluster"]])
    figures: dict[str, Any] = {
        "orders": summary.orders_seen,
        "wall_seconds": round(summary.duration, 2),
        "provider_calls": summary.provider_calls,
        "store_reads": summary.store_reads,
        "store_writes": summary.store_writes,
        "store_requests": summary.store_requests,
        "errors": len(summary.errors),
        "rss_before_run_mb": rss_before,
        "peak_rss_mb": peak_rss_mb(),
    }
    if spec["traced"]:
        last = round(tracemalloc.get_traced_memory()[1] / MB, 1)  # since the last phase
        figures["peak_memory_mb"] = max([last, *(phase["peak_mb"] for phase in phases)])
        figures["phases"] = phases
        del figures["peak_rss_mb"]  # tracing's own bookkeeping is in it
    print(json.dumps(figures))


def traced_phase(
    original: Callable[..., Any], label: str, phases: list[dict[str, Any]]
) -> Callable[..., Any]:
    """``original``, recording under tracemalloc the memory allocated before it, its peak
    and what stays allocated after it (MB)."""

    def phase(*args: Any, **kwargs: Any) -> Any:
        before, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()  # Python 3.9+
        try:
            return original(*args, **kwargs)
        finally:
            after, peak = tracemalloc.get_traced_memory()
            sizes = {"before_mb": before, "peak_mb": peak, "after_mb": after}
            phases.append({"phase": label, **{k: round(v / MB, 1) for k, v in sizes.items()}})

    return phase


def seeded(
    config: SyncConfig, store: Any, sandbox: Sandbox, weed: SeaweedFS, orders: int
) -> dict[str, Any]:
    """The no-change run and a one-removal run over a seeded cluster of ``orders``, each in
    a fresh process (``child``)."""
    cluster = f"seeded{orders}"
    started = time.monotonic()
    seed_state(store, config, cluster, orders)
    found: dict[str, Any] = {"orders": orders, "seed_seconds": round(time.monotonic() - started, 1)}
    spec = {
        "env": weed.env, "store": config.store, "endpoint": config.store_endpoint,
        "signing_key": config.signing_key.export(), "api_key": sandbox.api_key,
        "api_url": sandbox.url, "cluster": cluster,
        "secret": config.cluster(cluster).secrets[0].export(),
    }  # fmt: skip

    def fresh(traced: bool) -> dict[str, Any]:
        done = subprocess.run(
            [sys.executable, __file__, "--child", json.dumps(dict(spec, traced=traced))],
            capture_output=True, text=True, timeout=600, check=True,
        )  # fmt: skip
        figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        return figures

    found["first_run"] = fresh(False)  # publishes the seeded state's shards and head
    found["no_change"] = fresh(False)
    found["no_change_traced"] = fresh(True)
    client = ApiClient(sandbox.url, sandbox.api_key)
    client.delete_order(f"host1.{cluster}.test")
    client.close()
    found["one_removal"] = fresh(False)
    return found


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
    parser.add_argument(
        "--seeded", type=int, default=100_000, help="orders of the seeded cluster (0: none)"
    )
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # one run in a fresh process
    args = parser.parse_args()
    if args.child:
        child(json.loads(args.child))
        return
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
    if args.seeded:
        name = f"seeded{args.seeded}"
        bulk_create(data, numbered_specs(name, args.seeded, domain=f"{name}.test"))
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
                *(((f"seeded{args.seeded}", "ecdsa"),) if args.seeded else ()),
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
        if args.seeded:
            figures["seeded"] = found = seeded(config, store, sandbox, weed, args.seeded)
            for label in ("first_run", "no_change", "no_change_traced", "one_removal"):
                print(f"seeded {args.seeded}, {label}: {found[label]}", flush=True)
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
