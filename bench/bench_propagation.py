"""What one agent pays per poll and per change: the idle poll, and one change among N orders.

Run: .venv/bin/python bench/bench_propagation.py [--sizes 1000,10000] [--json]

``idle_poll(seaweedfs)``: one real agent (``node_agent.agent.Agent``) polls a small
publication in SeaweedFS through a counting TCP proxy on 127.0.0.1, so "bytes on the wire"
are real HTTP bytes, headers included (request + response); requests come from the store's
``stats``, CPU from ``time.thread_time`` of the polling thread (the proxy runs in other
threads).

``propagation(sizes)``: for each N, a real publication of N orders (bench/fleet.py: one
ECDSA key and certificate per order, every bundle verified by the agent's own code) is
written to a ``file://`` store on tmpfs. A real agent is brought to the steady state of
that publication: its state file lists the N-1 other orders as installed (their files are
not written: that would only measure the disk), and its first real poll reads the head and
every shard (so the agent itself verifies them) and installs the one order that will
change. Then that order is renewed (new key, certificate, bundle; its shard; a new head)
and the agent's next ``poll_once`` is measured: store requests, bytes fetched, CPU.

The naive layout beside it: one encrypted index object listing every order (the same shard
encoding, one object), which an agent must fetch whole on every change, plus the changed
bundle. Its read path (fetch, decrypt, decode, diff, fetch and check the bundle) is measured
against the same read path of the real layout (head, changed shard, bundle), so the ratio
compares like with like; the real agent's full poll also installs files and saves its state.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fleet import CLUSTER, Issuer, Publication, SealedOrder, make_orders, order_name, seal_verified

from certfleet.bundle import (
    ClusterSecret,
    Shard,
    ShardEntry,
    SigningKey,
    content_hash,
    open_bundle,
    open_shard,
    safe_dir_name,
    seal_shard,
)
from certfleet.bundle.layout import BUNDLE_MAX_BYTES, HEAD_MAX_BYTES, SHARD_MAX_BYTES
from certfleet.config import parse_agent_config
from certfleet.sandbox.devstack import SeaweedFS
from certfleet.store import FileStore, HttpsStore, S3Store, Store
from node_agent.agent import Agent
from node_agent.agentstate import AgentState, InstalledOrder
from node_agent.certificate import check_bundle
from node_agent.source import ClusterSource
from node_agent.statestore import StateStore

SIZES = (1_000, 10_000, 100_000)
IDLE_POLLS = 20
NAIVE_INDEX = "v1/naive/bench/index"
CHANGED = order_name(0)  # the order renewed in every size


# -- a counting TCP proxy ------------------------------------------------------------------


@dataclass
class Wire:
    """Bytes that crossed the proxy: ``up`` client → server, ``down`` server → client."""

    up: int = 0
    down: int = 0
    connections: int = 0
    requests: Counter[str] = field(default_factory=Counter)  # by kind: list, get, put, ...
    last: dict[str, bytes] = field(default_factory=dict, repr=False)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, direction: str, count: int, data: bytes = b"") -> None:
        with self.lock:
            setattr(self, direction, getattr(self, direction) + count)
            if data:
                self.last[direction] = data
            if direction == "up":
                self.requests.update(request_kinds(data))

    def snapshot(self) -> tuple[int, int]:
        with self.lock:
            return self.up, self.down

    def request_counts(self) -> Counter[str]:
        with self.lock:
            return Counter(self.requests)


# A request line at the start of what a client sent, or right after a line end. The clients
# here (boto3, the AWS CLI, http.client) send a request's head in one write and do not
# pipeline; bodies are PEM, JSON or ciphertext, which hold no such line.
_REQUEST_LINE = re.compile(rb"(?:^|\r\n)(GET|PUT|HEAD|POST|DELETE) (\S+) HTTP/1\.[01]\r\n")


def request_kinds(data: bytes) -> list[str]:
    """The S3 request kinds whose request lines are in ``data``: list, get, put, head, ..."""
    kinds = []
    for method, target in _REQUEST_LINE.findall(data):
        if method == b"GET" and (b"list-type=" in target or b"?prefix=" in target):
            kinds.append("list")
        else:
            kinds.append(method.decode().lower())
    return kinds


class CountingProxy:
    """Forwards 127.0.0.1:<port> to 127.0.0.1:<target> and counts every byte both ways."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.wire = Wire()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self._stop.set()
        self._listener.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target_port))
            self.wire.add("connections", 1)
            for source, sink, direction in ((client, server, "up"), (server, client, "down")):
                threading.Thread(
                    target=self._pump, args=(source, sink, direction), daemon=True
                ).start()

    def _pump(self, source: socket.socket, sink: socket.socket, direction: str) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                self.wire.add(direction, len(data), data)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


