"""pebble, Let's Encrypt's test CA, for the ACME tests: real validation, nonce rejection on.

Fixture ``pebble`` (function): a :class:`Pebble` on free 127.0.0.1 ports with a throwaway
CA and a ``localhost`` certificate for its HTTPS API (``ca_bundle`` trusts it), its
management API (``root_pem()``: ``GET /roots/0``), and ``pebble-challtestsrv`` as its DNS
server answering every A query with 127.0.0.1 (so any test name reaches 127.0.0.1). HTTP-01
is validated on ``http_port``: a test puts nginx there (``Pebble.nginx_http01``).
``PEBBLE_VA_ALWAYS_VALID`` is never set, and the default nonce rejection (5 %) stays on;
``PEBBLE_VA_NOSLEEP=1`` only removes pebble's random wait before validating.

``binary`` may name another pebble (the newer one with ARI and profiles: fixture
``pebble_ari``). With ``dns_server`` ("IP:port") set before ``start()``, pebble asks that
server instead and no challtestsrv is started (the DNS-01 lab of tests/plugins/acme_lab.py
points it at bind9). ``certificate`` and ``key`` are its listener's (for a proxy in front).
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import random
import re
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from certfleet.sandbox.devstack import pick_ports
from tests.plugins.binaries import require_binary


def openssl_verifies(root_pem: bytes, leaf: Path, chain: Path) -> None:
    """Asserts that ``openssl verify`` accepts the first certificate in ``leaf`` against
    ``root_pem`` (pebble's root), with the intermediates in ``chain``."""
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch) / "root.pem"
        root.write_bytes(root_pem)
        verified = subprocess.run(
            [require_binary("openssl"), "verify", "-CAfile", str(root), "-untrusted", str(chain),
             str(leaf)],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
    assert verified.returncode == 0, verified.stdout + verified.stderr


def free_ports(count: int) -> list[int]:
    """``count`` distinct free ports below 45000 (as every test server here uses)."""
    return pick_ports(count, random.Random())


def free_port() -> int:
    return free_ports(1)[0]


def wait_listening(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 15
    while True:
        assert process.poll() is None, log.read_text(errors="replace")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            assert time.monotonic() < deadline, f"nothing listens on {port}"
            time.sleep(0.05)


def write_tls_pair(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a localhost/127.0.0.1 server certificate; (ca, cert, key) paths."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "certfleet test pebble CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = (directory / "ca.pem", directory / "cert.pem", directory / "key.pem")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


class Pebble:
    """pebble + pebble-challtestsrv (DNS) as user processes on free ports."""

    def __init__(self, binary: str, challtestsrv: str, directory: Path) -> None:
        self.binary = binary
        self.challtestsrv = challtestsrv
        self.dir = directory
        directory.mkdir(parents=True, exist_ok=True)
        ports = free_ports(6)
        self.port, self.mgmt_port, self.http_port, self.dns_port, self.chall_mgmt = ports[:5]
        self.tls_port = ports[5]
        self.ca_bundle, self._cert, self._key = write_tls_pair(directory)
        self.processes: list[subprocess.Popen[bytes]] = []
        self.env: dict[str, str] = {}
        self.validity: int | None = None
        self.extra_config: dict[str, object] = {}
        self.dns_server: str | None = None

    @property
    def certificate(self) -> Path:
        """The listener certificate of pebble's HTTPS API (localhost, 127.0.0.1)."""
        return self._cert

    @property
    def key(self) -> Path:
        return self._key

    @property
    def directory_url(self) -> str:
        return f"https://127.0.0.1:{self.port}/dir"

    def _spawn(self, argv: list[str], log_name: str, env: dict[str, str]) -> None:
        log = self.dir / log_name
        with log.open("wb") as out:
            process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
        self.processes.append(process)

    def start(self) -> None:
        """Start challtestsrv (unless ``dns_server`` is set) and pebble, and wait (bounded)
        until they listen."""
        if self.dns_server is None:
            self._spawn(
                [self.challtestsrv, "-defaultIPv4", "127.0.0.1", "-defaultIPv6", "",
                 "-dns01", f"127.0.0.1:{self.dns_port}", "-http01", "", "-https01", "",
                 "-tlsalpn01", "", "-management", f"127.0.0.1:{self.chall_mgmt}"],
                "challtestsrv.log", dict(os.environ),
            )  # fmt: skip
            wait_listening(self.chall_mgmt, self.processes[-1], self.dir / "challtestsrv.log")
        config: dict[str, object] = {
            "listenAddress": f"127.0.0.1:{self.port}",
            "managementListenAddress": f"127.0.0.1:{self.mgmt_port}",
            "certificate": str(self._cert),
            "privateKey": str(self._key),
            "httpPort": self.http_port,
            "tlsPort": self.tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
        }
        if self.validity is not None:
            config["certificateValidityPeriod"] = self.validity
        config.update(self.extra_config)
        (self.dir / "pebble.json").write_text(json.dumps({"pebble": config}))
        env = {k: v for k, v in os.environ.items() if not k.startswith("PEBBLE_")}
        env.update({"PEBBLE_VA_NOSLEEP": "1", **self.env})
        assert "PEBBLE_VA_ALWAYS_VALID" not in env
        self._spawn(
            [self.binary, "-config", str(self.dir / "pebble.json"),
             "-dnsserver", self.dns_server or f"127.0.0.1:{self.dns_port}"],
            "pebble.log", env,
        )  # fmt: skip
        wait_listening(self.port, self.processes[-1], self.dir / "pebble.log")
        wait_listening(self.mgmt_port, self.processes[-1], self.dir / "pebble.log")

    def _get(self, path: str) -> bytes:
        context = ssl.create_default_context(cafile=str(self.ca_bundle))
        url = f"https://127.0.0.1:{self.mgmt_port}{path}"
        with urllib.request.urlopen(url, context=context, timeout=10) as answer:
            return bytes(answer.read())

    def root_pem(self) -> bytes:
        """pebble's issuing root (new at every start)."""
        return self._get("/roots/0")

    def intermediate_pem(self) -> bytes:
        return self._get("/intermediates/0")

    def directory(self) -> dict[str, object]:
        """pebble's ACME directory document."""
        context = ssl.create_default_context(cafile=str(self.ca_bundle))
        with urllib.request.urlopen(self.directory_url, context=context, timeout=10) as answer:
            return dict(json.loads(answer.read()))

    def log(self) -> str:
        return (self.dir / "pebble.log").read_text(errors="replace")

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=10)
        self.processes.clear()


DOCS_ACME = Path(__file__).resolve().parents[2] / "docs" / "acme.md"


def docs_http01_snippet(server: str, thumbprint: str = "THUMBPRINT") -> str:
    """The HTTP-01 snippet of ``server`` (``nginx``, ``haproxy``, ``apache``) exactly as
    docs/acme.md gives it (the code block after its ``<!-- http01-SERVER: -->`` marker),
    for ``thumbprint``."""
    text = DOCS_ACME.read_text()
    pattern = rf"<!-- http01-{server}:[^>]*-->\n```{server}\n(.*?)```"
    match = re.search(pattern, text, re.S)
    assert match is not None, f"docs/acme.md lost its {server} HTTP-01 snippet"
    return match.group(1).replace("THUMBPRINT", thumbprint)


def docs_nginx_snippet(thumbprint: str = "THUMBPRINT") -> str:
    """The nginx HTTP-01 snippet exactly as docs/acme.md gives it, for ``thumbprint``."""
    return docs_http01_snippet("nginx", thumbprint)


def http01_nginx_config(prefix: Path, port: int, snippet: str) -> str:
    """An nginx.conf serving ``snippet`` (a ``location`` block) on 127.0.0.1:``port``."""
    (prefix / "tmp").mkdir(parents=True, exist_ok=True)
    temp = "".join(
        f"  {kind}_temp_path {prefix}/tmp/{kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""
worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log;
events {{ worker_connections 64; }}
http {{
  access_log off;
{temp}
  server {{
    listen 127.0.0.1:{port};
    server_name _;
{snippet}
    location / {{ return 404; }}
  }}
}}
"""


class Http01Server:
    """A web server process answering HTTP-01 on 127.0.0.1:``port`` (started by a subclass,
    which sets ``process``); ``get`` asks it, ``stop`` ends it."""

    port: int
    process: subprocess.Popen[bytes]

    def get(self, path: str, host: str = "example.test") -> tuple[int, str]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", headers={"Host": host}
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return int(answer.status), answer.read().decode()
        except urllib.error.HTTPError as err:
            return int(err.code), ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


class Http01Nginx(Http01Server):
    """nginx answering HTTP-01 on pebble's ``http_port`` with a given location snippet."""

    def __init__(self, binary: str, prefix: Path, port: int, snippet: str) -> None:
        prefix.mkdir(parents=True, exist_ok=True)
        self.prefix = prefix
        self.port = port
        (prefix / "nginx.conf").write_text(http01_nginx_config(prefix, port, snippet))
        argv = [binary, "-c", str(prefix / "nginx.conf"), "-p", f"{prefix}/", "-e", "error.log"]
        self.process = subprocess.Popen(argv)
        wait_listening(port, self.process, prefix / "error.log")


@pytest.fixture
def pebble_ari(tmp_path: Path, pebble_new: str) -> Iterator[Pebble]:
    """The newer pebble (ARI, profiles): the binary of ``pebble_new`` (tests/plugins/acme_lab.py,
    from ``CERTFLEET_PEBBLE_NEW``), with challtestsrv; not started yet."""
    # the distribution's challtestsrv serves DNS (the newer one has other flags)
    server = Pebble(pebble_new, require_binary("pebble-challtestsrv"), tmp_path / "pebble-ari")
    yield server
    server.stop()


@pytest.fixture
def pebble(tmp_path: Path) -> Iterator[Pebble]:
    """A pebble (not yet started: set ``env``/``validity`` first, then ``start()``)."""
    server = Pebble(
        require_binary("pebble"), require_binary("pebble-challtestsrv"), tmp_path / "pebble"
    )
    yield server
    server.stop()


def published(config: Any, store: Any, cluster: str = "web") -> dict[str, Any]:
    """The sync state's published orders of ``cluster`` (name -> ``OrderRecord``)."""
    from certfleet.sync.sealing import SyncKeys
    from certfleet.sync.state import StateStore

    keys = SyncKeys.of(config, config.cluster(cluster).secrets)
    return dict(StateStore(store, cluster, keys).load(now_ms=int(time.time() * 1000)).orders)
