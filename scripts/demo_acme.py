"""``make demo-acme``: certfleet with the ACME provider on this machine, step by step.

It starts, all on 127.0.0.1 and as the current user: SeaweedFS (the S3 store), bind9 (the
authoritative DNS server of ``example.test``, updatable by a TSIG key), pebble (Let's
Encrypt's test CA, which resolves names and validates DNS-01 through that bind9) and nginx
(answering HTTP-01 on pebble's validation port from the stateless snippet). Then it runs
what an operator runs: ``certfleet init --provider acme``, the ``dns "rfc2136"`` block,
``certfleet acme thumbprint``, ``certfleet clusters add``, ``certfleet add`` (two names by
HTTP-01, a wildcard by DNS-01), ``certfleet sync --once`` and ``certfleet-agent --once``,
and ends with ``openssl verify`` of what the agent installed against pebble's root.

It needs the system packages ``pebble``, ``bind9`` (``named``), ``nginx`` and ``openssl``
(it says how to install the missing ones and stops). Everything lives in
``.stack/demo-acme/`` (emptied at start); every server it started is stopped at the end,
also after a failure or Ctrl-C. Exit status 0 when every step worked, 1 otherwise.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # certfleet, when the venv's editable install is missing

from demo import (  # noqa: E402  (scripts/demo.py: the same printing and checks)
    DemoFailed,
    Stopped,
    heading,
    installed_files,
    on_signal,
    run,
    show,
    shown_path,
)

from certfleet.devstack import SeaweedFS, StackError, find_weed, tail  # noqa: E402

WORK = REPO / ".stack" / "demo-acme"
BIN = Path(sys.executable).parent
LOOPBACK = "127.0.0.1"
ZONE = "example.test"
CLUSTER = "web"
TSIG_KEY_NAME = "acme-update."
START_TIMEOUT = 20.0
# program -> the Debian/Ubuntu package that ships it
PACKAGES = {"pebble": "pebble", "named": "bind9", "nginx": "nginx", "openssl": "openssl"}


def find_program(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


def missing_packages() -> list[str]:
    return sorted({package for name, package in PACKAGES.items() if not find_program(name)})


def free_port() -> int:
    """A port in [20000, 45000) free for TCP and UDP on 127.0.0.1 right now."""
    rng = secrets.SystemRandom()
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


class Server:
    """A program run in the foreground as a child, its output in ``log``."""

    def __init__(self, name: str, log: Path) -> None:
        self.name = name
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def spawn(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )

    def wait_listening(self, port: int) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.process is None or self.process.poll() is not None:
                raise StackError(self.name, "exited at start", tail(self.log))
            try:
                socket.create_connection((LOOPBACK, port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise StackError(
                        self.name, f"nothing listens on {port}", tail(self.log)
                    ) from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_bind9(root: Path, port: int, tsig_secret: str) -> Server:
    """named serving ``example.test`` (www and the apex at 127.0.0.1), TXT updatable by TSIG."""
    root.mkdir(parents=True)
    (root / f"{ZONE}.zone").write_text(
        f"$TTL 60\n@ IN SOA ns.{ZONE}. hostmaster.{ZONE}. 1 3600 600 86400 60\n"
        f"@ IN NS ns.{ZONE}.\nns IN A {LOOPBACK}\n@ IN A {LOOPBACK}\nwww IN A {LOOPBACK}\n"
    )
    (root / "named.conf").write_text(f"""
options {{
  directory "{root}"; pid-file "{root}/named.pid"; session-keyfile "{root}/session.key";
  managed-keys-directory "{root}";
  listen-on port {port} {{ {LOOPBACK}; }}; listen-on-v6 {{ none; }};
  recursion no; dnssec-validation no; notify no;
}};
controls {{ }};
key "{TSIG_KEY_NAME}" {{ algorithm hmac-sha256; secret "{tsig_secret}"; }};
zone "{ZONE}" {{ type primary; file "{ZONE}.zone";
  update-policy {{ grant {TSIG_KEY_NAME} zonesub TXT; }}; }};
