"""The APIv3 provider trickling its answer (``tests.plugins.trickle``): the attempt given up
at its deadline does not leave its worker thread reading (``certfleet.httpadapter``)."""

from __future__ import annotations

import threading
import time

import pytest

from certfleet.apiv3 import ApiClient, ApiUnavailable
from certfleet.apiv3.transport import RetryPolicy
from certfleet.deadline import CALL_THREAD
from tests.plugins.trickle import Trickle


def call_threads() -> set[threading.Thread]:
    return {thread for thread in threading.enumerate() if thread.name == CALL_THREAD}


def test_an_attempt_given_up_at_its_deadline_leaves_no_thread_reading(trickle: Trickle) -> None:
    before = call_threads()
    client = ApiClient(
        f"{trickle.url}/api/v3",
        "a-key",
        retry=RetryPolicy(max_attempts=1, max_seconds=1.5),
        read_timeout=30,
    )
    started = time.monotonic()
    with pytest.raises(ApiUnavailable, match="no complete answer"):
        client.get_order("example.com")
    assert time.monotonic() - started < 3.0
    ended_by = time.monotonic() + 3.0
    while call_threads() - before and time.monotonic() < ended_by:
        time.sleep(0.05)
    assert not call_threads() - before, "the worker thread still reads the trickle"