# -- agent plumbing ------------------------------------------------------------------------


def make_agent(publication: Publication, store: Store, store_url: str, state_dir: Path,
               endpoint: str | None = None) -> Agent:  # fmt: skip
    text = f'store = "{store_url}"\nstate_dir = "{state_dir}"\n'
    if endpoint:
        text += f'store_endpoint = "{endpoint}"\n'
    config = parse_agent_config(text + publication.agent_stanza(), "bench agent config")
    return Agent(config, store=store)


@dataclass(frozen=True)
class Measured:
    requests: int
    reads: int
    bytes_in: int
    cpu_ms: float
    wall_ms: float


@contextmanager
def measuring(store: Store, into: list[Measured]) -> Iterator[None]:
    before = store.stats.as_dict()
    cpu, wall = time.thread_time(), time.perf_counter()
    yield
    cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
    after = store.stats.as_dict()
    into.append(
        Measured(
            after["requests"] - before["requests"],
            after["reads"] - before["reads"],
            after["bytes_in"] - before["bytes_in"],
            round(cpu * 1000, 2),
            round(wall * 1000, 2),
        )
    )


def _poll_checked(agent: Agent, expect_installed: tuple[str, ...]) -> None:
    result = agent.poll_once()
    if not result.ok or result.installed != expect_installed:
        raise RuntimeError(
            f"unexpected poll: {result.summary()} {[str(p) for p in result.problems]}"
        )


# -- 1. idle poll ---------------------------------------------------------------------------


def header_sizes(message: bytes) -> dict[str, int]:
    """Bytes per header line of an HTTP message (names only: values may be credentials)."""
    head = message.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    sizes = {"(start line)": len(head[0]) + 2}
    for line in head[1:]:
        name = line.split(":", 1)[0]
        sizes[name] = sizes.get(name, 0) + len(line) + 2
    sizes["(blank line)"] = 2
    return sizes


def idle_figures(
    agent: Agent, agent_store: Store, proxy: CountingProxy, polls: int
) -> dict[str, Any]:
    """Poll ``polls`` times with nothing new; per-poll requests, wire bytes, CPU."""
    runs: list[Measured] = []
    up, down = proxy.wire.snapshot()
    for _ in range(polls):
        with measuring(agent_store, runs):
            _poll_checked(agent, ())
    up2, down2 = proxy.wire.snapshot()
    request, answer = proxy.wire.last.get("up", b""), proxy.wire.last.get("down", b"")
    # One plain GET of the head (a 200 with its body): the per-request overhead.
    head_runs: list[Measured] = []
    with measuring(agent_store, head_runs):
        agent_store.get(f"v1/clusters/{CLUSTER}/head", max_bytes=HEAD_MAX_BYTES)
    up3, down3 = proxy.wire.snapshot()
    return {
        "polls": polls,
        "requests_per_poll": sum(r.requests for r in runs) / polls,
        "object_bytes_per_poll": sum(r.bytes_in for r in runs) / polls,
        "wire_bytes_per_poll": (up2 - up + down2 - down) / polls,
        "wire_bytes_up_per_poll": (up2 - up) / polls,
        "wire_bytes_down_per_poll": (down2 - down) / polls,
        "cpu_ms_per_poll": round(sum(r.cpu_ms for r in runs) / polls, 3),
        "wall_ms_per_poll": round(sum(r.wall_ms for r in runs) / polls, 3),
        "request_header_bytes": header_sizes(request),
        "response_header_bytes": header_sizes(answer),
        "get_200_wire_overhead_bytes": (up3 - up2) + (down3 - down2) - head_runs[0].bytes_in,
        "tcp_connections": proxy.wire.connections,
    }