""")
    server = Server("named", root / "named.log")
    server.spawn([str(find_program("named")), "-g", "-c", str(root / "named.conf")])
    server.wait_listening(port)
    return server


def write_listener_tls(root: Path) -> tuple[Path, Path, Path]:
    """A throw-away CA and a certificate for pebble's own HTTPS API (localhost, 127.0.0.1)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "demo pebble listener CA")])

    def build(subject: x509.Name, public: Any, extension: Any, critical: bool) -> Any:
        return (
            x509.CertificateBuilder().subject_name(subject).issuer_name(ca_name)
            .public_key(public).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(extension, critical=critical).sign(ca_key, hashes.SHA256())
        )  # fmt: skip

    ca = build(ca_name, ca_key.public_key(), x509.BasicConstraints(ca=True, path_length=0), True)
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(LOOPBACK))]
    leaf = build(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]),
        key.public_key(), x509.SubjectAlternativeName(names), False,
    )  # fmt: skip
    paths = (root / "listener-ca.pem", root / "listener.pem", root / "listener.key")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    pkcs8 = serialization.PrivateFormat.PKCS8
    paths[2].write_bytes(
        key.private_bytes(serialization.Encoding.PEM, pkcs8, serialization.NoEncryption())
    )
    return paths


class Pebble(Server):
    def __init__(self, root: Path, dns_port: int) -> None:
        super().__init__("pebble", root / "pebble.log")
        root.mkdir(parents=True)
        self.root = root
        self.dns_port = dns_port
        self.port, self.mgmt_port, self.http_port, self.tls_port = (free_port() for _ in range(4))
        self.ca_bundle, self.certificate, self.key = write_listener_tls(root)

    @property
    def directory_url(self) -> str:
        return f"https://localhost:{self.port}/dir"

    def start(self) -> None:
        config = {"pebble": {
            "listenAddress": f"{LOOPBACK}:{self.port}",
            "managementListenAddress": f"{LOOPBACK}:{self.mgmt_port}",
            "certificate": str(self.certificate), "privateKey": str(self.key),
            "httpPort": self.http_port, "tlsPort": self.tls_port,
            "ocspResponderURL": "", "externalAccountBindingRequired": False,
        }}  # fmt: skip
        (self.root / "pebble.json").write_text(json.dumps(config))
        # Real validation (never PEBBLE_VA_ALWAYS_VALID) and pebble's default 5 % of nonces
        # rejected; only its random wait before validating is removed.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PEBBLE_")}
        env["PEBBLE_VA_NOSLEEP"] = "1"
        self.spawn(
            [str(find_program("pebble")), "-config", str(self.root / "pebble.json"),
             "-dnsserver", f"{LOOPBACK}:{self.dns_port}"],
            env,
        )  # fmt: skip
        self.wait_listening(self.port)
        self.wait_listening(self.mgmt_port)

    def root_pem(self) -> bytes:
        import ssl
        import urllib.request

        context = ssl.create_default_context(cafile=str(self.ca_bundle))
        url = f"https://{LOOPBACK}:{self.mgmt_port}/roots/0"
        with urllib.request.urlopen(url, context=context, timeout=10) as answer:
            return bytes(answer.read())


