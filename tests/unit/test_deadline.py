"""``certfleet.deadline``'s record of a call's connections (``InFlight``), on a socket pair:
a call that ``run_within`` gives up has its socket shut down, so its blocked read returns
and its thread ends; any request it tries after that raises ``Abandoned``; a call that
finished is never touched."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from certfleet.deadline import (
    Abandoned,
    Deadline,
    DeadlineExceeded,
    InFlight,
    run_within,
    sending,
    tracking,
)


class Connection:
    """What ``sending`` needs of a connection: its ``sock``."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock


def test_a_call_given_up_has_its_socket_shut_and_may_send_nothing_more() -> None:
    ours, theirs = socket.socketpair()
    outcome: list[object] = []

    def call() -> bytes:
        connection = Connection(ours)
        sending(connection)
        data = ours.recv(10)  # the peer never writes: only a shutdown ends this
        outcome.append(data)
        try:
            sending(connection)  # a retry
        except Abandoned:
            outcome.append("abandoned")
        return data

    started = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        run_within(Deadline(0.3), call)
    ended_by = time.monotonic() + 2.0
    while len(outcome) < 2 and time.monotonic() < ended_by:
        time.sleep(0.01)
    assert outcome == [b"", "abandoned"], outcome
    assert time.monotonic() - started < 1.0
    ours.close()
    theirs.close()


def test_a_finished_call_is_never_shut_and_threads_keep_their_own_records() -> None:
    ours, theirs = socket.socketpair()
    inflight = InFlight()
    with tracking(inflight):
        sending(Connection(ours))
    inflight.abort()  # too late: the call is over, its socket may serve another call
    theirs.sendall(b"still open")
    assert ours.recv(100) == b"still open"

    other = InFlight()
    seen: list[bool] = []

    def elsewhere() -> None:
        sending(Connection(theirs))  # no record in this thread: nothing recorded
        seen.append(True)

    with tracking(other):
        thread = threading.Thread(target=elsewhere)
        thread.start()
        thread.join()
    other.abort()
    ours.sendall(b"x")
    assert seen == [True] and theirs.recv(1) == b"x"
    ours.close()
    theirs.close()
