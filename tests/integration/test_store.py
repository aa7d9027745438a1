"""One conformance suite for every store backend, against real servers on 127.0.0.1.

Backends: ``s3-seaweedfs`` (S3Store on the session's SeaweedFS, pages of 7 keys so that
listing crosses pages), ``file`` (FileStore in a temp dir) and ``https-readonly``
(HttpsStore reading, over a local HTTP server with ETag support, what a FileStore wrote).
Read behaviour runs on all three, writes on the two writable ones.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

from certfleet.store import (
    ConditionalWritesUnsupported,
    FileStore,
    HttpsStore,
    InvalidKey,
    ObjectNotFound,
    ObjectTooLarge,
    PreconditionFailed,
    ReadOnlyStore,
    S3Store,
    Store,
    StoreAccessDenied,
    StoredObject,
    StoreStats,
    StoreUnavailable,
    StoreURLError,
    check_conditional_writes,
    open_store,
)
from tests.plugins.seaweedfs import SeaweedFS

PAGE_SIZE = 7
KEY = "v1/clusters/web/head"


# -- a web server for a file store's directory -----------------------------------------


class StoreDirHandler(BaseHTTPRequestHandler):
    """GET of a file under ``root`` with a strong ETag (quoted SHA-256) and If-None-Match."""

    root = Path("/nonexistent")
    fail_with: int | None = None

    def do_GET(self) -> None:
        if self.fail_with is not None:
            self.send_error(self.fail_with)
            return
        path = unquote(urlsplit(self.path).path).lstrip("/")
        parts = path.split("/")
        target = self.root.joinpath(*parts)
        if any(p.startswith(".") or not p for p in parts) or not target.is_file():
            self.send_error(404)
            return
        data = target.read_bytes()
        etag = '"' + hashlib.sha256(data).hexdigest() + '"'
        wanted = [t.strip() for t in self.headers.get("If-None-Match", "").split(",")]
        if etag in wanted or "*" in wanted:
            self.send_response(304)
            self.send_header("ETag", etag)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("ETag", etag)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def web_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """A loopback HTTP server over a temp directory: (directory, base URL)."""
    root = tmp_path_factory.mktemp("www")
    handler = type("Handler", (StoreDirHandler,), {"root": root})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


# -- the backends ------------------------------------------------------------------------


@dataclass
class Backend:
    name: str
    reader: Store
    writer: Store
    url: str  # the writer's URL, to open it again in another process
    endpoint: str | None = None


def make_backend(name: str, request: pytest.FixtureRequest, tmp_path: Path, unique: str) -> Backend:
    if name == "s3-seaweedfs":
        server: SeaweedFS = request.getfixturevalue("seaweedfs")
        url = request.getfixturevalue("s3_url")
        prefix = url.split("/", 3)[3]
        store = S3Store(server.bucket, prefix, endpoint=server.endpoint, page_size=PAGE_SIZE)
        return Backend(name, store, store, url, server.endpoint)
    if name == "file":
        store_ = FileStore(tmp_path / "store")
        return Backend(name, store_, store_, store_.url)
    root, base = request.getfixturevalue("web_root")
    writer = FileStore(root / unique)
    return Backend(name, open_store(f"{base}/{unique}/"), writer, writer.url)


@pytest.fixture(params=["s3-seaweedfs", "file", "https-readonly"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """Every backend: read through ``reader``, write through ``writer``."""
    return make_backend(request.param, request, tmp_path, tmp_path.name)


@pytest.fixture(params=["s3-seaweedfs", "file"])
def writable(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """The backends that take writes (reader and writer are the same store)."""
    return make_backend(request.param, request, tmp_path, tmp_path.name)


# -- reads, on every backend ---------------------------------------------------------------


def test_round_trip(backend: Backend) -> None:
    etag = backend.writer.put(KEY, b"first")
    got = backend.reader.get(KEY, max_bytes=1 << 24)
    assert got == StoredObject(b"first", got.etag) and got.etag
    if backend.reader is backend.writer:
        assert got.etag == etag
    backend.writer.put(KEY, b"second")
    again = backend.reader.get(KEY, max_bytes=1 << 24)
    assert again.data == b"second" and again.etag != got.etag


def test_an_object_over_the_readers_cap_is_refused_before_it_is_buffered(
    backend: Backend,
) -> None:
    """A 2 MiB object read with a 64 KiB cap (a head): ObjectTooLarge naming the key and
    the cap, and next to nothing counted as received."""
    backend.writer.put(KEY, b"h" * (2 * 1024 * 1024))
    before = backend.reader.stats.bytes_in
    with pytest.raises(ObjectTooLarge) as caught:
        backend.reader.get(KEY, max_bytes=64 * 1024)
    assert KEY in str(caught.value) and "65536" in str(caught.value)
    assert caught.value.max_bytes == 64 * 1024 and caught.value.key == KEY
    assert backend.reader.stats.bytes_in - before <= 64 * 1024
    with pytest.raises(ObjectTooLarge):  # a conditional read is bounded the same way
        backend.reader.get_if_changed(KEY, etag='"older"', max_bytes=64 * 1024)
    assert backend.reader.stats.bytes_in - before <= 2 * 64 * 1024
    exact = backend.reader.get(KEY, max_bytes=2 * 1024 * 1024)  # at the cap: accepted
    assert len(exact.data) == 2 * 1024 * 1024
    assert caught.value.etag == exact.etag  # enough to replace it unread (a broken lease)


def test_binary_and_empty_objects(backend: Backend) -> None:
    blob = bytes(range(256)) * 64
    backend.writer.put("v1/clusters/web/bundles/" + "ab" * 32, blob)
    backend.writer.put("v1/clusters/web/acks/empty", b"")
    got = backend.reader.get("v1/clusters/web/bundles/" + "ab" * 32, max_bytes=1 << 24)
    assert got.data == blob
    empty = backend.reader.get("v1/clusters/web/acks/empty", max_bytes=1 << 24)
    assert empty.data == b""


def test_conditional_get(backend: Backend) -> None:
    backend.writer.put(KEY, b"v1")
    first = backend.reader.get(KEY, max_bytes=1 << 24)
    assert backend.reader.get_if_changed(KEY, etag=first.etag, max_bytes=1 << 24) is None
    backend.writer.put(KEY, b"v2")
    changed = backend.reader.get_if_changed(KEY, etag=first.etag, max_bytes=1 << 24)
    assert changed is not None and changed.data == b"v2"
    assert backend.reader.get_if_changed(KEY, etag=changed.etag, max_bytes=1 << 24) is None


def test_missing_key(backend: Backend) -> None:
    missing = "v1/clusters/web/shards/" + "0" * 64
    with pytest.raises(ObjectNotFound) as caught:
        backend.reader.get(missing, max_bytes=1 << 24)
    assert caught.value.key == missing
    assert missing in str(caught.value) and backend.reader.url in str(caught.value)
    with pytest.raises(ObjectNotFound):
        backend.reader.get_if_changed(missing, etag='"whatever"', max_bytes=1 << 24)


@pytest.mark.parametrize(
    "key", ["", "/v1/head", "v1//head", "../x", "v1/../head", ".hidden", "v1/.lock", "a b", "a\\b"]
)
def test_invalid_keys_are_refused_before_io(backend: Backend, key: str) -> None:
    with pytest.raises(InvalidKey) as caught:
        backend.reader.get(key, max_bytes=1 << 24)
    assert caught.value.key == key
    with pytest.raises(InvalidKey):
        backend.writer.put(key, b"x")


def test_stats_count_calls_and_bytes(backend: Backend) -> None:
    backend.writer.put(KEY, b"12345")
    before = backend.reader.stats.as_dict()
    got = backend.reader.get(KEY, max_bytes=1 << 24)
    assert backend.reader.get_if_changed(KEY, etag=got.etag, max_bytes=1 << 24) is None
    after = backend.reader.stats.as_dict()
    assert after["reads"] - before["reads"] == 2
    assert after["requests"] - before["requests"] == 2
    assert after["bytes_in"] - before["bytes_in"] == 5
    assert backend.writer.stats.writes >= 1 and backend.writer.stats.bytes_out >= 5


# -- writes, on the writable backends ------------------------------------------------------


def test_put_if_absent_twice(writable: Backend) -> None:
    store = writable.writer
    etag = store.put_if_absent(KEY, b"mine")
    with pytest.raises(PreconditionFailed) as caught:
        store.put_if_absent(KEY, b"theirs")
    assert caught.value.key == KEY and store.url in str(caught.value)
    got = store.get(KEY, max_bytes=1 << 24)
    assert got == StoredObject(b"mine", etag)


def test_put_if_match(writable: Backend) -> None:
    store = writable.writer
    first = store.put(KEY, b"one")
    second = store.put_if_match(KEY, b"two", first)
    assert second != first
    with pytest.raises(PreconditionFailed):
        store.put_if_match(KEY, b"stale", first)
    with pytest.raises(PreconditionFailed):
        store.put_if_match(KEY, b"made up", '"' + "f" * 32 + '"')
    with pytest.raises(PreconditionFailed):
        store.put_if_match("v1/clusters/web/nothing-here", b"x", second)
    assert store.get(KEY, max_bytes=1 << 24) == StoredObject(b"two", second)
    with pytest.raises(ObjectNotFound):
        store.get("v1/clusters/web/nothing-here", max_bytes=1 << 24)


def test_list_all_pages(writable: Backend) -> None:
    store = writable.writer
    shards = sorted(f"v1/clusters/web/shards/{i:064x}" for i in range(3 * PAGE_SIZE + 2))
    for key in shards:
        store.put(key, b"s")
    others = ["v1/clusters/web/head", "v1/clusters/webx/head", "v1/sync/lease"]
    for key in others:
        store.put(key, b"o")
    requests_before = store.stats.requests
    assert list(store.list("v1/clusters/web/shards/")) == shards
    if isinstance(store, S3Store):  # 23 keys in pages of 7: four round trips
        assert store.stats.requests - requests_before == 4
    assert list(store.list("v1/clusters/web/")) == ["v1/clusters/web/head", *shards]
    assert list(store.list("v1/clusters/web")) == [
        "v1/clusters/web/head",
        *shards,
        "v1/clusters/webx/head",
    ]
    assert list(store.list("")) == sorted(shards + others)
    assert list(store.list("v1/nothing/")) == []
    assert store.stats.lists == 5


def test_list_etags_gives_each_key_with_an_etag_that_changes_with_the_content(
    writable: Backend,
) -> None:
    store = writable.writer
    keys = [f"v1/clusters/web/acks/node{i}" for i in range(PAGE_SIZE + 2)]
    for key in keys:
        store.put(key, key.encode())
    store.put("v1/clusters/web/head", b"h")
    requests_before = store.stats.requests
    first = dict(store.list_etags("v1/clusters/web/acks/"))
    assert sorted(first) == sorted(keys)
    if isinstance(store, S3Store):  # 9 keys in pages of 7: two round trips, no GET
        assert store.stats.requests - requests_before == 2
    assert len(set(first.values())) == len(keys) and all(first.values())
    store.put(keys[0], b"changed")
    second = dict(store.list_etags("v1/clusters/web/acks/"))
    assert second[keys[0]] != first[keys[0]]
    assert {k: v for k, v in second.items() if k != keys[0]} == {
        k: v for k, v in first.items() if k != keys[0]
    }


def test_delete_is_idempotent(writable: Backend) -> None:
    store = writable.writer
    store.put(KEY, b"x")
    store.delete(KEY)
    with pytest.raises(ObjectNotFound):
        store.get(KEY, max_bytes=1 << 24)
    store.delete(KEY)
    store.delete("v1/never/existed")
    assert list(store.list("v1/")) == []
    assert store.stats.deletes == 3


def test_self_test_passes(writable: Backend) -> None:
    check_conditional_writes(writable.writer)
    assert list(writable.writer.list("v1/sync/selftest/")) == []
    # four put attempts (two refused) and one delete, counted alike by every backend
    stats = writable.writer.stats
    assert (stats.writes, stats.deletes, stats.reads) == (4, 1, 0)


def test_concurrent_put_if_absent_threads(writable: Backend) -> None:
    store = writable.writer
    contenders = 8
    barrier = threading.Barrier(contenders)
    results: dict[int, str] = {}

    def contend(i: int) -> None:
        barrier.wait()
        try:
            store.put_if_absent("v1/sync/lease", f"thread-{i}".encode())
            results[i] = "won"
        except PreconditionFailed:
            results[i] = "lost"

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(contenders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [i for i, outcome in results.items() if outcome == "won"]
    assert len(results) == contenders and len(winners) == 1
    got = store.get("v1/sync/lease", max_bytes=1 << 24)
    assert got.data == f"thread-{winners[0]}".encode()


CONTENDER = """
import os, sys, time
from certfleet.store import PreconditionFailed, open_store
url, endpoint, key, name, ready, go = sys.argv[1:]
store = open_store(url, endpoint=endpoint or None)
open(ready, "w").close()
while not os.path.exists(go):
    time.sleep(0.001)
