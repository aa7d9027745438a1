"""The DNS side of the ACME lab: bind9, pebble-challtestsrv and a moto Route 53 server.

All listen on 127.0.0.1 only, on free ports picked at run time (20000-45000), and stop
with the fixture. A missing program is a skip here and a failure in CI
(:func:`tests.plugins.binaries.missing`).

- ``bind9`` (function): a :class:`Bind9`, not started. The test declares zones with
  ``add_zone(name, records)`` (zone-file lines, relative to the zone), then ``start()``.
  Updates are allowed for the TSIG key :data:`TSIG_KEY_NAME` on TXT records only
  (``update-policy { grant acme-update. zonesub TXT; }``); ``block(zones)`` gives the
  matching ``dns "rfc2136"`` block, ``txt(name)`` what the server answers now.
- ``bind9_resolver`` (function): a second :class:`Bind9`, not started, that resolves
  recursively by forwarding every query to ``bind9`` (as a CA's resolver would, it follows a
  CNAME from one zone into another, which an authoritative-only server does not do).
- ``challtestsrv`` (function): a started :class:`Challtestsrv`; ``set_txt`` / ``clear_txt``
  on its management API, its DNS at ``dns_address`` (for pebble's ``-dnsserver``).
- ``lab_pebble`` (function): a factory ``lab_pebble(binary=None, dns_server=...)`` of
  :class:`tests.plugins.pebble.Pebble` (not started: set ``env``/``validity``, then
  ``start()``) whose ``-dnsserver`` is where the test says (bind9 for DNS-01), with no
  challtestsrv. ``PEBBLE_VA_ALWAYS_VALID`` is never set.
- ``pebble_new`` (function): the path of the newer pebble (ARI, profiles) from
  ``$CERTFLEET_PEBBLE_NEW/pebble``; skipped with a reason when it is not there (a failure
  in CI, whose ``.ci/run`` builds it).
- ``moto_route53`` (function): a started :class:`MotoRoute53` (moto's threaded server);
  ``client()`` is a boto3 Route 53 client for it; the AWS_* variables that point boto3
  at it are set for the test (``AWS_ENDPOINT_URL_ROUTE_53``).
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dns.flags
import dns.message
import dns.query
import dns.rdatatype
import pytest

from certfleet.acme.dns import DnsProviderConfig
from tests.plugins.binaries import missing, require_binary
from tests.plugins.pebble import Pebble

LOOPBACK = "127.0.0.1"
TSIG_KEY_NAME = "acme-update."
START_TIMEOUT = 15.0


def free_port(rng: Any = None) -> int:
    """A port in [20000, 45000) free for both TCP and UDP on 127.0.0.1 right now."""
    rng = rng or secrets.SystemRandom()
    while True:
        port = rng.randrange(20000, 45000)
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                tcp.bind((LOOPBACK, port))
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                udp.bind((LOOPBACK, port))
        except OSError:
            continue
        return port


def query(
    address: tuple[str, int], name: str, rdtype: str = "TXT", *, recursive: bool = False
) -> dns.message.Message:
    """One UDP query (recursion wanted only when ``recursive``), answered within 2 s."""
    message = dns.message.make_query(name, dns.rdatatype.from_text(rdtype))
    if not recursive:
        message.flags &= ~dns.flags.RD
    response, _tcp = dns.query.udp_with_fallback(message, address[0], timeout=2, port=address[1])
    return response


def txt_at(address: tuple[str, int], name: str) -> set[str]:
    """The TXT strings a server answers at ``name`` (empty when none)."""
    response = query(address, name)
    found: set[str] = set()
    for rrset in response.answer:
        if rrset.rdtype == dns.rdatatype.TXT:
            found.update(b"".join(rdata.strings).decode() for rdata in rrset)
    return found


def _stop(process: subprocess.Popen[bytes] | None) -> None:
    if process is not None and process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class Bind9:
    """``named -g`` as a user process: primary zones updatable by one TSIG key (TXT only)."""

    def __init__(self, binary: str, root: Path, port: int) -> None:
        self.binary = binary
        self.root = root
        self.port = port
        self.tsig_secret = base64.b64encode(secrets.token_bytes(32)).decode()
        self.zones: dict[str, tuple[str, bool]] = {}
        self.forward_to: Bind9 | None = None
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> tuple[str, int]:
        return LOOPBACK, self.port

    @property
    def server(self) -> str:
        """``"127.0.0.1:PORT"``, as a block's ``server`` and ``dns_resolvers`` write it."""
        return f"{LOOPBACK}:{self.port}"

    def add_zone(self, name: str, records: str = "", *, updatable: bool = True) -> None:
        """A primary zone ``name`` with an SOA, an NS and ``records`` (zone-file lines);
        ``updatable=False`` grants no update at all."""
        self.zones[name] = (records, updatable)

    def block(self, zones: tuple[str, ...] = (), **changes: Any) -> DnsProviderConfig:
        """The ``dns "rfc2136"`` block for this server (``changes`` override fields)."""
        fields: dict[str, Any] = {
            "kind": "rfc2136", "zones": zones, "server": self.server,
            "tsig_key_name": TSIG_KEY_NAME, "tsig_algorithm": "hmac-sha256",
            "tsig_secret": self.tsig_secret,
        }  # fmt: skip
        fields.update(changes)
        return DnsProviderConfig(**fields)

    def config_text(self) -> str:
        grant = f"update-policy {{ grant {TSIG_KEY_NAME} zonesub TXT; }};"
        zones = "".join(
            f'zone "{name}" {{ type primary; file "{name}.zone"; {grant if updatable else ""} }};\n'
            for name, (_records, updatable) in self.zones.items()
        )
        if self.forward_to is not None:
            recursion = (
                f"recursion yes; allow-recursion {{ {LOOPBACK}; }}; forward only;\n"
                f"  forwarders {{ {LOOPBACK} port {self.forward_to.port}; }};"
            )
        else:
            recursion = "recursion no;"
        return f"""
options {{
  directory "{self.root}";
  pid-file "{self.root}/named.pid";
  session-keyfile "{self.root}/session.key";
  managed-keys-directory "{self.root}";
  listen-on port {self.port} {{ {LOOPBACK}; }};
  listen-on-v6 {{ none; }};
  {recursion}
  dnssec-validation no;
  notify no;
}};
controls {{ }};
key "{TSIG_KEY_NAME}" {{ algorithm hmac-sha256; secret "{self.tsig_secret}"; }};
{zones}"""

    def start(self) -> None:
        """Write the config and zones, start named, wait (bounded) until every zone answers."""
        self.root.mkdir(parents=True, exist_ok=True)
        for name, (records, _updatable) in self.zones.items():
            (self.root / f"{name}.zone").write_text(
                f"$TTL 60\n@ IN SOA ns.{name}. hostmaster.{name}. 1 3600 600 86400 60\n"
                f"@ IN NS ns.{name}.\nns IN A {LOOPBACK}\n{records}\n"
            )
        (self.root / "named.conf").write_text(self.config_text())
        with (self.root / "named.log").open("wb") as log:
            self.process = subprocess.Popen(
                [self.binary, "-g", "-c", str(self.root / "named.conf")],
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT
        names = list(self.forward_to.zones if self.forward_to else self.zones)
        for name in names:
            while True:
                assert self.process.poll() is None, self.log_tail()
                try:
                    recursive = self.forward_to is not None
                    if query(self.address, name, "SOA", recursive=recursive).answer:
                        break
                except (OSError, dns.exception.DNSException):
                    pass
                assert time.monotonic() < deadline, "named did not serve " + name
                time.sleep(0.05)

    def log_tail(self) -> str:
        try:
            return "\n".join((self.root / "named.log").read_text().splitlines()[-30:])
        except OSError:
            return "(no log)"

    def txt(self, name: str) -> set[str]:
        """The TXT values served at ``name`` now."""
        return txt_at(self.address, name)

    def stop(self) -> None:
        _stop(self.process)


@pytest.fixture
def bind9(tmp_path: Path) -> Iterator[Bind9]:
    server = Bind9(require_binary("named"), tmp_path / "bind9", free_port())
    yield server
    server.stop()


@pytest.fixture
def bind9_resolver(bind9: Bind9, tmp_path: Path) -> Iterator[Bind9]:
    server = Bind9(bind9.binary, tmp_path / "bind9-resolver", free_port())
    server.forward_to = bind9
    yield server
    server.stop()


class Challtestsrv:
    """``pebble-challtestsrv`` with every listener set explicitly on 127.0.0.1."""

    def __init__(self, binary: str, root: Path) -> None:
        self.binary = binary
        self.root = root
        self.dns_port, self.http_port, self.tls_port, self.management_port = (
            free_port() for _ in range(4)
        )
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def dns_address(self) -> str:
        return f"{LOOPBACK}:{self.dns_port}"

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / "challtestsrv.log").open("wb") as log:
            self.process = subprocess.Popen(
                [self.binary, "-defaultIPv4", LOOPBACK, "-defaultIPv6", "",
                 "-dns01", self.dns_address, "-http01", f"{LOOPBACK}:{self.http_port}",
                 "-https01", "", "-tlsalpn01", f"{LOOPBACK}:{self.tls_port}",
                 "-management", f"{LOOPBACK}:{self.management_port}"],
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert self.process.poll() is None, (self.root / "challtestsrv.log").read_text()
            try:
                socket.create_connection((LOOPBACK, self.management_port), timeout=1).close()
                return
            except OSError:
                assert time.monotonic() < deadline, "pebble-challtestsrv did not listen"
                time.sleep(0.05)

    def _post(self, path: str, body: dict[str, str]) -> None:
        request = urllib.request.Request(
            f"http://{LOOPBACK}:{self.management_port}{path}",
            data=json.dumps(body).encode(), method="POST",
        )  # fmt: skip
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 200, response.status

    def set_txt(self, name: str, value: str) -> None:
        """Serve ``value`` at ``name`` (replacing what challtestsrv served there)."""
        self._post("/set-txt", {"host": name.rstrip(".") + ".", "value": value})

    def set_cname(self, name: str, target: str) -> None:
        """Answer ``name`` with a CNAME to ``target``."""
        host, target = name.rstrip(".") + ".", target.rstrip(".") + "."
        self._post("/set-cname", {"host": host, "target": target})

    def clear_txt(self, name: str) -> None:
        self._post("/clear-txt", {"host": name.rstrip(".") + "."})

    def txt(self, name: str) -> set[str]:
        return txt_at((LOOPBACK, self.dns_port), name)

    def stop(self) -> None:
        _stop(self.process)


@pytest.fixture
def challtestsrv(tmp_path: Path) -> Iterator[Challtestsrv]:
    server = Challtestsrv(require_binary("pebble-challtestsrv"), tmp_path / "challtestsrv")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def lab_pebble(tmp_path: Path) -> Iterator[Any]:
    """``lab_pebble(binary=None, dns_server="127.0.0.1:P")`` -> a Pebble, not started."""
    made: list[Pebble] = []

    def make(*, dns_server: str, binary: str | None = None) -> Pebble:
        server = Pebble(
            binary or require_binary("pebble"), require_binary("pebble-challtestsrv"),
            tmp_path / f"pebble{len(made)}",
        )  # fmt: skip
        server.dns_server = dns_server
        made.append(server)
        return server

    yield make
    for server in made:
        server.stop()


@pytest.fixture
def pebble_new() -> str:
    """``$CERTFLEET_PEBBLE_NEW/pebble``: a pebble with ARI and profiles."""
    where = os.environ.get("CERTFLEET_PEBBLE_NEW", "")
    binary = Path(where, "pebble")
    if not where or not binary.is_file():
        missing(
            "the newer pebble (ARI, profiles) is not built: set CERTFLEET_PEBBLE_NEW to the "
            "directory build-pebble.sh wrote (.ci/run does)"
        )
    return str(binary)


class MotoRoute53:
    """moto's threaded server on 127.0.0.1, standing in for Route 53."""

    def __init__(self, port: int) -> None:
        from moto.server import ThreadedMotoServer

        self.port = port
        self.server = ThreadedMotoServer(ip_address=LOOPBACK, port=port, verbose=False)

    @property
    def endpoint(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "route53", endpoint_url=self.endpoint, region_name="us-east-1",
            aws_access_key_id="testing", aws_secret_access_key="testing",
        )  # fmt: skip

    def reset(self) -> None:
        """Forget every zone and record (moto keeps its state per process)."""
        request = urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200, response.status

    def create_zone(self, name: str, *, private: bool = False) -> str:
        """Create hosted zone ``name``; returns its id (without ``/hostedzone/``)."""
        extra: dict[str, Any] = {}
        if private:
            extra = {"HostedZoneConfig": {"Comment": "private", "PrivateZone": True},
                     "VPC": {"VPCRegion": "us-east-1", "VPCId": "vpc-12345678"}}  # fmt: skip
        answer = self.client().create_hosted_zone(
            Name=name, CallerReference=secrets.token_hex(8), **extra
        )
        return str(answer["HostedZone"]["Id"]).rsplit("/", 1)[-1]

    def ttl(self, zone_id: str, name: str) -> int | None:
        """The TTL of the TXT set at ``name`` (None when there is none)."""
        answer = self.client().list_resource_record_sets(HostedZoneId=zone_id)
        for rrset in answer["ResourceRecordSets"]:
            if rrset["Type"] == "TXT" and rrset["Name"].rstrip(".") == name:
                return int(rrset["TTL"])
        return None

    def txt(self, zone_id: str, name: str) -> list[str]:
        """The raw TXT values of ``name`` (quoted as Route 53 keeps them), [] when none."""
        answer = self.client().list_resource_record_sets(HostedZoneId=zone_id)
        for rrset in answer["ResourceRecordSets"]:
            if rrset["Type"] == "TXT" and rrset["Name"].rstrip(".") == name:
                return [record["Value"] for record in rrset["ResourceRecords"]]
        return []


@pytest.fixture
def moto_route53(monkeypatch: pytest.MonkeyPatch) -> Iterator[MotoRoute53]:
    try:
        import moto.server  # noqa: F401
    except ImportError:
        missing("moto[server] is not installed")
    server = MotoRoute53(free_port())
    server.server.start()
    server.reset()
    for key, value in {
        "AWS_ENDPOINT_URL_ROUTE_53": server.endpoint, "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
    }.items():  # fmt: skip
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    yield server
    server.reset()
    server.server.stop()
