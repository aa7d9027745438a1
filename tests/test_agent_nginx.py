"""What clients see: nginx serving the files the agent installs, checked with openssl s_client.

nginx runs as a user process on a free 127.0.0.1 port, with its own prefix, pid file, error
log and temp paths, and serves ``orders/www.example.com/ecdsa.chained.pem`` and its key. The
agent's ``check_command`` is ``nginx -t`` and its ``on_update`` ``nginx -s reload`` (both with
the test's ``-c``/``-p``). Steps: the first install is served; a renewal is served after the
reload; a certificate nginx refuses (a P-192 key, "ee key too small" under OpenSSL's default
security level) fails ``nginx -t``, so the agent rolls back and nginx keeps serving the
previous certificate; ``--status`` and the metrics file tell the same story.
"""

from __future__ import annotations

import datetime
import re
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from cryptography.x509.oid import NameOID

from certfleet.bundle import Bundle
from certfleet.config import parse_agent_config
from node_agent.agent import Agent
from node_agent.status import build_status
from tests.plugins.binaries import require_binary

if TYPE_CHECKING:
    from tests.plugins.publisher import Publisher, TestCa

WWW = "www.example.com"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Nginx:
    """nginx as a user process: its own prefix, config, pid file, logs and temp paths."""

    def __init__(self, binary: str, prefix: Path, port: int) -> None:
        self.binary = binary
        self.prefix = prefix
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def flags(self) -> list[str]:
        return ["-c", str(self.prefix / "nginx.conf"), "-p", f"{self.prefix}/", "-e", "error.log"]

    def command(self, *extra: str) -> str:
        return " ".join([self.binary, *self.flags, *extra])

    def write_config(self, order_dir: Path) -> None:
        (self.prefix / "tmp").mkdir(parents=True)
        temp = "".join(
            f"  {kind}_temp_path {self.prefix}/tmp/{kind};\n"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        (self.prefix / "nginx.conf").write_text(
            f"""
worker_processes 1;
daemon off;
pid {self.prefix}/nginx.pid;
error_log {self.prefix}/error.log;
events {{ worker_connections 32; }}
http {{
  access_log off;
{temp}
  server {{
    listen 127.0.0.1:{self.port} ssl;
    server_name {WWW};
    ssl_certificate     {order_dir}/ecdsa.chained.pem;
    ssl_certificate_key {order_dir}/ecdsa.key.pem;
    location / {{ return 200 "ok\\n"; }}
  }}
}}
"""
        )

    def start(self) -> None:
        self.process = subprocess.Popen([self.binary, *self.flags])
        deadline = time.monotonic() + 10
        while True:
            assert self.process.poll() is None, (self.prefix / "error.log").read_text()
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                assert time.monotonic() < deadline, "nginx did not listen"
                time.sleep(0.02)

    def stop(self) -> None:
        # Not "nginx -s quit": with a broken certificate on disk it fails to parse its config.
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[Nginx]:
    server = Nginx(require_binary("nginx"), tmp_path / "nginx", free_port())
    yield server
    server.stop()


def served_serial(port: int, root: Path) -> str:
    """The serial (hex) of the leaf nginx presents, verified against the test root."""
    done = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", WWW,
         "-CAfile", str(root), "-verify_return_error"],
        input="", capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert "Verify return code: 0 (ok)" in done.stdout, done.stdout + done.stderr
    pem = re.search(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", done.stdout, re.S)
    assert pem is not None, done.stdout
    return format(x509.load_pem_x509_certificate(pem.group(0).encode()).serial_number, "x")


def served_serial_becomes(port: int, root: Path, serial: str) -> str:
    """Wait (bounded) for a reload to take effect; return what is served then."""
    deadline = time.monotonic() + 10
    while True:
        seen = served_serial(port, root)
        if seen == serial or time.monotonic() > deadline:
            return seen
        time.sleep(0.1)


def weak_bundle(ca: TestCa, previous: Bundle) -> Bundle:
    """A bundle every agent check accepts but nginx refuses: a P-192 leaf key."""
    key = ec.generate_private_key(ec.SECP192R1())
    now = int(time.time())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, WWW)]))
        .issuer_name(ca.intermediate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(datetime.datetime.fromtimestamp(now - 3600, tz=datetime.timezone.utc))
        .not_valid_after(datetime.datetime.fromtimestamp(now + 86400, tz=datetime.timezone.utc))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(WWW)]), critical=False)
        .sign(ca.intermediate_key, hashes.SHA256())
    )
    return Bundle(
        WWW, (WWW,), "ecdsa",
        key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()),
        leaf.public_bytes(Encoding.PEM), previous.chain_pem,
        format(leaf.serial_number, "x"), now - 3600, now + 86400,
    )  # fmt: skip


