"""The sandbox's HTTP side: routes under ``/api/v3`` on 127.0.0.1, auth, latency, faults."""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import socket
import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

from certfleet.sandbox.api import SandboxApi
from certfleet.sandbox.errors import ApiError, ListenError
from certfleet.sandbox.fault import Fault, FaultPlan

_log = logging.getLogger(__name__)

HOST = "127.0.0.1"
MAX_BODY = 1 << 20
BASE_PATH = "/api/v3"


class SandboxServer(ThreadingHTTPServer):
    """A threading HTTP server bound to 127.0.0.1 serving :class:`SandboxApi`.

    ``port`` 0 picks a free port (see :attr:`url`); a port it cannot bind raises
    ``ListenError`` ("cannot listen on 127.0.0.1:8780: address already in use").
    :meth:`stop` ends long polls at once.
    """

    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        port: int,
        api: SandboxApi,
        api_key: str,
        faults: FaultPlan,
        latency: float = 0.0,
    ) -> None:
        self.api = api
        self.api_key = api_key
        self.faults = faults
        self.latency = latency
        self.stopping = threading.Event()
        try:
            super().__init__((HOST, port), _Handler)
        except OSError as err:
            reason = err.strerror or str(err)
            raise ListenError(HOST, port, reason[:1].lower() + reason[1:]) from err

    def __repr__(self) -> str:  # never shows the API key
        return f"SandboxServer(url={self.url!r})"

    @property
    def url(self) -> str:
        """The APIv3 base URL, e.g. ``http://127.0.0.1:8780/api/v3``."""
        return f"http://{HOST}:{self.server_address[1]}{BASE_PATH}"

    def stop(self) -> None:
        """Stop serving (from another thread than :meth:`serve_forever`'s) and close."""
        self.stopping.set()
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    server: SandboxServer
    protocol_version = "HTTP/1.1"
    server_version = "certfleet-sandbox"
    timeout = 120  # idle keep-alive connections are closed after this

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes: without this, Nagle's algorithm and
        # the client's delayed ACK add about 40 ms to every answer.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def log_message(self, format: str, *args: object) -> None:
        if _log.isEnabledFor(logging.DEBUG):
            _log.debug("%s %s", self.address_string(), format % args)

    def _handle(self, method: str) -> None:
        split = urlsplit(self.path)
        try:
            body = self._read_body()
        except ApiError as err:
            self.close_connection = True
            self._send(err.status, {"code": err.code, "message": err.message})
            return
        if split.path == BASE_PATH + "/sandbox/root.pem":
            self._send_root(method)
            return
        if self.server.latency > 0:
            self.server.stopping.wait(self.server.latency)
        fault = self.server.faults.draw()
        if fault is not None and (method != "GET" or fault is not Fault.TRUNCATED):
            self._fail(fault)  # mutations fail before they take effect
            return
        try:
            self._authenticate()
            status, payload = self._route(method, split.path, split.query, body)
        except ApiError as err:
            status, payload = err.status, {"code": err.code, "message": err.message}
        except Exception:  # noqa: BLE001 - any bug becomes a 500, like a real server
            _log.exception("sandbox: %s %s failed", method, split.path)
            status, payload = 500, {"code": "internal_error", "message": "internal error"}
        self._send(status, payload, truncate=fault is Fault.TRUNCATED)

    def _route(
        self, method: str, path: str, query: str, body: bytes
    ) -> tuple[int, dict[str, object] | None]:
        api = self.server.api
        if not path.startswith(BASE_PATH + "/"):
            raise ApiError(404, "not_found", f"no such endpoint: {path}")
        parts = [unquote(p) for p in path[len(BASE_PATH) + 1 :].split("/")]
        params = parse_qs(query, keep_blank_values=True)
        if parts == ["orders"]:
            if method == "GET":
                return 200, api.list_orders(params)
            if method == "POST":
                return 201, api.create_order(_json(body))
        elif len(parts) == 2 and parts[0] == "orders":
            if method == "GET":
                return 200, api.get_order(parts[1])
            if method == "PATCH":
                return 200, api.patch_order(parts[1], _json(body))
            if method == "DELETE":
                api.delete_order(parts[1])
                return 204, None
        elif len(parts) == 3 and parts[0] == "orders" and parts[2] == "csrs":
            if method == "POST":
                new, answer = api.submit_csr(parts[1], _json(body))
                return (201 if new else 200), answer
        elif len(parts) == 4 and parts[0] == "orders" and parts[2] == "certs":
            if method == "GET":
                poll = _poll_seconds(params)
                return 200, api.get_cert(parts[1], parts[3], poll, self.server.stopping)
        else:
            raise ApiError(404, "not_found", f"no such endpoint: {path}")
        raise ApiError(405, "method_not_allowed", f"{method} is not allowed on {path}")

    def _authenticate(self) -> None:
        scheme, _, credentials = self.headers.get("Authorization", "").partition(" ")
        key = None
        if scheme.lower() == "bearer":
            key = credentials.strip()
        elif scheme.lower() == "basic":
            try:
                user, _, password = base64.b64decode(credentials.strip()).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                user, password = "", "x"
            key = user if password == "" else None
        if key is None or not hmac.compare_digest(key.encode(), self.server.api_key.encode()):
            raise ApiError(401, "unauthorized", "a valid API key is required (Bearer or Basic)")

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding"):
            raise ApiError(411, "length_required", "send the body with a Content-Length")
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError as err:
            raise ApiError(400, "invalid_request", "bad Content-Length") from err
        if length < 0 or length > MAX_BODY:
            raise ApiError(413, "request_too_large", f"bodies are limited to {MAX_BODY} bytes")
        return self.rfile.read(length) if length else b""

    def _fail(self, fault: Fault) -> None:
        _log.info("sandbox: injecting fault %s into %s %s", fault.value, self.command, self.path)
        if fault is Fault.DROPPED:
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        elif fault is Fault.RATE_LIMITED:
            payload = {"code": "rate_limited", "message": "too many requests (sandbox fault)"}
            self._send(429, payload, headers={"Retry-After": "1"})
        else:
            payload = {"code": "internal_error", "message": "injected failure (sandbox fault)"}
            self._send(500, payload, truncate=fault is Fault.TRUNCATED)

    def _send_root(self, method: str) -> None:
        if method != "GET":
            self._send(405, {"code": "method_not_allowed", "message": "GET only"})
            return
        data = self.server.api.root_pem().encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-pem-file")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _send(
        self,
        status: int,
        payload: Mapping[str, object] | None,
        *,
        truncate: bool = False,
        headers: dict[str, str] | None = None,
    ) -> None:
        data = b"" if payload is None else json.dumps(payload).encode()
        if truncate:
            data = data[: max(1, len(data) // 2)]
        self.send_response(status)
        if payload is not None:
            self.send_header("Content-Type", "application/json")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def _json(body: bytes) -> object:
    try:
        return json.loads(body)
    except ValueError as err:
        raise ApiError(400, "invalid_json", "the body must be a JSON object") from err


def _poll_seconds(params: dict[str, list[str]]) -> float:
    raw = params.get("poll", ["0"])[-1]
    try:
        seconds = float(raw)
    except ValueError as err:
        raise ApiError(400, "invalid_poll", "poll must be a number of seconds") from err
    if not 0 <= seconds < float("inf"):
        raise ApiError(400, "invalid_poll", "poll must be between 0 and 60 seconds")
    return seconds
