"""certfleet add/list/show/edit/rm with a sync config that mixes ACME-mode clusters (orders in
the registry) and APIv3 clusters (orders at the sandbox, over real HTTP): each order goes
where its cluster is, and the commands read both."""

from __future__ import annotations

import json
import re
from pathlib import Path

from certfleet.bundle import SigningKey
from certfleet.config.sync import load_sync_config
from certfleet.registry import OrderRegistry
from certfleet.store import open_store
from tests.plugins.cli import run_cli as cli
from tests.plugins.sandbox import Sandbox, unique_cluster


def acme_config(tmp_path: Path) -> Path:
    """A sync config made by certfleet init --provider acme (for its acme block)."""
    path = tmp_path / "acme.conf"
    argv = ["--provider", "acme", "--acme-directory", "https://127.0.0.1:9/dir",
            "--acme-email", "ops@example.test", "--store", f"file://{tmp_path}"]  # fmt: skip
    assert cli("init", "--config", str(path), *argv)[0] == 0
    return path


def test_a_mixed_config_keeps_each_order_where_its_cluster_is(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    acme, legacy = unique_cluster("acme"), unique_cluster("legacy")
    config = tmp_path / "sync.conf"
    store = tmp_path / "store"
    store.mkdir()
    argv = ["--store", f"file://{store}", "--api-endpoint", sandbox.url]
    assert cli("init", "--config", str(config), *argv, "--api-key", sandbox.api_key)[0] == 0
    for cluster in (acme, legacy):
        assert cli("clusters", "add", cluster, "--config", str(config))[0] == 0
    # The cluster `acme` is in ACME mode: its block says provider = "acme".
    text = config.read_text().replace(
        f'cluster "{acme}" {{\n', f'cluster "{acme}" {{\n  provider = "acme"\n'
    )
    block = re.search(r"(?ms)^acme \{.*?^\}\n", acme_config(tmp_path).read_text())
    assert block is not None
    config.write_text(text + block.group(0))
    assert load_sync_config(config).provider_for(acme) == "acme"
    a_name, l_name = f"www.{acme}.example", f"www.{legacy}.example"
    assert cli("add", "--cluster", acme, a_name, "--config", str(config))[0] == 0
    assert cli("add", "--cluster", legacy, l_name, "--config", str(config))[0] == 0
    secret = load_sync_config(config).signing_key.sync_secret("registry")
    registry = OrderRegistry(open_store(f"file://{store}"), secret, [acme])
    assert [o.name for o in registry.list(acme)] == [a_name]
    code, out, _ = cli("list", "--config", str(config), "--json")
    names = {o["name"]: o["state"] for o in json.loads(out)}
    assert names[a_name] == "registered" and names[l_name] == "awaiting_csr"
    code, out, _ = cli("show", l_name, "--config", str(config), "--json")
    assert code == 0 and json.loads(out)["cluster"] == legacy
    edited = cli("edit", "--add-dnsname", f"api.{acme}.example", a_name, "--config", str(config))
    assert edited[0] == 0
    assert registry.get(a_name).dns_names == (a_name, f"api.{acme}.example")
    assert cli("rm", a_name, "--config", str(config))[0] == 0
    assert cli("rm", l_name, "--config", str(config))[0] == 0
    code, _, err = cli("show", l_name, "--config", str(config))
    assert code == 1 and "no order named" in err
    assert registry.list(acme) == ()


def test_registry_reseal_after_the_signing_key_is_replaced(tmp_path: Path) -> None:
    old = acme_config(tmp_path)
    assert cli("clusters", "add", "web", "--config", str(old))[0] == 0
    assert cli("add", "shop.example", "--config", str(old))[0] == 0
    new = tmp_path / "new.conf"
    text = old.read_text()
    old_key = load_sync_config(old).signing_key.export()
    new.write_text(text.replace(old_key, SigningKey.generate().export()))
    new.chmod(0o600)
    code, _, err = cli("show", "shop.example", "--config", str(new))
    assert code == 1 and "cannot be opened" in err
    assert cli("registry", "reseal", "--config", str(new))[0] == 2  # which old key?
    code, out, _ = cli("registry", "reseal", "--previous-config", str(old), "--config", str(new))
    assert (code, out.strip()) == (0, "web: 1 orders sealed for the current signing key")
    code, out, _ = cli("show", "shop.example", "--config", str(new))
    assert code == 0 and "shop.example (http)" in out
    # the same with previous_signing_key, as the rotation procedure sets it
    newer = tmp_path / "newer.conf"
    new_key = load_sync_config(new).signing_key.export()
    newer.write_text(
        new.read_text().replace(new_key, SigningKey.generate().export())
        + f'previous_signing_key = "{new_key}"\n'
    )
    newer.chmod(0o600)
    code, out, _ = cli("show", "shop.example", "--config", str(newer))
    assert code == 0, out  # opens with the previous key's secret meanwhile
    assert cli("registry", "reseal", "--config", str(newer))[0] == 0
    unrotated = newer.read_text().replace(f'previous_signing_key = "{new_key}"\n', "")
    newer.write_text(unrotated)
    assert cli("show", "shop.example", "--config", str(newer))[0] == 0


def test_show_in_acme_mode_gives_the_cas_last_problem_and_the_retry(tmp_path: Path) -> None:
    from certfleet.acme.state import AcmeState, AcmeStateStore, OrderState

    config = acme_config(tmp_path)
    assert cli("clusters", "add", "web", "--config", str(config))[0] == 0
    assert cli("add", "shop.example", "--config", str(config))[0] == 0
    code, out, _ = cli("show", "shop.example", "--config", str(config))
    assert code == 0 and "acme       not ordered from the CA yet" in out
    sync = load_sync_config(config)
    problem = {
        "type": "urn:ietf:params:acme:error:unauthorized",
        "detail": "Invalid response from http://shop.example/.well-known/acme-challenge/x\n",
        "subproblems": [],
    }
    state = AcmeState(
        orders={
            "shop.example": OrderState(status="invalid", problem=problem, retry_at=4e9, attempts=2)
        }
    )
    states = AcmeStateStore(
        open_store(sync.store), "web", sync.signing_key.sync_secret("state"), lambda: 1.7e9
    )
    states.load()
    assert states.save(state)
    code, out, _ = cli("show", "shop.example", "--config", str(config))
    assert code == 0, out
    assert "acme       invalid" in out
    assert "problem    unauthorized: Invalid response from http://shop.example/" in out
    assert "\\n" in out and "retry at   2096-" in out  # the CA's newline is escaped
    code, out, _ = cli("show", "shop.example", "--config", str(config), "--json")
    assert json.loads(out)["acme"]["status"] == "invalid"
