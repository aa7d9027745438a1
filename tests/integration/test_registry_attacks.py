"""The order registry attacked as a node with write access to the store would attack it, in
a real sync run (file:// store, the ACME provider built from the config as the sync builds
it; only issuance is done in process, so no CA runs): a deleted registry, or an older
sealed copy written back, is refused as that cluster's error (nothing tombstoned, the
published certificates stay, the other cluster proceeds); ``certfleet registry restore``
rebuilds it from the sync state and the next run accepts it without issuing anything; a
registry written before revisions existed is still read, and upgraded at its next write."""

from __future__ import annotations

import datetime
import io
import json
import time
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import pytest
from cryptography import x509

pytest.importorskip("acme", reason="the ACME provider needs certbot's acme (Python >= 3.10)")

from certfleet.bundle import ClusterSecret, SigningKey, seal
from certfleet.cli import main
from certfleet.config.accountkey import account_key_text, generate_account_key
from certfleet.config.sync import SyncConfig, load_sync_config
from certfleet.registry import Identifier, OrderRegistry, RegistryOrder, registry_key
from certfleet.sandbox.ca import SandboxCa
from certfleet.store import Store, open_store
from certfleet.sync import IssuedCert, Provider, acme_wiring
from certfleet.sync.layout import head_key, state_key
from certfleet.sync.provider import ProviderError, ProviderNotFound, SourceRevision
from certfleet.sync.runner import run_sync
from certfleet.sync.sealing import SyncKeys
from certfleet.sync.state import ClusterState, StateStore
from certfleet.sync.summary import RunSummary
from tests.plugins.providers import sign_csr


class InProcessCa:
    """Signs each CSR at once, in process (stands in for the CA's issuance only)."""

    def __init__(self) -> None:
        now = datetime.datetime.now(datetime.timezone.utc)
        self.ca = SandboxCa.create(now - datetime.timedelta(days=1))
        self.issued: dict[str, IssuedCert] = {}

    def submit_csr(self, order_name: str, csr_pem: bytes) -> str:
        csr = x509.load_pem_x509_csr(csr_pem)
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        now = datetime.datetime.now(datetime.timezone.utc)
        names = [str(name.value) for name in san]
        pubkey_hash, self.issued[order_name] = sign_csr(self.ca, csr_pem, names, now)
        return pubkey_hash

    def fetch_certificate(
        self, order_name: str, pubkey_hash: str, *, wait: float
    ) -> Optional[IssuedCert]:
        if order_name not in self.issued:
            raise ProviderNotFound("fetch certificate", order_name)
        return self.issued[order_name]


