"""The sync engine end to end: the real sandbox over HTTP, SeaweedFS as the store."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Callable

import pytest
import requests
from cryptography import x509

from certfleet.bundle import (
    ClusterSecret,
    NoUsableSecretError,
    SigningKey,
    head_publisher,
    open_bundle,
)
from certfleet.sync import ProviderOrder, RunSummary, mark_rekey, run_sync
from certfleet.sync.keypair import load_private_key, pubkey_hash, spki_hash
from certfleet.sync.layout import bundle_key
from tests.plugins.faults import installed_orders
from tests.plugins.providers import PassThroughProvider
from tests.plugins.sandbox import Sandbox
from tests.plugins.seaweedfs import SeaweedFS
from tests.plugins.sync_world import World, fresh_agent_poll, make_world

ISSUE_DELAY = 3  # seconds the sandbox takes to issue, in the edit test
ISSUE_BOUND = 30.0  # seconds a test waits at most for a certificate to be issued


@pytest.fixture
def world(sandbox: Sandbox, s3_url: str, seaweedfs: SeaweedFS) -> World:
    return make_world(sandbox, s3_url, seaweedfs.endpoint)


def test_new_order_becomes_a_bundle_that_opens_with_the_cluster_secret(world: World) -> None:
    apex = world.host("apex")
    name = world.add(f"www.{apex}", apex)
    summary = world.sync()
    assert summary.errors == {}
    assert summary.keys_generated == 1 and summary.certificates_published == 1
    seen = world.published()
    bundle = seen.bundles[name]
    assert bundle.dns_names == (apex, f"www.{apex}")
    assert bundle.key_type == "ecdsa"
    leaf = x509.load_pem_x509_certificate(bundle.certificate_pem)
    assert spki_hash(leaf.public_key()) == pubkey_hash(load_private_key(bundle.private_key_pem))
    entry = seen.entries[name]
    assert entry.install_after == bundle.not_before  # a new order installs at once
    assert seen.head.generation == summary.generation
    assert seen.head.secret_ids == ("k1",)
    assert not any(name in key or "example" in key for key in world.keys())


def test_a_run_with_nothing_to_change_writes_nothing_but_the_lease(world: World) -> None:
    world.add(world.host("quiet"))
    assert world.sync().certificates_published == 1
    before_head = world.head_bytes()
    before_keys = world.keys()
    summary = world.sync()
    assert summary.errors == {} and summary.heads_published == 0
    assert world.head_bytes() == before_head
    assert world.keys() == before_keys
    assert summary.provider_calls == 1  # the listing
    # the lease: a take-over of the released lease by its ETag, and the release; nothing else
    assert summary.store_writes == 2
    assert summary.generation == world.published().head.generation


def sync_until_published(world: World, name: str) -> list[RunSummary]:
    """Sync until ``name``'s pending certificate is published (bounded by ``ISSUE_BOUND``)."""
    runs: list[RunSummary] = []
    give_up = time.monotonic() + ISSUE_BOUND
    while time.monotonic() < give_up:
        runs.append(world.sync())
        assert runs[-1].errors == {}, runs[-1].errors
        if runs[-1].certificates_published:
            return runs
    raise AssertionError(f"{name}: no certificate within {ISSUE_BOUND} s ({len(runs)} runs)")


def test_an_edit_keeps_the_old_bundle_until_the_new_certificate_exists(
    make_sandbox: Callable[..., Sandbox], s3_url: str, seaweedfs: SeaweedFS
) -> None:
    # The sandbox issues ISSUE_DELAY s after a CSR. The "still old" run does not wait at all
    # (issue_wait 0), so it sees the certificate pending unless this machine takes longer
    # than ISSUE_DELAY between two back-to-back calls; the runs that must publish loop
    # (each long-polls up to issue_wait) instead of counting on one wait being enough.
    world = make_world(make_sandbox(issue_delay=ISSUE_DELAY), s3_url, seaweedfs.endpoint)
    name = world.add("edit.example.com")
    assert sum(run.certificates_published for run in sync_until_published(world, name)) == 1
    first = world.published()
    world.edit(name, "edit.example.com", "www.edit.example.com")
    world.settings["issue_wait"] = 0.0
    pending = world.sync()
    assert pending.errors == {}
    assert pending.keys_generated == 1 and pending.certificates_published == 0
    still = world.published()
    assert still.entries[name] == first.entries[name]
    assert still.bundles[name].dns_names == ("edit.example.com",)
    world.settings["issue_wait"] = 5.0
    runs = sync_until_published(world, name)
    assert all(run.keys_generated == 0 for run in runs), "the pending key is collected"
    assert sum(run.certificates_published for run in runs) == 1
    after = world.published()
    assert after.bundles[name].dns_names == ("edit.example.com", "www.edit.example.com")
    assert after.bundles[name].serial != still.bundles[name].serial
    assert after.entries[name].install_after == after.bundles[name].not_before
    assert after.head.generation > still.head.generation


