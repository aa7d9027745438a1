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

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Callable

import pytest

from certfleet.sandbox import devstack

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


class Sandbox(devstack.Sandbox):
    """:class:`certfleet.sandbox.devstack.Sandbox`, whose failures are test failures."""

    def start(self) -> None:
        """Start the sandbox and wait for its "listening on" line (port 0 picks one)."""
        try:
            super().start()
        except devstack.StackError as err:
            pytest.fail(f"the sandbox did not start: {err}")

    def stop(self) -> None:
        """SIGTERM and wait (SIGKILL, and a failure, if it does not stop in time)."""
        try:
            super().stop()
        except devstack.StackError as err:
            raise AssertionError("the sandbox ignored SIGTERM") from err


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

    def make(api_key: str = devstack.SANDBOX_API_KEY, **options: object) -> Sandbox:
        server = Sandbox(tmp_path / f"sandbox{len(made)}", _flags(options), api_key)
        made.append(server)
        server.start()
        return server

    yield make
    for server in made:
        server.stop()
