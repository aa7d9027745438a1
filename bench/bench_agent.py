"""The node agent's costs: an idle poll, the idle daemon's memory, installing 1 and 1,000 orders.

Run: .venv/bin/python bench/bench_agent.py [--json] [--orders 1,1000]

- idle poll (nothing changed): store requests, object bytes, wire bytes (https store: request
  line + headers sent, response headers + body received, counted by the server) and CPU
  milliseconds, averaged over 20 polls, for s3:// (SeaweedFS), https:// (a loopback TLS
  server answering If-None-Match like nginx or S3) and file:// stores;
- idle RSS of ``certfleet-agent`` running as a daemon (1 s poll interval, after a few idle
  polls), for the https:// and s3:// stores, and the RSS of the imports that dominate it;
- install time: the first ``poll_once`` of a fresh node over N published ECDSA orders (the
  publishing is not timed), file:// and s3://;
- state at scale (``--state-sizes``, default 1,000, 10,000 and 100,000 orders): a file://
  publication of N entries (one real order, the others synthetic: their bundles are never
  fetched because the node's seeded state already holds them, as in bench_propagation) and a
  node with ``metrics_file`` and acks: loading the state (``Agent(...)``), the first poll
  (head and every shard), an idle poll, a change of one order (CPU, and the bytes the state
  save wrote), the state and metrics file sizes, and ``--status`` (``build_status`` +
  ``format_status``); then the same node without a metrics file (whose per-order lines make
  a change cost O(N) bytes written) over 5 renewals: the median CPU of a change poll.

Publications come from ``tests.plugins.publisher`` (the format code, no sync engine).
With ``--json`` the last stdout line is a JSON object (bench/run.py reads it).
"""

from __future__ import annotations

import argparse
import hashlib
import http.server
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.hazmat.primitives.serialization import (  # noqa: E402
    Encoding,
    NoEncryption,
    PrivateFormat,
)
from cryptography.x509.oid import NameOID  # noqa: E402

from certfleet.bundle import (  # noqa: E402
    Head,
    Shard,
    ShardEntry,
    encode_head,
    next_generation,
    safe_dir_name,
    seal_shard,
    shard_count,
    shard_index,
)
from certfleet.config import parse_agent_config  # noqa: E402
from certfleet.sandbox.devstack import SeaweedFS, find_weed  # noqa: E402
from certfleet.store import open_store  # noqa: E402
from node_agent.agent import Agent  # noqa: E402
from node_agent.agentstate import AgentState, InstalledOrder  # noqa: E402
from node_agent.statestore import StateStore  # noqa: E402
from node_agent.status import build_status, format_status  # noqa: E402
from tests.plugins.publisher import Publisher, TestCa  # noqa: E402

IDLE_POLLS = 20
IDLE_ORDERS = 100
STATE_SIZES = "1000,10000,100000"
CHANGES = 5
DAY = 86400


# -- a TLS static server that answers conditional GETs, counting wire bytes ----------------


class _Counter:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests = 0
        self.bytes_in = 0  # to the server
        self.bytes_out = 0  # from the server


def _handler(root: Path, counter: _Counter) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            with counter.lock:
                counter.requests += 1
                counter.bytes_in += len(self.raw_requestline) + len(bytes(self.headers))
            path = root / self.path.lstrip("/")
            try:
                data = path.read_bytes()
            except OSError:
                self._answer(404, b"")
                return
            etag = '"' + hashlib.sha256(data).hexdigest()[:32] + '"'
            if self.headers.get("If-None-Match") == etag:
                self._answer(304, b"", etag)
            else:
                self._answer(200, data, etag)

        def _answer(self, status: int, body: bytes, etag: str | None = None) -> None:
            self.send_response(status)
            if etag:
                self.send_header("ETag", etag)
            if status != 304:
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            with counter.lock:
                counter.bytes_out += len(body)

        def flush_headers(self) -> None:
            buffered = getattr(self, "_headers_buffer", [])
            with counter.lock:
                counter.bytes_out += sum(len(chunk) for chunk in buffered)
            super().flush_headers()

    return Handler


def _tls_files(work: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = time.time()
    import datetime
    import ipaddress

    start = datetime.datetime.fromtimestamp(now - 3600, tz=datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = work / "tls.crt", work / "tls.key"
    cert_path.write_bytes(certificate.public_bytes(Encoding.PEM))
    key_path.write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    return cert_path, key_path


@contextmanager
def https_server(root: Path, work: Path) -> Iterator[tuple[str, Path, _Counter]]:
    counter = _Counter()
    cert, key = _tls_files(work)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(root, counter))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}", cert, counter
    finally:
        server.shutdown()
        server.server_close()


