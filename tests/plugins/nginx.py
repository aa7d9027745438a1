"""nginx for the tests: a user process on a free 127.0.0.1 port, serving one certificate.

Fixture ``nginx`` (function): an :class:`Nginx` with its own prefix, config, pid file,
error log and temp paths under the test's ``tmp_path``; the test calls
``write_config(certificate, key)`` (or ``write_servers(text)``, its own ``server`` blocks)
and ``start()``, and the fixture stops it. What clients see is read with
``openssl s_client`` (:meth:`Nginx.served`), verified against a root.
"""

from __future__ import annotations

import random
import re
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from cryptography import x509

from certfleet.sandbox import devstack
from tests.plugins.binaries import require_binary

SERVER_NAME = "www.example.com"
_PEM = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)


def _free_port() -> int:
    """A free port below 45000, out of the ephemeral range (``devstack.pick_ports``)."""
    return devstack.pick_ports(1, random.Random(), twins=False)[0]


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
        """nginx with this instance's flags and ``extra``, as one line (for agent configs)."""
        return " ".join([self.binary, *self.flags, *extra])

    def write_config(
        self, certificate: Path, key: Path, others: Mapping[str, tuple[Path, Path]] | None = None
    ) -> None:
        """Serve ``certificate`` (chained PEM) and ``key`` for :data:`SERVER_NAME`, and each
        of ``others`` (server name -> certificate, key) in a server block of its own, listed
        first (so the first of them is the default server)."""
        vhosts = "".join(
            f"  server {{\n    listen 127.0.0.1:{self.port} ssl;\n    server_name {name};\n"
            f"    ssl_certificate {crt};\n    ssl_certificate_key {crt_key};\n"
            f'    location / {{ return 200 "{name}\\n"; }}\n  }}\n'
            for name, (crt, crt_key) in (others or {}).items()
        )
        self.write_servers(
            f"""{vhosts}
  server {{
    listen 127.0.0.1:{self.port} ssl;
    server_name {SERVER_NAME};
    ssl_certificate     {certificate};
    ssl_certificate_key {key};
    location / {{ return 200 "ok\\n"; }}
  }}
"""
        )

    def write_servers(self, servers: str) -> None:
        """Write nginx.conf: this instance's pid file, error log and temp paths, and
        ``servers`` (the ``server`` blocks, as nginx config text) in its ``http`` block."""
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
{servers}}}
"""
        )

    def start(self) -> None:
        """Start nginx and wait (bounded) until it accepts connections."""
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

    def served(self, root: Path, name: str = SERVER_NAME) -> x509.Certificate:
        """The leaf nginx presents for ``name`` (SNI), verified against ``root``."""
        done = subprocess.run(
            ["openssl", "s_client", "-connect", f"127.0.0.1:{self.port}",
             "-servername", name, "-CAfile", str(root), "-verify_return_error"],
            input="", capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert "Verify return code: 0 (ok)" in done.stdout, done.stdout + done.stderr
        pem = _PEM.search(done.stdout)
        assert pem is not None, done.stdout
        return x509.load_pem_x509_certificate(pem.group(0).encode())

    def served_after_reload(self, root: Path, serial: int) -> x509.Certificate:
        """Wait (bounded) for a reload to serve ``serial``; returns what is served then."""
        deadline = time.monotonic() + 10
        while True:
            leaf = self.served(root)
            if leaf.serial_number == serial or time.monotonic() > deadline:
                return leaf
            time.sleep(0.1)


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[Nginx]:
    server = Nginx(require_binary("nginx"), tmp_path / "nginx", _free_port())
    yield server
    server.stop()
