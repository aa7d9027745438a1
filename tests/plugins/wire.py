"""A counting reverse proxy on loopback: what a client really sends, request by request.

Fixture ``wire_proxy(target_url)`` starts a ``WireProxy`` in front of an HTTP server (e.g.
SeaweedFS's S3 endpoint) and stops it after the test. Each request is forwarded unchanged,
``Host`` header included (so S3 signatures still verify), and recorded in ``requests`` as
``(method, path, headers)``; the answer is passed back unchanged. Point a client's endpoint
at ``proxy.url`` and count what crossed the wire.
"""

from __future__ import annotations

import http.client
import http.server
import threading
from collections.abc import Callable, Iterator
from typing import ClassVar
from urllib.parse import urlsplit

import pytest

_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection"}


class _Forward(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    proxy: ClassVar[WireProxy]

    def _forward(self) -> None:
        proxy = type(self).proxy
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
        with proxy.lock:
            proxy.requests.append((self.command, self.path, headers))
        upstream = http.client.HTTPConnection(proxy.host, proxy.port, timeout=30)
        try:
            upstream.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for name, value in headers.items():
                upstream.putheader(name, value)
            upstream.endheaders(body)
            answer = upstream.getresponse()
            data = answer.read()
        finally:
            upstream.close()
        self.send_response(answer.status, answer.reason)
        for name, value in answer.getheaders():
            if name.lower() not in _HOP and name.lower() != "content-length":
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

    def log_message(self, format: str, *args: object) -> None:
        pass


class WireProxy:
    """The proxy: ``url`` to point clients at, ``requests`` seen so far."""

    def __init__(self, target: str) -> None:
        parts = urlsplit(target)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.lock = threading.Lock()
        handler = type("Forward", (_Forward,), {"proxy": self})
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def seen(self) -> list[tuple[str, str]]:
        """(method, path without the query) of each request so far."""
        with self.lock:
            return [(method, path.split("?")[0]) for method, path, _ in self.requests]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def wire_proxy() -> Iterator[Callable[[str], WireProxy]]:
    started: list[WireProxy] = []

    def start(target: str) -> WireProxy:
        proxy = WireProxy(target)
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.stop()