def test_renewal_replaces_key_and_certificate_with_a_skew_margin(
    make_sandbox: Callable[..., Sandbox], s3_url: str, seaweedfs: SeaweedFS
) -> None:
    # 3 h certificates (backdated 1 h): renewal starts 80 min before the end
    world = make_world(make_sandbox(cert_lifetime=3 * 3600), s3_url, seaweedfs.endpoint)
    name = world.add("renew.example.com")
    world.sync()
    first = world.published().bundles[name]
    world.offset = 60.0
    assert world.sync().keys_generated == 0, "not due yet"
    world.offset = 2 * 3600.0
    summary = world.sync()
    assert summary.keys_generated == 1 and summary.certificates_published == 1
    seen = world.published()
    renewed = seen.bundles[name]
    assert renewed.serial != first.serial
    assert renewed.private_key_pem != first.private_key_pem
    assert seen.entries[name].install_after == renewed.not_before + 3600


def test_rekey_replaces_every_key_of_the_cluster(world: World) -> None:
    names = [world.add(world.host("a.rekey")), world.add(world.host("b.rekey"))]
    world.sync()
    before = world.published().bundles
    marked = mark_rekey(world.config(), world.cluster, None, store=world.store)
    assert sorted(marked) == sorted(names)
    summary = world.sync()
    assert summary.keys_generated == 2 and summary.certificates_published == 2
    after = world.published().bundles
    for name in names:
        assert after[name].private_key_pem != before[name].private_key_pem
    assert world.sync().keys_generated == 0, "the marks are cleared"


def test_removal_and_cluster_move_give_tombstones(world: World) -> None:
    gone = world.add(world.host("gone"))
    moved = world.add(world.host("moved"))
    kept = world.add(world.host("kept"))
    world.sync()
    world.remove(gone)
    answer = requests.patch(
        f"{world.sandbox.url}/orders/{moved}",
        json={"cluster": world.cluster + "-b"},
        headers=world.sandbox.headers,
        timeout=10,
    )
    assert answer.status_code == 200
    summary = world.sync()
    assert summary.tombstones == 2
    seen = world.published()
    assert set(seen.tombstones) == {gone, moved}
    assert set(seen.entries) == {kept}


def test_provider_outage_removes_nothing(
    make_sandbox: Callable[..., Sandbox], s3_url: str, seaweedfs: SeaweedFS
) -> None:
    sandbox = make_sandbox()
    world = make_world(sandbox, s3_url, seaweedfs.endpoint)
    name = world.add("outage.example.com")
    world.sync()
    head = world.head_bytes()
    sandbox.stop()
    summary = world.sync()
    assert f"cluster:{world.cluster}" in summary.errors
    assert world.head_bytes() == head
    assert set(world.published().entries) == {name}


class EmptyListing(PassThroughProvider):
    """A provider whose listing comes back empty (a bad page): everything else is real."""

    def list_orders(self, cluster: str) -> Sequence[ProviderOrder]:
        return ()


def test_an_empty_listing_removes_only_what_the_provider_confirms_gone(world: World) -> None:
    kept = world.add(world.host("listed"))
    gone = world.add(world.host("really-gone"))
    world.sync()
    world.remove(gone)
    provider = EmptyListing(world.provider())
    summary = run_sync(world.config(), store=world.store, provider=provider, clock=world.now)
    assert summary.tombstones == 1
    seen = world.published()
    assert set(seen.entries) == {kept} and set(seen.tombstones) == {gone}


