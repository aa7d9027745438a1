"""A fault-injecting reverse proxy in front of an ACME server (pebble) for robustness tests.

pebble enforces no rate limits and never fails on purpose; put a :class:`FaultProxy`
between the client and pebble, and it answers chosen requests itself, a bounded number of
times, with what a real CA sends under load: ``429`` + ``Retry-After`` (``rateLimited``) or
``503`` (+ ``Retry-After`` when given). Everything else is forwarded unchanged, with the
client's ``Host`` header, so pebble's URLs name the proxy (and the URL a client signs into
each request is the one pebble expects); any upstream base URL left in a body or a
``Location``/``Link`` header is rewritten to the proxy's. Run it with ``tls`` (pebble's own
listener certificate and key) in front of pebble, since pebble's URLs are always https.
An injected answer carries a fresh ``Replay-Nonce`` taken from the upstream (as a real CA's
error would), so the client's next request is not refused for its nonce.

Use (fixture ``fault_proxy``, a factory; every proxy it starts is stopped after the test)::

    proxy = fault_proxy(pebble.directory_url, ca_bundle=pebble.ca_bundle,
                        tls=(certificate, key))          # tls=None: plain HTTP
    proxy.rate_limit("/order-plz", retry_after=3, times=1)  # 1st new-order: 429
    proxy.unavailable("/finalize-order/", retry_after=2, times=2, skip=1)
    proxy.inject("/order-plz", status=400, problem="badNonce", times=4,
                 when=lambda payload: "a.example" in str(payload.get("identifiers")))
    client.directory = proxy.directory_url
    ...
    assert proxy.injected == 3
    assert [r.status for r in proxy.requests if r.injected] == [429, 503, 503]

``path`` is a regular expression searched in the request path; ``method`` (default POST)
narrows it, None matches any; ``when`` (optional) is a predicate on the request's decoded JWS
payload (e.g. ``lambda p: "limited.example.test" in str(p.get("identifiers"))`` for one
order's new-order); ``skip`` lets that many matching requests through first; ``times``
(1-100) bounds the faults. :meth:`FaultProxy.clear` drops the remaining rules.
"""

from __future__ import annotations

import base64
import http.client
import json
import re
import ssl
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

LOOPBACK = "127.0.0.1"
MAX_TIMES = 100
UPSTREAM_TIMEOUT = 30.0
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "server", "date"}
_PROBLEMS = {429: "rateLimited", 503: "serverInternal"}


@dataclass
class Fault:
    """One rule: answer matching requests with ``status`` (``times`` times, after ``skip``)."""

    path: re.Pattern[str]
    method: str | None
    status: int
    retry_after: int | None
    times: int
    skip: int = 0
    when: Callable[[dict[str, Any]], bool] | None = None
    problem: str | None = None  # the ACME error type's last part; None: by status
    detail: str | None = None
    matched: int = 0
    injected: int = 0

    def take(self, method: str, path: str, payload: dict[str, Any]) -> bool:
        """Whether this request gets the fault (counts it)."""
        if self.method is not None and method != self.method:
            return False
        if not self.path.search(path) or self.injected >= self.times:
            return False
        if self.when is not None and not self.when(payload):
            return False
        self.matched += 1
        if self.matched <= self.skip:
            return False
        self.injected += 1
        return True


@dataclass(frozen=True)
class Seen:
    """One request the proxy handled: what was asked, what it answered, whether injected."""

    method: str
    path: str
    status: int
    injected: bool


