"""End to end in ACME mode, with the real commands: the help page's curl against
``certfleet serve`` (keys right and wrong), nginx on pebble's HTTP port proxying
``/.well-known/acme-challenge/`` to ``certfleet serve``, pebble validating through it (nonce
rejection left on), ``certfleet sync --once`` issuing, and an agent installing a certificate
that ``openssl verify`` accepts against pebble's root."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("acme", reason="the ACME provider needs certbot's acme (Python >= 3.10)")

from tests.plugins.binaries import require_binary
from tests.plugins.faults import agent_config_text
from tests.plugins.help_page import curl_help_page
from tests.plugins.pebble import Http01Nginx, Pebble, openssl_verifies
from tests.plugins.serve_process import start_serve


def certfleet(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "certfleet", *argv],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if check:
        assert done.returncode == 0, done.stderr
    return done


def test_an_order_placed_with_the_help_page_curl_reaches_a_node(
    pebble: Pebble, tmp_path: Path
) -> None:
    pebble.start()  # nonce rejection at pebble's default rate
    config, store = tmp_path / "sync.conf", tmp_path / "store"
    store.mkdir()
    certfleet("init", "--provider", "acme", "--acme-directory", pebble.directory_url,
              "--acme-email", "ops@example.test", "--acme-ca-bundle", str(pebble.ca_bundle),
              "--config", str(config), "--store", f"file://{store}")  # fmt: skip
    stanza = certfleet("clusters", "add", "webservers", "--config", str(config)).stdout
    key = certfleet("api-keys", "add", "ops", "--config", str(config)).stdout.strip()
    thumbprint = certfleet("acme", "thumbprint", "--config", str(config)).stdout.strip()

    served = start_serve(config)
    url, log = served.url, served.stderr
    proxy = f"    location ^~ /.well-known/acme-challenge/ {{\n        proxy_pass {url};\n    }}\n"
    nginx = Http01Nginx(require_binary("nginx"), tmp_path / "nginx", pebble.http_port, proxy)
    try:
        # the challenge path, through nginx, answered by certfleet serve
        assert nginx.get("/.well-known/acme-challenge/tok-EN_1", host="example.com") == (
            200,
            f"tok-EN_1.{thumbprint}",
        )
        # the help page's curl, verbatim; a wrong key is refused
        status, body = curl_help_page(key, url + "/api/v3")
        assert status == "201", body
        assert curl_help_page(key[:-4] + "AAAA", url + "/api/v3")[0] == "401"
        # the CLI sees the same order
        shown = certfleet("show", "example.com", "--config", str(config)).stdout
        assert "www.example.com (http)" in shown

        # the sync orders it; pebble validates HTTP-01 through nginx -> certfleet serve
        synced = certfleet("sync", "--once", "--config", str(config), check=False)
        assert synced.returncode == 0, synced.stdout + synced.stderr + pebble.log()[-3000:]
        # pebble fetched each name's token through nginx from the route (and nginx.get above)
        fetched = [line for line in log if "GET '/.well-known/acme-challenge/" in line]
        assert len(fetched) >= 1 + 2, log
        shown = certfleet("show", "example.com", "--config", str(config)).stdout
        assert "\nacme " in shown and "problem" not in shown, shown
    finally:
        nginx.stop()
        served.stop()

    # a node installs it, and it verifies against pebble's root
    state_dir = tmp_path / "node"
    agent_conf = tmp_path / "agent.conf"
    agent_conf.write_text(agent_config_text(f"file://{store}", state_dir, stanza))
    agent = subprocess.run(
        [sys.executable, "-m", "node_agent", "--once", "--config", str(agent_conf)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert agent.returncode == 0, agent.stderr
    order_dir = state_dir / "orders" / "example.com"
    leaf = next(order_dir.glob("*.crt.pem"))
    chain = next(order_dir.glob("*.chain.pem"))
    openssl_verifies(pebble.root_pem(), leaf, chain)
    names = subprocess.run(
        ["openssl", "x509", "-noout", "-ext", "subjectAltName", "-in", str(leaf)],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout  # fmt: skip
    assert "DNS:example.com" in names and "DNS:www.example.com" in names
