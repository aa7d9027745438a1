"""A real S3 server for the tests: SeaweedFS ``weed mini`` on 127.0.0.1.

One server per test session (up in about a second). Every port it opens is moved to a
free one below 45000 (each also has a gRPC twin at +10000), telemetry and the extra
front ends are off, and it checks request signatures against a random access key. The
AWS_* variables of that key are set in ``os.environ`` for the session, so boto3's default
credential chain (and any code under test) reaches this server.

Fixtures: ``seaweedfs`` (the server, with ``stop()``/``start()`` for fault tests) and
``s3_url`` (a fresh ``s3://<bucket>/t-<uuid>`` prefix per test).
"""

from __future__ import annotations

import os
import random
import secrets
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.plugins.binaries import require_binary

BUCKET = "certfleet-test"
GRPC_OFFSET = 10000
PORT_NAMES = ("master", "volume", "filer", "s3", "admin")
START_TIMEOUT = 30.0
STOP_TIMEOUT = 5.0

_servers: list[SeaweedFS] = []


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def pick_ports(count: int, rng: random.Random) -> list[int]:
    """``count`` ports p in [20000, 45000) with p and p + 10000 both free right now."""
    chosen: list[int] = []
    while len(chosen) < count:
        port = rng.randrange(20000, 45000)
        taken = {q for p in chosen for q in (p, p + GRPC_OFFSET)}
        if port in taken or port + GRPC_OFFSET in taken:
            continue
        if _free(port) and _free(port + GRPC_OFFSET):
            chosen.append(port)
    return chosen


class SeaweedFS:
    """A running ``weed mini``: its endpoint, bucket, keys, and stop/start for fault tests."""

    def __init__(self, weed: str, data_dir: Path) -> None:
        self.weed = weed
        self.data_dir = data_dir
        self.bucket = BUCKET
        self.access_key = "certfleet-test-" + secrets.token_hex(4)
        self.secret_key = secrets.token_urlsafe(24)
        self.ports: dict[str, int] = {}
        self.log_path = data_dir / "weed.log"
        self.version = ""
        self._process: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"SeaweedFS({self.endpoint!r})"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    @property
    def env(self) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL_S3": self.endpoint,
        }

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start (or restart, on the same ports and data) and wait until S3 answers."""
        if self.running:
            return
        if not self.ports:
            self._start_on_fresh_ports()
            return
        self._launch()
        self._wait_until_up()

    def _start_on_fresh_ports(self) -> None:
        rng = random.Random()
        for attempt in range(3):
            self.ports = dict(zip(PORT_NAMES, pick_ports(len(PORT_NAMES), rng)))
            self._launch()
            try:
                self._wait_until_up()
                return
            except RuntimeError:
                self.stop()
                if attempt == 2:
                    raise

    def _launch(self) -> None:
        data = self.data_dir / "data"
        data.mkdir(exist_ok=True)
        p = self.ports
        command = [
            self.weed,
            "mini",
            f"-dir={data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-master.port={p['master']}",
            f"-volume.port={p['volume']}",
            f"-filer.port={p['filer']}",
            f"-s3.port={p['s3']}",
            f"-admin.port={p['admin']}",
            "-master.telemetry=false",
            "-admin.ui=false",
            "-webdav=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            # Resuming the master's saved state made the first PUT after a restart wait
            # 5-20 s for volumes; the volume server re-announces them anyway.
            "-master.resumeState=false",
            f"-bucket={self.bucket}",
        ]
        env = {**os.environ, **self.env}
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )

    def _wait_until_up(self) -> None:
        """Wait until S3 answers, then until a signed write and read of a probe succeed.

        After a restart the S3 port answers before the volumes are loaded (reads fail
        with InternalError for a moment), so "the port answers" is not enough.
        """
        deadline = time.monotonic() + START_TIMEOUT
        while not self._answers():
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"weed mini did not answer in {START_TIMEOUT}s:\n{self.log_tail()}"
                )
            time.sleep(0.05)
        while True:
            try:
                self._probe()
                return
            except Exception as err:
                if not self.running or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"weed mini does not serve objects ({err}):\n{self.log_tail()}"
                    ) from err
                time.sleep(0.05)

    def _answers(self) -> bool:
        if not self.running:
            raise RuntimeError(f"weed mini exited at start:\n{self.log_tail()}")
        try:
            with urllib.request.urlopen(self.endpoint + "/", timeout=1):
                return True
        except urllib.error.HTTPError as answer:
            answer.close()
            return True  # 403 to an anonymous request: it is up and checking signatures
        except OSError:
            return False

    def _probe(self) -> None:
        import boto3
        from botocore.config import Config

        # A Session of its own: boto3.client() warns about Python 3.9 (an error here).
        client = boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
            config=Config(retries={"max_attempts": 1}, s3={"addressing_style": "path"}),
        )
        client.put_object(Bucket=self.bucket, Key="fixture-probe/ready", Body=b"ready")
        client.get_object(Bucket=self.bucket, Key="fixture-probe/ready")["Body"].read()

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after a few seconds; the data directory is kept."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


def weed_version(weed: str) -> str:
    try:
        out = subprocess.run(
            [weed, "version"], capture_output=True, text=True, timeout=30, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown version"
    return out.split("\n", 1)[0].removeprefix("version ").strip() if out else "unknown version"


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    """A SeaweedFS S3 server for the whole session, with its keys in ``os.environ``."""
    weed = require_binary("weed")
    server = SeaweedFS(weed, tmp_path_factory.mktemp("seaweedfs"))
    server.version = weed_version(weed)
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
            f"S3 tests ran against SeaweedFS `weed mini` {server.version} "
            f"({server.weed}) at {server.endpoint}, bucket {server.bucket}"
        )