@dataclass
class FaultProxy:
    """A loopback reverse proxy to ``upstream`` (``https://host:port/...``) injecting faults."""

    upstream: str
    ca_bundle: Path | None = None
    tls: tuple[Path, Path] | None = None
    faults: list[Fault] = field(default_factory=list)
    requests: list[Seen] = field(default_factory=list)

    def __post_init__(self) -> None:
        parts = urllib.parse.urlsplit(self.upstream)
        self._upstream_base = f"{parts.scheme}://{parts.netloc}"
        self._upstream_host = parts.hostname or LOOPBACK
        self._upstream_port = parts.port or (443 if parts.scheme == "https" else 80)
        self._upstream_https = parts.scheme == "https"
        self._directory_path = parts.path or "/"
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._nonce_path: str | None = None

    # --- the API tests use -------------------------------------------------------------

    @property
    def base(self) -> str:
        """``https://localhost:PORT`` with ``tls`` (a certificate for localhost), else
        ``http://127.0.0.1:PORT``."""
        assert self._server is not None, "start() first"
        host = "localhost" if self.tls else LOOPBACK
        return f"{'https' if self.tls else 'http'}://{host}:{self._server.server_address[1]}"

    @property
    def directory_url(self) -> str:
        """The upstream's directory URL, through the proxy."""
        return self.base + self._directory_path

    @property
    def injected(self) -> int:
        """How many answers the proxy made up so far."""
        with self._lock:
            return sum(1 for seen in self.requests if seen.injected)

    def inject(
        self,
        path: str,
        *,
        status: int,
        retry_after: int | None = None,
        times: int = 1,
        skip: int = 0,
        method: str | None = "POST",
        when: Callable[[dict[str, Any]], bool] | None = None,
        problem: str | None = None,
        detail: str | None = None,
    ) -> Fault:
        """Answer the requests whose path matches ``path`` (and whose decoded JWS payload
        satisfies ``when``) with ``status``, at most ``times`` times; the problem document's
        type is ``urn:ietf:params:acme:error:<problem>`` (by default ``rateLimited`` for 429,
        ``serverInternal`` otherwise) with ``detail``."""
        if not 1 <= times <= MAX_TIMES:
            raise ValueError(f"times must be 1-{MAX_TIMES}")
        fault = Fault(
            re.compile(path), method, status, retry_after, times, skip, when, problem, detail
        )
        with self._lock:
            self.faults.append(fault)
        return fault

    def rate_limit(
        self,
        path: str,
        *,
        retry_after: int = 1,
        times: int = 1,
        skip: int = 0,
        when: Callable[[dict[str, Any]], bool] | None = None,
        detail: str | None = None,
    ) -> Fault:
        """429 ``rateLimited`` with ``Retry-After: retry_after`` (POSTs only)."""
        return self.inject(
            path, status=429, retry_after=retry_after, times=times, skip=skip, when=when,
            detail=detail,
        )  # fmt: skip

    def unavailable(
        self,
        path: str,
        *,
        retry_after: int | None = None,
        times: int = 1,
        skip: int = 0,
        when: Callable[[dict[str, Any]], bool] | None = None,
        detail: str | None = None,
    ) -> Fault:
        """503 (with ``Retry-After`` when given), for POSTs only."""
        return self.inject(
            path, status=503, retry_after=retry_after, times=times, skip=skip, when=when,
            detail=detail,
        )  # fmt: skip

    def clear(self) -> None:
        with self._lock:
            self.faults.clear()

    def start(self) -> None:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                proxy._handle(self)

            def do_HEAD(self) -> None:
                proxy._handle(self)

            def do_POST(self) -> None:
                proxy._handle(self)

        self._server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self._server.daemon_threads = True
        if self.tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(self.tls[0]), str(self.tls[1]))
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    # --- the proxy itself --------------------------------------------------------------

    def _connection(self) -> http.client.HTTPConnection:
        if self._upstream_https:
            context = ssl.create_default_context(
                cafile=str(self.ca_bundle) if self.ca_bundle else None
            )
            return http.client.HTTPSConnection(
                self._upstream_host, self._upstream_port, context=context, timeout=UPSTREAM_TIMEOUT
            )
        return http.client.HTTPConnection(
            self._upstream_host, self._upstream_port, timeout=UPSTREAM_TIMEOUT
        )

    def _forward(
        self, method: str, path: str, headers: dict[str, str], body: bytes | None
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        connection = self._connection()
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            return response.status, response.getheaders(), response.read()
        finally:
            connection.close()

    def _fresh_nonce(self) -> str | None:
        if self._nonce_path is None:
            _status, _headers, body = self._forward("GET", self._directory_path, {}, None)
            new_nonce = json.loads(body).get("newNonce", "")
            self._nonce_path = urllib.parse.urlsplit(new_nonce).path or "/"
        _status, headers, _body = self._forward("HEAD", self._nonce_path, {}, None)
        return next((v for k, v in headers if k.lower() == "replay-nonce"), None)

    def _rewrite(self, text: str) -> str:
        return text.replace(self._upstream_base, self.base)

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else None
        method, path = handler.command, handler.path
        with self._lock:
            payload = jws_payload(body)
            fault = next((f for f in self.faults if f.take(method, path, payload)), None)
        if fault is not None:
            self._inject(handler, method, path, fault)
            return
        # The client's Host goes upstream unchanged: pebble builds its URLs from it, and
        # checks the URL signed into each JWS against them.
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in _HOP_BY_HOP}
        try:
            status, answer_headers, answer = self._forward(method, path, headers, body)
        except (OSError, http.client.HTTPException):
            status, answer_headers, answer = 502, [("Content-Type", "text/plain")], b"bad gateway"
        content_type = next((v for k, v in answer_headers if k.lower() == "content-type"), "")
        if "json" in content_type or "pem" in content_type:
            answer = self._rewrite(answer.decode()).encode()
        handler.send_response(status)
        for key, value in answer_headers:
            if key.lower() not in _HOP_BY_HOP:
                handler.send_header(key, self._rewrite(value))
        handler.send_header("Content-Length", str(len(answer)))
        handler.end_headers()
        if method != "HEAD":
            handler.wfile.write(answer)
        with self._lock:
            self.requests.append(Seen(method, path, status, False))

    def _inject(
        self, handler: BaseHTTPRequestHandler, method: str, path: str, fault: Fault
    ) -> None:
        problem = fault.problem or _PROBLEMS.get(fault.status, "serverInternal")
        body = json.dumps({
            "type": f"urn:ietf:params:acme:error:{problem}",
            "detail": fault.detail or f"injected by the test proxy ({fault.status})",
            "status": fault.status,
        }).encode()  # fmt: skip
        try:
            nonce = self._fresh_nonce()
        except (OSError, http.client.HTTPException, ValueError):
            nonce = None
        handler.send_response(fault.status)
        handler.send_header("Content-Type", "application/problem+json")
        if fault.retry_after is not None:
            handler.send_header("Retry-After", str(fault.retry_after))
        if nonce:
            handler.send_header("Replay-Nonce", nonce)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        if method != "HEAD":
            handler.wfile.write(body)
        with self._lock:
            self.requests.append(Seen(method, path, fault.status, True))


def jws_payload(body: bytes | None) -> dict[str, Any]:
    """The decoded JSON payload of a JWS request body ({} for POST-as-GET or no JWS)."""
    try:
        encoded = json.loads(body or b"")["payload"]
        decoded = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        payload = json.loads(decoded) if decoded else {}
    except (ValueError, KeyError, TypeError):
        return {}
    return payload if isinstance(payload, dict) else {}


@pytest.fixture
def fault_proxy() -> Iterator[Callable[..., FaultProxy]]:
    """A factory: ``fault_proxy(upstream, ca_bundle=..., tls=(cert, key))`` -> started proxy."""
    started: list[FaultProxy] = []

    def make(
        upstream: str, *, ca_bundle: Path | None = None, tls: tuple[Path, Path] | None = None
    ) -> FaultProxy:
        proxy = FaultProxy(upstream, ca_bundle=ca_bundle, tls=tls)
        proxy.start()
        started.append(proxy)
        return proxy

    yield make
    for proxy in started:
        proxy.stop()
