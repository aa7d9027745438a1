"""Installing an order's files: version directories, the symlink switch, ``files`` copies.

Layout under the state directory::

    orders/<safe name>                -> ../versions/<safe name>/<version>   (a symlink)
    versions/<safe name>/<version>/   rsa.key.pem rsa.crt.pem ... (complete, fsynced)

A version directory is written under a temporary name, fsynced, then renamed to its final
name, so a directory with a final name is always complete. The switch renames a new
symlink over ``orders/<safe name>``, so key and certificates change together and a crash
leaves the old or the new set. The current and the previous version are kept (rollback);
older ones are pruned.

Nothing is ever written outside ``state_dir`` except the ``files`` copies, whose paths the
caller has already expanded and checked. Every safe name is checked again here.

A path checked as a string can still lead elsewhere through a symlinked directory, and the
agent writes private keys as root: each ``files`` copy is written relative to a handle on
its directory, reached from ``/`` one component at a time without following a symlink
(``certfleet.store.nofollow``); a symlink anywhere on the path is refused with an error
that names it (write the real path in the config instead). Inside the state directory,
``orders/``, ``versions/`` and each ``versions/<name>`` must be real directories, and the
state directory must not be writable by others (group-writable is logged).
"""

from __future__ import annotations

import grp
import logging
import os
import pwd
import secrets
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Callable

from certfleet.bundle import FormatError, validate_order_name
from certfleet.store.nofollow import UnsafePathError, open_directory
from node_agent.diskfile import (
    FileMode,
    fsync_dir,
    is_temp_name,
    replace_symlink,
    temp_name,
    write_atomic_in,
    write_new,
)
from node_agent.errors import InstallError
from node_agent.material import FILE_TYPES, KEY_BEARING, OrderFiles, file_name

log = logging.getLogger(__name__)

_DIR_MODE = 0o755


@dataclass(frozen=True)
class FileModes:
    """Modes of the key-bearing files (key, combined, p12) and of the others."""

    key: FileMode
    cert: FileMode

    def for_type(self, file_type: str) -> FileMode:
        return self.key if file_type in KEY_BEARING else self.cert


def file_modes(
    *, key_perm: int, cert_perm: int, key_user: str | None, key_group: str | None
) -> FileModes:
    """Resolve ``key_user`` / ``key_group`` names (or numeric ids) into a ``FileModes``."""
    uid = _resolve(key_user, "key_user", lambda name: pwd.getpwnam(name).pw_uid)
    gid = _resolve(key_group, "key_group", lambda name: grp.getgrnam(name).gr_gid)
    return FileModes(FileMode(key_perm, uid, gid), FileMode(cert_perm))


def _resolve(name: str | None, option: str, lookup: Callable[[str], int]) -> int:
    if name is None or name == "":
        return -1
    if name.isdigit():
        return int(name)
    try:
        return lookup(name)
    except KeyError as err:
        raise InstallError(f"{option} {name!r}", "no such user or group on this host") from err


def _checked_safe_name(safe_name: str) -> str:
    try:
        validate_order_name(safe_name)
    except FormatError as err:
        raise InstallError(f"directory name {safe_name!r}", err.reason) from err
    if "*" in safe_name:
        raise InstallError(f"directory name {safe_name!r}", "must not contain '*'")
    return safe_name


