"""Opening a store from its URL: the one place that maps schemes to backends."""

from __future__ import annotations

import threading
from pathlib import PurePosixPath
from urllib.parse import unquote, urlsplit

from certfleet.store.contract import Store
from certfleet.store.errors import StoreURLError
from certfleet.store.filesystem import FileStore
from certfleet.store.https import LOOPBACK_HOSTS, HttpsStore
from certfleet.store.s3 import S3Store, valid_bucket


def open_store(
    url: str,
    *,
    endpoint: str | None = None,
    timeout: float = 30.0,
    cancel: threading.Event | None = None,
) -> Store:
    """The store ``url`` names.

    ``timeout`` is the total deadline of each network operation (plus one second per MiB
    moved); setting ``cancel`` ends an operation in flight (the agent passes its stop event).

    - ``s3://bucket/prefix``: S3 through boto3 (credentials from the standard AWS chain);
      ``endpoint`` (``store_endpoint``) points it at an S3-compatible server.
    - ``file:///absolute/path``: a local directory.
    - ``https://host/path``: read-only plain GETs (``http://`` only for loopback hosts).

    Anything else raises ``StoreURLError``, which lists the valid forms.
    """
    try:
        parts = urlsplit(url)
    except ValueError as err:
        raise StoreURLError(url, str(err)) from err
    scheme = parts.scheme.lower()
    if endpoint is not None and scheme != "s3":
        raise StoreURLError(url, "a store endpoint applies to s3:// stores only")
    if parts.query or parts.fragment:
        raise StoreURLError(url, "a store URL has no query or fragment")
    if scheme == "s3":
        return _open_s3(url, parts.netloc, parts.path, endpoint, timeout, cancel)
    if scheme == "file":
        return _open_file(url, parts.netloc, parts.path)
    if scheme in ("https", "http"):
        if not parts.hostname:
            raise StoreURLError(url, "no host")
        if scheme == "http" and parts.hostname not in LOOPBACK_HOSTS:
            raise StoreURLError(url, "plain http:// is accepted for loopback hosts only")
        return HttpsStore(url, timeout=timeout, cancel=cancel)
    raise StoreURLError(url, f"unknown scheme {parts.scheme!r}" if scheme else "no scheme")


def _open_s3(
    url: str,
    bucket: str,
    path: str,
    endpoint: str | None,
    timeout: float,
    cancel: threading.Event | None,
) -> Store:
    if not valid_bucket(bucket):
        raise StoreURLError(url, f"{bucket!r} is not a valid S3 bucket name")
    prefix = path.strip("/")
    if any(segment in ("", ".", "..") for segment in prefix.split("/")) and prefix:
        raise StoreURLError(url, "the prefix has an empty, '.' or '..' segment")
    if endpoint is not None:
        target = urlsplit(endpoint)
        if target.scheme not in ("http", "https") or not target.hostname:
            raise StoreURLError(url, f"the endpoint {endpoint!r} is not an http(s):// URL")
    return S3Store(bucket, prefix, endpoint=endpoint, timeout=timeout, cancel=cancel)


def _open_file(url: str, host: str, path: str) -> Store:
    if host not in ("", "localhost"):
        raise StoreURLError(url, "file:// URLs name a local path: file:///absolute/path")
    root = PurePosixPath(unquote(path))
    if not root.is_absolute() or ".." in root.parts:
        raise StoreURLError(url, "the path must be absolute, without '..'")
    return FileStore(str(root))