def _small_publication(store: Store, orders: int) -> Publication:
    now = int(time.time())
    secret = ClusterSecret.generate("k1")
    publication = Publication(store, secret, SigningKey.generate(), orders)
    issuer = Issuer.create(now)
    publication.write_orders(
        [seal_verified(issuer, order_name(n), [secret], now) for n in range(orders)]
    )
    return publication


def _all_installed(orders: int) -> tuple[str, ...]:
    return tuple(sorted(order_name(n) for n in range(orders)))


def idle_poll_s3(seaweedfs: SeaweedFS, work: Path, orders: int, polls: int) -> dict[str, Any]:
    os.environ.update(seaweedfs.env)
    writer = S3Store(seaweedfs.bucket, "bench-idle", endpoint=seaweedfs.endpoint)
    publication = _small_publication(writer, orders)
    proxy = CountingProxy(int(seaweedfs.endpoint.rsplit(":", 1)[1]))
    try:
        agent_store = S3Store(seaweedfs.bucket, "bench-idle", endpoint=proxy.endpoint)
        agent = make_agent(publication, agent_store, f"s3://{seaweedfs.bucket}/bench-idle",
                           work / "agent-s3", proxy.endpoint)  # fmt: skip
        _poll_checked(agent, _all_installed(orders))
        return {
            "store": "s3:// (SeaweedFS, boto3, SigV4) via a counting proxy",
            "head_bytes": len(publication.head_bytes),
            **idle_figures(agent, agent_store, proxy, polls),
        }
    finally:
        proxy.close()


def free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        return int(probe.getsockname()[1])


NGINX_CONF = """daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log;
events {{}}
http {{
  access_log off;
  client_body_temp_path {dir}/body; proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi; uwsgi_temp_path {dir}/uwsgi; scgi_temp_path {dir}/scgi;
  server {{ listen 127.0.0.1:{port}; root {root}; }}
}}
"""


