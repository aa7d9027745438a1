"""A store in a local directory (``file:///path``): for single hosts, tests, and web roots.

Each object is one file under the root, its key the relative path. Writes go to a temp
file in the same directory, are fsynced, renamed over the object and the directory is
fsynced, so a reader or a crash sees the old or the new object. ETags are the hex SHA-256
of the content. Every write takes an exclusive ``flock`` on ``<root>/.certfleet.lock``,
which makes the conditional writes race-free across threads and processes on this host
(not across hosts sharing an NFS mount). Names starting with ``.`` are never keys, so the
lock file and temp files never show up in ``list``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

from certfleet.store.contract import StoredObject, StoreStats, check_key, check_prefix
from certfleet.store.errors import (
    ObjectNotFound,
    PreconditionFailed,
    StoreAccessDenied,
    StoreError,
)

log = logging.getLogger(__name__)

LOCK_NAME = ".certfleet.lock"


def content_etag(data: bytes) -> str:
    """The ETag a file store gives ``data``: its lowercase hex SHA-256."""
    return hashlib.sha256(data).hexdigest()


class FileStore:
    """The ``Store`` contract on a directory tree."""

    readonly = False

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        if not self.root.is_absolute():
            raise ValueError(f"file store root must be absolute, not {str(root)!r}")
        self.url = self.root.as_uri()
        self.stats = StoreStats()

    def __repr__(self) -> str:
        return f"FileStore({self.url!r})"

    # -- reads -------------------------------------------------------------------------

    def get(self, key: str, *, if_none_match: str | None = None) -> StoredObject | None:
        path = self._path(key)
        try:
            data = path.read_bytes()
        except FileNotFoundError as err:
            self.stats.count("reads")
            raise ObjectNotFound(key, url=self.url) from err
        except OSError as err:
            raise self._os_error(err, "read", key) from err
        etag = content_etag(data)
        if if_none_match is not None and if_none_match == etag:
            self.stats.count("reads")
            return None
        self.stats.count("reads", bytes_in=len(data))
        return StoredObject(data=data, etag=etag)

    def list(self, prefix: str) -> Iterator[str]:
        check_prefix(prefix, url=self.url)
        self.stats.count("lists")
        start = self.root.joinpath(*prefix.split("/")[:-1])
        if not start.is_dir():
            return iter(())
        keys = []
        try:
            for dirpath, dirnames, filenames in os.walk(start, onerror=_raise_unless_gone):
                dirnames[:] = [name for name in dirnames if not name.startswith(".")]
                relative = Path(dirpath).relative_to(self.root).as_posix()
                for name in filenames:
                    if name.startswith("."):
                        continue
                    key = name if relative == "." else f"{relative}/{name}"
                    if key.startswith(prefix):
                        keys.append(key)
        except OSError as err:
            raise self._os_error(err, "list", prefix) from err
        return iter(sorted(keys))

    def list_etags(self, prefix: str) -> Iterator[tuple[str, str]]:
        """As ``list``, each key with the ETag ``get`` gives (the file is read to hash it)."""
        for key in self.list(prefix):
            try:
                data = self._path(key).read_bytes()
            except FileNotFoundError:
                continue  # removed since the listing
            except OSError as err:
                raise self._os_error(err, "list", prefix) from err
            yield key, content_etag(data)

    # -- writes ------------------------------------------------------------------------

    def put(self, key: str, data: bytes) -> str:
        path = self._path(key)
        self.stats.count("writes", bytes_out=len(data))
        with self._locked(key):
            self._write(path, data, key)
        return content_etag(data)

    def put_if_absent(self, key: str, data: bytes) -> str:
        path = self._path(key)
        self.stats.count("writes", bytes_out=len(data))
        with self._locked(key):
            if path.exists():
                raise PreconditionFailed(key, url=self.url, detail="the object already exists")
            self._write(path, data, key)
        return content_etag(data)

    def put_if_match(self, key: str, data: bytes, etag: str) -> str:
        path = self._path(key)
        self.stats.count("writes", bytes_out=len(data))
        with self._locked(key):
            try:
                current = content_etag(path.read_bytes())
            except FileNotFoundError:
                raise PreconditionFailed(
                    key, url=self.url, detail="the object does not exist"
                ) from None
            except OSError as err:
                raise self._os_error(err, "read", key) from err
            if current != etag:
                raise PreconditionFailed(key, url=self.url, detail="the object has changed")
            self._write(path, data, key)
        return content_etag(data)

    def delete(self, key: str) -> None:
        path = self._path(key)
        with self._locked(key):
            self.stats.count("deletes")
            try:
                path.unlink()
            except FileNotFoundError:
                return
            except OSError as err:
                raise self._os_error(err, "delete", key) from err
            _fsync_dir(path.parent)

    # -- internals ---------------------------------------------------------------------

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*check_key(key, url=self.url).split("/"))

    @contextlib.contextmanager
    def _locked(self, key: str) -> Iterator[None]:
        """Hold the store-wide write lock (threads and processes alike)."""
        try:
            self._make_dirs(self.root)
            fd = os.open(self.root / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as err:
            raise self._os_error(err, "lock", key) from err
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    def _write(self, path: Path, data: bytes, key: str) -> None:
        """Atomically replace ``path`` with ``data``; the caller holds the lock."""
        try:
            self._make_dirs(path.parent)
            temp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(temp, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    temp.unlink()
                raise
            _fsync_dir(path.parent)
        except OSError as err:
            raise self._os_error(err, "write", key) from err

    def _make_dirs(self, directory: Path) -> None:
        """Create ``directory`` and missing parents, fsyncing each new entry's parent."""
        if directory.is_dir():
            return
        self._make_dirs(directory.parent)
        try:
            directory.mkdir(mode=0o755)
        except FileExistsError:
            return
        _fsync_dir(directory.parent)

    def _os_error(self, err: OSError, operation: str, key: str) -> StoreError:
        detail = f"{operation} failed: {err.strerror or err}"
        if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return StoreAccessDenied(detail, url=self.url, key=key)
        return StoreError(
            f"{operation} of {key!r} in {self.url} failed: {err}", url=self.url, key=key
        )


def _raise_unless_gone(err: OSError) -> None:
    """os.walk's error hook: a directory deleted during the walk just has no keys."""
    if not isinstance(err, FileNotFoundError):
        raise err


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