@dataclass
class World:
    config_path: Path
    config: SyncConfig
    store: Store
    registry: OrderRegistry  # as the CLI and the order API write it

    def sync(self) -> RunSummary:
        return run_sync(self.config, store=self.store)

    def state(self, cluster: str) -> ClusterState:
        policy = next(c for c in self.config.clusters if c.name == cluster)
        keys = SyncKeys.of(self.config, policy.secrets)
        return StateStore(self.store, cluster, keys).load(now_ms=int(time.time() * 1000))

    def cli(self, *args: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            code = main([*args, "--config", str(self.config_path)])
        return code, out.getvalue(), err.getvalue()


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    ca = InProcessCa()
    real = acme_wiring.open_acme_provider

    def with_in_process_issuance(config: Any, cluster: str, store: Store) -> Provider:
        provider = real(config, cluster, store)
        monkeypatch.setattr(provider, "submit_csr", ca.submit_csr)
        monkeypatch.setattr(provider, "fetch_certificate", ca.fetch_certificate)
        return provider

    monkeypatch.setattr(acme_wiring, "open_acme_provider", with_in_process_issuance)
    (tmp_path / "store").mkdir()
    text = f'''
provider = "acme"
store = "file://{tmp_path / "store"}"
signing_key = "{SigningKey.generate().export()}"
acme {{
  directory = "https://127.0.0.1:9/directory"
  account_key = "{account_key_text(generate_account_key())}"
}}
cluster "web" {{ secret = "{ClusterSecret.generate("k1").export()}" }}
cluster "mail" {{ secret = "{ClusterSecret.generate("k1").export()}" }}
'''
    path = tmp_path / "sync.hcl"
    path.write_text(text)
    path.chmod(0o600)
    config = load_sync_config(str(path))
    store = open_store(config.store)
    secret = config.signing_key.sync_secret("registry")
    yield World(path, config, store, OrderRegistry(store, secret, ("web", "mail")))


def _http(*names: str) -> list[Identifier]:
    return [Identifier(name, "http") for name in names]


def _published(world: World) -> None:
    """Orders in both clusters, issued and published by one clean run."""
    world.registry.create("web", _http("a.example", "www.a.example"), name="a")
    world.registry.create("web", [Identifier("*.b.example", "dns")], name="b")
    world.registry.create("mail", _http("m.example"), name="m")
    first = world.sync()
    assert first.ok, first.errors
    assert first.certificates_published == 3


def test_a_deleted_registry_is_refused_and_restore_brings_it_back(world: World) -> None:
    _published(world)
    revision = world.state("web").registry_revision
    assert revision == 2  # two writes: the sync acted on the second
    world.store.delete(registry_key("web"))  # what a node with write access can do
    world.registry.create("mail", _http("n.example"), name="n")

    refused = world.sync()
    assert set(refused.errors) == {"cluster:web"}
    message = refused.errors["cluster:web"]
    assert "v1/sync/orders/web" in message and "missing" in message
    assert "certfleet registry restore --cluster web" in message
    assert refused.tombstones == 0
    assert sorted(world.state("web").orders) == ["a", "b"]  # published, kept
    assert sorted(world.state("mail").orders) == ["m", "n"]  # the other cluster proceeded
    again = world.sync()
    assert set(again.errors) == {"cluster:web"} and again.tombstones == 0  # until restored

    code, out, err = world.cli("registry", "restore", "--cluster", "web")
    assert code == 0, err
    assert "restored at revision 3 with 2 orders" in out
    orders = {o.name: o for o in world.registry.list("web")}
    assert orders["a"].identifiers == tuple(_http("a.example", "www.a.example"))
    assert orders["b"].identifiers == (Identifier("*.b.example", "dns"),)  # add's default
    assert world.registry.read("web").revision == 3

    after = world.sync()
    assert after.ok, after.errors
    assert (after.tombstones, after.csrs_submitted, after.certificates_published) == (0, 0, 0)
    assert world.state("web").registry_revision == 3
    code, _, err = world.cli("registry", "restore", "--cluster", "web")
    assert code == 0 and "nothing to restore" in err


def test_a_registry_made_anew_after_a_delete_is_refused_and_restore_merges_it(
    world: World,
) -> None:
    _published(world)
    world.store.delete(registry_key("web"))
    for name in ("p", "q", "r"):  # the order API goes on writing: a new registry, revision 3
        world.registry.create("web", _http(f"{name}.example"), name=name)
    assert world.registry.read("web").revision > world.state("web").registry_revision
    refused = world.sync()
    assert set(refused.errors) == {"cluster:web"}
    assert "made anew" in refused.errors["cluster:web"] and refused.tombstones == 0
    assert sorted(world.state("web").orders) == ["a", "b"]

    code, out, err = world.cli("registry", "restore", "--cluster", "web", "--json")
    assert code == 0, err
    assert json.loads(out)["orders"] == ["a", "b", "p", "q", "r"]
    assert world.registry.read("web").history[0] == world.state("web").registry_write_id
    after = world.sync()
    assert after.ok, after.errors
    assert (after.tombstones, after.certificates_published) == (0, 3)  # only p, q and r


def test_a_replayed_older_copy_is_refused_and_restore_keeps_the_newer_orders(
    world: World,
) -> None:
    _published(world)
    saved = world.store.get(registry_key("web"), max_bytes=1 << 20).data  # a node's copy
    world.registry.create("web", _http("c.example"), name="c")
    added = world.sync()
    assert added.ok and added.certificates_published == 1
    world.registry.create("web", _http("d.example"), name="d")  # not synced yet

    world.store.put(registry_key("web"), saved)  # replayed: it opens, and lacks c and d
    refused = world.sync()
    assert set(refused.errors) == {"cluster:web"}
    assert "revision 2 (an old copy)" in refused.errors["cluster:web"]
    assert refused.tombstones == 0
    assert sorted(world.state("web").orders) == ["a", "b", "c"]
    world.registry.create("web", _http("e.example"), name="e")  # the API writes over it,
    world.registry.create("web", _http("f.example"), name="f")  # past the revision acted on
    assert world.registry.read("web").revision == 4 > world.state("web").registry_revision
    still = world.sync()
    assert "does not descend" in still.errors["cluster:web"] and still.tombstones == 0

    code, out, _ = world.cli("registry", "restore", "--cluster", "web", "--json")
    assert code == 0
    restored = json.loads(out)
    # c from the sync state, e and f from the copy found; d was never synced, so nothing
    # knows it: placed again by hand
    assert restored["orders"] == ["a", "b", "c", "e", "f"] and restored["revision"] == 4
    after = world.sync()
    assert after.ok, after.errors
    assert (after.tombstones, after.csrs_submitted) == (0, 2)  # e and f only


def test_a_registry_without_revision_is_read_and_upgraded_at_its_next_write(
    world: World,
) -> None:
    secret = world.config.signing_key.sync_secret("registry")
    order = RegistryOrder("a", "web", tuple(_http("a.example")), 1, 1)
    old = {"version": 1, "orders": [order.to_json()]}  # as written before revisions
    old_copy = seal("registry", "web", "/orders", json.dumps(old).encode(), [secret])
    world.store.put(registry_key("web"), old_copy)
    assert world.registry.read("web").revision == 1  # read as the first revision
    first = world.sync()
    assert first.ok and first.certificates_published == 1
    assert world.state("web").registry_revision == 1
    world.registry.create("web", _http("e.example"), name="e")
    assert world.registry.read("web").revision == 2  # upgraded: written with a revision
    assert world.sync().ok
    world.store.put(registry_key("web"), old_copy)  # the old-format copy, replayed
    refused = world.sync()
    assert set(refused.errors) == {"cluster:web"} and refused.tombstones == 0


def test_restore_refuses_a_cluster_without_a_registry(world: World) -> None:
    code, _, err = world.cli("registry", "restore", "--cluster", "elsewhere")
    assert code == 2
    assert "elsewhere" in err and "web, mail" in err


def test_a_registry_deleted_after_the_listing_is_an_error_of_the_order_never_not_found(
    world: World,
) -> None:
    world.registry.create("web", _http("a.example"), name="a")
    provider = acme_wiring.open_acme_provider(world.config, "web", world.store)
    try:
        write_id = world.registry.read("web").write_id
        provider.expect_revision("web", SourceRevision(1, write_id))
        assert [o.name for o in provider.list_orders("web")] == ["a"]
        assert provider.seen_revision("web") == SourceRevision(1, write_id)
        world.store.delete(registry_key("web"))
        with pytest.raises(ProviderError) as caught:
            provider.get_order("a")
        assert not isinstance(caught.value, ProviderNotFound)
        assert "missing" in str(caught.value)
    finally:
        provider.close()  # type: ignore[attr-defined]


def test_with_the_sync_state_deleted_too_the_head_stays_and_restore_reads_it(world: World) -> None:
    _published(world)
    generation = world.sync().generations["web"]
    head = world.store.get(head_key("web"), max_bytes=1 << 20).data
    world.store.delete(registry_key("web"))
    world.store.delete(state_key("web"))  # the remembered revision goes with it

    refused = world.sync()
    assert set(refused.errors) == {"cluster:web"} and "missing" in refused.errors["cluster:web"]
    assert "web" not in refused.generations
    assert world.store.get(head_key("web"), max_bytes=1 << 20).data == head  # not replaced
    assert list(world.store.list(state_key("web"))) == []  # nor a fresh state saved
    code, out, err = world.cli("registry", "restore", "--cluster", "web")
    assert code == 0, err
    assert "v1/sync/state/web" in err and "from the published head" in err
    assert "with 2 orders" in out  # the names from the bundles the signed head publishes
    orders = {o.name: o.dns_names for o in world.registry.list("web")}
    assert orders == {"a": ("a.example", "www.a.example"), "b": ("*.b.example",)}

    accepted = world.sync()
    assert accepted.ok, accepted.errors
    assert (accepted.tombstones, accepted.csrs_submitted) == (0, 2)  # afresh: new keys
    assert sorted(world.state("web").orders) == ["a", "b"]
    assert accepted.generations["web"] > generation
