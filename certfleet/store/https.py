"""A read-only store behind any web server or CDN (``https://host/path``), on the stdlib.

Objects are encrypted and signed, so they can be served in the clear by anything that
answers a plain GET; a node reading this way needs no cloud credentials at all. A GET of
``<base>/<key>`` with ``If-None-Match`` answers 200 (data + ETag), 304 (unchanged) or 404.
A server that sends no ETag still works: the ETag is then the SHA-256 of the content and
"unchanged" is decided here.

Built on ``http.client`` and ``ssl`` rather than requests, which kept ~7 MB more resident
in every idle agent. Behaviour:

- TLS is verified against the system CA store. Where the system has a hashed CA directory
  (``/etc/ssl/certs`` on Debian and Ubuntu) only that is used: OpenSSL then reads the one CA
  it needs, on demand, instead of parsing the whole bundle (~2.3 MB resident in an idle
  agent). Otherwise ``ssl.create_default_context`` loads the default bundle; it also
  honours OpenSSL's ``SSL_CERT_FILE``/``SSL_CERT_DIR``. ``cafile`` names a private CA bundle
  instead; when it is not given ``REQUESTS_CA_BUNDLE`` is honoured as the requests-based
  backend did.
  ``http://`` is accepted for loopback hosts only (tests).
- ``user:password@`` in the URL becomes HTTP Basic auth; it never appears in a message.
- 429 and 5xx answers and network errors are retried (``max_attempts`` in all, a short
  exponential backoff, ``Retry-After`` in either form honoured up to 10 s:
  ``certfleet.retry``), then raise ``StoreUnavailable``.
- ``timeout`` is the total deadline of one ``get``, every attempt and sleep included (plus
  one second per MiB received, ``certfleet.deadline``): a watchdog shuts the socket
  down when it passes, so a server that trickles bytes cannot hold a caller. Connecting
  and each read also time out on their own. A ``cancel`` event (the agent's stop request)
  ends a GET in flight the same way.
- The server is untrusted: an answer larger than the caller's ``max_bytes`` is refused
  with ``ObjectTooLarge`` from its Content-Length, or as soon as more arrives; nothing over
  the cap is buffered. Redirects are not followed.
- Kept-alive connections are reused (one per concurrent caller); a connection the server
  closed while idle is replaced at once, without counting as a failed attempt. ``close()``
  closes them.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import logging
import os
import re
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Callable
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from certfleet.deadline import Deadline, DeadlineExceeded, watch
from certfleet.retry import exponential, parse_retry_after
from certfleet.store.contract import StoredObject, StoreStats, check_key, read_capped
from certfleet.store.errors import (
    ObjectNotFound,
    ObjectTooLarge,
    ReadOnlyStore,
    StoreAccessDenied,
    StoreError,
    StoreUnavailable,
)

log = logging.getLogger(__name__)

LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")
_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_BACKOFF = 0.2
_MAX_RETRY_AFTER = 10.0
_ERROR_BODY = 64 * 1024  # the most of a non-200 answer's body read (and thrown away)
_HASHED = re.compile(r"[0-9a-f]{8}\.[0-9]+")
# Errors of a kept-alive connection the server closed while it was idle.
_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


@dataclass(frozen=True)
class _Limits:
    """What bounds one ``get``: the size cap of its object and its total deadline."""

    max_bytes: int
    deadline: Deadline


@dataclass(frozen=True)
class _Answer:
    status: int
    etag: str | None
    data: bytes
    retry_after: float | None


class HttpsStore:
    """The read side of the ``Store`` contract over plain HTTP GETs."""

    readonly = True

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 30.0,
        max_attempts: int = 3,
        cafile: str | None = None,
        sleep: Callable[[float], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError(f"not an https:// URL: {base_url!r}")
        if parts.scheme == "http" and parts.hostname not in LOOPBACK_HOSTS:
            raise ValueError("plain http:// is accepted for loopback hosts only")
        host = parts.netloc.rpartition("@")[2]
        self.base = urlunsplit((parts.scheme, host, parts.path.rstrip("/"), "", ""))
        self.url = self.base
        self.timeout = timeout
        self.max_attempts = max(1, max_attempts)
        self.cancel = cancel
        self.stats = StoreStats()
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._path = parts.path.rstrip("/")
        self._headers = {"User-Agent": "certfleet"}
        if parts.username is not None:
            pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            self._headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        self._context = tls_context(cafile) if self._https else None
        self._sleep = sleep
        self._lock = threading.Lock()
        self._idle: list[http.client.HTTPConnection] = []

    def __repr__(self) -> str:
        return f"HttpsStore({self.url!r})"

    # -- reads ---------------------------------------------------------------------------

    def get(self, key: str, *, max_bytes: int) -> StoredObject:
        answer = self._get(key, max_bytes, dict(self._headers))
        return self._stored(answer, key)

    def get_if_changed(self, key: str, *, max_bytes: int, etag: str) -> StoredObject | None:
        answer = self._get(key, max_bytes, {**self._headers, "If-None-Match": etag})
        if answer.status == 304:
            return None
        stored = self._stored(answer, key)
        return None if stored.etag == etag else stored  # the server ignored If-None-Match

    def _get(self, key: str, max_bytes: int, headers: dict[str, str]) -> _Answer:
        """The answer to a GET of ``key``, once every retry is spent or not needed."""
        target = f"{self._path}/{quote(check_key(key, url=self.url))}"
        self.stats.count("reads", requests=0)
        deadline = Deadline(self.timeout, self.cancel)
        try:
            return self._get_with_retries(target, headers, key, _Limits(max_bytes, deadline))
        except DeadlineExceeded as err:
            raise StoreUnavailable(err.reason, url=self.url, key=key) from None

    def _stored(self, answer: _Answer, key: str) -> StoredObject:
        """The object a 200 answer carries; the store error any other answer means."""
        status = answer.status
        if status in (404, 410):
            raise ObjectNotFound(key, url=self.url)
        if status in (401, 403):
            raise StoreAccessDenied(f"HTTP {status}", url=self.url, key=key)
        if status in _RETRY_STATUSES or status >= 500:
            raise StoreUnavailable(f"HTTP {status}", url=self.url, key=key)
        if status != 200:
            raise StoreError(
                f"GET {key!r} from {self.url}: unexpected HTTP {status} "
                "(redirects are not followed)",
                url=self.url,
                key=key,
            )
        data = answer.data
        self.stats.count("", requests=0, bytes_in=len(data))
        return StoredObject(data=data, etag=answer.etag or hashlib.sha256(data).hexdigest())

    def _get_with_retries(
        self, target: str, headers: dict[str, str], key: str, limits: _Limits
    ) -> _Answer:
        deadline = limits.deadline
        attempt = 0
        while True:
            attempt += 1
            deadline.check()
            self.stats.count("")
            try:
                answer = self._request(target, headers, key, limits)
            except ssl.SSLCertVerificationError as err:
                raise StoreError(
                    f"GET {key!r} from {self.url}: TLS certificate verification failed: "
                    f"{err.verify_message}",
                    url=self.url,
                    key=key,
                ) from err
            except (OSError, http.client.HTTPException) as err:
                deadline.check()  # the watchdog cut it: not worth another attempt
                if attempt >= self.max_attempts:
                    raise StoreUnavailable(_reason(err), url=self.url, key=key) from err
                delay = exponential(attempt, first=_BACKOFF, cap=_MAX_RETRY_AFTER)
            else:
                if answer.status not in _RETRY_STATUSES or attempt >= self.max_attempts:
                    return answer
                delay = exponential(attempt, first=_BACKOFF, cap=_MAX_RETRY_AFTER)
                delay = max(delay, answer.retry_after or 0.0)
            log.debug("GET %r from %s: attempt %d failed; retrying", key, self.url, attempt)
            if self._sleep is not None:
                self._sleep(min(delay, _MAX_RETRY_AFTER, max(0.0, deadline.remaining())))
            else:
                deadline.sleep(min(delay, _MAX_RETRY_AFTER))

    def _request(self, target: str, headers: dict[str, str], key: str, limits: _Limits) -> _Answer:
        """One GET; a kept-alive connection the server dropped is replaced once, silently."""
        with self._lock:
            idle = self._idle.pop() if self._idle else None
        if idle is not None:
            try:
                return self._exchange(idle, target, headers, key, limits)
            except _STALE:
                limits.deadline.check()
                # closed by _exchange; try once on a new connection
        return self._exchange(self._new_connection(), target, headers, key, limits)

    def _exchange(
        self,
        connection: http.client.HTTPConnection,
        target: str,
        headers: dict[str, str],
        key: str,
        limits: _Limits,
    ) -> _Answer:
        """One request and its whole answer; the connection is kept for reuse or closed.

        A watchdog shuts the socket down if the deadline passes (or the caller is
        cancelled) before the answer is complete."""
        connection.timeout = max(0.001, min(self.timeout, limits.deadline.remaining()))
        response: http.client.HTTPResponse | None = None
        try:
            with watch(limits.deadline, lambda: _shut_down(connection, response)):
                connection.request("GET", target, headers=headers)
                response = connection.getresponse()
                data = self._body(response, key, limits)
            # A socket shut down by the watchdog can look like an answer that ended early.
            limits.deadline.check()
        except BaseException:
            if response is not None:
                response.close()  # it owns the socket when the server said "close"
            connection.close()
            raise
        if response.will_close or not response.isclosed():  # not reusable
            connection.close()
        else:
            with self._lock:
                self._idle.append(connection)
        return _Answer(
            response.status,
            response.getheader("ETag"),
            data,
            parse_retry_after(response.getheader("Retry-After"), time.time(), cap=_MAX_RETRY_AFTER),
        )

    def _body(self, response: http.client.HTTPResponse, key: str, limits: _Limits) -> bytes:
        """The answer's body, at most ``limits.max_bytes`` of it (``ObjectTooLarge``).

        The body of any other answer than 200 is read up to 64 KiB and dropped (past that,
        the connection is closed rather than drained)."""
        if response.status != 200:
            limits.deadline.credit(len(response.read(_ERROR_BODY)))
            return b""
        cap = limits.max_bytes
        length = response.getheader("Content-Length")
        if length is not None and length.strip().isdigit() and int(length) > cap:
            etag = response.getheader("ETag")
            raise ObjectTooLarge(key, url=self.url, max_bytes=cap, size=int(length), etag=etag)
        return read_capped(
            response.read, key, url=self.url, max_bytes=cap, received=limits.deadline.credit
        )

    def _new_connection(self) -> http.client.HTTPConnection:
        if self._https:
            return http.client.HTTPSConnection(
                self._host, self._port, timeout=self.timeout, context=self._context
            )
        return http.client.HTTPConnection(self._host, self._port, timeout=self.timeout)

    def close(self) -> None:
        """Close the kept-alive connections (the next GET opens a new one)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    def __del__(self) -> None:
        if hasattr(self, "_idle"):  # not when __init__ refused the URL
            self.close()

    # -- writes: none ----------------------------------------------------------------------

    def put(self, key: str, data: bytes) -> str:
        raise ReadOnlyStore("put", url=self.url, key=key)

    def put_if_absent(self, key: str, data: bytes) -> str:
        raise ReadOnlyStore("put_if_absent", url=self.url, key=key)

    def put_if_match(self, key: str, data: bytes, etag: str) -> str:
        raise ReadOnlyStore("put_if_match", url=self.url, key=key)

    def list(self, prefix: str) -> Iterator[str]:
        raise ReadOnlyStore("list", url=self.url)

    def list_etags(self, prefix: str) -> Iterator[tuple[str, str]]:
        raise ReadOnlyStore("list", url=self.url)

    def delete(self, key: str) -> None:
        raise ReadOnlyStore("delete", url=self.url, key=key)


