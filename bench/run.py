"""``make bench``: certfleet's costs per poll, per change, per sync run, per node; one table.

Run: .venv/bin/python bench/run.py [--only idle,propagation,sync,agent,e2e,fleet,peer,format,acme]
                                   [--sizes 1000,10000,100000] [--peer-sizes 1000,10000]
                                   [--trials 5] [--out PATH]

Writes every figure to ``bench/results/latest.json`` (``--out`` to change; the directory is
git-ignored), the growth charts of bench/plot.py beside it (``latest.svg``), and prints a
table of the headline figures against their targets.
docs/performance.md explains each figure, the setup and the targets.

Sections (each one's failure is recorded in the JSON and the others still run):

- ``idle``, ``propagation``: bench/bench_propagation.py (in process);
- ``e2e``: bench/bench_e2e.py (in process; subprocesses for the sandbox, sync and agent);
- ``fleet``: bench/bench_fleet.py (in process): the sync's fleet check reading 1,000 acks;
- ``peer``: bench/bench_peer.py (in process; subprocesses for ``aws s3 sync`` and
  ``certfleet-agent --once``): the do-it-yourself baseline beside certfleet, as ratios;
- ``acme``: bench/bench_acme.py: ACME issuance throughput against pebble;
- ``sync``, ``agent``, ``format``: bench/bench_sync.py, bench/bench_agent.py and
  bench/bench_bundle.py, each run as ``python SCRIPT --json`` (again without ``--json``
  if the script has no such option); the last stdout line that parses as a JSON object is
  taken (bench_sync.py and bench_agent.py print one), else bench_bundle.py's text lines
  are parsed.

SeaweedFS (``weed mini``) is started once, on free loopback ports, for ``idle``, ``e2e``,
``fleet`` and ``peer``, and stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))

import bench_e2e  # noqa: E402
import bench_fleet  # noqa: E402
import bench_peer  # noqa: E402
import bench_propagation  # noqa: E402
import plot  # noqa: E402

from certfleet.sandbox.devstack import SeaweedFS, find_weed  # noqa: E402

SECTIONS = ("idle", "propagation", "sync", "agent", "e2e", "fleet", "peer", "format", "acme")
SCRIPT_TIMEOUT = 900.0
SYNC_TIMEOUT = 1800.0  # bench_sync.py also runs a seeded 100,000-order cluster
KB = 1024
LEASE_WRITES = 2


# -- the other engineers' benchmarks, as subprocesses -------------------------------------


def last_json_object(text: str) -> dict[str, Any] | None:
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                return value
    return None


def bundle_lines(text: str) -> dict[str, Any] | None:
    """bench_bundle.py's ``label   123.4 us`` lines as {label: microseconds}."""
    found = {}
    for line in text.splitlines():
        match = re.fullmatch(r"(.+?)\s+([0-9.]+) us", line.strip())
        if match:
            found[match.group(1)] = float(match.group(2))
    return {"microseconds": found} if found else None


def run_script(
    name: str,
    env: dict[str, str],
    parse_text: Callable[[str], dict[str, Any] | None] | None,
    timeout: float = SCRIPT_TIMEOUT,
) -> dict[str, Any]:
    """Run ``bench/NAME --json`` (or without ``--json`` if it has no such option)."""
    script = BENCH / name
    if not script.exists():
        return {"status": "missing", "script": f"bench/{name}"}
    for options in (["--json"], []):
        done = subprocess.run(
            [sys.executable, str(script), *options],
            capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO,
            check=False,
        )  # fmt: skip
        if not (done.returncode == 2 and "unrecognized arguments" in done.stderr):
            break
    parsed = last_json_object(done.stdout)
    if parsed is None and parse_text is not None:
        parsed = parse_text(done.stdout)
    if done.returncode != 0 or parsed is None:
        return {
            "status": "failed" if done.returncode else "no machine-readable output",
            "script": f"bench/{name}",
            "exit_status": done.returncode,
            "stdout_tail": done.stdout[-1500:],
            "stderr_tail": done.stderr[-1500:],
        }
    return {"status": "ok", "script": f"bench/{name}", "options": options, **parsed}


# -- the table ---------------------------------------------------------------------------