def test_two_concurrent_runs_one_works_the_other_backs_off(world: World) -> None:
    world.add(world.host("race"))
    inner: list[RunSummary] = []

    def second_run(step: str) -> None:
        if step == "listed" and not inner:
            inner.append(world.sync())

    first = world.sync(checkpoint=second_run)
    assert first.errors == {} and first.certificates_published == 1
    assert not inner[0].complete and inner[0].errors == {}
    assert inner[0].skipped == (world.cluster,)
    assert inner[0].store_writes == 0, "a live lease is read, never written"
    assert inner[0].heads_published == 0


def test_secret_rotation_two_secrets_then_one(world: World) -> None:
    old = world.secrets[0]
    name = world.add(world.host("rotate"))
    world.sync()
    new = ClusterSecret.generate("k2")
    world.secrets = (new, old)
    assert world.sync().heads_published == 1
    both = world.published()
    assert both.head.secret_ids == ("k2", "k1")
    world.secrets = (new,)
    assert world.published().bundles[name].serial == both.bundles[name].serial
    world.sync()
    only_new = world.published()
    assert only_new.head.secret_ids == ("k2",)
    data = world.store.get(
        bundle_key(world.cluster, only_new.entries[name].bundle_hash.hex()), max_bytes=1 << 24
    )
    with pytest.raises(NoUsableSecretError):
        open_bundle(data.data, cluster=world.cluster, order_name=name, secrets=[old])
    assert world.sync().store_writes == 2, "settled: the lease only"


def test_changing_only_the_signing_key_re_signs_the_head_in_one_run(
    world: World, seaweedfs: SeaweedFS, tmp_path: Path
) -> None:
    name = world.add(world.host("pubkey"))
    assert world.sync().errors == {}
    before = world.published()
    new_key, old_key = SigningKey.generate(), world.signing_key
    world.signing_key = new_key  # nothing else changes: no order, no secret
    refused = world.sync()  # the state is sealed with the old key's sync secret
    assert "sync state" in refused.errors[f"cluster:{world.cluster}"]
    assert (
        refused.heads_published == 0 and head_publisher(world.head_bytes()) != new_key.public_key()
    )
    world.settings["previous_signing_key"] = old_key
    summary = world.sync()
    assert summary.errors == {} and summary.heads_published == 1
    assert head_publisher(world.head_bytes()) == new_key.public_key()
    del world.settings["previous_signing_key"]  # the state was rewritten under the new key
    after = world.published()  # decode_head pinning only the new key
    assert after.head.generation > before.head.generation
    assert after.entries == before.entries, "only the head is re-signed"
    result = fresh_agent_poll(world, tmp_path / "state", seaweedfs.endpoint, [new_key.public_key()])
    assert result.ok, [problem.message for problem in result.problems]
    served = installed_orders(tmp_path / "state")
    assert served[name].key_pem == after.bundles[name].private_key_pem
    assert world.sync().store_writes == 2, "settled: the lease only"


def test_rsa_keys_and_garbage_collection(
    sandbox: Sandbox, s3_url: str, seaweedfs: SeaweedFS
) -> None:
    world = make_world(sandbox, s3_url, seaweedfs.endpoint, key_type="rsa")
    world.settings["gc_grace"] = 0.0
    name = world.add(world.host("rsa"))
    world.sync()
    first = world.published()
    assert first.bundles[name].key_type == "rsa"
    assert b"BEGIN PRIVATE KEY" in first.bundles[name].private_key_pem
    old_bundle = bundle_key(world.cluster, first.entries[name].bundle_hash.hex())
    mark_rekey(world.config(), world.cluster, [name], store=world.store)
    summary = world.sync()
    assert summary.objects_deleted >= 2  # the old bundle, the old shard, the pending key
    assert old_bundle not in world.keys()
    world.published()  # everything the head references is still there


def test_a_time_budget_stops_cleanly_and_the_next_run_resumes(world: World) -> None:
    names = [world.add(world.host(f"budget{i}")) for i in range(3)]

    def slow(step: str) -> None:
        if step == "pending-key":
            time.sleep(0.5)

    summary = world.sync(deadline=time.monotonic() + 0.6, checkpoint=slow)
    assert not summary.complete
    assert summary.keys_generated == 1 and summary.errors == {}
    resumed = world.sync()
    assert resumed.errors == {} and resumed.complete
    assert resumed.keys_generated == 2, "the stored key is collected, not replaced"
    assert set(world.published().entries) == set(names)
