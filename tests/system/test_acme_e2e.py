"""ACME mode from the operator's side, with the real programs: ``certfleet init --provider
acme``, ``clusters add``, an order in the registry (an HTTP-01 name and a wildcard by
DNS-01 is the DNS suite's; here two HTTP-01 names), ``certfleet sync --once`` against
pebble (nonce rejection on) with nginx answering HTTP-01 statelessly, ``certfleet-agent
--once`` installing it, and the installed chain verified against pebble's root; then the registry
deleted as a node with store write access would: the sync refuses it (exit 1, nothing
removed) until ``certfleet registry restore``, after which it has nothing to do."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

pytest.importorskip("acme", reason="the ACME provider needs certbot's acme (Python >= 3.10)")
registry = pytest.importorskip("certfleet.registry", reason="the order registry is not here")

from certfleet.config.accountkey import load_account_key, thumbprint  # noqa: E402
from certfleet.config.sync import load_sync_config  # noqa: E402
from certfleet.store import open_store  # noqa: E402
from tests.plugins.binaries import require_binary  # noqa: E402
from tests.plugins.pebble import (  # noqa: E402
    Http01Nginx,
    Pebble,
    docs_nginx_snippet,
    openssl_verifies,
)

NAMES = ("shop.example.test", "www.shop.example.test")


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, f"{command[:2]}: {done.stderr}"
    return done


def test_init_sync_and_agent_install_a_certificate_from_pebble(
    pebble: Pebble, tmp_path: Path
) -> None:
    pebble.start()
    certfleet, agent = require_binary("certfleet"), require_binary("certfleet-agent")
    sync_conf = tmp_path / "sync.conf"
    store_url = f"file://{tmp_path}/store"
    _run(
        certfleet, "init", "--provider", "acme", "--acme-directory", pebble.directory_url,
        "--acme-email", "ops@example.test", "--acme-ca-bundle", str(pebble.ca_bundle),
        "--config", str(sync_conf), "--store", store_url,
    )  # fmt: skip
    stanza = _run(certfleet, "clusters", "add", "web", "--config", str(sync_conf)).stdout
    thumb = _run(certfleet, "acme", "thumbprint", "--config", str(sync_conf)).stdout.strip()
    config = load_sync_config(sync_conf)
    assert config.acme is not None
    assert thumb == thumbprint(load_account_key(config.acme.account_key))

    snippet = docs_nginx_snippet(thumb)
    nginx = Http01Nginx(require_binary("nginx"), tmp_path / "nginx", pebble.http_port, snippet)
    try:
        orders = registry.OrderRegistry(
            open_store(store_url), config.signing_key.sync_secret("registry"), ["web"]
        )
        orders.create("web", [registry.Identifier(name, "http") for name in NAMES])

        _run(certfleet, "sync", "--config", str(sync_conf))

        (tmp_path / "node").mkdir()
        node_conf = tmp_path / "agent.conf"
        node_conf.write_text(f'store = "{store_url}"\nstate_dir = "{tmp_path / "node"}"\n{stanza}')
        _run(agent, "--config", str(node_conf), "--once")
        installed = tmp_path / "node" / "orders" / NAMES[0]
        openssl_verifies(pebble.root_pem(), installed / "rsa.crt.pem", installed / "rsa.chain.pem")

        # a second sync has nothing to do and reports no error
        again = _run(certfleet, "sync", "--config", str(sync_conf), "--json").stdout
        assert '"certificates_published": 0' in again

        # a node with write access deletes the registry: refused, nothing removed
        store = open_store(store_url)
        store.delete(registry.registry_key("web"))
        refused = subprocess.run(
            [certfleet, "sync", "--config", str(sync_conf), "--json"],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert refused.returncode == 1
        assert "v1/sync/orders/web" in refused.stderr and "registry restore" in refused.stderr
        assert '"tombstones": 0' in refused.stdout
        _run(agent, "--config", str(node_conf), "--once")
        status = _run(agent, "--config", str(node_conf), "--status").stdout
        assert NAMES[0] in status and "removed upstream" not in status
        assert (installed / "rsa.crt.pem").exists()
        restored = _run(certfleet, "registry", "restore", "--cluster", "web", "--config",
                        str(sync_conf)).stdout  # fmt: skip
        assert "with 1 orders" in restored
        after = _run(certfleet, "sync", "--config", str(sync_conf), "--json").stdout
        assert '"csrs_submitted": 0' in after and '"tombstones": 0' in after
    finally:
        nginx.stop()