def dig(data: Any, *path: Any) -> Any:
    for key in path:
        if isinstance(data, dict) and key in data:
            data = data[key]
        elif isinstance(data, list) and isinstance(key, int) and -len(data) <= key < len(data):
            data = data[key]
        else:
            return None
    return data


def size_row(results: dict[str, Any], orders: int) -> dict[str, Any] | None:
    for row in dig(results, "propagation", "sizes") or []:
        if row.get("orders") == orders:
            return dict(row)
    return None


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "MISSED")


def table_rows(results: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(figure, value, target, verdict) for the headline figures."""
    rows: list[tuple[str, str, str, str]] = []
    idle = results.get("idle") or {}
    for store in ("s3", "http"):
        figures = idle.get(store) or {}
        label = f"idle poll, {store}:// store"
        if "requests_per_poll" not in figures:
            rows.append((label, section_problem(figures or idle), "1 request, < 1 KB", "n/a"))
            continue
        wire = figures["wire_bytes_per_poll"]
        rows.append((
            label,
            f"{figures['requests_per_poll']:g} req, {wire:.0f} B on the wire, "
            f"{figures['cpu_ms_per_poll']:.1f} ms CPU",
            "1 request, < 1 KB",
            verdict(figures["requests_per_poll"] == 1 and wire < KB),
        ))  # fmt: skip
    overhead = dig(idle, "s3", "get_200_wire_overhead_bytes")
    smallest: int | None = None
    for row in dig(results, "propagation", "sizes") or []:
        change, reads = row["change_poll"], row["read_path"]
        wire = change["bytes_in"] + (overhead or 0) * change["requests"]
        smallest = smallest or change["bytes_in"]
        target, ok = "", None
        if row["orders"] == 100_000:
            target = "< 100 KB, growing << N; CPU <= 50 ms"
            ok = wire < 100 * KB and change["bytes_in"] < 10 * smallest and change["cpu_ms"] <= 50
        rows.append((
            f"change among {row['orders']:,} orders",
            f"{change['requests']} req, {change['bytes_in'] / KB:.1f} KB"
            f"{f' (~{wire / KB:.1f} KB wire)' if overhead else ''}, poll CPU "
            f"{change['cpu_ms']:.0f} ms; read path {reads['structured']['cpu_ms']:.1f} ms",
            target,
            verdict(ok) if target else "",
        ))  # fmt: skip
        rows.append((
            f"  naive index, {row['orders']:,} orders",
            f"{reads['naive']['requests']} req, {reads['naive']['bytes_in'] / KB:.1f} KB, "
            f"read path {reads['naive']['cpu_ms']:.1f} ms "
            f"(x{row['ratio_bytes_naive_over_structured']:g} bytes)",
            "",
            "",
        ))  # fmt: skip
        rows.append((
            f"  idle poll CPU, {row['orders']:,} orders",
            f"{row['idle_poll_after']['cpu_ms']:.0f} ms "
            f"(agent state.json {row['state_json_bytes'] / KB / KB:.1f} MB)",
            "",
            "",
        ))  # fmt: skip
    if "error" in (results.get("propagation") or {}):
        rows.append(("change propagation", section_problem(results["propagation"]), "", "n/a"))
    rows.extend(sync_rows(results.get("sync") or {}))
    rows.extend(agent_rows(results.get("agent") or {}))
    if "acme" in results:
        rows.append(acme_row(results["acme"]))
    e2e = results.get("e2e") or {}
    if "median_seconds" in e2e:
        target = e2e["target_seconds"]
        rows.append((
            f"end-to-end latency ({e2e['trials']} trials)",
            f"median {e2e['median_seconds']:.1f} s, max {e2e['max_seconds']:.1f} s",
            f"<= {target:g} s (sync {e2e['sync_interval']:g} + poll {e2e['poll_interval']:g} + 2)",
            verdict(e2e["max_seconds"] <= target),
        ))  # fmt: skip
    else:
        rows.append(("end-to-end latency", section_problem(e2e), "<= sync + poll + 2 s", "n/a"))
    rows.append(fleet_row(results.get("fleet") or {}))
    rows.append(fleet_changed_row(results.get("fleet") or {}))
    rows.extend(peer_rows(results.get("peer") or {}))
    fmt = results.get("format") or {}
    for label, micros in (fmt.get("microseconds") or {}).items():
        rows.append((f"format: {label}", f"{micros:.1f} us", "", ""))
    return rows


def peak_memory(run: dict[str, Any]) -> str:
    megabytes = run.get("peak_memory_mb")
    return "not measured" if megabytes is None else f"{megabytes:.0f} MB"


def sync_rows(sync: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    if sync.get("status") != "ok":
        return [("sync (bench_sync.py)", section_problem(sync), "", "n/a")]
    rows = []
    for run in sync.get("no_change") or []:
        ok = None
        if run.get("orders") == 10_000:
            # The lease's writes: the take-over of the released lease by ETag, and the release.
            ok = run.get("wall_seconds", 1e9) < 20 and run.get("store_writes", 99) <= LEASE_WRITES
        rows.append((
            f"no-change sync, {run.get('orders', '?'):,} orders",
            f"{run.get('wall_seconds', float('nan')):.1f} s, {run.get('provider_calls')} provider "
            f"calls, {run.get('store_reads')} reads / {run.get('store_writes')} writes, "
            f"peak memory {peak_memory(run)}",
            "10,000: < 20 s, lease writes only" if run.get("orders") == 10_000 else "",
            verdict(ok) if run.get("orders") == 10_000 else "",
        ))  # fmt: skip
    guess = sync.get("no_change_estimate_100000")
    measured = (sync.get("seeded") or {}).get("orders") == 100_000  # then the goal is judged there
    if guess:
        rows.append((
            "no-change sync, 100,000 orders (estimate)",
            f"~{guess['wall_seconds']:.1f} s, peak memory ~{guess['peak_memory_mb']:.0f} MB "
            f"({guess['method']})",
            "" if measured else "<= 10 s, <= 256 MB",
            "" if measured else verdict(
                guess["wall_seconds"] <= 10 and guess["peak_memory_mb"] <= 256
            ),
        ))  # fmt: skip
    rows.extend(seeded_rows(sync.get("seeded") or {}))
    resume = sync.get("resume")
    if resume and "error" in resume:
        rows.append(("new orders in budgeted runs", section_problem(resume), "", "n/a"))
    elif resume:
        rows.append((
            f"{resume['orders']:,} new orders, {resume['budget_seconds']:g} s runs",
            f"{resume['runs']} runs, {resume['orders_per_run']:.0f} orders/run, every order "
            f"once: {resume['published_once_each']}, store verified: {resume['verify_store_ok']}"
            f"; 100,000 at 300 s: ~{resume['estimated_runs_for_100000_at_300_s']} runs",
            "resumes, each order once",
            verdict(resume["published_once_each"] and resume["verify_store_ok"]),
        ))  # fmt: skip
    for key_type, run in (sync.get("new_orders") or {}).items():
        rows.append((
            f"new-order throughput, {key_type}",
            f"{run.get('orders_per_second', float('nan')):.1f} orders/s",
            "",
            "",
        ))  # fmt: skip
    return rows or [("sync (bench_sync.py)", "ran, but no known figures", "", "n/a")]


def seeded_rows(seeded: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """The sync runs over a seeded cluster, each a fresh process (peak RSS: ``VmHWM``)."""
    rows = []
    orders = seeded.get("orders")
    for key, label in (("no_change", "no-change sync"), ("one_removal", "sync, one removal")):
        run = seeded.get(key)
        if not run:
            continue
        goal = key == "no_change" and orders == 100_000
        traced = (seeded.get("no_change_traced") or {}).get("peak_memory_mb") if goal else None
        rows.append((
            f"{label}, {orders:,} orders (seeded state)",
            f"{run['wall_seconds']:.1f} s, {run['store_requests']} store requests, "
            f"{run['provider_calls']} provider calls, peak RSS {run['peak_rss_mb']:.0f} MB"
            + (f" (Python objects {traced:.0f} MB)" if traced is not None else ""),
            "<= 10 s, <= 256 MB" if goal else "",
            verdict(run["wall_seconds"] <= 10 and run["peak_rss_mb"] <= 256) if goal else "",
        ))  # fmt: skip
    return rows


def fleet_row(fleet: dict[str, Any]) -> tuple[str, str, str, str]:
    label = "sync fleet check, 1,000 acks (s3://)"
    if "median_wall_seconds" not in fleet:
        return (label, section_problem(fleet), "", "n/a")
    trial = fleet["trials"][0]
    return (
        label,
        f"median {fleet['median_wall_seconds']:.2f} s, {trial['lists']} list + "
        f"{trial['reads']} GETs ({trial['requests']} requests), "
        f"{trial['bytes_in'] / KB:.0f} KB, {trial['cpu_seconds']:.2f} s CPU",
        "",
        "",
    )


def peer_rows(peer: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """certfleet against ``aws s3 sync`` of a PEM tree: cron run against cron run."""
    if peer.get("status") != "ok":
        return [("baseline: aws s3 sync", section_problem(peer), "", "n/a")]
    rows = []
    for row in peer.get("sizes") or []:
        ratio = row["ratio_aws_over_certfleet"]
        for poll, label in (("idle_poll", "idle"), ("change_poll", "one change")):
            ours, theirs = row["certfleet"][poll], row["aws_s3_sync"][poll]
            rows.append((
                f"{label} at {row['orders']:,} orders: certfleet --once / aws s3 sync",
                f"{ours['requests']} / {theirs['requests']} req, "
                f"{ours['wire_bytes'] / KB:.1f} / {theirs['wire_bytes'] / KB:.1f} KB, "
                f"{ours['cpu_ms']:.0f} / {theirs['cpu_ms']:.0f} ms CPU",
                f"aws/certfleet: x{ratio[poll + '_requests']} req, "
                f"x{ratio[poll + '_wire_bytes']} bytes, x{ratio[poll + '_cpu_ms']} CPU",
                "",
            ))  # fmt: skip
    return rows


def fleet_changed_row(fleet: dict[str, Any]) -> tuple[str, str, str, str]:
    changed = fleet.get("changed") or {}
    label = "sync fleet check, 10,000 acks, 1 % changed"
    if "second_check" not in changed:
        return (label, section_problem(changed or fleet), "", "n/a")
    first, second = changed["first_check"], changed["second_check"]
    estimate = changed["estimated_100000_nodes_seconds"]
    return (
        label,
        f"{second['wall_seconds']:.2f} s, {second['requests']} requests ({second['acks_read']} "
        f"acks read), {second['cpu_seconds']:.2f} s CPU; first check {first['wall_seconds']:.1f} s"
        f", {first['requests']} requests; 100,000 nodes ~{estimate:.0f} s",
        f"100,000 nodes within {changed['check_budget_seconds_of_a_300_s_run']:.0f} s",
        verdict(changed["estimated_100000_nodes_fits"]),
    )


def agent_rows(agent: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    if agent.get("status") != "ok":
        return [("agent (bench_agent.py)", section_problem(agent), "", "n/a")]
    rows = []
    limits = {"https": 40, "s3": 64}
    for store, megabytes in (agent.get("idle_rss_mb") or {}).items():
        limit = limits.get(store)
        rows.append((
            f"agent idle RSS, {store}:// store",
            f"{megabytes:.1f} MB",
            f"<= {limit} MB" if limit else "",
            verdict(megabytes <= limit) if limit else "",
        ))  # fmt: skip
    for orders, seconds in (agent.get("install_seconds") or {}).items():
        rows.append((f"agent install, {orders} orders", f"{seconds:.2f} s", "", ""))
    for scale in agent.get("state_scale") or []:
        orders = scale["orders"]
        bare = scale.get("change_poll_cpu_ms_without_metrics")
        target = "<= 50 ms" if orders == 100_000 else ""
        rows.append((
            f"agent change poll CPU, {orders:,} orders",
            f"{bare} ms (median of {len(scale.get('change_poll_cpu_ms_without_metrics_all', []))}"
            f"); with metrics_file {scale['change_poll_cpu_ms']:.0f} ms "
            f"({scale['metrics_file_bytes'] / KB / KB:.1f} MB file); state save wrote "
            f"{scale['change_state_bytes_written'] / KB:.0f} KB",
            target,
            verdict(bare is not None and bare <= 50) if target else "",
        ))  # fmt: skip
    return rows or [("agent (bench_agent.py)", "ran, but no known figures", "", "n/a")]


def acme_row(acme: dict[str, Any]) -> tuple[str, str, str, str]:
    label = "ACME issuance against pebble (HTTP-01)"
    if acme.get("status") != "ok" or "seconds" not in acme:
        return (label, acme.get("skipped") or section_problem(acme), "", "n/a")
    ok = acme["published"] == acme["orders"] and acme["seconds"] < 900
    return (
        f"{label}, {acme['orders']} orders",
        f"{acme['seconds']:.1f} s ({acme['orders_per_second']:.1f} orders/s), "
        f"{acme['ca_requests_per_order']:g} CA req/order; no-change sync "
        f"{acme['no_change_ca_requests']} CA req",
        "100 within one 15-min run; no-change 0",
        verdict(ok and acme["no_change_ca_requests"] == 0),
    )


def section_problem(section: dict[str, Any]) -> str:
    if not section:
        return "not run"
    if "error" in section:
        return f"error: {section['error'][:80]}"
    return f"{section.get('status', 'no figures')} ({section.get('script', '')})"


def print_table(rows: list[tuple[str, str, str, str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    header = ("figure", "value", "target", "")
    for row in (header, *rows):
        print(f"{row[0]:{widths[0]}}  {row[1]:{widths[1]}}  {row[2]:{widths[2]}}  {row[3]}")


# -- main --------------------------------------------------------------------------------


def timed(
    name: str, call: Callable[[], dict[str, Any]], seconds: dict[str, float]
) -> dict[str, Any]:
    print(f"== {name} ...", file=sys.stderr, flush=True)
    started = time.monotonic()
    try:
        result = call()
    except Exception as err:  # noqa: BLE001 (a section's failure is a result, not a crash)
        result = {"error": f"{type(err).__name__}: {err}"}
    seconds[name] = round(time.monotonic() - started, 1)
    print(f"   {name}: {seconds[name]} s", file=sys.stderr, flush=True)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description="certfleet benchmarks (issue 10)")
    parser.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections")
    parser.add_argument("--sizes", default="1000,10000,100000", help="N for propagation")
    parser.add_argument("--peer-sizes", default="1000,10000", help="N for the aws s3 sync baseline")
    parser.add_argument("--trials", type=int, default=5, help="end-to-end trials")
    parser.add_argument("--out", default=str(BENCH / "results" / "latest.json"))
    args = parser.parse_args()
    wanted = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = set(wanted) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; known: {', '.join(SECTIONS)}")
    sizes = tuple(int(n) for n in args.sizes.split(","))
    peer_sizes = tuple(int(n) for n in args.peer_sizes.split(","))
    started = time.monotonic()
    results: dict[str, Any] = {
        "meta": {
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "python": platform.python_version(),
            "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores",
        }
    }
    seconds: dict[str, float] = {}
    work = Path(tempfile.mkdtemp(prefix="certfleet-bench-run-"))
    seaweedfs: SeaweedFS | None = None
    try:
        if {"idle", "e2e", "fleet", "peer"} & set(wanted):
            seaweedfs = SeaweedFS(find_weed(), work / "seaweedfs", bucket="bench")
            seaweedfs.start()
            results["meta"]["seaweedfs"] = seaweedfs.version()
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        calls: dict[str, Callable[[], dict[str, Any]]] = {
            "propagation": partial(bench_propagation.propagation, sizes),
            "sync": partial(run_script, "bench_sync.py", env, None, SYNC_TIMEOUT),
            "agent": partial(run_script, "bench_agent.py", env, None),
            "format": partial(run_script, "bench_bundle.py", env, bundle_lines),
            "acme": partial(run_script, "bench_acme.py", env, None),
        }
        if seaweedfs is not None:
            calls["idle"] = partial(bench_propagation.idle_poll, seaweedfs)
            calls["e2e"] = partial(bench_e2e.end_to_end, seaweedfs, work, trials=args.trials)
            calls["fleet"] = partial(bench_fleet.fleet_check, seaweedfs)
            calls["peer"] = partial(bench_peer.peer_baseline, seaweedfs, peer_sizes)
        for name in SECTIONS:
            if name in wanted:
                results[name] = timed(name, calls[name], seconds)
    finally:
        if seaweedfs is not None:
            seaweedfs.stop()
        shutil.rmtree(work, ignore_errors=True)
    results["meta"]["section_seconds"] = seconds
    results["meta"]["wall_seconds"] = round(time.monotonic() - started, 1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    out.with_suffix(".svg").write_text(plot.svg(results))
    print_table(table_rows(results))
    print(f"\nwall time {results['meta']['wall_seconds']} s; every figure in {out}, "
          f"how they grow with N in {out.with_suffix('.svg')}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