try:
    store.put_if_absent(key, name.encode())
    print("won")
except PreconditionFailed:
    print("lost")
"""


def test_concurrent_put_if_absent_processes(writable: Backend, tmp_path: Path) -> None:
    go = tmp_path / "go"
    key = "v1/clusters/web/head"
    count = 4
    contenders = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                CONTENDER,
                writable.url,
                writable.endpoint or "",
                key,
                f"proc-{i}",
                str(tmp_path / f"ready-{i}"),
                str(go),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(count)
    ]
    deadline = time.monotonic() + 60
    while len(list(tmp_path.glob("ready-*"))) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    go.touch()  # all have their store open: release them together
    outcomes = [process.communicate(timeout=60)[0].strip() for process in contenders]
    assert sorted(outcomes) == ["lost"] * (count - 1) + ["won"]
    got = writable.writer.get(key, max_bytes=1 << 24)
    assert got.data == f"proc-{outcomes.index('won')}".encode()


# -- the read-only backend -------------------------------------------------------------------


def test_https_store_refuses_writes_and_lists(web_root: tuple[Path, str]) -> None:
    store = open_store(web_root[1] + "/ro")
    assert store.readonly and isinstance(store, HttpsStore)
    for attempt in (
        lambda: store.put(KEY, b"x"),
        lambda: store.put_if_absent(KEY, b"x"),
        lambda: store.put_if_match(KEY, b"x", "e"),
        lambda: store.delete(KEY),
        lambda: store.list("v1/"),
        lambda: store.list_etags("v1/"),
    ):
        with pytest.raises(ReadOnlyStore) as caught:
            attempt()
        assert store.url in str(caught.value)
    with pytest.raises(ReadOnlyStore):
        check_conditional_writes(store)


def test_https_server_error_is_unavailable(web_root: tuple[Path, str]) -> None:
    StoreDirHandler.fail_with = 503
    try:
        store = HttpsStore(web_root[1] + "/x", max_attempts=1)
        with pytest.raises(StoreUnavailable) as caught:
            store.get(KEY, max_bytes=1 << 24)
        assert "503" in str(caught.value)
    finally:
        StoreDirHandler.fail_with = None


# -- the self-test's failure ---------------------------------------------------------------


class IgnoresConditions(FileStore):
    """A store that, like some S3-compatible servers, ignores the preconditions."""

    def put_if_absent(self, key: str, data: bytes) -> str:
        return self.put(key, data)

    def put_if_match(self, key: str, data: bytes, etag: str) -> str:
        return self.put(key, data)


def test_self_test_fails_loudly_on_ignored_conditions(tmp_path: Path) -> None:
    store = IgnoresConditions(tmp_path / "liar")
    with pytest.raises(ConditionalWritesUnsupported) as caught:
        check_conditional_writes(store)
    message = str(caught.value)
    assert "ignores If-None-Match/If-Match" in message and "lease and head" in message
    assert store.url in message
    assert list(store.list("")) == []  # the probe was cleaned up


# -- failures: credentials, unreachable stores -----------------------------------------------


def test_wrong_s3_secret_is_access_denied(
    seaweedfs: SeaweedFS, s3_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong = "wrong-" + seaweedfs.secret_key
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", wrong)
    store = open_store(s3_url, endpoint=seaweedfs.endpoint)
    for attempt in (lambda: store.get(KEY, max_bytes=1 << 24), lambda: store.put(KEY, b"x")):
        with pytest.raises(StoreAccessDenied) as caught:
            attempt()
        shown = str(caught.value) + repr(caught.value) + repr(store)
        assert "SignatureDoesNotMatch" in shown and s3_url in shown
        assert wrong not in shown and seaweedfs.secret_key not in shown


def test_s3_default_chain_finds_the_endpoint(seaweedfs: SeaweedFS, s3_url: str) -> None:
    """No explicit endpoint: AWS_ENDPOINT_URL_S3 and the keys come from the environment."""
    store = open_store(s3_url)
    etag = store.put(KEY, b"via the chain")
    assert store.get(KEY, max_bytes=1 << 24) == StoredObject(b"via the chain", etag)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_stores_are_unavailable() -> None:
    port = closed_port()
    s3 = S3Store("certfleet-test", "x", endpoint=f"http://127.0.0.1:{port}", max_attempts=1)
    web = HttpsStore(f"http://127.0.0.1:{port}/x", max_attempts=1)
    for store in (s3, web):
        with pytest.raises(StoreUnavailable) as caught:
            store.get(KEY, max_bytes=1 << 24)
        assert KEY in str(caught.value) and str(port) in str(caught.value)
    with pytest.raises(StoreUnavailable):
        s3.put_if_absent(KEY, b"x")
    with pytest.raises(StoreUnavailable):
        list(s3.list("v1/"))


# -- opening stores by URL -------------------------------------------------------------------


def test_open_store_picks_the_backend(tmp_path: Path) -> None:
    assert isinstance(open_store(tmp_path.as_uri()), FileStore)
    assert open_store(tmp_path.as_uri()).url == tmp_path.as_uri()
    assert isinstance(open_store("https://certs.example.com/fleet"), HttpsStore)
    assert isinstance(open_store("http://127.0.0.1:9/fleet"), HttpsStore)
    s3 = open_store("s3://my-bucket/certfleet/", endpoint="http://127.0.0.1:9")
    assert isinstance(s3, S3Store) and s3.url == "s3://my-bucket/certfleet"
    web = open_store("https://reader:hunter2@certs.example.com/fleet")
    assert "hunter2" not in web.url + repr(web)


@pytest.mark.parametrize(
    ("url", "endpoint", "reason"),
    [
        ("ftp://host/x", None, "unknown scheme"),
        ("/var/lib/certfleet", None, "no scheme"),
        ("s3://Bad_Bucket/x", None, "not a valid S3 bucket"),
        ("s3://bucket/a/../b", None, "'..'"),
        ("s3://bucket/x", "ftp://127.0.0.1", "endpoint"),
        ("file://otherhost/x", None, "local path"),
        ("file:///x/../y", None, "'..'"),
        ("file:///x", "http://127.0.0.1:1", "s3:// stores only"),
        ("http://certs.example.com/x", None, "loopback"),
        ("https://user:hunter2@/x", None, "no host"),
        ("https://host/x?token=1", None, "no query"),
    ],
)
def test_bad_store_urls(url: str, endpoint: str | None, reason: str) -> None:
    with pytest.raises(StoreURLError) as caught:
        open_store(url, endpoint=endpoint)
    message = str(caught.value)
    assert reason in message
    assert "s3://bucket/prefix" in message and "file:///" in message and "https://" in message
    assert "hunter2" not in message


def test_file_and_https_backends_do_not_import_boto3(tmp_path: Path) -> None:
    probe = (
        "import sys\n"
        "from certfleet.store import open_store\n"
        f"store = open_store({tmp_path.as_uri()!r})\n"
        "store.put('v1/x', b'x')\n"
        "open_store('https://certs.example.com/fleet')\n"
        "print('boto3' in sys.modules, 'botocore' in sys.modules)\n"
        "open_store('s3://my-bucket/p', endpoint='http://127.0.0.1:9')\n"
        "print('boto3' in sys.modules, 'botocore' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split("\n")
    assert out[0] == "False False"  # neither file nor https pulled boto3 in
    # and the check can tell: s3:// brings botocore, and only botocore (boto3 would cost ~3 MB)
    assert out[1] == "False True"


def test_stats_as_dict_is_complete() -> None:
    stats = StoreStats()
    stats.count("writes", bytes_out=10)
    stats.count("reads", bytes_in=4)
    stats.count("")
    assert stats.as_dict() == {
        "requests": 3,
        "reads": 1,
        "writes": 1,
        "lists": 0,
        "deletes": 0,
        "bytes_in": 4,
        "bytes_out": 10,
    }


# -- a real outage: SeaweedFS stopped, then restarted on the same ports and data ---------------


@pytest.mark.fault
def test_seaweedfs_outage_and_recovery(seaweedfs: SeaweedFS, s3_url: str) -> None:
    prefix = s3_url.split("/", 3)[3]
    store = S3Store(seaweedfs.bucket, prefix, endpoint=seaweedfs.endpoint, max_attempts=1)
    etag = store.put(KEY, b"survives restarts")
    seaweedfs.stop()
    try:
        with pytest.raises(StoreUnavailable):
            store.get(KEY, max_bytes=1 << 24)
    finally:
        seaweedfs.start()
    assert store.get(KEY, max_bytes=1 << 24) == StoredObject(b"survives restarts", etag)
    assert os.environ["AWS_ENDPOINT_URL_S3"] == seaweedfs.endpoint


def test_the_s3_client_loads_the_cut_model_of_the_four_operations_it_calls() -> None:
    store = S3Store("certfleet-model-check", "p", endpoint="http://127.0.0.1:9")
    model = store._client.meta.service_model
    assert sorted(model.operation_names) == [
        "DeleteObject", "GetObject", "ListObjectsV2", "PutObject",
    ]  # fmt: skip
    import botocore.session

    full = botocore.session.get_session().get_service_model("s3")
    for field in ("apiVersion", "protocol", "signatureVersion", "signingName", "endpointPrefix"):
        assert model.metadata.get(field) == full.metadata.get(field), field
    # The same wire shape as the installed botocore's for every parameter the store sends and
    # every field it reads back. The cut model comes from one botocore release (the oldest one
    # Python 3.9 gets is older): members S3 added later may differ, these may not.
    sent = {
        "GetObject": ("Bucket", "Key", "IfNoneMatch"),
        "PutObject": ("Bucket", "Key", "Body", "IfNoneMatch", "IfMatch"),
        "DeleteObject": ("Bucket", "Key"),
        "ListObjectsV2": ("Bucket", "Prefix", "ContinuationToken", "MaxKeys"),
    }
    read = {
        "GetObject": ("Body", "ETag"),
        "PutObject": ("ETag",),
        "DeleteObject": (),
        "ListObjectsV2": ("Contents", "IsTruncated", "NextContinuationToken"),
    }
    for name in model.operation_names:
        ours, theirs = model.operation_model(name), full.operation_model(name)
        assert ours.http == theirs.http
        for member in sent[name]:
            assert _wire(ours.input_shape.members[member]) == _wire(
                theirs.input_shape.members[member]
            ), (name, member)
        for member in read[name]:
            assert _wire(ours.output_shape.members[member]) == _wire(
                theirs.output_shape.members[member]
            ), (name, member)


def _wire(shape: Any) -> tuple[str, object, object]:
    """How a member travels: its type, where (header, URI, body) and under which name."""
    return (shape.type_name, shape.serialization.get("location"), shape.serialization.get("name"))
