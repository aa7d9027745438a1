"""The errors every store backend raises, whatever it talks to underneath.

Each error carries the store URL (never with credentials in it) and, where one is
involved, the object key; its message names both, escaped (``certfleet.errors.printable``).
Callers branch on the class: ``StoreUnavailable`` is transient and worth a retry later,
``PreconditionFailed`` means a conditional write lost a race, everything else needs a human.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from certfleet.errors import CertfleetError, printable

_MAX_MESSAGE = 1000


def redact_url(url: str) -> str:
    """``url`` with any ``user:password@`` part replaced, fit for messages and logs."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"***@{host}"))


class StoreError(CertfleetError):
    """Base class of every store error. Its message often quotes the server (an S3 error
    message, a malformed status line): it is escaped here, once for every subclass, so no
    control or bidi character from a store reaches a log line or a terminal."""

    def __init__(self, message: str, *, url: str, key: str | None = None) -> None:
        super().__init__(printable(message, _MAX_MESSAGE))
        self.url = url
        self.key = key


def _where(url: str, key: str | None) -> str:
    return f"{key!r} in {url}" if key is not None else url


class ObjectNotFound(StoreError):
    """The object does not exist."""

    def __init__(self, key: str, *, url: str) -> None:
        super().__init__(f"no object {_where(url, key)}", url=url, key=key)


class ObjectTooLarge(StoreError):
    """An object over the size cap its reader gave (``get(max_bytes=)``): refused before it
    is buffered, from its announced size (Content-Length, stat) or while it streams in.
    ``etag`` is the object's ETag when the store told it (S3, a web server) or could compute
    it without buffering (a file store): enough to replace a broken object by
    ``put_if_match`` without reading it."""

    def __init__(
        self,
        key: str,
        *,
        url: str,
        max_bytes: int,
        size: int | None = None,
        etag: str | None = None,
    ) -> None:
        found = f"{size} bytes" if size is not None else "more bytes than that"
        super().__init__(
            f"object {_where(url, key)} refused: {found}, over the cap of {max_bytes} bytes "
            "for an object of its kind",
            url=url,
            key=key,
        )
        self.max_bytes = max_bytes
        self.size = size
        self.etag = etag


class PreconditionFailed(StoreError):
    """A conditional write lost: the object exists (put_if_absent) or changed (put_if_match)."""

    def __init__(self, key: str, *, url: str, detail: str = "precondition failed") -> None:
        super().__init__(f"conditional write of {_where(url, key)}: {detail}", url=url, key=key)


class StoreUnavailable(StoreError):
    """The store could not be reached or answered with a server error; try again later."""

    def __init__(self, detail: str, *, url: str, key: str | None = None) -> None:
        super().__init__(f"store unavailable: {_where(url, key)}: {detail}", url=url, key=key)


class StoreAccessDenied(StoreError):
    """The store refused the credentials, or the credentials lack a permission."""

    def __init__(self, detail: str, *, url: str, key: str | None = None) -> None:
        super().__init__(f"access denied: {_where(url, key)}: {detail}", url=url, key=key)


class ReadOnlyStore(StoreError):
    """A write (or a list) was asked of a store that only serves reads."""

    def __init__(self, operation: str, *, url: str, key: str | None = None) -> None:
        super().__init__(
            f"{operation} is not possible on the read-only store: {_where(url, key)}",
            url=url,
            key=key,
        )
        self.operation = operation


class ConditionalWritesUnsupported(StoreError):
    """The store accepted a write that its precondition should have refused."""

    def __init__(self, detail: str, *, url: str) -> None:
        super().__init__(
            f"{url}: this S3-compatible server ignores If-None-Match/If-Match; certfleet needs "
            f"them for its lease and head ({detail})",
            url=url,
        )


class StoreURLError(StoreError):
    """A store URL that names no backend certfleet has, or names one badly."""

    VALID = "s3://bucket/prefix, file:///absolute/path or https://host/path"

    def __init__(self, url: str, reason: str) -> None:
        shown = redact_url(url)
        super().__init__(
            f"bad store URL {shown!r}: {reason}; valid forms are {self.VALID}", url=shown
        )
        self.reason = reason


class InvalidKey(StoreError):
    """An object key outside the store's key syntax (relative, no '..', no hidden segments)."""

    def __init__(self, key: str, *, url: str, reason: str) -> None:
        super().__init__(f"invalid object key {_where(url, key)}: {reason}", url=url, key=key)


class ListingTooLarge(StoreError):
    """A listing over its caps: one LIST page over ``cap`` bytes (refused before it is
    parsed) or over the page size in keys, or a whole listing over ``cap`` keys. An honest
    server never sends it; the listing of ``prefix`` stops there. ``unit`` is "bytes" or
    "keys", ``scope`` "in one page" or "in one listing"."""

    def __init__(
        self,
        prefix: str,
        *,
        url: str,
        cap: int,
        unit: str,
        scope: str,
        size: int | None = None,
    ) -> None:
        found = f"{size} {unit}" if size is not None else f"more than {cap} {unit}"
        super().__init__(
            f"listing of {_where(url, prefix)} refused: {found} {scope}; the cap is {cap} {unit}",
            url=url,
            key=prefix,
        )
        self.prefix = prefix
        self.cap = cap
        self.unit = unit
        self.size = size
