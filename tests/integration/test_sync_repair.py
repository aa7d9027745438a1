"""The sync repairs what it published: a damaged head, lost or corrupted shards, bundles
and pending keys; and it refuses a store that ignores conditional writes.

The store is damaged from outside (as an operator's mistake or a store writer would),
then a real agent (``node_agent``) that never saw the cluster installs from it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from certfleet.bundle import content_hash_hex, open_shard, peek_head, seal_bundle
from certfleet.store import FileStore
from certfleet.sync import mark_rekey
from certfleet.sync.layout import bundle_key, head_key, pending_key, shard_key
from tests.plugins.faults import installed_orders
from tests.plugins.sandbox import Sandbox
from tests.plugins.seaweedfs import SeaweedFS
from tests.plugins.sync_world import World, fresh_agent_poll, make_world


@pytest.fixture
def world(sandbox: Sandbox, s3_url: str, seaweedfs: SeaweedFS) -> World:
    return make_world(sandbox, s3_url, seaweedfs.endpoint)


def force_sweep(world: World) -> None:
    """Make the periodic sweep due at the next run (as if gc_grace had passed)."""
    states = world.states()
    state = states.load(now_ms=int(world.now() * 1000))
    state.last_sweep = 0
    assert states.save(state)


def two_orders(world: World) -> tuple[str, int]:
    """Two published orders: the first's name, and the index of the second's shard (one
    that holds an entry, and not the first's bundle)."""
    first, second = world.add(world.host("one")), world.add(world.host("two"))
    assert world.sync().errors == {}
    for index, digest in enumerate(world.published().head.shard_hashes):
        stored = world.store.get(shard_key(world.cluster, digest.hex()), max_bytes=1 << 24)
        shard = open_shard(stored.data, cluster=world.cluster, index=index, secrets=world.secrets)
        if any(entry.order_name == second for entry in shard.entries):
            return first, index
    raise AssertionError("the second order is in no shard")


def damaged_objects(world: World, first: str, index: int) -> tuple[str, str]:
    """The keys of the first order's bundle and of shard ``index``."""
    seen = world.published()
    return (
        bundle_key(world.cluster, seen.entries[first].bundle_hash.hex()),
        shard_key(world.cluster, seen.head.shard_hashes[index].hex()),
    )


def agent_installs_everything(world: World, seaweedfs: SeaweedFS, state_dir: Path) -> None:
    pins = [world.signing_key.public_key()]
    result = fresh_agent_poll(world, state_dir, seaweedfs.endpoint, pins)
    assert result.ok, [problem.message for problem in result.problems]
    served = {name: s.key_pem for name, s in installed_orders(state_dir).items()}
    published = {name: b.private_key_pem for name, b in world.published().bundles.items()}
    assert served == published and len(served) == 2


def test_the_sweep_rewrites_a_lost_shard_and_rekeys_a_lost_bundle(
    world: World, seaweedfs: SeaweedFS, tmp_path: Path
) -> None:
    first, index = two_orders(world)
    old_key = world.published().bundles[first].private_key_pem
    lost_bundle, lost_shard = damaged_objects(world, first, index)
    world.store.delete(lost_bundle)
    world.store.delete(lost_shard)
    refused = fresh_agent_poll(
        world, tmp_path / "before", seaweedfs.endpoint, [world.signing_key.public_key()]
    )
    assert not refused.ok, "the damage is real: a new node cannot install"

    quiet = world.sync()  # the sweep is not due: a no-change run does not notice
    assert quiet.objects_repaired == 0 and quiet.store_writes == 2
    force_sweep(world)
    summary = world.sync()
    assert summary.errors == {} and summary.objects_repaired == 2
    assert summary.keys_generated == 1 and summary.certificates_published == 1
    assert summary.heads_published == 1
    after = world.published()  # every referenced object is there and opens
    assert after.bundles[first].private_key_pem != old_key, "a lost key is replaced"
    assert lost_shard.rsplit("/", 1)[1] not in {d.hex() for d in after.head.shard_hashes}
    agent_installs_everything(world, seaweedfs, tmp_path / "after")
    assert world.sync().store_writes == 2, "settled: the lease only"


def test_verify_store_finds_corruption_that_the_sweep_cannot_see(
    world: World, seaweedfs: SeaweedFS, tmp_path: Path
) -> None:
    first, index = two_orders(world)
    corrupt_bundle, corrupt_shard = damaged_objects(world, first, index)
    for key in (corrupt_bundle, corrupt_shard):  # other bytes under the same keys
        stored = world.store.get(key, max_bytes=1 << 24)
        world.store.put(key, stored.data[:-1] + bytes([stored.data[-1] ^ 1]))
    force_sweep(world)
    swept = world.sync()  # listing only: every object is present
    assert swept.objects_repaired == 0 and swept.objects_verified == 0
    shards = len(peek_head(world.head_bytes()).shard_hashes)
    summary = world.sync(verify_store=True)
    assert summary.errors == {} and summary.objects_repaired == 2
    assert summary.objects_verified == shards + 2  # each referenced object, read once
    assert summary.keys_generated == 1 and summary.heads_published == 1
    garbage = world.state().unreferenced
    assert corrupt_bundle in garbage and corrupt_shard in garbage, "collected after gc_grace"
    agent_installs_everything(world, seaweedfs, tmp_path / "agent")
    clean = world.sync(verify_store=True)
    assert clean.objects_repaired == 0 and clean.heads_published == 0 and clean.errors == {}


def test_lost_pending_key_and_bundle_of_one_order_give_one_new_key(
    make_sandbox: Callable[..., Sandbox], s3_url: str, seaweedfs: SeaweedFS, tmp_path: Path
) -> None:
    world = make_world(make_sandbox(issue_delay=2), s3_url, seaweedfs.endpoint)
    name = world.add(world.host("pending"))
    assert world.sync().certificates_published == 1  # waits up to issue_wait (5 s)
    old_key = world.published().bundles[name].private_key_pem
    mark_rekey(world.config(), world.cluster, [name], store=world.store)
    world.settings["issue_wait"] = 0.0
    assert world.sync().keys_generated == 1  # the rekey's certificate is still pending
    lost = world.state().pending[name].object
    world.store.delete(pending_key(world.cluster, lost))
    world.store.delete(bundle_key(world.cluster, world.published().entries[name].bundle_hash.hex()))
    force_sweep(world)
    summary = world.sync()
    assert summary.errors == {} and summary.objects_repaired == 2
    assert summary.keys_generated == 1, "one new key, stored before its CSR"
    replaced = world.state().pending[name].object
    assert (
        replaced != lost
        and world.store.get(pending_key(world.cluster, replaced), max_bytes=1 << 24).data
    )
    world.settings["issue_wait"] = 5.0
    assert world.sync().certificates_published == 1
    assert world.published().bundles[name].private_key_pem != old_key
    result = fresh_agent_poll(
        world, tmp_path / "agent", seaweedfs.endpoint, [world.signing_key.public_key()]
    )
    assert result.ok and set(installed_orders(tmp_path / "agent")) == {name}


def test_a_head_with_a_broken_signature_is_re_signed(world: World) -> None:
    world.add(world.host("sig"))
    world.sync()
    data = world.head_bytes()
    world.store.put(head_key(world.cluster), data[:-1] + bytes([data[-1] ^ 1]))
    summary = world.sync()
    assert summary.heads_published == 1 and summary.errors == {}
    assert world.published().head.generation > peek_head(data).generation


class IgnoresConditions(FileStore):
    """A store that, like some S3-compatible servers, ignores the preconditions."""

    def put_if_absent(self, key: str, data: bytes) -> str:
        return self.put(key, data)

    def put_if_match(self, key: str, data: bytes, etag: str) -> str:
        return self.put(key, data)


def test_a_store_that_ignores_conditional_writes_is_refused_before_publishing(
    world: World, tmp_path: Path
) -> None:
    world = replace(world, store=IgnoresConditions(tmp_path / "liar"))
    world.add(world.host("liar"))
    for _ in range(2):  # refused on every run, not only the first
        summary = world.sync()
        message = summary.errors[f"cluster:{world.cluster}"]
        assert "ignores If-None-Match/If-Match" in message
        assert summary.provider_calls == 0 and summary.heads_published == 0
        assert list(world.store.list("")) == [], "nothing published, probe removed"


def test_verify_store_replaces_a_bundle_that_agents_refuse(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """A bundle published by a version that kept a provider's chain as it came (intermediate
    and root in one PEM entry, which every agent refuses) gets a new key and certificate."""
    world = make_world(sandbox, (tmp_path / "store").as_uri(), "")
    name = world.add(world.host("chain"))
    assert world.sync().errors == {}
    good = world.published().bundles[name]
    bad = replace(good, chain_pem=(good.chain_pem[0] + sandbox.root_pem,))
    sealed = seal_bundle(bad, cluster=world.cluster, secrets=world.secrets)
    world.store.put(bundle_key(world.cluster, content_hash_hex(sealed)), sealed)
    states = world.states()
    state = states.load(now_ms=int(world.now() * 1000))
    state.orders[name] = replace(state.orders[name], bundle=content_hash_hex(sealed))
    assert states.save(state)
    assert world.sync().heads_published == 1  # what such a version had published
    assert world.published().bundles[name].chain_pem == bad.chain_pem
    assert world.sync().keys_generated == 0, "a plain run does not read bundles"
    summary = world.sync(verify_store=True)
    assert summary.errors == {} and summary.keys_generated == 1
    fixed = world.published().bundles[name]
    assert fixed.chain_pem == good.chain_pem and fixed.private_key_pem != good.private_key_pem
    result = fresh_agent_poll(world, tmp_path / "agent", "", [world.signing_key.public_key()])
    assert result.ok, [problem.message for problem in result.problems]
