"""Rotation end to end: the real sync (sandbox over HTTP) and real agents on SeaweedFS.

Cluster secret, as docs/security.md prescribes: the new secret is added to agents, then to
the sync (which re-wraps every object for both), then the old one is retired. Agents
holding the old secret, both, or only the new one keep working through the overlap; after
the retirement an agent with only the old secret is refused ("wrapped for secret ids k2")
and keeps every file it has. The same for the publisher key: agents pin old and new, the
sync signs with the new one, an agent pinning only the old key is refused and keeps files.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from certfleet.bundle import ClusterSecret, PublicKey, SigningKey
from certfleet.config import parse_agent_config
from node_agent.agent import Agent
from node_agent.result import PollResult
from tests.plugins.faults import Ledger, agent_config_text, cluster_stanza, installed_orders
from tests.plugins.sandbox import Sandbox
from tests.plugins.seaweedfs import SeaweedFS
from tests.plugins.sync_world import World, make_world


class Node:
    """An agent with its own state directory and its own (changeable) trust."""

    def __init__(self, world: World, tmp: Path, endpoint: str) -> None:
        self.world = world
        self.tmp = tmp
        self.endpoint = endpoint

    def poll(
        self, secrets: tuple[ClusterSecret, ...], publishers: tuple[PublicKey, ...]
    ) -> PollResult:
        stanza = cluster_stanza(self.world.cluster, secrets, publishers)
        text = agent_config_text(
            self.world.store.url, self.tmp / "state", stanza, endpoint=self.endpoint
        )
        return Agent(parse_agent_config(text, str(self.tmp / "agent.conf"))).poll_once()

    def keys(self) -> dict[str, bytes]:
        return {n: s.key_pem for n, s in installed_orders(self.tmp / "state").items()}


def published_keys(world: World) -> dict[str, bytes]:
    return {n: b.private_key_pem for n, b in world.published().bundles.items()}


def messages(result: PollResult) -> str:
    return " / ".join(problem.message for problem in result.problems)


@pytest.fixture
def world(sandbox: Sandbox, s3_url: str, seaweedfs: SeaweedFS) -> World:
    return make_world(sandbox, s3_url, seaweedfs.endpoint)


def test_cluster_secret_rotation_with_agents_on_either_secret(
    world: World, seaweedfs: SeaweedFS, tmp_path: Path, faults: Ledger
) -> None:
    old = world.secrets[0]
    new = ClusterSecret.generate("k2")
    pins = (world.signing_key.public_key(),)
    world.add(f"a.{world.cluster}.example")
    assert world.sync().errors == {}
    stale, both, fresh = (Node(world, tmp_path / n, seaweedfs.endpoint) for n in "sbf")
    assert stale.poll((old,), pins).ok and both.poll((old,), pins).ok

    # 1. agents learn the new secret (the "both" node); the sync does not use it yet
    assert both.poll((new, old), pins).ok
    # 2. the sync adds it: every object is re-wrapped for k2 and k1
    world.secrets = (new, old)
    world.add(f"b.{world.cluster}.example")
    summary = world.sync()
    assert summary.errors == {} and world.published().head.secret_ids == ("k2", "k1")
    overlap = published_keys(world)
    for node, secrets in ((stale, (old,)), (both, (new, old)), (fresh, (new,))):
        result = node.poll(secrets, pins)
        assert result.ok, messages(result)
        assert node.keys() == overlap
    # 3. the old secret is retired: the sync re-wraps for k2 only
    world.secrets = (new,)
    world.add(f"c.{world.cluster}.example")
    assert world.sync().errors == {}
    assert world.published().head.secret_ids == ("k2",)
    final = published_keys(world)
    for node, secrets in ((both, (new, old)), (fresh, (new,))):
        result = node.poll(secrets, pins)
        assert result.ok, messages(result)
        assert node.keys() == final
    faults.tried()
    refused = stale.poll((old,), pins)
    assert not refused.ok
    assert "wrapped for secret ids k2" in messages(refused) and "holds k1" in messages(refused)
    assert stale.keys() == overlap, "a refused node keeps every file it had"


def test_publisher_key_rotation_with_agents_pinning_either_key(
    world: World, seaweedfs: SeaweedFS, tmp_path: Path, faults: Ledger
) -> None:
    secrets = world.secrets
    old_key = world.signing_key
    new_key = SigningKey.generate()
    old, new = old_key.public_key(), new_key.public_key()
    world.add(f"p.{world.cluster}.example")
    assert world.sync().errors == {}
    stale, both, fresh = (Node(world, tmp_path / n, seaweedfs.endpoint) for n in "sbf")
    assert stale.poll(secrets, (old,)).ok
    before = stale.keys()
    # 1. agents pin both keys; 2. the sync signs with the new key
    assert both.poll(secrets, (old, new)).ok
    world.signing_key = new_key
    world.settings["previous_signing_key"] = old_key  # opens the sync's state, once
    world.add(f"q.{world.cluster}.example")
    assert world.sync().errors == {}
    assert world.published().head  # signed by the new key (World pins world.signing_key)
    after = published_keys(world)
    for node, pins in ((both, (old, new)), (fresh, (new,))):
        result = node.poll(secrets, pins)
        assert result.ok, messages(result)
        assert node.keys() == after
    # 3. an agent still pinning only the old key is refused and keeps its files
    faults.tried()
    refused = stale.poll(secrets, (old,))
    assert not refused.ok
    assert "not a pinned publisher" in messages(refused), messages(refused)
    assert stale.keys() == before
    # 4. its config fixed (the new key pinned, the old one dropped), it catches up
    result = stale.poll(secrets, (new,))
    assert result.ok, messages(result)
    assert stale.keys() == after
