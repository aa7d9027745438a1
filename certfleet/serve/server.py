"""``certfleet serve``: the HTTP routes of ``certfleet.serve.api`` on a stdlib server.

A threading HTTP/1.1 server; each connection has a read timeout (a client that sends
its request slowly is cut off), bodies need a Content-Length and at most
``api.MAX_BODY`` bytes are read. Access log lines go to the ``certfleet.serve`` logger
at INFO without any header (the API key never reaches a log).
"""

from __future__ import annotations

import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from certfleet.errors import CertfleetError
from certfleet.serve.api import MAX_BODY, HttpApi, Request, Response

_log = logging.getLogger(__name__)

READ_TIMEOUT = 30.0
MAX_THREADS = 64


class ServeError(CertfleetError):
    """``certfleet serve`` cannot listen on its address."""


class ApiServer(ThreadingHTTPServer):
    """Serves ``api`` on ``host:port`` (port 0: a free one, see :attr:`port`)."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, api: HttpApi, host: str = "127.0.0.1", port: int = 0) -> None:
        self.api = api
        self.slots = threading.BoundedSemaphore(MAX_THREADS)
        try:
            super().__init__((host, port), _Handler)
        except OSError as err:
            raise ServeError(f"cannot listen on {host}:{port}: {err.strerror or err}") from err

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def process_request(self, request: socket.socket, client_address: object) -> None:  # type: ignore[override]
        if not self.slots.acquire(blocking=False):
            try:
                request.sendall(
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
                    b"Retry-After: 1\r\nConnection: close\r\n\r\n"
                )
            except OSError:
                pass
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: socket.socket, client_address: object) -> None:  # type: ignore[override]
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


class _Handler(BaseHTTPRequestHandler):
    server: ApiServer
    protocol_version = "HTTP/1.1"
    server_version = "certfleet"
    timeout = READ_TIMEOUT

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes: without this, Nagle's algorithm and
        # the client's delayed ACK add about 40 ms to every answer.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PATCH(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def log_message(self, format: str, *args: object) -> None:
        _log.debug("%s %s", self.address_string(), format % args)

    def _handle(self) -> None:
        split = urlsplit(self.path)
        body, refusal = self._body()
        if refusal is not None:
            self.close_connection = True
            response = refusal
        else:
            headers = {name.lower(): value for name, value in self.headers.items()}
            request = Request(self.command, split.path, split.query, headers, body)
            response = self.server.api.handle(request)
        _log.info(
            "%s %s %r %d", self.address_string(), self.command, split.path[:200], response.status
        )
        self.send_response(response.status)
        for name, value in response.headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    def _body(self) -> tuple[bytes, Response | None]:
        if self.headers.get("Transfer-Encoding"):
            return b"", Response.error(
                411, "length_required", "send the body with a Content-Length"
            )
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            return b"", Response.error(400, "invalid_request", "bad Content-Length")
        if length < 0 or length > MAX_BODY:
            return b"", Response.error(
                413, "request_too_large", f"bodies are limited to {MAX_BODY} bytes"
            )
        return (self.rfile.read(length) if length else b""), None
