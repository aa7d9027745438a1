"""A real S3 server for the tests: SeaweedFS ``weed mini`` on 127.0.0.1.

One server per test session (up in about a second), launched by
:class:`certfleet.sandbox.devstack.SeaweedFS` (the same code as ``make demo`` and ``make up``):
every port it opens is moved to a free one below 45000 (each also has a gRPC twin at
+10000), telemetry and the extra front ends are off, it checks request signatures against
a random access key, and ``start()`` returns only once a signed write and read succeed.
The AWS_* variables of that key are set in ``os.environ`` for the session, so boto3's
default credential chain (and any code under test) reaches this server.

Fixtures: ``seaweedfs`` (the server, with ``stop()``/``start()`` for fault tests) and
``s3_url`` (a fresh ``s3://<bucket>/t-<uuid>`` prefix per test).
"""

from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from certfleet.sandbox import devstack
from tests.plugins.binaries import require_binary

BUCKET = "certfleet-test"

_servers: list[SeaweedFS] = []


class SeaweedFS(devstack.SeaweedFS):
    """A running ``weed mini``: its endpoint, bucket, keys, and stop/start for fault tests.

    Start failures are ``RuntimeError`` (with the server's log tail), as before.
    """

    def __init__(self, weed: str, data_dir: Path) -> None:
        super().__init__(
            weed,
            data_dir,
            bucket=BUCKET,
            access_key="certfleet-test-" + secrets.token_hex(4),
        )

    def start(self) -> None:
        """Start (or restart, on the same ports and data) and wait until S3 serves objects;
        if a restart had to pick new ports, the session's AWS_* variables follow."""
        before = self.env
        try:
            super().start()
        except devstack.StackError as err:
            raise RuntimeError(str(err)) from err
        if (
            self.env != before
            and os.environ.get("AWS_ENDPOINT_URL_S3") == before["AWS_ENDPOINT_URL_S3"]
        ):
            os.environ.update(self.env)


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    """A SeaweedFS S3 server for the whole session, with its keys in ``os.environ``."""
    server = SeaweedFS(require_binary("weed"), tmp_path_factory.mktemp("seaweedfs"))
    server.start()
    saved = {name: os.environ.get(name) for name in server.env}
    os.environ.update(server.env)
    _servers.append(server)
    try:
        yield server
    finally:
        server.stop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture
def s3_url(seaweedfs: SeaweedFS) -> str:
    """A fresh, empty prefix in the session's bucket: ``s3://<bucket>/t-<uuid>``."""
    if not seaweedfs.running:
        seaweedfs.start()  # a fault test before this one may have left it stopped
    return f"s3://{seaweedfs.bucket}/t-{uuid.uuid4().hex}"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say which S3 server the S3 tests ran against, so a skip can't pass unnoticed."""
    for server in _servers:
        terminalreporter.write_line(
            f"S3 tests ran against SeaweedFS `weed mini` {server.version()} "
            f"({server.weed}) at {server.endpoint}, bucket {server.bucket}"
        )
