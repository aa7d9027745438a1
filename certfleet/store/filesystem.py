"""A store in a local directory (``file:///path``): for single hosts, tests, and web roots.

Each object is one file under the root, its key the relative path. Writes go to a temp
file in the same directory, are fsynced, renamed over the object and the directory is
fsynced, so a reader or a crash sees the old or the new object. ETags are the hex SHA-256
of the content. Every write takes an exclusive ``flock`` on ``<root>/.certfleet.lock``,
which makes the conditional writes race-free across threads and processes on this host
(not across hosts sharing an NFS mount). Names starting with ``.`` are never keys, so the
lock file and temp files never show up in ``list``.

Whoever can write in the directory is as untrusted as any store: reads and writes never
follow a symlink below the root (``certfleet.store.nofollow``), a read takes regular files
only (a FIFO would block it, a device never end) and stops at its size cap, and the lock
file is opened with ``O_NOFOLLOW`` and must be a regular file.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path

from certfleet.store.contract import StoredObject, StoreStats, check_key, check_prefix, read_capped
from certfleet.store.errors import (
    ObjectNotFound,
    ObjectTooLarge,
    PreconditionFailed,
    StoreAccessDenied,
    StoreError,
)
from certfleet.store.nofollow import UnsafePathError, open_directory, open_regular

log = logging.getLogger(__name__)

LOCK_NAME = ".certfleet.lock"
_CHUNK = 256 * 1024


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

    def get(self, key: str, *, max_bytes: int) -> StoredObject:
        stored = self._read(key, max_bytes)
        self.stats.count("reads", bytes_in=len(stored.data))
        return stored

    def get_if_changed(self, key: str, *, max_bytes: int, etag: str) -> StoredObject | None:
        stored = self._read(key, max_bytes)
        changed = stored.etag != etag
        self.stats.count("reads", bytes_in=len(stored.data) if changed else 0)
        return stored if changed else None

    def _read(self, key: str, max_bytes: int) -> StoredObject:
        """The object, read whole up to the cap (``ObjectTooLarge`` from its size, or if it
        grows past the cap while read); counted by the caller unless missing."""
        directory, name = self._split(key)
        try:
            fd = self._open_file(directory, name)
        except FileNotFoundError as err:
            self.stats.count("reads")
            raise ObjectNotFound(key, url=self.url) from err
        except OSError as err:
            raise self._os_error(err, "read", key) from err
        try:
            size = os.fstat(fd).st_size
            if size > max_bytes:
                etag = _hash_from_start(fd)
                raise ObjectTooLarge(key, url=self.url, max_bytes=max_bytes, size=size, etag=etag)
            data = read_capped(lambda n: os.read(fd, n), key, url=self.url, max_bytes=max_bytes)
        except OSError as err:
            raise self._os_error(err, "read", key) from err
        finally:
            os.close(fd)
        return StoredObject(data=data, etag=content_etag(data))

    def list(self, prefix: str) -> Iterator[str]:
        check_prefix(prefix, url=self.url)
        self.stats.count("lists")
        directory = "/".join(prefix.split("/")[:-1])
        try:
            os.close(self._open_dir(directory))  # refuses a symlinked directory on the way
        except FileNotFoundError:
            return iter(())
        except OSError as err:
            raise self._os_error(err, "list", prefix) from err
        start = self.root.joinpath(*directory.split("/")) if directory else self.root
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
        """As ``list``, each key with the ETag ``get`` gives (each file hashed as it streams)."""
        for key in self.list(prefix):
            etag = self._current_etag(*self._split(key), key)
            if etag is not None:  # else removed since the listing
                yield key, etag

    # -- writes ------------------------------------------------------------------------
    # Each write opens the key's directory from the root without following a symlink
    # (``nofollow.open_directory``), creates its temp file there with O_EXCL|O_NOFOLLOW and
    # renames it relative to that handle, so a symlinked directory in the tree cannot
    # redirect it elsewhere on the host.

    def put(self, key: str, data: bytes) -> str:
        directory, name = self._split(key)
        self.stats.count("writes", bytes_out=len(data))
        with self._locked(key):
            self._write(directory, name, data, key)
        return content_etag(data)

    def put_if_absent(self, key: str, data: bytes) -> str:
        directory, name = self._split(key)
        self.stats.count("writes", bytes_out=len(data))
        with self._locked(key):
            if self._current_etag(directory, name, key) is not None:
                raise PreconditionFailed(key, url=self.url, detail="the object already exists")
            self._write(directory, name, data, key)
        return content_etag(data)

    def put_if_match(self, key: str, data: bytes, etag: str) -> str:
        directory, name = self._split(key)
        self.stats.count("writes", bytes_out=len(data))
        with self._locked(key):
            current = self._current_etag(directory, name, key)
            if current is None:
                raise PreconditionFailed(key, url=self.url, detail="the object does not exist")
            if current != etag:
                raise PreconditionFailed(key, url=self.url, detail="the object has changed")
            self._write(directory, name, data, key)
        return content_etag(data)

    def delete(self, key: str) -> None:
        directory, name = self._split(key)
        with self._locked(key):
            self.stats.count("deletes")
            try:
                dir_fd = self._open_dir(directory)
            except FileNotFoundError:
                return
            except OSError as err:
                raise self._os_error(err, "delete", key) from err
            try:
                os.unlink(name, dir_fd=dir_fd)  # removes a symlink itself, never its target
                os.fsync(dir_fd)
            except FileNotFoundError:
                return
            except OSError as err:
                raise self._os_error(err, "delete", key) from err
            finally:
                os.close(dir_fd)

    # -- internals ---------------------------------------------------------------------

    def _split(self, key: str) -> tuple[str, str]:
        """(directory under the root, file name) of a checked key."""
        directory, _, name = check_key(key, url=self.url).rpartition("/")
        return directory, name

    def _open_dir(self, directory: str, *, create: bool = False) -> int:
        path = os.path.join(str(self.root), directory) if directory else str(self.root)
        if create:
            os.makedirs(self.root, mode=0o755, exist_ok=True)
        return open_directory(path, base=str(self.root), create=create)

    def _open_file(self, directory: str, name: str) -> int:
        """A read-only descriptor of a regular file, reached without following a symlink."""
        dir_fd = self._open_dir(directory)
        try:
            return open_regular(name, dir_fd)
        finally:
            os.close(dir_fd)

    def _current_etag(self, directory: str, name: str, key: str) -> str | None:
        """The ETag of the object now (hashed as it streams, never buffered), None if none."""
        try:
            fd = self._open_file(directory, name)
        except FileNotFoundError:
            return None
        except OSError as err:
            raise self._os_error(err, "read", key) from err
        try:
            return _hash_from_start(fd)
        except OSError as err:
            raise self._os_error(err, "read", key) from err
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def _locked(self, key: str) -> Iterator[None]:
        """Hold the store-wide write lock (threads and processes alike); the lock file is
        opened without following a symlink and must be a regular file."""
        try:
            os.makedirs(self.root, mode=0o755, exist_ok=True)
            flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
            fd = os.open(self.root / LOCK_NAME, flags, 0o644)
        except OSError as err:
            unsafe = UnsafePathError(LOCK_NAME, "is a symlink")
            raise self._os_error(unsafe if err.errno == errno.ELOOP else err, "lock", key) from err
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                unsafe = UnsafePathError(LOCK_NAME, "is not a regular file (a FIFO or device)")
                raise self._os_error(unsafe, "lock", key)
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    def _write(self, directory: str, name: str, data: bytes, key: str) -> None:
        """Atomically replace the object with ``data``; the caller holds the lock."""
        try:
            dir_fd = self._open_dir(directory, create=True)
        except OSError as err:
            raise self._os_error(err, "write", key) from err
        temp = f".{name}.{secrets.token_hex(6)}.tmp"
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(temp, flags, 0o644, dir_fd=dir_fd)
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(temp, dir_fd=dir_fd)
                raise
            os.fsync(dir_fd)
        except OSError as err:
            raise self._os_error(err, "write", key) from err
        finally:
            os.close(dir_fd)

    def _os_error(self, err: OSError, operation: str, key: str) -> StoreError:
        if isinstance(err, UnsafePathError):
            return StoreError(
                f"{operation} of {key!r} in {self.url} refused: {err.path} {err.reason}",
                url=self.url,
                key=key,
            )
        detail = f"{operation} failed: {err.strerror or err}"
        if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return StoreAccessDenied(detail, url=self.url, key=key)
        return StoreError(
            f"{operation} of {key!r} in {self.url} failed: {err}", url=self.url, key=key
        )


def _hash_from_start(fd: int) -> str:
    """The ETag of an open file, hashed as it streams (never buffered whole)."""
    os.lseek(fd, 0, os.SEEK_SET)
    digest = hashlib.sha256()
    while True:
        chunk = os.read(fd, _CHUNK)
        if not chunk:
            return digest.hexdigest()
        digest.update(chunk)


def _raise_unless_gone(err: OSError) -> None:
    """os.walk's error hook: a directory deleted during the walk just has no keys."""
    if not isinstance(err, FileNotFoundError):
        raise err
