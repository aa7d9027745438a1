"""The sync's private objects against a hostile store writer that holds a cluster secret.

Every node holds its cluster's secret, so the sync's state and pending keys are sealed
with the sync-only secret (``SigningKey.sync_secret("state")``). These tests forge state
the way such a node would (sealed with the cluster secret, or with a far-future
generation), check that the sync refuses it for that cluster while the other clusters
proceed, and check the one-time migration of a state written by an older version: read,
vouched for by the signed head, rewritten under the sync key, its pending key kept.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Callable

import pytest

from certfleet.bundle import (
    Head,
    MalformedError,
    SigningKey,
    content_hash_hex,
    decode_head,
    encode_head,
    open_pending,
    seal,
    seal_pending,
    wrapped_for,
)
from certfleet.bundle.head import MAX_GENERATION_AHEAD_MS
from certfleet.config.sync import SyncConfig
from certfleet.sync import RunSummary, mark_rekey, run_sync
from certfleet.sync import state as state_module
from certfleet.sync.errors import StateError
from certfleet.sync.layout import head_key, pending_key, state_key
from certfleet.sync.sealing import SyncKeys
from certfleet.sync.state import ClusterState, read_bytes
from tests.plugins.faults import Ledger
from tests.plugins.sandbox import Sandbox
from tests.plugins.sync_world import World, make_world

FAR = 2**63 - 2


@pytest.fixture
def worlds(sandbox: Sandbox, tmp_path: Path) -> tuple[World, World]:
    """Two clusters on one store, one sync config (the same signing key)."""
    url = (tmp_path / "store").as_uri()
    first = make_world(sandbox, url, "")
    second = make_world(sandbox, url, "", signing_key=first.signing_key)
    return first, second


def both_config(first: World, second: World) -> SyncConfig:
    config = first.config()
    return replace(config, clusters=config.clusters + second.config().clusters)


def sync_both(first: World, second: World) -> RunSummary:
    provider = first.provider()
    try:
        return run_sync(
            both_config(first, second), store=first.store, provider=provider, clock=first.now
        )
    finally:
        provider.close()


def legacy_seal(world: World, plain: bytes) -> bytes:
    """How versions before sync-private sealing sealed the state: for the cluster secrets."""
    return seal(state_module.KIND, world.cluster, state_module.IDENTITY, plain, world.secrets)


def head_generation(world: World) -> int:
    return world.published().head.generation


def test_state_and_pending_keys_are_sealed_for_the_sync_secret_only(
    make_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    world = make_world(make_sandbox(issue_delay=2), (tmp_path / "store").as_uri(), "")
    world.settings["issue_wait"] = 0.0  # the certificate stays pending: a pending key remains
    world.add(world.host("sealed"))
    assert world.sync().errors == {}
    state_data = read_bytes(world.store, state_key(world.cluster), max_bytes=1 << 24)
    assert wrapped_for(state_data) == ("sync-state",)
    (record,) = world.state().pending.values()
    pending_data = read_bytes(
        world.store, pending_key(world.cluster, record.object), max_bytes=1 << 24
    )
    assert wrapped_for(pending_data) == ("sync-state",)
    lease = json.loads(read_bytes(world.store, f"v1/sync/lease/{world.cluster}", max_bytes=1 << 24))
    assert set(lease) == {"owner", "expires_at", "mac"}


def test_a_state_forged_with_the_cluster_secret_is_refused_and_other_clusters_proceed(
    worlds: tuple[World, World], faults: Ledger
) -> None:
    first, second = worlds
    first.add(first.host("a"))
    second.add(second.host("b"))
    assert sync_both(first, second).errors == {}
    generation = head_generation(first)
    forged = first.state()
    assert forged.head is not None
    forged.head = replace(forged.head, generation=FAR)
    first.store.put(state_key(first.cluster), legacy_seal(first, forged.encode()))
    faults.tried()
    late = second.add(second.host("late"))
    for _ in range(2):  # refused on every run, never published
        summary = sync_both(first, second)
        assert "sync state" in summary.errors[f"cluster:{first.cluster}"], summary.errors
        assert head_generation(first) == generation
        assert set(summary.errors) == {f"cluster:{first.cluster}"}, "the other cluster proceeds"
    assert late in second.published().entries
    first.store.delete(state_key(first.cluster))  # the operator's way out, documented
    assert sync_both(first, second).errors == {}
    assert generation < head_generation(first) < first.now() * 1000 + MAX_GENERATION_AHEAD_MS


def test_a_state_sealed_under_another_sync_key_is_refused(
    sandbox: Sandbox, tmp_path: Path, faults: Ledger
) -> None:
    world = make_world(sandbox, (tmp_path / "store").as_uri(), "")
    world.add(world.host("other"))
    assert world.sync().errors == {}
    stranger = SyncKeys(SigningKey.generate().sync_secret("state"))
    plain = world.state().encode()
    world.store.put(
        state_key(world.cluster),
        stranger.seal(state_module.KIND, world.cluster, state_module.IDENTITY, plain),
    )
    faults.tried()
    summary = world.sync()
    assert "cannot be opened with this sync's key" in summary.errors[f"cluster:{world.cluster}"]
    assert summary.heads_published == 0


def test_a_far_future_generation_is_refused_in_the_state_and_in_the_head(
    sandbox: Sandbox, tmp_path: Path, faults: Ledger
) -> None:
    world = make_world(sandbox, (tmp_path / "store").as_uri(), "")
    world.add(world.host("far"))
    assert world.sync().errors == {}
    generation = head_generation(world)
    # a state authentic but recording a far-future generation (a bug, or a stolen key)
    states = world.states()
    state = states.load(now_ms=int(world.now() * 1000))
    saved = replace(state, head=replace(state.head, generation=FAR)) if state.head else state
    assert states.save(saved)
    faults.tried(2)
    with pytest.raises(StateError, match="more than a day ahead"):
        world.state()
    summary = world.sync()
    assert "more than a day ahead" in summary.errors[f"cluster:{world.cluster}"]
    assert head_generation(world) == generation
    # a head signed with the sync's own key but far in the future does not raise the next one
    assert states.save(state)
    head = world.published().head
    far_head = Head(world.cluster, FAR, head.issued_at, head.valid_until, head.secret_ids,
                    head.shard_hashes)  # fmt: skip
    world.store.put(head_key(world.cluster), encode_head(far_head, world.signing_key))
    summary = world.sync()
    assert summary.errors == {} and summary.heads_published == 1
    assert head_generation(world) < world.now() * 1000 + MAX_GENERATION_AHEAD_MS
    recorded = world.state().head
    assert recorded is not None and recorded.generation < FAR


def test_an_agent_refuses_a_head_generation_more_than_a_day_ahead() -> None:
    key = SigningKey.generate()
    now = 1_800_000_000
    head = Head("web", (now + 2 * 86400) * 1000, now, now + 3600, ("k1",), (bytes(32),) * 16)
    with pytest.raises(MalformedError, match="more than a day ahead"):
        decode_head(encode_head(head, key), cluster="web", publishers=[key.public_key()], now=now)
    near = replace(head, generation=(now + 3600) * 1000)
    assert (
        decode_head(encode_head(near, key), cluster="web", publishers=[key.public_key()], now=now)
        == near
    )


def test_a_state_from_an_older_version_is_migrated_once_and_a_forged_one_is_refused(
    make_sandbox: Callable[..., Sandbox],
    tmp_path: Path,
    faults: Ledger,
    caplog: pytest.LogCaptureFixture,
) -> None:
    world = make_world(make_sandbox(issue_delay=2), (tmp_path / "store").as_uri(), "")
    published = world.add(world.host("done"))
    assert world.sync().certificates_published == 1
    waiting = world.add(world.host("waiting"))
    world.settings["issue_wait"] = 0.0
    assert world.sync().keys_generated == 1  # its certificate is still pending
    state = world.state()
    assert set(state.pending) == {waiting}
    # what an older version left behind: state and pending keys sealed for the cluster secret
    for name, record in list(state.pending.items()):
        data = read_bytes(world.store, pending_key(world.cluster, record.object), max_bytes=1 << 24)
        pending = open_pending(
            data, cluster=world.cluster, order_name=name, secrets=[world.sync_keys().current]
        )
        old = seal_pending(pending, cluster=world.cluster, secrets=world.secrets)
        digest = content_hash_hex(old)
        world.store.put(pending_key(world.cluster, digest), old)
        state.pending[name] = replace(record, object=digest)
    legacy = legacy_seal(world, state.encode())
    world.store.put(state_key(world.cluster), legacy)
    keys_before = {name: rec.pubkey_hash for name, rec in state.pending.items()}
    generation = head_generation(world)
    world.settings["issue_wait"] = 5.0
    with caplog.at_level(logging.WARNING, logger="certfleet.sync"):
        summary = world.sync()
    assert summary.errors == {} and summary.keys_generated == 0, summary.errors
    assert "sealed with the cluster secrets; rewriting it under the sync key" in caplog.text
    assert wrapped_for(read_bytes(world.store, state_key(world.cluster), max_bytes=1 << 24)) == (
        "sync-state",
    )
    migrated = world.state()
    for name, pubkey_hash in keys_before.items():  # the stored keys were kept, not replaced
        record = migrated.orders.get(name) or migrated.pending[name]
        assert record.pubkey_hash == pubkey_hash
    assert {published, waiting} <= set(world.published().entries)
    assert head_generation(world) >= generation
    # after the migration: a forged legacy state that publishes something else is refused
    forged = world.state()
    forged.orders[published] = replace(forged.orders[published], serial="f00d")
    world.store.put(state_key(world.cluster), legacy_seal(world, forged.encode()))
    faults.tried()
    summary = world.sync()
    assert "disagrees with the published shards" in summary.errors[f"cluster:{world.cluster}"]
    assert summary.heads_published == 0


def test_mark_rekey_refuses_a_state_that_needs_migrating(sandbox: Sandbox, tmp_path: Path) -> None:
    world = make_world(sandbox, (tmp_path / "store").as_uri(), "")
    name = world.add(world.host("rekey"))
    assert world.sync().errors == {}
    world.store.put(state_key(world.cluster), legacy_seal(world, world.state().encode()))
    with pytest.raises(StateError, match="cannot be opened"):
        mark_rekey(world.config(), world.cluster, [name], store=world.store, clock=world.now)
    assert world.sync().errors == {}  # the sync migrates it; then rekey works
    assert mark_rekey(
        world.config(), world.cluster, [name], store=world.store, clock=world.now
    ) == (name,)


def test_a_fresh_state_decodes_what_it_encodes() -> None:
    state = ClusterState.new()
    assert ClusterState.decode(state.encode()).encode() == state.encode()
    keys = SyncKeys(SigningKey.generate().sync_secret("state"))
    assert "redacted" in repr(keys) and keys.current.export() not in repr(keys)


def test_the_registry_revision_and_write_id_are_encoded_only_when_there_is_one() -> None:
    state = ClusterState.new()
    before = state.encode()
    assert b"registry_revision" not in before  # a state without a registry: bytes as before
    state.registry_revision, state.registry_write_id = 7, "0123456789abcdef"
    encoded = state.encode()
    assert b'"registry_revision":7' in encoded and encoded == b"".join(state.encode_parts())
    assert json.loads(encoded) == dict(
        json.loads(before), registry_revision=7, registry_write_id="0123456789abcdef"
    )
    decoded = ClusterState.decode(encoded)
    assert (decoded.registry_revision, decoded.registry_write_id) == (7, "0123456789abcdef")
    assert (ClusterState.decode(before).registry_revision, decoded.encode()) == (0, encoded)


def test_a_new_signing_key_with_previous_signing_key_keeps_the_pending_keys(
    make_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    world = make_world(make_sandbox(issue_delay=2), (tmp_path / "store").as_uri(), "")
    world.settings["issue_wait"] = 0.0
    name = world.add(world.host("rotating"))
    assert world.sync().keys_generated == 1  # its certificate is still pending
    waiting = world.state().pending[name].pubkey_hash
    world.settings["previous_signing_key"] = world.signing_key
    world.signing_key = SigningKey.generate()
    world.settings["issue_wait"] = 5.0
    summary = world.sync()
    assert summary.errors == {} and summary.keys_generated == 0
    del world.settings["previous_signing_key"]
    record = world.state().orders[name]  # opened with the new key's sync secret only
    assert record.pubkey_hash == waiting, "the key stored before the rotation was certified"
    assert world.sync().errors == {}
