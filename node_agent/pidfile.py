"""``--pidfile``: one agent per pid file, the file removed on exit.

The file is created atomically and exclusively: the PID is written to a temp file in the same
directory, which is then hard-linked to the final name (``link`` fails if the name exists),
so a reader never sees a half-written PID and two agents starting at once cannot both win.
An existing file whose PID is alive and is a certfleet agent refuses the start; a stale one
(no such process, or a reused PID running something else) is replaced.
"""

from __future__ import annotations

import logging
import os

from node_agent.diskfile import FileMode, create_atomic
from node_agent.errors import PidFileError

log = logging.getLogger(__name__)

_MODE = FileMode(0o644)
_MARKERS = (b"certfleet-agent", b"node_agent")


def read_pid(path: str) -> int | None:
    """The PID in ``path``, or None when the file is missing or holds no PID."""
    try:
        with open(path, "rb") as f:
            text = f.read(64).strip()
    except FileNotFoundError:
        return None
    except OSError as err:
        raise PidFileError(path, f"unreadable: {err}") from err
    return int(text) if text.isdigit() and int(text) > 0 else None


def agent_alive(pid: int) -> bool:
    """True when ``pid`` runs and (where /proc tells) is a certfleet agent."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, owned by someone else
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read()
    except FileNotFoundError:
        return False  # exited meanwhile
    except OSError:
        return True  # no /proc: trust the PID
    return any(marker in cmdline for marker in _MARKERS)


class PidFile:
    """The pid file at ``path``, held by this process between ``acquire`` and ``release``."""

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        self.pid = os.getpid()
        self.held = False

    def acquire(self) -> None:
        """Write our PID; raise ``PidFileError`` if a live agent holds the file."""
        for _ in range(3):
            try:
                create_atomic(self.path, f"{self.pid}\n".encode(), _MODE)
            except FileExistsError:
                pass
            except OSError as err:
                raise PidFileError(self.path, f"cannot be written: {err}") from err
            else:
                self.held = True
                return
            other = read_pid(self.path)
            if other is not None and other != self.pid and agent_alive(other):
                raise PidFileError(
                    self.path, f"certfleet-agent is already running as PID {other}; not starting"
                )
            log.warning(
                "removing the stale pid file %s (PID %s is not a running certfleet agent)",
                self.path,
                other,
            )
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
            except OSError as err:
                raise PidFileError(self.path, f"stale, and cannot be removed: {err}") from err
        raise PidFileError(self.path, "kept changing while being taken; not starting")

    def release(self) -> None:
        """Remove the file if it still names this process."""
        if not self.held:
            return
        self.held = False
        try:
            if read_pid(self.path) == self.pid:
                os.unlink(self.path)
        except (OSError, PidFileError) as err:
            log.warning("cannot remove the pid file %s: %s", self.path, err)
