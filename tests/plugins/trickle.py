"""A hostile web server on loopback that answers every request one byte at a time, for ever.

Fixture ``trickle``: a ``Trickle`` listening on 127.0.0.1 (a free port). For each
connection it reads the request, sends ``HTTP/1.1 200 OK`` and then one header byte every
``interval`` seconds (0.2 s), never finishing the headers, so a client's per-read socket
timeout never trips: only a total deadline ends the request. ``requests`` counts the
requests received, ``first_request`` is set at the first. Set ``answer`` to bytes and the
server sends those instead, at once, and closes (e.g. a status line with terminal escapes).
Stopped (every connection closed) when the test ends.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from tests.plugins.hostile_http import LoopbackServer


class Trickle(LoopbackServer):
    """The server: ``port``, and what it saw."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self.requests = 0
        self.answer: bytes | None = None
        self.first_request = threading.Event()
        super().__init__()

    def _serve(self, connection: socket.socket) -> None:
        with connection:
            connection.settimeout(5.0)
            try:
                request = b""
                while b"\r\n\r\n" not in request:
                    chunk = connection.recv(65536)
                    if not chunk:
                        return
                    request += chunk
                with self._lock:
                    self.requests += 1
                self.first_request.set()
                if self.answer is not None:
                    connection.sendall(self.answer)
                    return
                connection.sendall(b"HTTP/1.1 200 OK\r\n")
                while not self._stop.is_set():
                    connection.sendall(b"X")  # a header name that never ends
                    time.sleep(self.interval)
            except OSError:
                pass  # the client gave up: what a deadline is for


@pytest.fixture
def trickle() -> Iterator[Trickle]:
    server = Trickle()
    try:
        yield server
    finally:
        server.stop()
