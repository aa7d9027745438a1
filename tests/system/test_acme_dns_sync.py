"""DNS-01 through the whole system: ``certfleet add --approval dns`` of a wildcard and its
apex, ``certfleet sync --once`` against pebble (nonce rejection left on) with the values
written into bind9 by RFC 2136, and ``certfleet-agent --once`` installing a chain that
``openssl verify`` accepts against pebble's root. The commands are the operator's, run as
subprocesses over a file:// store."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.plugins.acme_lab import TSIG_KEY_NAME, Bind9
from tests.plugins.pebble import openssl_verifies

pytest.importorskip("acme", reason="the ACME provider needs certbot's acme (Python >= 3.10)")
pytest.importorskip("certfleet.registry", reason="the order registry is not here")

BIN = Path(sys.executable).parent


def certfleet(*args: str, program: str = "certfleet", stdout: Path | None = None) -> str:
    done = subprocess.run(
        [str(BIN / program), *args], capture_output=True, text=True, timeout=180, check=False
    )
    assert done.returncode == 0, f"{program} {args[0]}: {done.stdout}{done.stderr}"
    if stdout is not None:
        stdout.write_text(done.stdout)
    return done.stdout + done.stderr


def test_a_wildcard_and_its_apex_are_issued_by_dns01_installed_and_verified(
    bind9: Bind9, bind9_resolver: Bind9, lab_pebble: Any, tmp_path: Path
) -> None:
    bind9.add_zone("example.test")
    bind9.start()
    bind9_resolver.start()
    pebble = lab_pebble(dns_server=bind9_resolver.server)
    pebble.start()  # pebble's default nonce rejection (5 %) stays on
    conf, stanza = tmp_path / "sync.conf", tmp_path / "web.stanza"
    store = f"file://{tmp_path / 'store'}"
    config = ["--config", str(conf)]
    certfleet("init", "--provider", "acme", "--acme-directory", pebble.directory_url,
              "--acme-email", "ops@example.test", "--acme-ca-bundle", str(pebble.ca_bundle),
              *config, "--store", store)  # fmt: skip
    with conf.open("a") as out:
        out.write(
            f'dns "rfc2136" {{\n  server = "{bind9.server}"\n'
            f'  tsig_key_name = "{TSIG_KEY_NAME}"\n  tsig_secret = "{bind9.tsig_secret}"\n'
            f'  zones = ["example.test"]\n}}\ndns_resolvers = ["{bind9.server}"]\n'
        )
    certfleet("clusters", "add", "web", *config, stdout=stanza)
    certfleet("add", *config, "--cluster", "web", "--approval", "dns",
              "*.example.test", "example.test")  # fmt: skip

    summary = certfleet("sync", "--once", *config)
    assert "1 certificates published" in summary or "1 certificate published" in summary, summary
    assert bind9.txt("_acme-challenge.example.test") == set()  # removed after validation

    (tmp_path / "node.conf").write_text(
        f'store = "{store}"\nstate_dir = "{tmp_path / "node"}"\n' + stanza.read_text()
    )
    certfleet("--config", str(tmp_path / "node.conf"), "--once", program="certfleet-agent")
    order = (tmp_path / "node" / "orders" / "_.example.test").resolve()
    leaf, chain = order / "rsa.crt.pem", order / "rsa.chain.pem"
    names = subprocess.run(
        ["openssl", "x509", "-in", str(leaf), "-noout", "-ext", "subjectAltName"],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout  # fmt: skip
    assert "DNS:*.example.test" in names and "DNS:example.test" in names
    openssl_verifies(pebble.root_pem(), leaf, chain)
    # a second run has nothing to do: no CA request, nothing written to bind9
    before = pebble.log().count("POST /")
    certfleet("sync", "--once", *config)
    assert pebble.log().count("POST /") == before