def test_nginx_serves_what_the_agent_installs(
    tmp_path: Path, make_publisher: Callable[..., Publisher], nginx: Nginx
) -> None:
    (tmp_path / "store").mkdir()
    pub = make_publisher(f"file://{tmp_path}/store")
    root = tmp_path / "root.pem"
    root.write_bytes(pub.ca.root_pem)
    state = tmp_path / "state"
    base = (
        f'store = "{pub.store.url}"\nstate_dir = "{state}"\nhook_timeout = "20s"\n'
        f'metrics_file = "{tmp_path / "agent.prom"}"\n' + pub.cluster_stanza()
    )

    def agent(extra: str = "") -> Agent:
        return Agent(parse_agent_config(base + extra, str(tmp_path / "agent.conf")))

    first = pub.issue(WWW)
    pub.publish()
    assert agent().poll_once().installed == (WWW,)
    nginx.write_config(state / "orders" / WWW)
    nginx.start()
    assert served_serial(nginx.port, root) == first.serial

    # With nginx up, the agent checks its config and reloads it after every update.
    running = agent(
        f'default {{\n  check_command = "{nginx.command("-t", "-q")}"\n'
        f'  on_update = ["{nginx.command("-s", "reload")}"]\n}}\n'
    )
    renewed = pub.issue(WWW)
    pub.publish()
    result = running.poll_once()
    assert result.ok and result.installed == (WWW,), result.problems
    assert [run.ok for run in result.commands] == [True, True]  # nginx -t, then the reload
    assert served_serial_becomes(nginx.port, root, renewed.serial) == renewed.serial

    # A certificate nginx refuses: nginx -t fails, the agent rolls back, nginx is untouched.
    weak = weak_bundle(pub.ca, renewed)
    pub.set_entry(weak, pub.put_bundle(weak))
    pub.publish()
    result = running.poll_once()
    assert result.rolled_back == (WWW,) and not result.ok
    assert "rolled back to the previous version" in result.problems[0].message
    assert [run.ok for run in result.commands] == [False]  # no reload after a failed check
    order_dir = state / "orders" / WWW
    assert (order_dir / "ecdsa.crt.pem").read_bytes() == renewed.certificate_pem
    done = subprocess.run(nginx.command("-t", "-q").split(), capture_output=True, check=False)
    assert done.returncode == 0  # the files on disk are good again
    time.sleep(0.3)
    assert served_serial(nginx.port, root) == renewed.serial
    assert nginx.process is not None and nginx.process.poll() is None

    # --status and the metrics file after the rollback.
    report = build_status(running.config, now=int(time.time()))
    (order,) = report["orders"]
    assert order["serial"] == renewed.serial and order["names"] == [WWW]
    assert order["on_update"][0]["ok"] is True  # the last reload (the renewal's) succeeded
    assert report["hook_failures_total"] == 1  # the failed nginx -t
    prom = (tmp_path / "agent.prom").read_text()
    assert "certfleet_agent_hook_failures_total 1\n" in prom
    assert f'certfleet_agent_certificate_not_after_timestamp_seconds{{order="{WWW}"}} ' in prom
