"""An S3-compatible server as the adversary (``tests.plugins.hostile_http``, ``trickle``).

- A LIST page of 64 MiB, announced or streamed without a length, is refused
  (``ListingTooLarge``, naming the prefix and the cap) after at most the cap is read: the
  Python heap never holds it, and botocore never parses it.
- A page with more keys than asked (MaxKeys ignored), and a listing that never ends (a
  fresh continuation token on every page), stop at their caps.
- Any other answer botocore would read whole (a PUT's or a DELETE's answer, a GET's error
  document) is refused past ``ANSWER_CAP`` too.
- The refusal ends that listing only: the same store lists another prefix next, and in a
  sync run of two clusters the one whose acks listing is hostile reports it while both
  publish (SeaweedFS behind the hostile server, which answers that one LIST itself).
- A call given up at its deadline does not leave its worker thread reading a trickle.
"""

from __future__ import annotations

import threading
import time
import tracemalloc
from collections.abc import Iterable, Iterator
from dataclasses import replace
from urllib.parse import parse_qs, urlsplit

import pytest

from certfleet.bundle.layout import acks_prefix
from certfleet.deadline import CALL_THREAD
from certfleet.store import ListingTooLarge, S3Store, StoreError, StoreUnavailable
from certfleet.store.s3wire import ANSWER_CAP, page_cap
from certfleet.sync import run_sync
from tests.plugins.faults import Ledger
from tests.plugins.hostile_http import HostileHttp, Request, answer_with, forward
from tests.plugins.sandbox import Sandbox
from tests.plugins.seaweedfs import SeaweedFS
from tests.plugins.sync_world import make_world
from tests.plugins.trickle import Trickle

MiB = 1024 * 1024
HOSTILE = "v1/clusters/hostile/acks/"
HONEST = "v1/clusters/honest/acks/"