# -- publications and agents --------------------------------------------------------------


def publish(store_url: str, ca: TestCa, orders: int, endpoint: str | None = None) -> Publisher:
    publisher = Publisher(open_store(store_url, endpoint=endpoint), ca, "bench")
    for i in range(orders):
        publisher.issue(f"o{i}.example.com")
    publisher.publish()
    return publisher


def config_text(store: str, state_dir: Path, publisher: Publisher, endpoint: str | None) -> str:
    text = f'store = "{store}"\nstate_dir = "{state_dir}"\npoll_interval = "1s"\n'
    if endpoint:
        text += f'store_endpoint = "{endpoint}"\n'
    return text + publisher.cluster_stanza()


def make_agent(store: str, state_dir: Path, publisher: Publisher, endpoint: str | None) -> Agent:
    config = parse_agent_config(config_text(store, state_dir, publisher, endpoint), "bench.conf")
    return Agent(config)


def idle_poll(agent: Agent, counter: _Counter | None = None) -> dict[str, float]:
    first = agent.poll_once()
    if not first.ok:
        raise RuntimeError(f"first poll failed: {first.problems}")
    stats = agent.store.stats.as_dict()
    wire = (counter.requests, counter.bytes_in, counter.bytes_out) if counter else (0, 0, 0)
    cpu = time.process_time()
    for _ in range(IDLE_POLLS):
        result = agent.poll_once()
        assert result.ok and not result.installed
    cpu_ms = (time.process_time() - cpu) * 1000 / IDLE_POLLS
    after = agent.store.stats.as_dict()
    figures = {
        "requests": (after["requests"] - stats["requests"]) / IDLE_POLLS,
        "object_bytes_in": (after["bytes_in"] - stats["bytes_in"]) / IDLE_POLLS,
        "cpu_ms": round(cpu_ms, 2),
    }
    if counter:
        figures["wire_bytes_sent"] = (counter.bytes_in - wire[1]) / IDLE_POLLS
        figures["wire_bytes_received"] = (counter.bytes_out - wire[2]) / IDLE_POLLS
    return figures


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def daemon_rss(config: Path, env: dict[str, str], state_dir: Path) -> float:
    process = subprocess.Popen(
        [sys.executable, "-m", "node_agent", "--config", str(config)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not (state_dir / "state.json").exists():
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("the agent daemon did not complete a poll")
            time.sleep(0.05)
        time.sleep(4)  # a few idle polls
        return round(rss_mb(process.pid), 1)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=20)


def import_rss(env: dict[str, str], code: str) -> float:
    script = f"{code}\nprint(open('/proc/self/status').read())"
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    ).stdout
    line = next(line for line in out.splitlines() if line.startswith("VmRSS:"))
    return round(int(line.split()[1]) / 1024, 1)


def install_time(store: str, orders: int, ca: TestCa, work: Path, endpoint: str | None) -> float:
    publisher = publish(store, ca, orders, endpoint)
    agent = make_agent(
        store, work / f"state-install-{orders}-{time.time_ns()}", publisher, endpoint
    )
    started = time.perf_counter()
    result = agent.poll_once()
    elapsed = time.perf_counter() - started
    if not result.ok or len(result.installed) != orders:
        raise RuntimeError(f"install of {orders} orders failed: {result.problems[:3]}")
    return round(elapsed, 3)


# -- state at scale -----------------------------------------------------------------------


class ScalePublication:
    """N entries sharded as the sync shards them; only the renewed order has a real bundle."""

    def __init__(self, publisher: Publisher, orders: int) -> None:
        self.pub = publisher
        self.count = shard_count(orders)
        self.key = os.urandom(32)
        self.generation = 0
        self.shards: list[dict[str, ShardEntry]] = [{} for _ in range(self.count)]
        not_after = int(time.time()) + 90 * DAY
        for number in range(orders):
            name = self.name(number)
            digest = hashlib.sha256(name.encode()).digest()  # no such bundle: never fetched
            self._set(ShardEntry(name, digest, format(number + 1, "x"), not_after, 0))
        self.hashes = [self._seal(index) for index in range(self.count)]

    @staticmethod
    def name(number: int) -> str:
        return f"o{number:06d}.scale.example"

    def entries(self) -> list[ShardEntry]:
        return [entry for shard in self.shards for entry in shard.values()]

    def _set(self, entry: ShardEntry) -> int:
        index = shard_index(self.key, entry.order_name, self.count)
        self.shards[index][entry.order_name] = entry
        return index

    def _seal(self, index: int) -> bytes:
        shard = Shard(tuple(self.shards[index].values()))
        data = seal_shard(shard, cluster=self.pub.cluster, index=index, secrets=self.pub.secrets)
        return self.pub.put_object("shards", data)

    def renew(self, name: str) -> None:
        bundle = self.pub.make_bundle(name)
        entry = ShardEntry(name, self.pub.put_bundle(bundle), bundle.serial, bundle.not_after, 0)
        index = self._set(entry)
        self.hashes[index] = self._seal(index)
        self.publish()

    def publish(self) -> None:
        now = int(time.time())
        self.generation = next_generation(self.generation, now * 1000)
        head = Head(
            self.pub.cluster, self.generation, now, now + 3 * DAY,
            tuple(secret.id for secret in self.pub.secrets), tuple(self.hashes),
        )  # fmt: skip
        self.pub.put_head(encode_head(head, self.pub.signing_key))


