"""The whole system, end to end, as an operator runs it: the ``certfleet`` admin CLI, the
sync engine, three ``certfleet-agent`` processes (three servers of one cluster), and nginx
serving what one of them installed, seen through ``openssl s_client``.

Real servers on 127.0.0.1: SeaweedFS (S3), the APIv3 sandbox and nginx. The sandbox
issues after 1.5 s, certificates valid for 10 more minutes; it backdates not_before by an
hour, so each certificate is already in its renewal window (under a third of its 70-minute
lifetime left) when issued: every sync renews every order. That makes the steps
deterministic: a sync with ``issue_wait`` 0 submits CSRs and publishes nothing, the next
one after the issue delay publishes everything.
"""

from __future__ import annotations

import dataclasses
import hashlib
import subprocess
import time
from pathlib import Path
from typing import Callable

import pytest
from cryptography import x509

from certfleet.config.sync import load_sync_config
from certfleet.sync import RunSummary, run_sync
from tests.plugins.binaries import require_binary
from tests.plugins.nginx import SERVER_NAME, Nginx
from tests.plugins.sandbox import Sandbox
from tests.plugins.seaweedfs import SeaweedFS

ISSUE_DELAY = 1.5
LIFETIME = 600  # seconds from issuance to not_after (not_before is an hour before issuance)
NODES = ("node1", "node2", "node3")
WWW, WILDCARD = SERVER_NAME, "_.example.com"  # directory names under orders/


