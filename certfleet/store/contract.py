"""The store contract: what every backend promises, and the key syntax and capped read
they share."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Callable, Protocol

from certfleet.store.errors import InvalidKey, ObjectTooLarge

_CHUNK = 256 * 1024


@dataclass(frozen=True)
class StoredObject:
    """An object's bytes, and the ETag for ``get_if_changed`` or ``put_if_match``."""

    data: bytes
    etag: str

    def __repr__(self) -> str:
        return f"StoredObject(<{len(self.data)} bytes>, etag={self.etag!r})"


@dataclass
class StoreStats:
    """Running counters of one store handle, for benchmarks and the sync's run summary.

    ``requests`` counts round trips (every page of a list is one); ``reads``, ``writes``,
    ``lists`` and ``deletes`` count calls; ``bytes_in`` is object data received and
    ``bytes_out`` object data sent. Safe to update from several threads.
    """

    requests: int = 0
    reads: int = 0
    writes: int = 0
    lists: int = 0
    deletes: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def count(
        self, operation: str, *, requests: int = 1, bytes_in: int = 0, bytes_out: int = 0
    ) -> None:
        """Record one call of ``operation`` ("reads", "writes", "lists", "deletes" or "")."""
        with self._lock:
            if operation:
                setattr(self, operation, getattr(self, operation) + 1)
            self.requests += requests
            self.bytes_in += bytes_in
            self.bytes_out += bytes_out

    def as_dict(self) -> dict[str, int]:
        """The counters (every field but the lock) by name, e.g. for a JSON run summary."""
        with self._lock:
            return {name: value for name, value in vars(self).items() if name != "_lock"}


class Store(Protocol):
    """An object store holding certfleet's publications, addressed by relative keys.

    Keys are relative to the store's root (the URL's bucket + prefix, or directory):
    ``"v1/clusters/web/head"``. A key is one or more ``/``-separated segments of
    ``[A-Za-z0-9._=+@,-]``, none empty, none starting with ``.``; anything else raises
    ``InvalidKey`` before any I/O.

    ETags are opaque strings: compare them only for equality, and only with ETags from the
    same store. They change whenever the content changes.

    Failures raise ``StoreError`` subclasses: ``ObjectNotFound`` (missing object),
    ``PreconditionFailed`` (a conditional write lost), ``StoreUnavailable`` (network or
    server trouble: transient, retry later), ``StoreAccessDenied`` (credentials refused or
    lacking), ``ReadOnlyStore`` (a write or list on a read-only store), ``ObjectTooLarge``
    (over the reader's cap, below). Messages name the key and the URL, never credentials.

    The store is untrusted, so every read is bounded: ``get`` and ``get_if_changed`` take
    ``max_bytes``, the largest object of that kind the caller accepts (the caps per kind
    are in ``certfleet.bundle.layout`` and ``certfleet.sync.layout``). A backend checks the
    size it is told (Content-Length, stat) before it buffers anything and counts again
    while the bytes stream in (``read_capped``), and raises ``ObjectTooLarge`` naming the
    key and the cap; it never holds more than ``max_bytes`` (plus one read chunk) of an
    object in memory. A file-backed store reads regular files only, never through a symlink.

    Every network operation has a total deadline (the ``timeout`` a backend is opened with,
    plus one second per MiB moved), not only a per-read socket timeout: a server that
    trickles bytes cannot hold a caller longer. A backend opened with a ``cancel`` event
    (the agent's stop request) ends an operation in flight within a fraction of a second
    once it is set, with ``StoreUnavailable``; later operations then fail at once.

    Writes are atomic: a reader sees the old or the new object, never a mix.
    ``put_if_absent`` and ``put_if_match`` are linearizable across processes and hosts:
    of several racing conditional writes on one key at most one wins. A handle may be used
    from several threads at once.
    """

    @property
    def url(self) -> str:
        """The store's URL, without credentials, for messages."""
        ...

    @property
    def readonly(self) -> bool:
        """True when writes, deletes and lists raise ``ReadOnlyStore``."""
        ...

    @property
    def stats(self) -> StoreStats:
        """This handle's counters."""
        ...

    def get(self, key: str, *, max_bytes: int) -> StoredObject:
        """The object: ``ObjectNotFound`` when there is none, ``ObjectTooLarge`` (before it
        is read in full) when it is over ``max_bytes`` bytes."""
        ...

    def get_if_changed(self, key: str, *, max_bytes: int, etag: str) -> StoredObject | None:
        """As ``get``, but ``None`` when the object's ETag is still ``etag``.

        The conditional read of a poll (``If-None-Match`` on the network backends): a
        server that has nothing new sends no data. A missing object still raises
        ``ObjectNotFound``.
        """
        ...

    def put(self, key: str, data: bytes) -> str:
        """Write the object unconditionally; return its new ETag."""
        ...

    def put_if_absent(self, key: str, data: bytes) -> str:
        """Create the object; raise ``PreconditionFailed`` if it already exists."""
        ...

    def put_if_match(self, key: str, data: bytes, etag: str) -> str:
        """Replace the object only if its ETag is still ``etag`` (compare-and-swap).

        Raises ``PreconditionFailed`` if it changed or does not exist.
        """
        ...

    def list(self, prefix: str) -> Iterator[str]:
        """Every key starting with ``prefix`` (a plain string prefix), sorted, all pages."""
        ...

    def list_etags(self, prefix: str) -> Iterator[tuple[str, str]]:
        """Every (key, ETag) starting with ``prefix``, sorted, all pages: what ``list``
        gives, with each object's ETag as the listing reports it (S3's LIST has it)."""
        ...

    def delete(self, key: str) -> None:
        """Remove the object; deleting a missing object is not an error."""
        ...


_SEGMENT = re.compile(r"[A-Za-z0-9_=+@,-][A-Za-z0-9._=+@,-]*")


def check_key(key: str, *, url: str) -> str:
    """``key`` itself when it is a valid relative key, else ``InvalidKey``."""
    if not key:
        raise InvalidKey(key, url=url, reason="empty key")
    for segment in key.split("/"):
        if not _SEGMENT.fullmatch(segment):
            raise InvalidKey(
                key,
                url=url,
                reason="keys are '/'-separated segments of [A-Za-z0-9._=+@,-], "
                "none empty and none starting with '.'",
            )
    return key


def check_prefix(prefix: str, *, url: str) -> str:
    """``prefix`` itself when some valid key could start with it, else ``InvalidKey``."""
    if prefix:
        # A prefix may end inside a segment ("v1/clusters/we") or after a '/'.
        check_key(prefix[:-1] if prefix.endswith("/") else prefix, url=url)
    return prefix


def read_capped(
    read: Callable[[int], bytes],
    key: str,
    *,
    url: str,
    max_bytes: int,
    received: Callable[[int], None] | None = None,
) -> bytes:
    """Everything ``read(n)`` gives until it gives ``b""``, in chunks of at most 256
    KiB; ``ObjectTooLarge`` as soon as more than ``max_bytes`` arrived (it asks for one
    byte past the cap at the most, and holds no more). ``received(n)`` is told of each
    chunk kept, e.g. to credit a deadline."""
    chunks: list[bytes] = []
    total = 0
    while True:
        chunk = read(min(_CHUNK, max_bytes + 1 - total))
        if not chunk:
            return b"".join(chunks)
        total += len(chunk)
        if total > max_bytes:
            raise ObjectTooLarge(key, url=url, max_bytes=max_bytes)
        if received is not None:
            received(len(chunk))
        chunks.append(chunk)