@pytest.fixture(autouse=True)
def credentials(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Any keys for a hostile server alone; SeaweedFS's own where it answers too."""
    if "seaweedfs" in request.fixturenames:
        return
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")


def entry(key: str) -> bytes:
    return f'<Contents><Key>fleet/{key}</Key><ETag>"e"</ETag><Size>1</Size></Contents>'.encode()


def page(keys: Iterable[str], token: str | None = None) -> bytes:
    more = (
        f"<IsTruncated>true</IsTruncated><NextContinuationToken>{token}</NextContinuationToken>"
        if token
        else "<IsTruncated>false</IsTruncated>"
    )
    return (
        b'<?xml version="1.0" encoding="UTF-8"?>'
        b'<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
        b"<Name>bucket</Name>"
        + more.encode()
        + b"".join(entry(key) for key in keys)
        + b"</ListBucketResult>"
    )


def huge_page(total: int) -> Iterator[bytes]:
    """A page of ``total`` bytes (about), made lazily, 1 MiB at a time."""
    yield page([])[: -len(b"</ListBucketResult>")]
    block = entry(HOSTILE + "n" * 40) * (MiB // len(entry(HOSTILE + "n" * 40)))
    for _ in range(total // len(block)):
        yield block
    yield b"</ListBucketResult>"


def query(request: Request) -> dict[str, str]:
    return {name: values[0] for name, values in parse_qs(urlsplit(request.target).query).items()}


def serve_huge(server: HostileHttp, *, announced: bool) -> None:
    size = 64 * MiB

    def answer(request: Request) -> Iterator[bytes]:
        if query(request).get("prefix", "").startswith("fleet/" + HOSTILE):
            length = sum(len(chunk) for chunk in huge_page(size)) if announced else None
            headers = {"Content-Type": "application/xml"}
            if length is not None:
                headers["Content-Length"] = str(length)
            return answer_with(200, headers, huge_page(size))
        body = page([HONEST + "node-1", HONEST + "node-2"])
        return answer_with(200, {"Content-Length": str(len(body))}, [body])

    server.answer = answer


@pytest.mark.parametrize("announced", [True, False], ids=["content-length", "until-close"])
def test_a_64_mib_list_page_is_refused_at_its_cap_and_never_parsed(
    hostile_http: HostileHttp, announced: bool
) -> None:
    serve_huge(hostile_http, announced=announced)
    store = S3Store("bucket", "fleet", endpoint=hostile_http.url, timeout=20)
    tracemalloc.start()
    try:
        started = time.monotonic()
        with pytest.raises(ListingTooLarge) as caught:
            list(store.list(HOSTILE))
        took = time.monotonic() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    cap = page_cap(1000)
    assert took < 5.0, took
    assert peak < 8 * MiB, peak  # the whole page, read or parsed, would be 64 MiB and more
    assert caught.value.prefix == HOSTILE and caught.value.cap == cap
    assert repr(HOSTILE) in str(caught.value) and f"the cap is {cap} bytes" in str(caught.value)
    assert hostile_http.sent < 16 * MiB  # the rest was never asked for
    assert len(hostile_http.requests) == 1  # refused, not retried
    # The refusal ends that listing only: the next one, on the same store, works.
    assert sorted(store.list(HONEST)) == [HONEST + "node-1", HONEST + "node-2"]


@pytest.mark.parametrize("operation", ["put", "delete", "get"])
def test_any_other_answer_of_64_mib_is_refused_at_its_cap(
    hostile_http: HostileHttp, operation: str
) -> None:
    status = 404 if operation == "get" else 200  # a GET's 2xx body is the store's to cap
    hostile_http.answer = lambda _: answer_with(
        status, {"Content-Type": "application/xml"}, huge_page(64 * MiB)
    )
    store = S3Store("bucket", "fleet", endpoint=hostile_http.url, timeout=20)
    key = "v1/clusters/hostile/acks/node-1"
    tracemalloc.start()
    try:
        started = time.monotonic()
        with pytest.raises(StoreError) as caught:
            if operation == "put":
                store.put(key, b"ack")
            elif operation == "delete":
                store.delete(key)
            else:
                store.get(key, max_bytes=65536)
        took = time.monotonic() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert took < 5.0, took
    assert peak < 8 * MiB, peak
    assert f"over the cap of {ANSWER_CAP} bytes" in str(caught.value) and repr(key) in str(
        caught.value
    )
    assert len(hostile_http.requests) == 1  # refused, not retried


def test_a_hostile_acks_listing_fails_the_fleet_check_of_its_cluster_only(
    hostile_http: HostileHttp,
    seaweedfs: SeaweedFS,
    s3_url: str,
    sandbox: Sandbox,
    faults: Ledger,
) -> None:
    root = urlsplit(s3_url).path.strip("/") + "/"
    hostile, honest = (make_world(sandbox, s3_url, hostile_http.url) for _ in "ab")
    honest = replace(honest, signing_key=hostile.signing_key)
    target = root + acks_prefix(hostile.cluster)

    def answer(request: Request) -> Iterable[bytes]:
        if request.method == "GET" and query(request).get("prefix") == target:
            return answer_with(200, {"Content-Type": "application/xml"}, huge_page(64 * MiB))
        return forward(request, seaweedfs.endpoint)

    hostile_http.answer = answer
    names = [world.add(world.host("www")) for world in (hostile, honest)]
    faults.tried()
    config = hostile.config()
    clusters = tuple(c for world in (hostile, honest) for c in world.config().clusters)
    started = time.monotonic()
    summary = run_sync(
        replace(config, clusters=clusters),
        store=hostile.store,
        provider=hostile.provider(),
        clock=hostile.now,
    )
    assert time.monotonic() - started < 60
    assert list(summary.errors) == [f"fleet:{hostile.cluster}"], summary.errors
    message = summary.errors[f"fleet:{hostile.cluster}"]
    assert repr(acks_prefix(hostile.cluster)) in message
    assert f"the cap is {page_cap(1000)} bytes" in message
    assert names[0] in hostile.published().entries and names[1] in honest.published().entries


def test_a_page_with_more_keys_than_asked_is_refused(hostile_http: HostileHttp) -> None:
    def answer(request: Request) -> Iterator[bytes]:
        assert query(request)["max-keys"] == "10"
        body = page(f"{HOSTILE}node-{n}" for n in range(50))  # MaxKeys ignored
        return answer_with(200, {"Content-Length": str(len(body))}, [body])

    hostile_http.answer = answer
    store = S3Store("bucket", "fleet", endpoint=hostile_http.url, timeout=10, page_size=10)
    with pytest.raises(ListingTooLarge) as caught:
        list(store.list(HOSTILE))
    assert "50 keys in one page; the cap is 10 keys" in str(caught.value)


def test_a_listing_that_never_ends_stops_at_the_key_cap(hostile_http: HostileHttp) -> None:
    def answer(request: Request) -> Iterator[bytes]:
        n = len(hostile_http.requests)
        body = page([f"{HOSTILE}node-{n}-{i}" for i in range(5)], token=f"token-{n}")
        return answer_with(200, {"Content-Length": str(len(body))}, [body])

    hostile_http.answer = answer
    store = S3Store(
        "bucket", "fleet", endpoint=hostile_http.url, timeout=10, page_size=5, max_list_keys=20
    )
    listed: list[str] = []
    with pytest.raises(ListingTooLarge) as caught:
        listed.extend(store.list(HOSTILE))
    assert len(listed) == 20
    assert len(hostile_http.requests) == 5
    assert "more than 20 keys in one listing" in str(caught.value)


def call_threads() -> set[threading.Thread]:
    return {thread for thread in threading.enumerate() if thread.name == CALL_THREAD}


@pytest.mark.parametrize("operation", ["get", "put", "list"])
def test_a_call_given_up_at_its_deadline_leaves_no_thread_reading(
    trickle: Trickle, operation: str
) -> None:
    before = call_threads()
    store = S3Store("bucket", "fleet", endpoint=trickle.url, timeout=1.0)
    started = time.monotonic()
    with pytest.raises(StoreUnavailable):
        if operation == "get":
            store.get("v1/clusters/web/head", max_bytes=65536)
        elif operation == "put":
            store.put("v1/clusters/web/acks/node-1", b"ack")
        else:
            list(store.list(HOSTILE))
    assert time.monotonic() - started < 2.5
    # The trickle goes on for ever; the abandoned call must not.
    ended_by = time.monotonic() + 3.0
    while call_threads() - before and time.monotonic() < ended_by:
        time.sleep(0.05)
    assert not call_threads() - before, "the worker thread still reads the trickle"
