"""The APIv3 sandbox for the tests: ``python -m certfleet.sandbox`` as a real subprocess.

Fixtures:

- ``sandbox`` (session): one sandbox on a free port with its data in a temporary directory.
  Tests share it, so each should use its own cluster (see :func:`unique_cluster`).
- ``make_sandbox`` (function): a factory ``make_sandbox(issue_delay=2, fault_rate=0.3,
  seed=7, ...)`` for sandboxes with other options; each is stopped at teardown.

Both give a :class:`Sandbox`: ``.url`` (the ``/api/v3`` base URL), ``.api_key``,
``.root_pem`` (bytes, downloaded), ``.data_dir``, ``.headers`` (Bearer auth),
``.stop()`` and ``.start()`` (restart on the same port and data).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Callable

import pytest
import requests

START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
_OPTION_FLAGS = {
    "issue_delay": "--issue-delay",
    "cert_lifetime": "--cert-lifetime",
    "fault_rate": "--fault-rate",
    "latency": "--latency",
    "seed": "--seed",
    "seed_orders": "--seed-orders",
}


def unique_cluster(prefix: str = "t") -> str:
    """A cluster name no other test uses, e.g. ``t-1f2e3d4c5b6a``."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


class Sandbox:
    """A sandbox subprocess; :meth:`start` again after :meth:`stop` keeps port and data."""

    def __init__(self, data_dir: Path, options: list[str], api_key: str = "sandbox-key") -> None:
        self.data_dir = data_dir
        self.api_key = api_key
        self.options = options
        self.port = 0
        self.root_pem = b""
        self.log_path = data_dir.parent / f"{data_dir.name}.log"
        self.exit_status: int | None = None  # of the last stopped process
        self._process: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"Sandbox({self.url!r})"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v3"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the sandbox and wait for its "listening on" line (port 0 picks one)."""
        if self.running:
            return
        stdout_path = self.log_path.with_suffix(".stdout")
        command = [
            sys.executable,
            "-m",
            "certfleet.sandbox",
            "--port",
            str(self.port),
            "--data",
            str(self.data_dir),
            "--api-key",
            self.api_key,
            *self.options,
        ]
        with open(stdout_path, "wb") as out, open(self.log_path, "ab") as err:
            self._process = subprocess.Popen(command, stdout=out, stderr=err)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            line = stdout_path.read_text(encoding="utf-8").partition("\n")
            if line[1]:
                break
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"the sandbox did not start: {self.log_path.read_text()[-2000:]}")
            time.sleep(0.02)
        words = line[0].split()
        assert words[:4] == ["certfleet", "sandbox", "listening", "on"], line[0]
        assert "(TEST DOUBLE, not SSLMate)" in line[0]
        self.port = int(words[4].split(":")[2].split("/")[0])
        answer = requests.get(self.url + "/sandbox/root.pem", timeout=10)
        answer.raise_for_status()
        self.root_pem = answer.content

    def stop(self) -> None:
        """SIGTERM and wait (SIGKILL if it does not stop in time)."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            self.exit_status = None if process is None else process.returncode
            return
        process.send_signal(signal.SIGTERM)
        try:
            self.exit_status = process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise AssertionError("the sandbox ignored SIGTERM") from None


def _flags(options: dict[str, object]) -> list[str]:
    flags: list[str] = []
    for key, value in options.items():
        if key == "unsafe_names":
            flags += ["--unsafe-names"] if value else []
        elif key in _OPTION_FLAGS:
            flags += [_OPTION_FLAGS[key], str(value)]
        else:
            raise TypeError(f"make_sandbox: unknown option {key!r}")
    return flags


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    server = Sandbox(tmp_path_factory.mktemp("sandbox") / "data", [])
    server.start()
    yield server
    server.stop()


@pytest.fixture
def make_sandbox(tmp_path: Path) -> Iterator[Callable[..., Sandbox]]:
    made: list[Sandbox] = []

    def make(api_key: str = "sandbox-key", **options: object) -> Sandbox:
        server = Sandbox(tmp_path / f"sandbox{len(made)}", _flags(options), api_key)
        made.append(server)
        server.start()
        return server

    yield make
    for server in made:
        server.stop()
