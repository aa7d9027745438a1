"""Durable file primitives: every file is created with its final mode and owner, then fsynced.

A file is created with ``O_EXCL | O_NOFOLLOW`` and its mode and ownership are set on the
open descriptor before a single byte is written, so a key is never readable by anyone but
its final audience, not even for an instant. ``write_atomic`` writes to a temporary file in
the same directory and renames it over the target, so readers see the old or the new
content; the directory is fsynced afterwards so the rename survives a crash.
``write_atomic_in`` does the same relative to a directory descriptor (``dir_fd``, opened
without following symlinks by ``certfleet.store.nofollow.open_directory``), for paths that
leave the state directory: the ``files`` copies.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass

_TEMP_PREFIX = ".certfleet-"


@dataclass(frozen=True)
class FileMode:
    """Permission bits and ownership of a file to create (-1: leave the owner as is)."""

    perm: int
    uid: int = -1
    gid: int = -1


def temp_name(directory: str, suffix: str = ".tmp") -> str:
    """A fresh hidden name in ``directory``, short enough for any file system's name limit."""
    return os.path.join(directory, f"{_TEMP_PREFIX}{secrets.token_hex(8)}{suffix}")


def is_temp_name(name: str) -> bool:
    return name.startswith(_TEMP_PREFIX)


def fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fill(fd: int, data: bytes, mode: FileMode) -> None:
    """Give the new file ``fd`` its owner and ``mode``, write all of ``data`` and fsync it."""
    if mode.uid != -1 or mode.gid != -1:
        os.fchown(fd, mode.uid, mode.gid)
    os.fchmod(fd, mode.perm)
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
    os.fsync(fd)


def write_new(path: str, data: bytes, mode: FileMode) -> None:
    """Create ``path`` (which must not exist) with ``mode``, write ``data`` and fsync it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode.perm & 0o600)
    try:
        _fill(fd, data, mode)
    except BaseException:
        os.close(fd)
        _unlink_quietly(path)
        raise
    os.close(fd)


def write_atomic(path: str, data: bytes, mode: FileMode) -> None:
    """Replace ``path`` with ``data`` atomically; the directory must exist."""
    directory = os.path.dirname(path) or "."
    temp = temp_name(directory)
    write_new(temp, data, mode)
    try:
        os.replace(temp, path)
    except BaseException:
        _unlink_quietly(temp)
        raise
    fsync_dir(directory)


def write_new_in(dir_fd: int, name: str, data: bytes, mode: FileMode) -> None:
    """``write_new`` of ``name`` in the directory ``dir_fd``."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(name, flags, mode.perm & 0o600, dir_fd=dir_fd)
    try:
        _fill(fd, data, mode)
    except BaseException:
        os.close(fd)
        _unlink_quietly_in(dir_fd, name)
        raise
    os.close(fd)


def write_atomic_in(dir_fd: int, name: str, data: bytes, mode: FileMode) -> None:
    """Replace ``name`` in the directory ``dir_fd`` with ``data`` atomically. A symlink at
    ``name`` is replaced, never followed (rename does not follow its target)."""
    temp = os.path.basename(temp_name("."))
    write_new_in(dir_fd, temp, data, mode)
    try:
        os.replace(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        _unlink_quietly_in(dir_fd, temp)
        raise
    os.fsync(dir_fd)


def _unlink_quietly_in(dir_fd: int, name: str) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass


def create_atomic(path: str, data: bytes, mode: FileMode) -> None:
    """Create ``path`` complete or not at all: a temporary file hard-linked to its name.

    Raises ``FileExistsError`` when ``path`` exists; a crash leaves no partial ``path``.
    """
    directory = os.path.dirname(path) or "."
    temp = temp_name(directory)
    write_new(temp, data, mode)
    try:
        os.link(temp, path)
    finally:
        _unlink_quietly(temp)
    fsync_dir(directory)


def replace_symlink(link: str, target: str) -> None:
    """Point ``link`` at ``target`` atomically: a new symlink renamed over the old one."""
    directory = os.path.dirname(link) or "."
    temp = temp_name(directory, ".link")
    os.symlink(target, temp)
    try:
        os.replace(temp, link)
    except BaseException:
        _unlink_quietly(temp)
        raise
    fsync_dir(directory)


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