def start_nginx(root: Path, port: int, thumbprint: str) -> Server:
    """nginx on pebble's HTTP-01 port with the stateless snippet of docs/acme.md."""
    (root / "tmp").mkdir(parents=True)
    temp = "".join(
        f"  {kind}_temp_path {root / 'tmp' / kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    (root / "nginx.conf").write_text(f"""
worker_processes 1;
daemon off;
pid {root}/nginx.pid;
error_log {root}/error.log;
events {{ worker_connections 64; }}
http {{
  access_log off;
{temp}
  server {{
    listen {LOOPBACK}:{port};
    location ~ "^/\\.well-known/acme-challenge/([-_a-zA-Z0-9]+)$" {{
        default_type text/plain;
        return 200 "$1.{thumbprint}";
    }}
    location / {{ return 404; }}
  }}
}}
""")
    server = Server("nginx", root / "error.log")
    server.spawn(
        [str(find_program("nginx")), "-c", str(root / "nginx.conf"), "-p", f"{root}/",
         "-e", "error.log"]
    )  # fmt: skip
    server.wait_listening(port)
    return server


def certfleet_has_acme() -> bool:
    """Whether this certfleet's CLI offers the ACME provider (``init --provider``)."""
    done = subprocess.run(
        [str(BIN / "certfleet"), "init", "--help"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    return "--provider" in done.stdout


def served_txt(port: int, name: str) -> set[str]:
    """The TXT values bind9 answers at ``name`` now."""
    import dns.message
    import dns.query
    import dns.rdatatype

    query = dns.message.make_query(name, dns.rdatatype.TXT)
    answer = dns.query.udp(query, LOOPBACK, port=port, timeout=3)
    return {
        b"".join(rdata.strings).decode()
        for rrset in answer.answer
        if rrset.rdtype == dns.rdatatype.TXT
        for rdata in rrset
    }


def demo() -> None:
    if not certfleet_has_acme():
        raise DemoFailed(
            "this certfleet has no ACME provider: `certfleet init --help` lacks --provider"
        )
    absent = missing_packages()
    if absent:
        raise DemoFailed(
            f"missing system packages: {' '.join(absent)}. On Debian or Ubuntu: "
            f"sudo apt-get install {' '.join(absent)}  (the demo runs them as your user on "
            "127.0.0.1; no service needs to be enabled)"
        )
    env = dict(os.environ)
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    servers: list[Any] = []
    try:
        heading(
            1,
            "Start the store, the DNS server and the CA",
            "SeaweedFS stands in for Amazon S3. bind9 is the authoritative server of",
            f"{ZONE}; a TSIG key may update its TXT records. pebble is Let's Encrypt's TEST CA:",
            "it resolves names and checks DNS-01 records through that bind9. All on 127.0.0.1.",
        )
        started = time.monotonic()
        store = SeaweedFS(find_weed(), WORK / "seaweedfs", bucket="certfleet")
        servers.append(store)
        store.start()
        dns_port = free_port()
        tsig_secret = base64.b64encode(secrets.token_bytes(32)).decode()
        servers.append(start_bind9(WORK / "bind9", dns_port, tsig_secret))
        pebble = Pebble(WORK / "pebble", dns_port)
        servers.append(pebble)
        pebble.start()
        show(f"   S3 store (SeaweedFS):   {store.endpoint}, bucket {store.bucket!r}")
        show(f"   bind9 ({ZONE}):     {LOOPBACK}:{dns_port}, TSIG key {TSIG_KEY_NAME}")
        show(f"   pebble (ACME CA):       {pebble.directory_url}")
        show(f"   all up in {time.monotonic() - started:.1f} s")
        env.update(store.env)
        steps(env, store, pebble, dns_port, tsig_secret, servers)
    finally:
        show()
        show("== Stop what the demo started")
        for server in reversed(servers):
            try:
                server.stop()
            except StackError as err:
                show(f"   {err}")
        show("   all stopped; the files stay in .stack/demo-acme/")


def steps(
    env: dict[str, str],
    store: SeaweedFS,
    pebble: Pebble,
    dns_port: int,
    tsig_secret: str,
    servers: list[Any],
) -> None:
    certfleet, agent = str(BIN / "certfleet"), str(BIN / "certfleet-agent")
    sync_conf, stanza = WORK / "sync.conf", WORK / f"cluster-{CLUSTER}.conf"
    store_url = f"s3://{store.bucket}/demo"
    config = ["--config", str(sync_conf)]

    heading(
        2,
        "Write the sync config for the ACME provider",
        "A new ACME account key goes into the config (no network yet: the account is",
        "registered at the first sync). --acme-ca-bundle trusts pebble's own HTTPS.",
    )
    run(
        [certfleet, "init", "--provider", "acme", "--acme-directory", pebble.directory_url,
         "--acme-email", "ops@example.test", "--acme-ca-bundle", str(pebble.ca_bundle),
         *config, "--store", store_url, "--store-endpoint", store.endpoint],
        env=env,
    )  # fmt: skip
    show("   and the DNS-01 block (RFC 2136 to bind9, TSIG secret elided here):")
    block = (
        f'\ndns "rfc2136" {{\n  server         = "{LOOPBACK}:{dns_port}"\n'
        f'  tsig_key_name  = "{TSIG_KEY_NAME}"\n  tsig_algorithm = "hmac-sha256"\n'
        f'  tsig_secret    = "{tsig_secret}"\n  zones          = ["{ZONE}"]\n}}\n'
        f'dns_resolvers = ["{LOOPBACK}:{dns_port}"]\n'
    )
    with sync_conf.open("a") as out:
        out.write(block)
    for line in block.strip().splitlines():
        show("     " + (line.split('"')[0] + '"…"' if "tsig_secret" in line else line))

    heading(
        3,
        "Answer HTTP-01 statelessly with nginx",
        "The answer to token T is T.<thumbprint of the account key>, so a static nginx",
        "snippet answers every challenge; nothing is published per challenge.",
    )
    thumbprint = run([certfleet, "acme", "thumbprint", *config], env=env).strip()
    servers.append(start_nginx(WORK / "nginx", pebble.http_port, thumbprint))
    show(f"   nginx answers /.well-known/acme-challenge/T on {LOOPBACK}:{pebble.http_port}")

    heading(4, f"Add the cluster {CLUSTER!r} and configure a server for it")
    run([certfleet, "clusters", "add", CLUSTER, *config], env=env, stdout_to=stanza)
    (WORK / "server1.conf").write_text(
        f'store          = "{store_url}"\nstore_endpoint = "{store.endpoint}"\n'
        f'state_dir      = "{WORK / "server1"}"\n' + stanza.read_text()
    )

    heading(
        5,
        "Order: two names by HTTP-01, a wildcard by DNS-01",
        "In ACME mode the orders live in the store's order registry, sealed for the sync.",
    )
    run([certfleet, "add", *config, "--cluster", CLUSTER, f"www.{ZONE}", ZONE], env=env)
    run([certfleet, "add", *config, "--cluster", CLUSTER, "--approval", "dns", f"*.{ZONE}"],
        env=env)  # fmt: skip

    heading(
        6,
        "Run the sync once",
        "It registers the account, orders, writes the DNS-01 TXT value into bind9 (and waits",
        "until bind9 serves it), lets pebble validate both challenges, finalizes, removes the",
        "TXT value, and publishes the signed, encrypted bundles to the store.",
    )
    run([certfleet, "sync", "--once", *config], env=env)
    left = served_txt(dns_port, f"_acme-challenge.{ZONE}")
    show(f"   bind9 now serves {len(left)} TXT value(s) at _acme-challenge.{ZONE} (removed)")
    if left:
        raise DemoFailed(f"the DNS-01 values were left in bind9: {sorted(left)}")

    heading(7, "Run the node agent once", "It verifies, decrypts and installs the files.")
    run([agent, "--config", str(WORK / "server1.conf"), "--once"], env=env)
    found = installed_files(WORK / "server1")
    for order, files in found.items():
        show(f"     {order}/  {' '.join(f.name for f in files)}")
    expected = {f"www.{ZONE}", f"_.{ZONE}"}
    if set(found) != expected:
        raise DemoFailed(f"server1 has orders {sorted(found)}, not {sorted(expected)}")

    heading(8, "Check the installed chains with openssl, against pebble's root")
    root = WORK / "pebble-root.pem"
    root.write_bytes(pebble.root_pem())
    show(f"   pebble's root saved as {shown_path(root)}")
    for order, files in found.items():
        for leaf in (f for f in files if f.name.endswith(".crt.pem")):
            chain = leaf.with_name(leaf.name.replace(".crt.pem", ".chain.pem"))
            run(["openssl", "x509", "-in", str(leaf), "-noout", "-ext", "subjectAltName"],
                env=env)  # fmt: skip
            run(["openssl", "verify", "-CAfile", str(root), "-untrusted", str(chain), str(leaf)],
                env=env)  # fmt: skip
        show(f"   {order}: verified")


def main() -> int:
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, on_signal)
    started = time.monotonic()
    try:
        demo()
    except (KeyboardInterrupt, Stopped):
        show("\ndemo interrupted; everything it started is stopped")
        return 130
    except (DemoFailed, StackError) as err:
        show(f"\ndemo FAILED: {err}")
        return 1
    show()
    show(f"demo-acme finished in {time.monotonic() - started:.1f} s: every step worked.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
