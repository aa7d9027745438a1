"""A read-only store behind any web server or CDN (``https://host/path``).

Objects are encrypted and signed, so they can be served in the clear by anything that
answers a plain GET; a node reading this way needs no cloud credentials at all. A GET of
``<base>/<key>`` with ``If-None-Match`` answers 200 (data + ETag), 304 (unchanged) or 404.
A server that sends no ETag still works: the ETag is then the SHA-256 of the content and
"unchanged" is decided here. ``http://`` is accepted for loopback hosts only (tests).
requests is imported when a store is opened, not with this module.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from certfleet.store.contract import StoredObject, StoreStats, check_key
from certfleet.store.errors import (
    ObjectNotFound,
    ReadOnlyStore,
    StoreAccessDenied,
    StoreError,
    StoreUnavailable,
)

log = logging.getLogger(__name__)

LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")


class HttpsStore:
    """The read side of the ``Store`` contract over plain HTTP GETs."""

    readonly = True

    def __init__(self, base_url: str, *, timeout: float = 30.0, max_attempts: int = 3) -> None:
        import requests
        from requests.adapters import HTTPAdapter
        from urllib3.util.retry import Retry

        parts = urlsplit(base_url)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError(f"not an https:// URL: {base_url!r}")
        auth = None
        if parts.username is not None:
            auth = (unquote(parts.username), unquote(parts.password or ""))
        host = parts.netloc.rpartition("@")[2]
        self.base = urlunsplit((parts.scheme, host, parts.path.rstrip("/"), "", ""))
        self.url = self.base
        self.timeout = timeout
        self.stats = StoreStats()
        self._session = requests.Session()
        self._session.auth = auth
        self._session.headers["User-Agent"] = "certfleet"
        retry = Retry(
            total=max_attempts - 1,
            backoff_factor=0.2,
            status_forcelist=(429, 500, 502, 503, 504),
            allowed_methods=("GET",),
            raise_on_status=False,
            respect_retry_after_header=True,
        )
        adapter = HTTPAdapter(max_retries=retry)
        self._session.mount("https://", adapter)
        self._session.mount("http://", adapter)
        self._network_errors = (requests.ConnectionError, requests.Timeout)
        self._request_errors = requests.RequestException

    def __repr__(self) -> str:
        return f"HttpsStore({self.url!r})"

    def get(self, key: str, *, if_none_match: str | None = None) -> StoredObject | None:
        target = f"{self.base}/{quote(check_key(key, url=self.url))}"
        headers = {"If-None-Match": if_none_match} if if_none_match is not None else {}
        self.stats.count("reads")
        try:
            answer = self._session.get(target, headers=headers, timeout=self.timeout)
        except self._network_errors as err:
            raise StoreUnavailable(_reason(err), url=self.url, key=key) from err
        except self._request_errors as err:
            raise StoreError(
                f"GET {key!r} from {self.url}: {_reason(err)}", url=self.url, key=key
            ) from err
        status = answer.status_code
        if status == 304:
            return None
        if status in (404, 410):
            raise ObjectNotFound(key, url=self.url)
        if status in (401, 403):
            raise StoreAccessDenied(f"HTTP {status}", url=self.url, key=key)
        if status == 429 or status >= 500:
            raise StoreUnavailable(f"HTTP {status}", url=self.url, key=key)
        if status != 200:
            raise StoreError(
                f"GET {key!r} from {self.url}: unexpected HTTP {status}", url=self.url, key=key
            )
        data = answer.content
        self.stats.count("", requests=0, bytes_in=len(data))
        etag = answer.headers.get("ETag") or hashlib.sha256(data).hexdigest()
        if if_none_match is not None and etag == if_none_match:
            return None  # the server ignored If-None-Match, but nothing changed
        return StoredObject(data=data, etag=etag)

    def put(self, key: str, data: bytes) -> str:
        raise ReadOnlyStore("put", url=self.url, key=key)

    def put_if_absent(self, key: str, data: bytes) -> str:
        raise ReadOnlyStore("put_if_absent", url=self.url, key=key)

    def put_if_match(self, key: str, data: bytes, etag: str) -> str:
        raise ReadOnlyStore("put_if_match", url=self.url, key=key)

    def list(self, prefix: str) -> Iterator[str]:
        raise ReadOnlyStore("list", url=self.url)

    def delete(self, key: str) -> None:
        raise ReadOnlyStore("delete", url=self.url, key=key)


def _reason(err: Exception) -> str:
    """A short cause for a requests error, without the full URL repetition."""
    reason = err.__class__.__name__
    inner = err.args[0] if err.args else None
    detail = getattr(inner, "reason", None) or inner
    return f"{reason}: {detail}" if detail else reason
