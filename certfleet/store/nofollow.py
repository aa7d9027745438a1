"""Opening local paths without following symlinks, for the file store and the agent's disk.

A path checked as a string can still lead elsewhere: a symlinked directory anywhere on it,
or a symlink, FIFO or device as its last component, and whoever can write one of its
directories decides where a write lands or what a read blocks on. ``open_directory`` walks
a path one component at a time from a directory handle, each with
``O_DIRECTORY | O_NOFOLLOW``, so a symlink anywhere below its ``base`` is refused
(``ELOOP``/``ENOTDIR`` become ``UnsafePathError``); names are then opened relative to the
handle it returns (``dir_fd=``), also with ``O_NOFOLLOW``. ``open_regular`` opens a file
for reading and refuses anything but a regular file (without blocking on a FIFO).
"""

from __future__ import annotations

import errno
import os
import stat

_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class UnsafePathError(OSError):
    """A component of a path is a symlink or not what it must be (directory, regular file)."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(errno.ELOOP, f"{path}: {reason}; refusing to follow it")
        self.path = path
        self.reason = reason


def open_directory(path: str, *, base: str = "/", create: bool = False, mode: int = 0o755) -> int:
    """A descriptor of directory ``path``, reached from ``base`` without following symlinks.

    ``base`` (an absolute path, opened as it is: e.g. a store root the operator chose) must
    be ``path`` or one of its ancestors. With ``create``, missing directories are made with
    ``mode`` (and their parent fsynced). Raises ``UnsafePathError`` for a symlink or a
    non-directory on the way, ``FileNotFoundError`` for a missing one without ``create``.
    """
    path, base = os.path.normpath(path), os.path.normpath(base)
    relative = os.path.relpath(path, base)
    if not os.path.isabs(path) or relative == ".." or relative.startswith("../"):
        raise ValueError(f"{path!r} is not under {base!r}")
    fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    walked = base
    try:
        for name in relative.split("/") if relative != "." else ():
            walked = os.path.join(walked, name)
            child = _step(fd, name, walked, create, mode)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def _step(parent: int, name: str, walked: str, create: bool, mode: int) -> int:
    """Open ``name`` under ``parent`` as a directory (made first with ``create``)."""
    try:
        try:
            return os.open(name, _DIRECTORY, dir_fd=parent)
        except FileNotFoundError:
            if not create:
                raise
        try:
            os.mkdir(name, mode, dir_fd=parent)
            os.fsync(parent)
        except FileExistsError:
            pass
        return os.open(name, _DIRECTORY, dir_fd=parent)
    except OSError as err:
        if err.errno in (errno.ELOOP, errno.ENOTDIR):
            raise UnsafePathError(walked, "is a symlink or not a directory") from err
        raise


def open_regular(name: str, dir_fd: int) -> int:
    """A read descriptor of regular file ``name`` in ``dir_fd``; never a symlink, FIFO or
    device (``UnsafePathError``). ``FileNotFoundError`` when missing."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(name, flags, dir_fd=dir_fd)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise UnsafePathError(name, "is a symlink") from err
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UnsafePathError(name, "is not a regular file (a FIFO, device or directory)")
    except BaseException:
        os.close(fd)
        raise
    return fd