def idle_poll_http(work: Path, orders: int, polls: int) -> dict[str, Any]:
    """The same over plain GETs: a file store served by nginx, read as an http:// store."""
    nginx = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    if nginx is None:
        return {"status": "skipped: nginx not found"}
    root, conf_dir = work / "web-root", work / "nginx"
    conf_dir.mkdir(parents=True)
    work.chmod(0o755)  # nginx's workers (another user) must reach the web root
    publication = _small_publication(FileStore(str(root)), orders)
    port = free_port()
    (conf_dir / "nginx.conf").write_text(NGINX_CONF.format(dir=conf_dir, port=port, root=root))
    server = subprocess.Popen(
        [nginx, "-c", str(conf_dir / "nginx.conf"), "-p", str(conf_dir)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    proxy = CountingProxy(port)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("nginx did not start") from None
                time.sleep(0.05)
        url = f"http://127.0.0.1:{proxy.port}"
        agent_store = HttpsStore(url)
        agent = make_agent(publication, agent_store, url, work / "agent-http")
        _poll_checked(agent, _all_installed(orders))
        return {
            "store": "http:// (nginx serving a file store, plain GET) via a counting proxy",
            "head_bytes": len(publication.head_bytes),
            **idle_figures(agent, agent_store, proxy, polls),
        }
    finally:
        proxy.close()
        server.terminate()
        server.wait(timeout=10)


def idle_poll(seaweedfs: SeaweedFS, *, orders: int = 10, polls: int = IDLE_POLLS) -> dict[str, Any]:
    """One agent's idle poll of an s3:// store (SeaweedFS) and of an http:// one (nginx)."""
    work = Path(tempfile.mkdtemp(prefix="certfleet-bench-idle-"))
    try:
        result = {"orders_published": orders, "s3": idle_poll_s3(seaweedfs, work, orders, polls)}
        try:
            result["http"] = idle_poll_http(work, orders, polls)
        except (OSError, RuntimeError) as err:
            result["http"] = {"error": f"{type(err).__name__}: {err}"}
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


# -- 2. change propagation -----------------------------------------------------------------


def seed_state(state_dir: Path, entries: list[ShardEntry], skip: str) -> None:
    """The agent's state after installing every order but ``skip`` (files not written)."""
    state = AgentState()
    state.cluster(CLUSTER)
    for entry in entries:
        if entry.order_name == skip:
            continue
        state.orders[entry.order_name] = InstalledOrder(
            cluster=CLUSTER,
            safe_name=safe_dir_name(entry.order_name),
            bundle_hash=entry.bundle_hash.hex(),
            serial=entry.serial,
            key_type="ecdsa",
            not_after=entry.not_after,
            version="seeded",
            copies_version="seeded",
        )
    StateStore(str(state_dir)).save(state)


def structured_read(store: Store, publication: Publication, old: dict[str, ShardEntry],
                    old_hashes: list[bytes], old_etag: str, now: int) -> list[str]:  # fmt: skip
    """The read path of the real layout: head, changed shards, a diff, the changed bundles."""
    source = ClusterSource(store, CLUSTER, secrets=[publication.secret],
                           publishers=[publication.signing_key.public_key()])  # fmt: skip
    stored = source.fetch_head_if_changed(old_etag)
    assert stored is not None  # the head changed
    head = source.verify_head(stored.data, now=now, min_generation=0)
    changed = []
    for index, digest in enumerate(head.shard_hashes):
        if digest == old_hashes[index]:
            continue
        for entry in source.fetch_shard(index, digest).entries:
            if old.get(entry.order_name) != entry:
                bundle = source.fetch_bundle(entry.order_name, entry.bundle_hash)
                check_bundle(bundle, object_name=entry.order_name, now=now)
                changed.append(entry.order_name)
    return changed


def naive_read(store: Store, secret: ClusterSecret, old: dict[str, ShardEntry],
               old_etag: str, now: int) -> list[str]:  # fmt: skip
    """The read path of the naive layout: the whole index, a diff, the changed bundles."""
    stored = store.get_if_changed(NAIVE_INDEX, max_bytes=1 << 30, etag=old_etag)  # one index
    assert stored is not None  # the index changed
    index = open_shard(stored.data, cluster=CLUSTER, index=0, secrets=[secret])
    changed = []
    for entry in index.entries:
        if old.get(entry.order_name) != entry:
            bundle_data = store.get(
                f"v1/clusters/{CLUSTER}/bundles/{entry.bundle_hash.hex()}",
                max_bytes=BUNDLE_MAX_BYTES,
            )
            assert content_hash(bundle_data.data) == entry.bundle_hash
            bundle = open_bundle(bundle_data.data, cluster=CLUSTER, order_name=entry.order_name,
                                 secrets=[secret])  # fmt: skip
            check_bundle(bundle, object_name=entry.order_name, now=now)
            changed.append(entry.order_name)
    return changed


def _profile_top(profile: cProfile.Profile, limit: int = 12) -> list[str]:
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out)
    stats.sort_stats("cumulative").print_stats(r"(certfleet|node_agent|json|cryptography)", limit)
    return [line.rstrip() for line in out.getvalue().splitlines() if line.strip()][-limit - 1 :]


def one_size(orders: list[SealedOrder], size: int, work: Path, issuer: Issuer,
             secret: ClusterSecret, profile: bool) -> dict[str, Any]:  # fmt: skip
    now = int(time.time())
    root = work / f"store-{size}"
    writer = FileStore(str(root))
    publication = Publication(writer, secret, SigningKey.generate(), size)
    started = time.perf_counter()
    publication.write_orders(orders[:size])
    naive_gen1 = seal_shard(Shard(tuple(publication.entries())), cluster=CLUSTER, index=0,
                            secrets=[secret])  # fmt: skip
    naive_etag = writer.put(NAIVE_INDEX, naive_gen1)
    write_seconds = time.perf_counter() - started
    old_entries = {entry.order_name: entry for entry in publication.entries()}
    old_hashes = list(publication.shard_hashes)
    head_etag = content_hash(publication.head_bytes).hex()  # the file store's ETag

    # Steady state: seeded state, then a real poll reads head + all shards, installs CHANGED.
    state_dir = work / f"agent-{size}"
    seed_state(state_dir, publication.entries(), skip=CHANGED)
    agent_store = FileStore(str(root))
    agent = make_agent(publication, agent_store, root.as_uri(), state_dir)
    warm: list[Measured] = []
    with measuring(agent_store, warm):
        _poll_checked(agent, (CHANGED,))

    # The change: a renewal of one order.
    renewed = seal_verified(issuer, CHANGED, [secret], now)
    shard = publication.change(renewed)
    writer.put(NAIVE_INDEX, seal_shard(Shard(tuple(publication.entries())), cluster=CLUSTER,
                                       index=0, secrets=[secret]))  # fmt: skip
    runs: list[Measured] = []
    with measuring(agent_store, runs):
        _poll_checked(agent, (CHANGED,))
    with measuring(agent_store, runs):
        _poll_checked(agent, ())  # idle again: one conditional read

    reads: list[Measured] = []
    reader = FileStore(str(root))
    with measuring(reader, reads):
        assert structured_read(reader, publication, old_entries, old_hashes, head_etag, now) == [
            CHANGED
        ]
    naive_reader = FileStore(str(root))
    with measuring(naive_reader, reads):
        assert naive_read(naive_reader, secret, old_entries, naive_etag, now) == [CHANGED]

    shard_object = writer.get(
        f"v1/clusters/{CLUSTER}/shards/{publication.shard_hashes[shard].hex()}",
        max_bytes=SHARD_MAX_BYTES,
    )
    result: dict[str, Any] = {
        "orders": size,
        "shards": publication.count,
        "head_bytes": len(publication.head_bytes),
        "changed_shard_bytes": len(shard_object.data),
        "bundle_bytes": len(renewed.sealed),
        "naive_index_bytes": len(naive_gen1),
        "state_json_bytes": (state_dir / "state.json").stat().st_size,
        "publish_seconds": round(write_seconds, 2),
        "warmup_poll": asdict(warm[0]),
        "change_poll": asdict(runs[0]),
        "idle_poll_after": asdict(runs[1]),
        "read_path": {"structured": asdict(reads[0]), "naive": asdict(reads[1])},
        "ratio_bytes_naive_over_structured": round(reads[1].bytes_in / reads[0].bytes_in, 1),
        "ratio_cpu_naive_over_structured": round(reads[1].cpu_ms / max(reads[0].cpu_ms, 0.01), 1),
    }
    if profile:
        publication.change(seal_verified(issuer, CHANGED, [secret], now))
        profiler = cProfile.Profile()
        profiler.enable()
        _poll_checked(agent, (CHANGED,))
        profiler.disable()
        result["change_poll_profile"] = _profile_top(profiler)
    return result


def propagation(sizes: tuple[int, ...] = SIZES, *, profile_largest: bool = True) -> dict[str, Any]:
    """Change propagation for each N in ``sizes``, real layout and naive layout."""
    shm = Path("/dev/shm")  # noqa: S108 (a private mkdtemp inside it)
    base = shm if shm.is_dir() and os.access(shm, os.W_OK) else None
    work = Path(tempfile.mkdtemp(prefix="certfleet-bench-", dir=base))
    try:
        now = int(time.time())
        issuer = Issuer.create(now)
        secret = ClusterSecret.generate("k1")
        started = time.perf_counter()
        orders = make_orders(issuer, secret, max(sizes), now=now)
        made = time.perf_counter() - started
        rows: list[dict[str, Any]] = []
        results: dict[str, Any] = {
            "store": f"file:// on {'tmpfs (/dev/shm)' if base else 'the temp directory'}",
            "orders_made_and_verified": len(orders),
            "make_orders_seconds": round(made, 1),
            "sizes": rows,
        }
        for size in sizes:
            profile = profile_largest and size == max(sizes)
            rows.append(one_size(orders, size, work, issuer, secret, profile))
            shutil.rmtree(work / f"store-{size}", ignore_errors=True)
        return results
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sizes", default=",".join(str(n) for n in SIZES))
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    sizes = tuple(int(n) for n in args.sizes.split(","))
    result = propagation(sizes)
    print(json.dumps(result, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
