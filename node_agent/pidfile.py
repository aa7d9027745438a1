"""``--pidfile``: one agent per pid file, the file removed on exit.

The file is created atomically and exclusively: the PID is written to a temp file in the same
directory, which is then hard-linked to the final name (``link`` fails if the name exists),
so a reader never sees a half-written PID and two agents starting at once cannot both win.
An existing file whose PID is alive refuses the start. A stale one is replaced: its PID no
longer runs, or the process now holding that number started after the file was written (the
number was reused, e.g. after a crash and a reboot with the file on a persistent disk).
"""

from __future__ import annotations

import logging
import os

from node_agent.diskfile import FileMode, create_atomic
from node_agent.errors import PidFileError

log = logging.getLogger(__name__)

_MODE = FileMode(0o644)
_CLOCK_SLACK = 1.0  # seconds: /proc gives the boot time in whole seconds


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


def process_start(pid: int) -> float | None:
    """When ``pid`` started (Unix seconds), or None where /proc does not tell."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read(4096)
        with open("/proc/stat", "rb") as f:
            boot = next(line for line in f if line.startswith(b"btime "))
        ticks = int(stat.rpartition(b")")[2].split()[19])
        return int(boot.split()[1]) + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def holds_file(pid: int, written_at: float) -> bool:
    """True when ``pid`` runs and did not start after the file naming it was written."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, owned by someone else
    started = process_start(pid)
    return started is None or started <= written_at + _CLOCK_SLACK


class PidFile:
    """The pid file at ``path``, held by this process between ``acquire`` and ``release``."""

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        self.pid = os.getpid()
        self.held = False

    def acquire(self) -> None:
        """Write our PID; raise ``PidFileError`` while the PID in the file runs."""
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
            try:
                written_at = os.stat(self.path).st_mtime
            except FileNotFoundError:
                continue
            except OSError as err:
                raise PidFileError(self.path, f"unreadable: {err}") from err
            other = read_pid(self.path)
            if other is not None and other != self.pid and holds_file(other, written_at):
                raise PidFileError(
                    self.path, f"already running as PID {other} (the PID it names); not starting"
                )
            log.warning(
                "removing the stale pid file %s (PID %s is not running, or is a reused number: "
                "its process started after the file was written)",
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
