"""A total deadline per store request, and the cancel event: a server that trickles bytes
(``tests.plugins.trickle``, one byte every 0.2 s, so no per-read timeout ever trips) cannot
hold an https or s3 store longer than its deadline, and a set cancel event ends a request
in flight at once."""

from __future__ import annotations

import threading
import time

import pytest

from certfleet.deadline import Deadline, DeadlineExceeded, run_within
from certfleet.store import HttpsStore, S3Store, StoreUnavailable
from tests.plugins.trickle import Trickle

KEY = "v1/clusters/web/head"


def test_an_https_get_from_a_trickling_server_ends_at_its_deadline(trickle: Trickle) -> None:
    store = HttpsStore(f"{trickle.url}/fleet", timeout=1.5, max_attempts=3)
    started = time.monotonic()
    with pytest.raises(StoreUnavailable) as caught:
        store.get(KEY, max_bytes=65536)
    took = time.monotonic() - started
    assert 1.4 < took < 3.0, took
    assert "deadline" in str(caught.value)
    assert trickle.requests == 1  # no retry once the deadline has passed


def test_an_s3_get_from_a_trickling_server_ends_at_its_deadline(
    trickle: Trickle, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    store = S3Store("bucket", "fleet", endpoint=trickle.url, timeout=1.5)
    started = time.monotonic()
    with pytest.raises(StoreUnavailable) as caught:
        store.get(KEY, max_bytes=65536)
    assert time.monotonic() - started < 3.0
    assert "deadline" in str(caught.value)
    started = time.monotonic()
    with pytest.raises(StoreUnavailable):
        store.put("v1/clusters/web/acks/node", b"ack")  # writes are bounded too
    assert time.monotonic() - started < 3.0


@pytest.mark.parametrize("backend", ["https", "s3"])
def test_a_cancel_event_ends_a_request_in_flight_at_once(
    trickle: Trickle, monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    cancel = threading.Event()
    store = (
        HttpsStore(f"{trickle.url}/fleet", timeout=60, cancel=cancel)
        if backend == "https"
        else S3Store("bucket", "fleet", endpoint=trickle.url, timeout=60, cancel=cancel)
    )
    threading.Timer(0.5, cancel.set).start()
    started = time.monotonic()
    with pytest.raises(StoreUnavailable) as caught:
        store.get(KEY, max_bytes=65536)
    assert time.monotonic() - started < 1.5
    assert "cancelled" in str(caught.value)
    started = time.monotonic()
    with pytest.raises(StoreUnavailable):
        store.get(KEY, max_bytes=65536)  # later requests fail without waiting
    assert time.monotonic() - started < 0.2


def test_bytes_moved_extend_the_deadline_and_a_trickle_gains_nothing() -> None:
    now = [100.0]
    deadline = Deadline(10.0, clock=lambda: now[0])
    now[0] += 9.0
    deadline.credit(4 * 1024 * 1024)  # 4 MiB arrived: four more seconds
    assert deadline.remaining() == pytest.approx(5.0)
    deadline.credit(100)  # a trickle: 100 bytes buy 0.1 ms
    now[0] += 5.001
    with pytest.raises(DeadlineExceeded):
        deadline.check()


def test_run_within_hands_back_the_result_or_the_error() -> None:
    assert run_within(Deadline(5.0), lambda: 42) == 42
    with pytest.raises(ZeroDivisionError):
        run_within(Deadline(5.0), lambda: 1 // 0)
    with pytest.raises(DeadlineExceeded):
        run_within(Deadline(0.2), lambda: time.sleep(2))
