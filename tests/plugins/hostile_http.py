"""A scripted hostile web server on loopback: each request is answered by a test's function.

Fixture ``hostile_http``: a ``HostileHttp`` listening on 127.0.0.1 (a free port). Set
``answer`` to a function of the ``Request`` (method, target, headers) returning the raw
bytes to send, as an iterable of chunks: a generator may produce 64 MiB lazily, or sleep
between chunks. The server sends them and closes the connection (one request per
connection); a client that hangs up ends the sending quietly. ``requests`` lists what was
received, ``sent`` counts the bytes that went out. ``answer_with`` builds a status line and
headers in front of body chunks; ``forward(request, upstream)`` is the honest answer of
another server (e.g. SeaweedFS), ``Host`` header included so S3 signatures still verify.
Stopped (every connection closed) when the test ends.
"""

from __future__ import annotations

import http.client
import socket
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Callable

import pytest


@dataclass(frozen=True)
class Request:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes = b""


def answer_with(
    status: int, headers: dict[str, str], body: Iterable[bytes] = ()
) -> Iterator[bytes]:
    """``HTTP/1.1 status``, ``headers`` (plus ``Connection: close``), then ``body``."""
    lines = [f"HTTP/1.1 {status} X"] + [f"{name}: {value}" for name, value in headers.items()]
    lines.append("Connection: close")
    yield ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    yield from body


_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length"}


def forward(request: Request, upstream: str) -> Iterator[bytes]:
    """``request`` sent to ``upstream`` (``http://host:port``) as it came; its answer."""
    host, _, port = upstream.split("://", 1)[1].rstrip("/").partition(":")
    connection = http.client.HTTPConnection(host, int(port or 80), timeout=30)
    try:
        connection.putrequest(
            request.method, request.target, skip_host=True, skip_accept_encoding=True
        )
        for name, value in request.headers.items():
            if name not in _HOP and name != "expect":
                connection.putheader(name, value)
        connection.putheader("Content-Length", str(len(request.body)))
        connection.endheaders(request.body)
        answer = connection.getresponse()
        data = answer.read()
    finally:
        connection.close()
    headers = {name: value for name, value in answer.getheaders() if name.lower() not in _HOP}
    headers["Content-Length"] = str(len(data))
    return answer_with(answer.status, headers, [] if request.method == "HEAD" else [data])


class LoopbackServer:
    """A listener on 127.0.0.1 (a free port) that serves each connection in a thread of its
    own with ``_serve`` (a subclass's); ``stop()`` ends it."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        self.listener.settimeout(0.1)
        while not self._stop.is_set():
            try:
                connection, _ = self.listener.accept()
            except (socket.timeout, OSError):
                continue
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        self._stop.set()
        self.listener.close()
        self._thread.join()


class HostileHttp(LoopbackServer):
    """The server: ``url``, ``answer``, and what it saw."""

    def __init__(self) -> None:
        self.answer: Callable[[Request], Iterable[bytes]] = lambda _: answer_with(404, {})
        self.requests: list[Request] = []
        self.sent = 0
        super().__init__()

    def _serve(self, connection: socket.socket) -> None:
        with connection:
            connection.settimeout(10.0)
            try:
                request = self._read(connection)
                if request is None:
                    return
                with self._lock:
                    self.requests.append(request)
                for chunk in self.answer(request):
                    if self._stop.is_set():
                        return
                    connection.sendall(chunk)
                    with self._lock:
                        self.sent += len(chunk)
            except OSError:
                pass  # the client hung up: what a cap is for

    @staticmethod
    def _read(connection: socket.socket) -> Request | None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = connection.recv(65536)
            if not chunk:
                return None
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0") or 0)
        if headers.get("expect", "").lower() == "100-continue" and len(body) < length:
            connection.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        while len(body) < length:  # the request body (a JWS), read so the client is not reset
            chunk = connection.recv(65536)
            if not chunk:
                break
            body += chunk
        return Request(method, target, headers, body)


@pytest.fixture
def hostile_http() -> Iterator[HostileHttp]:
    server = HostileHttp()
    try:
        yield server
    finally:
        server.stop()
