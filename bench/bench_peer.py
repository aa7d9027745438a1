"""The do-it-yourself baseline beside certfleet: a PEM tree in a bucket, ``aws s3 sync`` from cron.

Run: .venv/bin/python bench/run.py --only peer [--peer-sizes 1000,10000]

What a team builds without certfleet: every order's ``privkey.pem`` and ``fullchain.pem``
under ``live/<order>/`` in a bucket, and on every node a cron job running
``aws s3 sync --delete s3://bucket/live/ /etc/ssl/live/``. ``peer_baseline(seaweedfs)``
(the ``peer`` section of bench/run.py) puts both in the same SeaweedFS, for N orders each
(default 1,000 and 10,000), and measures one node's idle poll and one-change poll of each:

- **requests** and **wire bytes** (request and response, headers included) counted by a
  TCP proxy on 127.0.0.1 between the client and SeaweedFS (``bench_propagation``'s
  ``CountingProxy``; requests by kind from their request lines);
- **CPU** (user + system seconds of the process, from ``os.wait4``) of one cron run:
  ``aws s3 sync`` against ``certfleet-agent --once``, each a fresh process, interpreter
  start included; and, beside them, the CPU of one poll of the certfleet daemon (in
  process, ``time.thread_time``), which has no start-up to pay.

The peer's tree holds real PEM files (ECDSA P-256 keys, leaf + intermediate), 32 real
issuances reused across the N orders (``aws s3 sync`` compares sizes and times, never
contents); the changed order gets a new issuance. Its node is brought to the steady state
by a real first ``aws s3 sync`` (measured too: ``first_sync``). The certfleet side is
bench_agent's ``ScalePublication``: N entries sharded as the sync shards them, only the
changed order with a real bundle, and a node whose state lists the others as installed
(their files are not written), as in bench_propagation.

The AWS CLI is ``awscli`` from PyPI, in its own venv (``.venv-bench``, made by ``make
bench``; its botocore is not the project's); ``CERTFLEET_BENCH_AWS`` names another ``aws``.
Without one, the section is skipped and says so.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench_agent import ScalePublication, seed_state
from bench_propagation import CountingProxy

from certfleet.config import parse_agent_config
from certfleet.sandbox.devstack import SeaweedFS
from certfleet.store import S3Store, open_store
from node_agent.agent import Agent
from tests.plugins.publisher import Publisher, TestCa

REPO = Path(__file__).resolve().parent.parent
SIZES = (1_000, 10_000)
REAL_ISSUANCES = 32
RUN_TIMEOUT = 600.0


def find_aws() -> str | None:
    """``CERTFLEET_BENCH_AWS``, else ``.venv-bench/bin/aws``, else ``aws`` on PATH."""
    named = os.environ.get("CERTFLEET_BENCH_AWS")
    if named:
        return named
    local = REPO / ".venv-bench" / "bin" / "aws"
    return str(local) if local.exists() else shutil.which("aws")


# -- one measured process, one measured call -------------------------------------------------


@dataclass(frozen=True)
class Cost:
    """What one poll cost: requests by kind, wire bytes both ways, CPU and wall seconds."""

    requests: dict[str, int]
    wire_up: int
    wire_down: int
    cpu_seconds: float
    wall_seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": sum(self.requests.values()),
            "requests_by_kind": dict(sorted(self.requests.items())),
            "wire_bytes": self.wire_up + self.wire_down,
            "wire_bytes_up": self.wire_up,
            "wire_bytes_down": self.wire_down,
            "cpu_ms": round(self.cpu_seconds * 1000, 1),
            "wall_ms": round(self.wall_seconds * 1000, 1),
        }


def _through(proxy: CountingProxy, action: Callable[[], float]) -> Cost:
    """Run ``action`` (which returns its CPU seconds) and count the proxy."""
    before, (up, down) = proxy.wire.request_counts(), proxy.wire.snapshot()
    started = time.perf_counter()
    cpu = action()
    wall = time.perf_counter() - started
    time.sleep(0.05)  # the proxy's threads forward the last bytes after the client has them
    after, (up2, down2) = proxy.wire.request_counts(), proxy.wire.snapshot()
    return Cost(dict(after - before), up2 - up, down2 - down, cpu, wall)


def run_process(command: Sequence[str], env: dict[str, str]) -> float:
    """Run ``command`` to its end; the user + system CPU seconds of that process (its peak
    RSS is not reported: ``ru_maxrss`` counts the forked copy of this process before exec).

    Raises RuntimeError with the tail of its output when it exits non-zero."""
    with tempfile.TemporaryFile() as output:
        process = subprocess.Popen(
            list(command), env=env, stdin=subprocess.DEVNULL, stdout=output, stderr=output
        )
        timer = threading.Timer(RUN_TIMEOUT, process.send_signal, (signal.SIGKILL,))
        timer.start()
        try:
            _, status, usage = os.wait4(process.pid, 0)
        finally:
            timer.cancel()
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            output.seek(0)
            tail = output.read()[-1500:].decode("utf-8", "replace")
            raise RuntimeError(f"{command[0]} exited {process.returncode}: {tail}")
    return float(usage.ru_utime + usage.ru_stime)


# -- the peer: a PEM tree and aws s3 sync ----------------------------------------------------


class PemTree:
    """N orders' ``live/<order>/{privkey,fullchain}.pem`` in a bucket, and a node's copy."""

    def __init__(
        self, aws: str, seaweedfs: SeaweedFS, proxy: CountingProxy, work: Path, orders: int
    ) -> None:
        self.aws = aws
        self.seaweedfs = seaweedfs
        self.proxy = proxy
        self.prefix = f"peer-{orders}"
        self.source = work / f"peer-source-{orders}"
        self.node = work / f"peer-node-{orders}"
        self.env = {**os.environ, **seaweedfs.env, "AWS_EC2_METADATA_DISABLED": "true"}
        self.env.pop("AWS_ENDPOINT_URL_S3", None)  # each command names its endpoint

    def write(self, names: Sequence[str], ca: TestCa) -> None:
        pool = [self._pem_files(ca, f"pool{i}.example") for i in range(REAL_ISSUANCES)]
        for number, name in enumerate(names):
            self._write_order(name, pool[number % REAL_ISSUANCES])
        self._aws("s3", "sync", str(self.source), self._url(), "--endpoint-url",
                  self.seaweedfs.endpoint)  # fmt: skip

    def change(self, name: str, ca: TestCa) -> dict[str, bytes]:
        """Renew ``name``: a new key and certificate in the bucket; the new files."""
        time.sleep(1.1)  # S3 times are in whole seconds; sync copies what is newer
        files = self._pem_files(ca, name)
        self._write_order(name, files)
        writer = S3Store(self.seaweedfs.bucket, self.prefix, endpoint=self.seaweedfs.endpoint)
        for file_name, data in files.items():
            writer.put(f"live/{name}/{file_name}", data)
        return files

    def poll(self, *, exact_timestamps: bool = True) -> Cost:
        """One cron run on the node: ``aws s3 sync --delete`` through the counting proxy."""
        options = ["--exact-timestamps"] if exact_timestamps else []
        return _through(
            self.proxy,
            lambda: self._aws("s3", "sync", "--delete", *options, self._url(), str(self.node),
                              "--endpoint-url", self.proxy.endpoint),
        )  # fmt: skip

    def installed(self, name: str, files: dict[str, bytes]) -> dict[str, bool]:
        """Which of ``files`` the node now holds, by file name."""
        return {
            file: (self.node / name / file).read_bytes() == data for file, data in files.items()
        }

    def _url(self) -> str:
        return f"s3://{self.seaweedfs.bucket}/{self.prefix}/live/"

    def _aws(self, *arguments: str) -> float:
        return run_process([self.aws, *arguments, "--only-show-errors"], self.env)

    @staticmethod
    def _pem_files(ca: TestCa, name: str) -> dict[str, bytes]:
        issued = ca.issue((name,))
        return {
            "privkey.pem": issued.key_pem,
            "fullchain.pem": issued.cert_pem + b"".join(ca.chain_pem),
        }

    def _write_order(self, name: str, files: dict[str, bytes]) -> None:
        directory = self.source / name
        directory.mkdir(parents=True, exist_ok=True)
        for file_name, data in files.items():
            (directory / file_name).write_bytes(data)


def peer_side(
    aws: str, seaweedfs: SeaweedFS, proxy: CountingProxy, work: Path, orders: int, ca: TestCa
) -> dict[str, Any]:
    tree = PemTree(aws, seaweedfs, proxy, work, orders)
    names = [ScalePublication.name(number) for number in range(orders)]
    tree.write(names, ca)
    first = tree.poll()
    idle = tree.poll()
    # Without --exact-timestamps, a download skips a newer object of the same size: the
    # renewed privkey.pem (ECDSA P-256 keys are all one size) stays the old one.
    new = tree.change(names[0], ca)
    default = tree.poll(exact_timestamps=False)
    default_got = tree.installed(names[0], new)
    tree.poll()  # catch up
    new = tree.change(names[1], ca)
    change = tree.poll()
    if not all(tree.installed(names[1], new).values()):
        raise RuntimeError("aws s3 sync --exact-timestamps did not bring the changed order")
    return {
        "objects": 2 * orders,
        "command": "aws s3 sync --delete --exact-timestamps",
        "first_sync": first.as_dict(),
        "idle_poll": idle.as_dict(),
        "change_poll": change.as_dict(),
        "change_poll_default_flags": {**default.as_dict(), "files_updated": default_got},
    }


# -- certfleet: the same orders, the same store --------------------------------------------


def certfleet_side(
    seaweedfs: SeaweedFS, proxy: CountingProxy, work: Path, orders: int, ca: TestCa
) -> dict[str, Any]:
    store_url = f"s3://{seaweedfs.bucket}/certfleet-{orders}"
    publisher = Publisher(open_store(store_url, endpoint=seaweedfs.endpoint), ca, "bench")
    publication = ScalePublication(publisher, orders)
    changed = ScalePublication.name(0)
    publication.renew(changed)
    state_dir = work / f"certfleet-node-{orders}"
    seed_state(state_dir, publication.entries(), skip=changed)
    config_path = work / f"certfleet-{orders}.conf"
    config_text = (
        f'store = "{store_url}"\nstore_endpoint = "{proxy.endpoint}"\n'
        f'state_dir = "{state_dir}"\n' + publisher.cluster_stanza()
    )
    config_path.write_text(config_text)
    env = {**os.environ, **seaweedfs.env, "PYTHONPATH": str(REPO)}
    env.pop("AWS_ENDPOINT_URL_S3", None)
    command = [sys.executable, "-m", "node_agent", "--once", "--config", str(config_path)]

    def once() -> float:
        return run_process(command, env)

    first = _through(proxy, once)
    idle = _through(proxy, once)
    publication.renew(changed)
    change = _through(proxy, once)
    # The daemon: the same node, one process polling on.
    agent = Agent(parse_agent_config(config_text, str(config_path)))
    agent.poll_once()  # its first poll is a full pass

    def poll() -> float:
        started = time.thread_time()
        result = agent.poll_once()
        if not result.ok:
            raise RuntimeError(f"certfleet poll failed: {result.problems[:3]}")
        return time.thread_time() - started

    daemon_idle = _through(proxy, poll)
    publication.renew(changed)
    daemon_change = _through(proxy, poll)
    return {
        "shards": publication.count,
        "first_run": first.as_dict(),
        "idle_poll": idle.as_dict(),
        "change_poll": change.as_dict(),
        "daemon_idle_poll": daemon_idle.as_dict(),
        "daemon_change_poll": daemon_change.as_dict(),
    }


def ratios(peer: dict[str, Any], ours: dict[str, Any]) -> dict[str, Any]:
    """peer / certfleet for each poll and figure (cron run against cron run)."""
    found: dict[str, Any] = {}
    for poll in ("idle_poll", "change_poll"):
        for figure in ("requests", "wire_bytes", "cpu_ms"):
            theirs, mine = peer[poll][figure], ours[poll][figure]
            found[f"{poll}_{figure}"] = round(theirs / mine, 1) if mine else None
        daemon = ours[f"daemon_{poll}"]["cpu_ms"]
        found[f"{poll}_cpu_ms_vs_daemon"] = (
            round(peer[poll]["cpu_ms"] / daemon, 1) if daemon else None
        )
    return found


def peer_baseline(seaweedfs: SeaweedFS, sizes: Sequence[int] = SIZES) -> dict[str, Any]:
    """Both sides at each size, through one counting proxy in front of ``seaweedfs``."""
    aws = find_aws()
    if aws is None:
        return {"status": "skipped: no aws command (make bench installs it in .venv-bench)"}
    os.environ.update(seaweedfs.env)
    version = subprocess.run(
        [aws, "--version"], capture_output=True, text=True, timeout=60, check=False
    )
    work = Path(tempfile.mkdtemp(prefix="certfleet-bench-peer-"))
    proxy = CountingProxy(int(seaweedfs.endpoint.rsplit(":", 1)[1]))
    ca = TestCa()
    rows = []
    try:
        for orders in sizes:
            ours = certfleet_side(seaweedfs, proxy, work, orders, ca)
            peer = peer_side(aws, seaweedfs, proxy, work, orders, ca)
            rows.append(
                {
                    "orders": orders,
                    "certfleet": ours,
                    "aws_s3_sync": peer,
                    "ratio_aws_over_certfleet": ratios(peer, ours),
                }
            )
    finally:
        proxy.close()
        shutil.rmtree(work, ignore_errors=True)
    return {
        "status": "ok",
        "aws": (version.stdout or version.stderr).strip(),
        "peer_layout": "live/<order>/{privkey.pem,fullchain.pem}; aws s3 sync --delete",
        "sizes": rows,
    }
