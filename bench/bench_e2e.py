"""End-to-end latency: from ``certfleet add`` to the order's files on a node's disk.

Run: .venv/bin/python bench/bench_e2e.py [--trials 5] [--json]   (starts its own SeaweedFS)

The local stack with short intervals: SeaweedFS (S3), the APIv3 sandbox (issues at once),
``certfleet sync --interval 2s`` and ``certfleet-agent`` with ``poll_interval = "2s"``, all
as separate processes on 127.0.0.1, set up with the real commands (``certfleet init``,
``certfleet clusters add``). Each trial runs ``certfleet add NAME`` and measures the time
from just before that command starts until ``<state_dir>/orders/NAME/*.crt.pem`` exists.
Trials start at random moments (a 0-2 s pause between them), so they sample the phases of
the two loops.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from certfleet.sandbox.devstack import Sandbox, SeaweedFS, find_weed

BIN = Path(sys.executable).parent
SYNC_INTERVAL = 2.0
POLL_INTERVAL = 2.0
TRIAL_TIMEOUT = 60.0
CLUSTER = "web"


def _run(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command[:3])} exited {done.returncode}: {done.stderr[-500:]}"
        )
    return done


def _start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
            start_new_session=True,
        )  # fmt: skip


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _installed(state_dir: Path, name: str) -> bool:
    directory = state_dir / "orders" / name
    try:
        return any(path.name.endswith(".crt.pem") for path in directory.iterdir())
    except OSError:
        return False


def end_to_end(seaweedfs: SeaweedFS, work: Path, *, trials: int = 5) -> dict[str, Any]:
    """Latency from ``certfleet add`` to files on disk, over ``trials`` orders."""
    base = work / "e2e"
    base.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **seaweedfs.env}
    sandbox = Sandbox(base / "sandbox" / "data")
    processes: list[subprocess.Popen[bytes]] = []
    sandbox.start()
    try:
        certfleet = str(BIN / "certfleet")
        sync_conf, state_dir = base / "sync.conf", base / "node"
        store = f"s3://{seaweedfs.bucket}/bench-e2e-{secrets.token_hex(3)}"
        _run([certfleet, "init", "--config", str(sync_conf), "--store", store,
              "--store-endpoint", seaweedfs.endpoint, "--api-endpoint", sandbox.url,
              "--api-key", sandbox.api_key], env)  # fmt: skip
        stanza = _run([certfleet, "clusters", "add", CLUSTER, "--config", str(sync_conf)], env)
        agent_conf = base / "agent.conf"
        agent_conf.write_text(
            f'store = "{store}"\nstore_endpoint = "{seaweedfs.endpoint}"\n'
            f'state_dir = "{state_dir}"\npoll_interval = "{POLL_INTERVAL:g}s"\n' + stanza.stdout
        )
        sync = [certfleet, "sync", "--interval", f"{SYNC_INTERVAL:g}s", "--config", str(sync_conf)]
        processes.append(_start(sync, env, base / "sync.log"))
        processes.append(
            _start(
                [str(BIN / "certfleet-agent"), "--config", str(agent_conf)], env, base / "agent.log"
            )
        )
        time.sleep(SYNC_INTERVAL + POLL_INTERVAL)  # both loops past their first pass
        latencies: list[float] = []
        for trial in range(trials):
            time.sleep(random.uniform(0.0, SYNC_INTERVAL))  # noqa: S311 (timing, not secrets)
            name = f"e2e-{trial}-{secrets.token_hex(3)}.bench.example"
            started = time.monotonic()
            _run([certfleet, "add", "--config", str(sync_conf), name], env)
            while not _installed(state_dir, name):
                if time.monotonic() - started > TRIAL_TIMEOUT:
                    tail = (base / "agent.log").read_text(errors="replace")[-800:]
                    raise RuntimeError(f"{name} not installed after {TRIAL_TIMEOUT:.0f} s: {tail}")
                if any(process.poll() is not None for process in processes):
                    raise RuntimeError("the sync or the agent exited; see their logs")
                time.sleep(0.02)
            latencies.append(round(time.monotonic() - started, 3))
    finally:
        for process in processes:
            _stop(process)
        sandbox.stop()
    return {
        "trials": trials,
        "latencies_seconds": latencies,
        "median_seconds": statistics.median(latencies),
        "max_seconds": max(latencies),
        "sync_interval": SYNC_INTERVAL,
        "poll_interval": POLL_INTERVAL,
        "target_seconds": SYNC_INTERVAL + POLL_INTERVAL + 2.0,
        "store": "s3 (SeaweedFS)",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="certfleet-bench-e2e-"))
    seaweedfs = SeaweedFS(find_weed(), work / "seaweedfs", bucket="bench")
    seaweedfs.start()
    try:
        result = end_to_end(seaweedfs, work, trials=args.trials)
    finally:
        seaweedfs.stop()
    print(json.dumps(result, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
