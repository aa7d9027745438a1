"""The node agent as a real process (``python -m node_agent``), as a supervisor runs it.

- ``AGENT``: the start of its command line;
- :func:`agent_status`: ``--status --json`` of a config, parsed (the command must succeed);
- :func:`wait_for`: polls a condition until it holds, failing with what was awaited;
- :class:`Daemon`: ``certfleet-agent --config FILE`` in the background with a readiness pipe
  (``--readyfd``) and its stderr in a file;
- fixture ``daemons`` (function): a list the test appends its daemons to; each is killed
  (SIGKILL) when the test ends, if it is still running.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

AGENT = [sys.executable, "-m", "node_agent"]


def agent_status(config: Path) -> dict[str, Any]:
    done = subprocess.run(
        [*AGENT, "--config", str(config), "--status", "--json"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def wait_for(predicate: Callable[[], bool], what: str = "", timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what or predicate}"
        time.sleep(0.05)


class Daemon:
    """A ``certfleet-agent`` daemon process, with its readiness pipe and its stderr in a file."""

    def __init__(self, config: Path, *extra: str) -> None:
        self.log = config.parent / f"agent-{time.monotonic_ns()}.log"
        read_end, write_end = os.pipe()
        with self.log.open("wb") as err:
            self.process = subprocess.Popen(
                [*AGENT, "--config", str(config), "--readyfd", str(write_end), *extra],
                stdout=subprocess.DEVNULL,
                stderr=err,
                pass_fds=(write_end,),
            )
        os.close(write_end)
        self.ready_fd: int | None = read_end

    def wait_ready(self, timeout: float = 30.0) -> bytes:
        """What arrived on the readiness pipe until it was closed."""
        assert self.ready_fd is not None, "the readiness pipe was already read to its end"
        received = b""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            assert left > 0, "no readiness signal:\n" + self.stderr()
            ready, _, _ = select.select([self.ready_fd], [], [], left)
            if ready:
                chunk = os.read(self.ready_fd, 16)
                if not chunk:
                    self._close_ready()
                    return received
                received += chunk

    def stderr(self) -> str:
        return self.log.read_text()

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def stop(self, timeout: float = 20.0) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._close_ready()

    def _close_ready(self) -> None:
        if self.ready_fd is not None:
            os.close(self.ready_fd)
            self.ready_fd = None


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    yield started
    for daemon in started:
        daemon.kill()