class Fleet:
    """The operator's view: CLI commands, sync runs, and three servers' agents."""

    def __init__(self, tmp: Path, sandbox: Sandbox, seaweedfs: SeaweedFS, s3_url: str) -> None:
        self.tmp = tmp
        self.sandbox = sandbox
        self.certfleet = require_binary("certfleet")
        self.agent = require_binary("certfleet-agent")
        self.sync_conf = tmp / "sync.conf"
        self.root = tmp / "root.pem"
        self.root.write_bytes(sandbox.root_pem)
        self.cli(
            "init", "--store", s3_url, "--store-endpoint", seaweedfs.endpoint,
            "--api-endpoint", sandbox.url, "--api-key", sandbox.api_key,
        )  # fmt: skip
        self.stanza = self.cli("clusters", "add", "web")
        self.store_lines = f'store = "{s3_url}"\nstore_endpoint = "{seaweedfs.endpoint}"\n'

    def cli(self, *args: str) -> str:
        return _succeed(self.certfleet, *args, "--config", str(self.sync_conf)).stdout

    def configure_node(self, node: str, default_block: str = "") -> None:
        (self.tmp / node).mkdir(exist_ok=True)
        (self.tmp / f"{node}.conf").write_text(
            self.store_lines + f'state_dir = "{self.tmp / node}"\n' + self.stanza + default_block
        )

    def sync(self, issue_wait: float) -> RunSummary:
        config = dataclasses.replace(load_sync_config(self.sync_conf), issue_wait=issue_wait)
        summary = run_sync(config, deadline=time.monotonic() + 30)
        assert summary.errors == {} and summary.complete
        return summary

    def poll(self, node: str) -> str:
        """``certfleet-agent --once`` on one server; returns its log (stderr)."""
        return _succeed(self.agent, "--config", str(self.tmp / f"{node}.conf"), "--once").stderr

    def poll_all(self) -> list[str]:
        return [self.poll(node) for node in NODES]

    def order_dir(self, node: str, order: str) -> Path:
        return self.tmp / node / "orders" / order

    def digest(self, node: str, order: str, file: str) -> str:
        return hashlib.sha256((self.order_dir(node, order) / file).read_bytes()).hexdigest()

    def same_everywhere(self, order: str) -> tuple[str, str]:
        """The (key, certificate) hashes of ``order``, asserted equal on every server."""
        seen = {
            (self.digest(n, order, "rsa.key.pem"), self.digest(n, order, "rsa.crt.pem"))
            for n in NODES
        }
        assert len(seen) == 1, f"the servers hold different files for {order}"
        return seen.pop()

    def certificate(self, node: str, order: str) -> x509.Certificate:
        pem = (self.order_dir(node, order) / "rsa.crt.pem").read_bytes()
        return x509.load_pem_x509_certificate(pem)

    def verify_chain(self, node: str, order: str) -> None:
        directory = self.order_dir(node, order)
        done = subprocess.run(
            ["openssl", "verify", "-CAfile", str(self.root),
             "-untrusted", str(directory / "rsa.chain.pem"), str(directory / "rsa.crt.pem")],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert done.returncode == 0 and done.stdout.strip().endswith(": OK"), done.stdout


def _succeed(*command: str) -> subprocess.CompletedProcess[str]:
    """Run ``command``; assert it exited 0 (showing its stderr if not)."""
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done


def sans(cert: x509.Certificate) -> set[str]:
    return set(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)


@pytest.mark.slow
def test_fleet_edit_renewal_removal_and_nginx(
    tmp_path: Path,
    seaweedfs: SeaweedFS,
    s3_url: str,
    make_sandbox: Callable[..., Sandbox],
    nginx: Nginx,
) -> None:
    sandbox = make_sandbox(issue_delay=ISSUE_DELAY, cert_lifetime=LIFETIME)
    fleet = Fleet(tmp_path, sandbox, seaweedfs, s3_url)
    assert 'cluster "web"' in fleet.stanza and "publisher" in fleet.stanza

    # Three servers: node1 will run nginx, node3 also keeps haproxy-style combined copies.
    www1 = tmp_path / "node1" / "orders" / WWW
    nginx.write_config(www1 / "rsa.chained.pem", www1 / "rsa.key.pem")
    haproxy = tmp_path / "haproxy"
    haproxy.mkdir()
    fleet.configure_node(
        "node3", f'default {{\n  files {{ combined = "{haproxy}/${{ORDER_NAME}}.pem" }}\n}}\n'
    )
    fleet.configure_node("node1")
    fleet.configure_node("node2")

    # Order a certificate for two names and a wildcard; sync; every server installs both.
    fleet.cli("add", "www.example.com", "example.com")
    fleet.cli("add", "*.example.com")
    first = fleet.sync(issue_wait=15)
    assert first.certificates_published == 2
    for log in fleet.poll_all():
        assert "poll done: 2 installed, 0 deferred, 0 removed, 0 problems" in log
    www_before, wildcard_before = fleet.same_everywhere(WWW), fleet.same_everywhere(WILDCARD)
    for node in NODES:
        for order in (WWW, WILDCARD):
            fleet.verify_chain(node, order)
    assert sans(fleet.certificate("node1", WWW)) == {
        x509.DNSName("www.example.com"),
        x509.DNSName("example.com"),
    }
    assert (haproxy / f"{WILDCARD}.pem").read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    old_serial = fleet.certificate("node1", WWW).serial_number
    nginx.start()
    assert nginx.served(fleet.root).serial_number == old_serial
    # With nginx running, node1 checks its config and reloads it after every update.
    check, reload = nginx.command("-t", "-q"), nginx.command("-s", "reload")
    fleet.configure_node(
        "node1", f'default {{\n  check_command = "{check}"\n  on_update = ["{reload}"]\n}}\n'
    )

    # Edit the names. Until the new certificate is issued the old one stays published:
    # the servers change nothing and nginx keeps serving the old certificate.
    fleet.cli("edit", "--add-dnsname", "api.example.com", "www.example.com")
    pending = fleet.sync(issue_wait=0)
    assert pending.certificates_published == 0 and pending.csrs_submitted == 2
    for log in fleet.poll_all():
        assert "poll done: 0 installed" in log
    assert fleet.same_everywhere(WWW) == www_before
    assert nginx.served(fleet.root).serial_number == old_serial

    # Once issued, the edited order and the renewal of the wildcard are published together;
    # node1's check passes, nginx reloads and serves the new certificate.
    time.sleep(ISSUE_DELAY)
    issued = fleet.sync(issue_wait=15)
    assert issued.certificates_published == 2
    for log in fleet.poll_all():
        assert "poll done: 2 installed, 0 deferred, 0 removed, 0 problems" in log
    www_after, wildcard_after = fleet.same_everywhere(WWW), fleet.same_everywhere(WILDCARD)
    assert www_after[0] != www_before[0]  # a new key with the new names
    assert wildcard_after[0] != wildcard_before[0]  # the renewal made a new key too
    assert wildcard_after[1] != wildcard_before[1]
    new = fleet.certificate("node1", WWW)
    assert new.serial_number != old_serial
    assert x509.DNSName("api.example.com") in sans(new)
    leaf = nginx.served_after_reload(fleet.root, new.serial_number)
    assert leaf.serial_number == new.serial_number
    assert sans(leaf) == {
        x509.DNSName("www.example.com"),
        x509.DNSName("example.com"),
        x509.DNSName("api.example.com"),
    }
    for node in NODES:
        fleet.verify_chain(node, WILDCARD)

    # Remove the wildcard order: the sync publishes a tombstone; the servers report it and,
    # by default, keep its files.
    fleet.cli("rm", "*.example.com")
    removal = fleet.sync(issue_wait=0)
    assert removal.tombstones == 1
    for log in fleet.poll_all():
        assert "order '*.example.com' was removed from cluster web" in log
    for node in NODES:
        assert (fleet.order_dir(node, WILDCARD) / "rsa.crt.pem").exists()
    assert fleet.cli("list").count("*.example.com") == 0
    assert nginx.served(fleet.root).serial_number == new.serial_number
