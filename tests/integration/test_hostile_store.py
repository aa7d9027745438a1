"""The store as the adversary: ``certfleet.sandbox.tamper`` against a real sync's publication.

A real sync (the sandbox over HTTP) publishes two clusters into one store; an agent of
cluster A installs generation 1; the sync then publishes generation 2 (one order rekeyed,
one added). For every object kind (head, shard, bundle, ack) and every way (bit flip,
truncation, extension, deletion, swap with another order's / kind's / cluster's object,
replay of an older head), the adversary spoils generation 2, and an agent polls:

- nothing wrong is installed: every served key matches its certificate, and each order
  serves either what generation 1 or what generation 2 published for it;
- nothing rolls back: an agent that applied generation 2 keeps it against a replayed head;
- no file is lost: everything served before the poll is still served;
- the refusal names the object; and once the store is repaired, the agent converges.

The agent's own tamper tests (tests/integration/test_agent.py) use hand-made publications; these use
what the sync really writes, and the tool's seeded random positions.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest

from certfleet.bundle import (
    Ack,
    AckOrder,
    FormatError,
    content_hash_hex,
    open_ack,
    peek_head,
    seal_ack,
)
from certfleet.config import parse_agent_config
from certfleet.sandbox.tamper import KINDS, Tamperer, Tampering, cluster_prefix
from certfleet.store import open_store
from certfleet.sync import mark_rekey
from node_agent.agent import Agent
from tests.plugins.faults import (
    Ledger,
    Served,
    agent_config_text,
    cluster_stanza,
    installed_orders,
)
from tests.plugins.sandbox import Sandbox
from tests.plugins.sync_world import make_world

SEED = 1101
NODE = "node-1"


class Scene:
    """Two clusters published by the sync, an agent of the first, and the generations."""

    def __init__(self, sandbox: Sandbox, tmp: Path) -> None:
        self.tmp = tmp
        self.url = (tmp / "store").as_uri()
        self.a = make_world(sandbox, self.url, "")
        self.b = make_world(sandbox, self.url, "")
        self.store = open_store(self.url)
        self.domain = f"{self.a.cluster}.hostile-store.example"
        names = [self.a.add(f"{x}.{self.domain}") for x in ("one", "two", "three")]
        self.b.add(f"other.{self.domain}")
        assert self.a.sync().errors == {} and self.b.sync().errors == {}
        self.gen1_head = self.a.head_bytes()
        self.agent_dir = tmp / "agent"
        self.put_ack()
        assert self.agent(self.agent_dir).poll_once().ok
        self.gen1 = installed_orders(self.agent_dir / "state")
        assert len(self.gen1) == 3
        mark_rekey(self.a.config(), self.a.cluster, [names[0]], store=self.a.store)
        self.a.add(f"four.{self.domain}")
        assert self.a.sync().errors == {}
        self.gen2_head = self.a.head_bytes()
        published = self.a.published()
        self.gen2 = {name: bundle.private_key_pem for name, bundle in published.bundles.items()}
        self.changed_bundles = [
            f"{cluster_prefix(self.a.cluster)}bundles/{entry.bundle_hash.hex()}"
            for name, entry in published.entries.items()
            if name not in self.gen1 or self.gen1[name].key_pem != self.gen2[name]
        ]
        old_shards = set(peek_head(self.gen1_head).shard_hashes)
        self.changed_shards = [
            f"{cluster_prefix(self.a.cluster)}shards/{digest.hex()}"
            for digest in published.head.shard_hashes
            if digest not in old_shards
        ]
        assert len(self.changed_bundles) == 2 and self.changed_shards
        self.snapshot = Tamperer(self.store, random.Random(0)).snapshot(self.a.cluster)

    def put_ack(self) -> None:
        """An ack as a node writes it (agents do not write acks yet: the test plays one)."""
        for node in (NODE, "node-2"):
            orders = (AckOrder(f"one.{self.domain}", "installed"),)
            ack = Ack(node, f"host-of-{node}", 1, 1, orders)
            for world in (self.a, self.b):
                data = seal_ack(ack, cluster=world.cluster, secrets=world.secrets)
                self.store.put(f"{cluster_prefix(world.cluster)}acks/{node}", data)

    def agent(self, directory: Path) -> Agent:
        stanza = cluster_stanza(self.a.cluster, self.a.secrets, [self.a.signing_key.public_key()])
        text = agent_config_text(self.url, directory / "state", stanza)
        return Agent(parse_agent_config(text, str(directory / "agent.conf")))

    def check_served(self, served: dict[str, Served], before: dict[str, Served]) -> None:
        """Each order serves generation 1's or generation 2's key; nothing served is lost."""
        assert set(before) <= set(served), "an installed order disappeared"
        for name, item in served.items():
            allowed = {self.gen2[name]} | (
                {self.gen1[name].key_pem} if name in self.gen1 else set()
            )
            assert item.key_pem in allowed, f"{name}: a key the sync never published for it"


def attacks(scene: Scene, rng: random.Random) -> list[tuple[str, str, str | None]]:
    """(kind, way, swap label) for every kind and way the store allows."""
    found: list[tuple[str, str, str | None]] = []
    for kind in KINDS:
        for way in ("flip", "truncate", "extend", "delete"):
            found.append((kind, way, None))
        for label in ("order", "kind", "cluster"):
            if (kind, label) != ("head", "order"):  # a cluster has one head
                found.append((kind, "swap", label))
    found.append(("head", "replay", None))
    rng.shuffle(found)
    return found


def target(scene: Scene, tool: Tamperer, kind: str) -> str:
    """The object whose spoiling matters: the head, a changed shard or bundle, the ack."""
    if kind == "bundle":
        return tool.rng.choice(scene.changed_bundles)
    if kind == "shard":
        return tool.rng.choice(scene.changed_shards)
    return tool.pick(scene.a.cluster, kind)


def attack(scene: Scene, tool: Tamperer, kind: str, way: str, label: str | None) -> Tampering:
    if way == "replay":
        return tool.replay(scene.a.cluster, scene.gen1_head)
    key = target(scene, tool, kind)
    if way == "swap":
        sources = tool.swap_sources(key, [scene.a.cluster, scene.b.cluster])
        assert label is not None and label in sources, (key, sources)
        return tool.swap(key, sources[label])
    return {"flip": tool.flip, "truncate": tool.truncate, "extend": tool.extend,
            "delete": tool.delete}[way](key)  # fmt: skip


@pytest.mark.fault
def test_no_tampering_installs_anything_wrong_rolls_back_or_loses_files(
    sandbox: Sandbox, tmp_path: Path, faults: Ledger
) -> None:
    scene = Scene(sandbox, tmp_path)
    tool = Tamperer(scene.store, random.Random(SEED))
    applied = tmp_path / "applied"  # an agent that has applied generation 2
    shutil.copytree(scene.agent_dir, applied, symlinks=True)
    assert scene.agent(applied).poll_once().ok
    applied_files = installed_orders(applied / "state")
    done = attacks(scene, random.Random(SEED))
    for number, (kind, way, label) in enumerate(done):
        for base, before in ((scene.agent_dir, scene.gen1), (applied, applied_files)):
            tool.restore(scene.a.cluster, scene.snapshot)  # from the genuine generation 2
            tampering = attack(scene, tool, kind, way, label)
            faults.injected()
            node = tmp_path / f"n{number}-{base.name}"
            shutil.copytree(base, node, symlinks=True)
            result = scene.agent(node).poll_once()
            served = installed_orders(node / "state")
            scene.check_served(served, before)
            if base is applied:
                assert served == applied_files, f"{tampering}: the applied node changed"
            if kind == "ack":  # nobody reads acks but the sync: the agent is unaffected
                assert result.ok, (tampering, result.problems)
            elif not result.ok:
                text = " / ".join(p.message for p in result.problems)
                assert scene.a.cluster in text, (tampering, text)
            elif base is scene.agent_dir and way != "replay":  # generation 1 is its own
                pytest.fail(f"{tampering}: accepted without a word")
            tool.restore(scene.a.cluster, scene.snapshot)  # the store repaired: converge
            assert scene.agent(node).poll_once().ok, tampering
            repaired = installed_orders(node / "state")
            assert {n: s.key_pem for n, s in repaired.items()} == scene.gen2, tampering
            shutil.rmtree(node)
    assert len(done) == len(KINDS) * 7


@pytest.mark.fault
def test_tampered_acks_are_refused_and_do_not_disturb_the_sync(
    sandbox: Sandbox, tmp_path: Path, faults: Ledger
) -> None:
    scene = Scene(sandbox, tmp_path)
    tool = Tamperer(scene.store, random.Random(SEED + 1))
    key = f"{cluster_prefix(scene.a.cluster)}acks/{NODE}"
    genuine = tool.read(key)
    for way in ("flip", "truncate", "extend", "order", "kind", "cluster"):
        tool.store.put(key, genuine)
        if way in ("flip", "truncate", "extend"):
            getattr(tool, way)(key)
        else:
            tool.swap(key, tool.swap_sources(key, [scene.a.cluster, scene.b.cluster])[way])
        faults.injected()
        with pytest.raises(FormatError) as refused:
            open_ack(tool.read(key), cluster=scene.a.cluster, node_id=NODE, secrets=scene.a.secrets)
        assert "ack" in str(refused.value)
        summary = scene.a.sync()
        assert summary.errors == {}, (way, summary.errors)
        assert key in tool.objects(scene.a.cluster, "ack"), "the sync must not delete acks"


def test_the_tool_names_every_attack_and_restores_exactly(sandbox: Sandbox, tmp_path: Path) -> None:
    world = make_world(sandbox, (tmp_path / "s").as_uri(), "")
    world.add("tool.hostile-store.example")
    world.sync()
    tool = Tamperer(world.store, random.Random(3))
    snapshot = tool.snapshot(world.cluster)
    head = tool.pick(world.cluster, "head")
    bundle = tool.pick(world.cluster, "bundle")
    made = [tool.flip(head), tool.truncate(bundle), tool.delete(tool.pick(world.cluster, "shard"))]
    assert [(t.kind, t.way) for t in made] == [("head", "flip"), ("bundle", "truncate"),
                                                ("shard", "delete")]  # fmt: skip
    assert tool.read(head) != snapshot[head]
    assert content_hash_hex(tool.read(bundle)) != bundle.rsplit("/", 1)[1]
    tool.restore(world.cluster, snapshot)
    assert tool.snapshot(world.cluster) == snapshot
    world.published()