def seed_state(state_dir: Path, entries: list[ShardEntry], skip: str) -> None:
    """A node that installed every order but ``skip`` (their files are not written)."""
    state = AgentState()
    for entry in entries:
        if entry.order_name != skip:
            state.orders[entry.order_name] = InstalledOrder(
                "bench", safe_dir_name(entry.order_name), entry.bundle_hash.hex(), entry.serial,
                "ecdsa", entry.not_after, "seeded", copies_version="seeded",
                installed_at=int(time.time()),
            )  # fmt: skip
    StateStore(str(state_dir)).save(state)


def files_under(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_ino, p.stat().st_size) for p in root.rglob("*") if p.is_file()}


def cpu_ms(action: Callable[[], object]) -> float:
    started = time.thread_time()
    action()
    return round((time.thread_time() - started) * 1000, 2)


def state_scale(orders: int, ca: TestCa, work: Path) -> dict[str, Any]:
    root = work / f"scale-store-{orders}"
    root.mkdir()
    publisher = Publisher(open_store(f"file://{root}"), ca, "bench")
    publication = ScalePublication(publisher, orders)
    changed = ScalePublication.name(0)
    publication.renew(changed)
    state_dir = work / f"scale-state-{orders}"
    seed_state(state_dir, publication.entries(), skip=changed)
    metrics = work / f"scale-metrics-{orders}" / "agent.prom"
    text = (
        f'store = "file://{root}"\nstate_dir = "{state_dir}"\nmetrics_file = "{metrics}"\n'
        + publisher.cluster_stanza()
    )
    config = parse_agent_config(text, "bench-scale.conf")
    started = time.perf_counter()
    agent = Agent(config)
    load_seconds = time.perf_counter() - started

    def poll(installed: tuple[str, ...]) -> None:
        result = agent.poll_once()
        if not result.ok or result.installed != installed:
            raise RuntimeError(f"unexpected poll: {result.summary()} {result.problems[:3]}")

    first = cpu_ms(lambda: poll((changed,)))
    idle = [cpu_ms(lambda: poll(())) for _ in range(5)]
    publication.renew(changed)
    before = files_under(state_dir / "state.d")
    before.update(files_under(state_dir / "state.json"))
    before_index = (state_dir / "state.json").stat().st_ino
    change = cpu_ms(lambda: poll((changed,)))
    after = files_under(state_dir / "state.d")
    index_size = (state_dir / "state.json").stat().st_size
    written = sum(found[1] for path, found in after.items() if before.get(path) != found)
    if (state_dir / "state.json").stat().st_ino != before_index:
        written += index_size
    idle_after = cpu_ms(lambda: poll(()))
    started = time.perf_counter()
    status_text = format_status(build_status(config, now=int(time.time())))
    status_seconds = time.perf_counter() - started
    # The same node without a metrics file (whose per-order lines are rewritten on every
    # change): what the poll itself costs, over CHANGES renewals of one order.
    bare = Agent(parse_agent_config(text.replace(f'metrics_file = "{metrics}"\n', ""), "bare"))
    if not bare.poll_once().ok:
        raise RuntimeError("the agent without a metrics file failed its first poll")
    changes = []
    for _ in range(CHANGES):
        publication.renew(changed)
        started_cpu = time.thread_time()
        result = bare.poll_once()
        changes.append(round((time.thread_time() - started_cpu) * 1000, 2))
        if result.installed != (changed,):
            raise RuntimeError(f"unexpected poll: {result.summary()}")
    assert config.metrics_file is not None
    metrics_bytes = Path(config.metrics_file).stat().st_size
    for directory in (root, state_dir):
        shutil.rmtree(directory, ignore_errors=True)
    return {
        "orders": orders,
        "load_seconds": round(load_seconds, 3),
        "first_poll_cpu_ms": first,
        "idle_poll_cpu_ms": round(min(idle), 2),
        "change_poll_cpu_ms": change,
        "change_poll_cpu_ms_without_metrics": sorted(changes)[len(changes) // 2],
        "change_poll_cpu_ms_without_metrics_all": changes,
        "idle_poll_after_change_cpu_ms": idle_after,
        "change_state_bytes_written": written,
        "state_index_bytes": index_size,
        "state_bytes": index_size + sum(size for _, size in after.values()),
        "metrics_file_bytes": metrics_bytes,
        "status_seconds": round(status_seconds, 3),
        "status_bytes": len(status_text),
    }


# -- main ---------------------------------------------------------------------------------


def run(order_counts: list[int], state_sizes: list[int]) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="certfleet-bench-agent-"))
    ca = TestCa()
    weed = SeaweedFS(find_weed(), work / "seaweedfs", bucket="bench")
    (work / "seaweedfs").mkdir()
    weed.start()
    saved = {name: os.environ.get(name) for name in weed.env}
    os.environ.update(weed.env)
    results: dict[str, Any] = {"status": "ok", "idle_poll": {}, "idle_rss_mb": {}}
    try:
        files_root = work / "store"
        files_root.mkdir()
        file_url = f"file://{files_root}"
        s3_url = f"s3://{weed.bucket}/idle"
        file_pub = publish(file_url, ca, IDLE_ORDERS)
        s3_pub = publish(s3_url, ca, IDLE_ORDERS, weed.endpoint)
        results["idle_poll"]["file"] = idle_poll(
            make_agent(file_url, work / "s-file", file_pub, None)
        )
        results["idle_poll"]["s3"] = idle_poll(
            make_agent(s3_url, work / "s-s3", s3_pub, weed.endpoint)
        )
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        with https_server(files_root, work) as (https_url, tls_cert, counter):
            os.environ["REQUESTS_CA_BUNDLE"] = str(tls_cert)
            env["REQUESTS_CA_BUNDLE"] = str(tls_cert)
            agent = make_agent(https_url, work / "s-https", file_pub, None)
            results["idle_poll"]["https"] = idle_poll(agent, counter)
            config = work / "https.conf"
            config.write_text(config_text(https_url, work / "d-https", file_pub, None))
            results["idle_rss_mb"]["https"] = daemon_rss(config, env, work / "d-https")
        config = work / "s3.conf"
        config.write_text(config_text(s3_url, work / "d-s3", s3_pub, weed.endpoint))
        results["idle_rss_mb"]["s3"] = daemon_rss(config, env, work / "d-s3")
        results["import_rss_mb"] = {
            "python": import_rss(env, "pass"),
            "node_agent.cli": import_rss(env, "import node_agent.cli"),
            "+ requests": import_rss(env, "import node_agent.cli, requests"),
            "+ boto3 S3 client": import_rss(
                env, "import node_agent.cli, boto3; boto3.client('s3', region_name='us-east-1')"
            ),
            "+ botocore S3 client (what S3Store makes)": import_rss(
                env,
                "import node_agent.cli, botocore.session; botocore.session.get_session()"
                ".create_client('s3', region_name='us-east-1')",
            ),
        }
        results["install_seconds"] = {}
        results["install_seconds_s3"] = {}
        for count in order_counts:
            root = work / f"install-{count}"
            root.mkdir()
            results["install_seconds"][str(count)] = install_time(
                f"file://{root}", count, ca, work, None
            )
            results["install_seconds_s3"][str(count)] = install_time(
                f"s3://{weed.bucket}/install-{count}", count, ca, work, weed.endpoint
            )
        results["state_scale"] = [state_scale(size, ca, work) for size in state_sizes]
    finally:
        weed.stop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    parser.add_argument("--orders", default="1,1000", help="order counts to install")
    parser.add_argument(
        "--state-sizes", default=STATE_SIZES, help="order counts for the state-at-scale figures"
    )
    args = parser.parse_args()
    counts = [int(part) for part in args.orders.split(",") if part]
    sizes = [int(part) for part in args.state_sizes.split(",") if part]
    results = run(counts, sizes)
    for section, figures in results.items():
        print(f"{section}: {figures}")
    if args.json:
        print(json.dumps(results))


if __name__ == "__main__":
    main()