def tls_context(cafile: str | None = None) -> ssl.SSLContext:
    """A verifying client context: ``cafile``, else the system CAs (looked up lazily)."""
    cafile = cafile or os.environ.get("REQUESTS_CA_BUNDLE") or None
    env = os.environ
    if cafile is not None or "SSL_CERT_FILE" in env or "SSL_CERT_DIR" in env:
        return ssl.create_default_context(cafile=cafile)
    capath = ssl.get_default_verify_paths().capath
    if capath is None or not _hashed_directory(capath):
        return ssl.create_default_context()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies certificates and host names
    context.load_verify_locations(capath=capath)
    return context


def _hashed_directory(path: str) -> bool:
    """True when ``path`` holds OpenSSL's hashed CA links (``5ad8a5d6.0`` ...)."""
    try:
        names = os.listdir(path)
    except OSError:
        return False
    return any(_HASHED.fullmatch(name) for name in names)


def _shut_down(
    connection: http.client.HTTPConnection, response: http.client.HTTPResponse | None
) -> None:
    """Make a blocked read on ``connection`` return at once (called by the watchdog)."""
    sock = connection.sock
    if sock is None and response is not None:
        # After an answer with "Connection: close" the response alone holds the socket,
        # through its buffered reader over a ``socket.SocketIO``.
        raw = getattr(response.fp, "raw", None)
        sock = getattr(raw, "_sock", None)
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already closed


def _reason(err: BaseException) -> str:
    """A short cause for a network error, e.g. ``ConnectionRefusedError: [Errno 111] ...``."""
    if isinstance(err, socket.timeout):
        return "timed out"
    detail = str(err)
    return f"{err.__class__.__name__}: {detail}" if detail else err.__class__.__name__