class Installer:
    """Writes and switches the versions of orders under one state directory."""

    def __init__(self, state_dir: str) -> None:
        self.state_dir = os.path.abspath(state_dir)
        self.orders_dir = os.path.join(self.state_dir, "orders")
        self.versions_dir = os.path.join(self.state_dir, "versions")
        try:
            os.makedirs(self.state_dir, mode=_DIR_MODE, exist_ok=True)
            mode = os.stat(self.state_dir).st_mode
            if mode & 0o002:
                raise InstallError(
                    f"state directory {self.state_dir}",
                    "is writable by anyone: refusing it (chmod o-w it)",
                )
            if mode & 0o020:
                log.warning(
                    "state directory %s is writable by its group: anyone in it could "
                    "redirect what the agent writes (chmod g-w it)",
                    self.state_dir,
                )
            for directory in (self.orders_dir, self.versions_dir):
                os.close(open_directory(directory, base=self.state_dir, create=True))
        except OSError as err:
            raise InstallError(f"state directory {self.state_dir}", str(err)) from err

    def order_path(self, safe_name: str) -> str:
        return os.path.join(self.orders_dir, _checked_safe_name(safe_name))

    def version_path(self, safe_name: str, version: str) -> str:
        if "/" in version or version.startswith(".") or not version:
            raise InstallError(f"version {version!r} of {safe_name}", "is not a version name")
        return os.path.join(self.versions_dir, _checked_safe_name(safe_name), version)

    def prepare(self, safe_name: str, files: OrderFiles, modes: FileModes, label: str) -> str:
        """Write a complete, fsynced version directory; return its version name."""
        parent = os.path.join(self.versions_dir, _checked_safe_name(safe_name))
        try:
            os.close(open_directory(parent, base=self.state_dir, create=True))
        except OSError as err:
            raise InstallError(f"version directory for {safe_name}", str(err)) from err
        version = f"{label}-{secrets.token_hex(4)}"
        incoming = temp_name(parent, ".dir")
        try:
            os.mkdir(incoming, _DIR_MODE)
            for file_type in FILE_TYPES:
                path = os.path.join(incoming, file_name(files.key_type, file_type))
                write_new(path, files.contents[file_type], modes.for_type(file_type))
            fsync_dir(incoming)
            os.rename(incoming, os.path.join(parent, version))
            fsync_dir(parent)
        except OSError as err:
            shutil.rmtree(incoming, ignore_errors=True)
            raise InstallError(f"version directory for {safe_name}", str(err)) from err
        return version

    def current(self, safe_name: str) -> str | None:
        """The version ``orders/<safe_name>`` points at, or None when it does not exist."""
        link = self.order_path(safe_name)
        try:
            target = os.readlink(link)
        except FileNotFoundError:
            return None
        except OSError as err:
            raise InstallError(link, "exists and is not a symlink; refusing to touch it") from err
        head, version = os.path.split(target)
        if head != os.path.join("..", "versions", safe_name):
            raise InstallError(link, "points outside this state directory; refusing to touch it")
        return version

    def switch(self, safe_name: str, version: str | None) -> None:
        """Point ``orders/<safe_name>`` at ``version`` (which must exist), or remove it."""
        link = self.order_path(safe_name)
        self.current(safe_name)  # refuses a link that is not ours
        try:
            if version is None:
                if os.path.lexists(link):
                    os.unlink(link)
                    fsync_dir(self.orders_dir)
                return
            if not os.path.isdir(self.version_path(safe_name, version)):
                raise InstallError(link, f"version {version} does not exist")
            replace_symlink(link, os.path.join("..", "versions", safe_name, version))
        except OSError as err:
            raise InstallError(link, f"switch failed: {err}") from err

    def read(self, safe_name: str, version: str, key_type: str) -> OrderFiles:
        """The contents of an installed version, for the ``files`` copies."""
        directory = self.version_path(safe_name, version)
        try:
            contents = {}
            for file_type in FILE_TYPES:
                with open(os.path.join(directory, file_name(key_type, file_type)), "rb") as f:
                    contents[file_type] = f.read()
        except OSError as err:
            raise InstallError(directory, f"cannot read installed files: {err}") from err
        return OrderFiles(key_type, contents)

    def prune(self, safe_name: str, keep: Iterable[str | None]) -> None:
        """Remove every version of ``safe_name`` but those in ``keep`` (and stray temp dirs)."""
        parent = os.path.join(self.versions_dir, _checked_safe_name(safe_name))
        kept = {version for version in keep if version}
        try:
            names = os.listdir(parent)
        except FileNotFoundError:
            return
        for name in names:
            if name not in kept or is_temp_name(name):
                _remove_tree(os.path.join(parent, name))

    def delete(self, safe_name: str) -> None:
        """Remove ``orders/<safe_name>`` and every version of it."""
        self.switch(safe_name, None)
        _remove_tree(os.path.join(self.versions_dir, _checked_safe_name(safe_name)))

    def remove_temp_links(self) -> None:
        """Remove symlinks a crash left half-made in ``orders/`` (and half-removed trees)."""
        for name in os.listdir(self.orders_dir):
            if is_temp_name(name):
                os.unlink(os.path.join(self.orders_dir, name))
        for name in os.listdir(self.versions_dir):
            if is_temp_name(name):
                _remove_tree(os.path.join(self.versions_dir, name))


def _remove_tree(path: str) -> None:
    """Remove a directory tree: renamed to a temp name first, so that a crash halfway never
    leaves an incomplete directory under a final name."""
    if is_temp_name(os.path.basename(path)):
        shutil.rmtree(path, ignore_errors=True)
        return
    doomed = temp_name(os.path.dirname(path), ".old")
    try:
        os.rename(path, doomed)
    except FileNotFoundError:
        return
    except OSError as err:
        log.warning("cannot remove %s: %s", path, err)
        return
    shutil.rmtree(doomed, ignore_errors=True)


def write_copies(files: OrderFiles, destinations: Mapping[str, str], modes: FileModes) -> None:
    """Write the ``files`` copies atomically one by one, key first; parents are created.

    Each is written relative to its directory, opened from ``/`` without following a
    symlink (a symlink anywhere on the path is refused, nothing is written)."""
    for file_type in FILE_TYPES:
        path = destinations.get(file_type)
        if path is None:
            continue
        try:
            dir_fd = open_directory(os.path.dirname(path), create=True, mode=_DIR_MODE)
            try:
                name = os.path.basename(path)
                write_atomic_in(dir_fd, name, files.contents[file_type], modes.for_type(file_type))
            finally:
                os.close(dir_fd)
        except UnsafePathError as err:
            raise InstallError(f"files copy {path}", _unsafe(err)) from err
        except OSError as err:
            raise InstallError(f"files copy {path}", str(err)) from err
        log.info("wrote %s", path)


def remove_copies(destinations: Mapping[str, str]) -> None:
    """Remove ``files`` copies (for a deleted order or a rolled-back first install), never
    through a symlinked directory."""
    for path in destinations.values():
        try:
            dir_fd = open_directory(os.path.dirname(path))
            try:
                os.unlink(os.path.basename(path), dir_fd=dir_fd)
            finally:
                os.close(dir_fd)
        except FileNotFoundError:
            continue
        except UnsafePathError as err:
            raise InstallError(f"files copy {path}", f"cannot remove: {_unsafe(err)}") from err
        except OSError as err:
            raise InstallError(f"files copy {path}", f"cannot remove: {err}") from err


def _unsafe(err: UnsafePathError) -> str:
    return (
        f"{err.path} {err.reason}: refusing to write a copy through it "
        "(give the real path in the files block)"
    )
