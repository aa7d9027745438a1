"""The sync's fleet check (certfleet.sync.fleetcheck): the real engine against the sandbox and
a store (a directory, and SeaweedFS S3), real agents that install and write their acks, and
the world's clock moved to make a head old."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from certfleet.bundle import (
    Ack,
    AckOrder,
    ClusterSecret,
    FormatError,
    OwedUpdate,
    SigningKey,
    open_sealed,
    seal,
)
from certfleet.config import parse_agent_config
from certfleet.store import FileStore, Store, StoredObject
from certfleet.sync import RunSummary
from certfleet.sync.fleetcache import AckCache, decode_known, encode_known
from certfleet.sync.nodereport import MAX_ACK_BYTES, known_ack
from certfleet.sync.sealing import SyncKeys
from node_agent.agent import Agent
from tests.plugins.faults import agent_config_text, cluster_stanza
from tests.plugins.sandbox import Sandbox
from tests.plugins.seaweedfs import SeaweedFS
from tests.plugins.sync_world import World, make_world

HOUR = 3600.0
FAILING_HOOK = 'default { on_update = ["echo reload failed >&2; exit 3"] }\n'


class ListingSpy:
    """The world's store, recording every prefix listed (the fleet check lists acks/) and
    every ack read."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.listed: list[str] = []
        self.acks_read: list[str] = []

    def list(self, prefix: str) -> Iterator[str]:
        self.listed.append(prefix)
        return self.inner.list(prefix)

    def list_etags(self, prefix: str) -> Iterator[tuple[str, str]]:
        self.listed.append(prefix)
        return self.inner.list_etags(prefix)

    def get(self, key: str, *, max_bytes: int) -> StoredObject:
        if "/acks/" in key:
            self.acks_read.append(key.rsplit("/", 1)[1])
        return self.inner.get(key, max_bytes=max_bytes)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def acks_listed(self) -> int:
        return sum(1 for prefix in self.listed if prefix.endswith("/acks/"))


@pytest.fixture
def spied(sandbox: Sandbox, tmp_path: Path) -> tuple[World, ListingSpy]:
    """A world on a file:// store whose listings are recorded."""
    (tmp_path / "store").mkdir()
    world = make_world(sandbox, f"file://{tmp_path}/store", "")
    spy = ListingSpy(world.store)
    return replace(world, store=spy), spy  # type: ignore[arg-type]


def agent(world: World, tmp: Path, name: str, endpoint: str = "", extra: str = "") -> Agent:
    stanza = cluster_stanza(world.cluster, world.secrets, [world.signing_key.public_key()])
    text = agent_config_text(world.store.url, tmp / name, stanza, endpoint=endpoint, extra=extra)
    node = Agent(parse_agent_config(text, str(tmp / f"{name}.conf")))
    node.acks.hostname = name
    return node


def figures(summary: RunSummary) -> dict[str, int]:
    assert summary.errors == {}, summary.errors
    return dict(summary.fleet[summary.clusters[0]])


def fleet_of(
    nodes: int,
    current: int = 0,
    behind: int = 0,
    stale: int = 0,
    failing: int = 0,
    unreadable: int = 0,
    ahead: int = 0,
    problem_nodes: int = 0,
) -> dict[str, int]:
    return dict(
        nodes=nodes, current=current, behind=behind, stale=stale, failing=failing,
        unreadable=unreadable, ahead=ahead, problem_nodes=problem_nodes,
    )  # fmt: skip


def test_current_stale_failing_and_tampered_nodes_once_per_interval(
    spied: tuple[World, ListingSpy], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    world, spy = spied
    world.add(world.host("a"))
    first = world.sync()
    assert first.certificates_published == 1
    # the first run publishes, then checks: no node has reported yet
    assert figures(first) == fleet_of(0)
    assert first.fleet_problem_nodes == 0 and first.as_dict()["fleet_problem_nodes"] == 0
    assert spy.acks_listed() == 1

    good, lagging = agent(world, tmp_path, "web-good"), agent(world, tmp_path, "web-lag")
    broken = agent(world, tmp_path, "web-broken", extra=FAILING_HOOK)
    broken.acks.hostname = "web-broken\x1b]0;owned\x07"  # a label the node chose
    assert good.poll_once().ok and lagging.poll_once().ok
    assert not broken.poll_once().ok

    # a second order, published within the interval: no check, acks not even listed
    world.add(world.host("b"))
    second = world.sync()
    assert second.certificates_published == 1
    assert second.fleet == {} and second.fleet_problem_nodes is None
    assert second.as_dict()["fleet"] == {} and second.as_dict()["fleet_problem_nodes"] is None
    assert spy.acks_listed() == 1
    assert good.poll_once().ok
    assert not broken.poll_once().ok  # installs b, still owes its failed on_update

    # two hours on: that head has been out longer than fleet_stale_after (1h)
    world.offset = 2 * HOUR
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="certfleet.sync"):
        third = world.sync()
    assert third.heads_published == 0
    assert figures(third) == fleet_of(3, current=2, behind=1, stale=1, failing=1, problem_nodes=2)
    assert third.fleet_problem_nodes == 2
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert f"cluster {world.cluster}: node web-lag, id {lagging.node_id}: stale" in warnings
    shown = "web-broken\\x1b]0;owned\\x07"
    assert f"cluster {world.cluster}: node {shown}, id {broken.node_id}: failing" in warnings
    assert len(warnings) == 2
    assert not any("web-good" in line for line in warnings)
    for secret in world.secrets:
        assert secret.export().split(":")[1] not in caplog.text

    # within the interval again: nothing read
    world.offset = 2 * HOUR + 600
    assert world.sync().fleet == {}
    assert spy.acks_listed() == 2

    # a tampered ack is unreadable; the run goes on and the others are counted
    key = f"v1/clusters/{world.cluster}/acks/{good.node_id}"
    stored = world.store.get(key, max_bytes=1 << 24)
    world.store.put(key, stored.data[:-1] + bytes([stored.data[-1] ^ 1]))
    world.store.put(f"v1/clusters/{world.cluster}/acks/bad.id", b"\x1b[31m not an ack")
    world.offset = 4 * HOUR
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="certfleet.sync"):
        fourth = world.sync()
    assert fourth.ok and fourth.complete
    assert figures(fourth) == fleet_of(
        4, current=1, behind=1, stale=1, failing=1, unreadable=2, problem_nodes=4
    )
    assert f"id {good.node_id}: unreadable (integrity)" in caplog.text
    assert "node -, id bad.id: unreadable (malformed)" in caplog.text
    assert "\x1b" not in caplog.text


def test_zero_turns_the_check_off_top_level_or_per_cluster(
    spied: tuple[World, ListingSpy], tmp_path: Path
) -> None:
    world, spy = spied
    world.add(world.host("a"))
    world.settings["fleet_check_interval"] = 0.0
    assert world.sync().fleet == {}
    lagging = agent(world, tmp_path, "web-1")
    assert lagging.poll_once().ok
    world.add(world.host("b"))
    assert world.sync().certificates_published == 1  # web-1 never polls again
    world.offset = 2 * HOUR
    world.settings.pop("fleet_check_interval")
    world.cluster_settings["fleet_check_interval"] = 0.0  # the cluster's own setting wins
    off = world.sync()
    assert off.fleet == {} and off.errors == {}
    assert spy.acks_listed() == 0
    # the cluster's own stale_after: behind a head out for 2 h is not stale under 3h
    world.cluster_settings.update(fleet_check_interval=60.0, fleet_stale_after=3 * HOUR)
    assert figures(world.sync()) == fleet_of(1, behind=1)
    assert spy.acks_listed() == 1
    world.offset += 60
    world.cluster_settings.pop("fleet_stale_after")  # the top level's 1h
    assert figures(world.sync()) == fleet_of(1, behind=1, stale=1, problem_nodes=1)


def test_a_run_short_on_budget_leaves_the_check_to_the_next(
    spied: tuple[World, ListingSpy], tmp_path: Path
) -> None:
    world, spy = spied
    world.add(world.host("budget"))
    world.settings["fleet_check_interval"] = 0.0
    assert world.sync().certificates_published == 1  # published, never checked
    world.settings.pop("fleet_check_interval")
    lagging = agent(world, tmp_path, "web-1")
    assert lagging.poll_once().ok
    # a settled run takes a fraction of a second: 1.2 s leaves under the 1 s minimum
    # beyond the run's reserve (a quarter of the budget)
    short = world.sync(deadline=time.monotonic() + 1.2)
    assert short.errors == {} and short.fleet == {}
    assert spy.acks_listed() == 0
    # a budget with room: the check runs (its reads bounded by half of what is left)
    roomy = world.sync(deadline=time.monotonic() + 60)
    assert figures(roomy) == fleet_of(1, current=1)
    assert spy.acks_listed() == 1


def test_s3_store(sandbox: Sandbox, s3_url: str, seaweedfs: SeaweedFS, tmp_path: Path) -> None:
    world = make_world(sandbox, s3_url, seaweedfs.endpoint)
    world.add(world.host("s3"))
    assert figures(world.sync()) == fleet_of(0)
    good = agent(world, tmp_path, "web-1", seaweedfs.endpoint)
    broken = agent(world, tmp_path, "web-2", seaweedfs.endpoint, extra=FAILING_HOOK)
    assert good.poll_once().ok
    assert not broken.poll_once().ok
    key = f"v1/clusters/{world.cluster}/acks/{broken.node_id}"
    stored = world.store.get(key, max_bytes=1 << 24)
    world.offset = HOUR
    assert figures(world.sync()) == fleet_of(2, current=2, failing=1, problem_nodes=1)
    at = stored.data.index(b"CFSE") + 40  # in the sealed ack, after its hostname label
    world.store.put(key, stored.data[:at] + bytes(8) + stored.data[at + 8 :])
    world.offset = 2 * HOUR
    assert figures(world.sync()) == fleet_of(2, current=1, unreadable=1, problem_nodes=1)
    # a node writes an ack over the cap (a 1 GB one made every run fail): refused from its
    # size before it is read, reported for that node, and the run goes on
    world.store.put(key, b"\0" * (MAX_ACK_BYTES + 1))
    received = world.store.stats.bytes_in
    world.offset = 3 * HOUR
    oversized = world.sync()
    assert oversized.ok and oversized.errors == {}
    assert figures(oversized) == fleet_of(2, current=1, unreadable=1, problem_nodes=1)
    assert world.store.stats.bytes_in - received < MAX_ACK_BYTES


def test_a_second_check_reads_only_the_acks_that_changed(
    spied: tuple[World, ListingSpy], tmp_path: Path
) -> None:
    world, spy = spied
    world.add(world.host("a"))
    assert world.sync().certificates_published == 1
    nodes = [agent(world, tmp_path, f"web-{n}") for n in range(4)]
    assert all(node.poll_once().ok for node in nodes)
    world.offset = HOUR
    assert figures(world.sync()) == fleet_of(4, current=4)
    assert sorted(spy.acks_read) == sorted(node.node_id for node in nodes)
    cache = f"v1/sync/fleet/{world.cluster}"
    assert world.store.get(cache, max_bytes=1 << 24).data

    # a new head; one node applies it and writes a new ack, the others do not
    world.add(world.host("b"))
    assert world.sync().certificates_published == 1  # within the interval: no check
    assert nodes[0].poll_once().ok
    spy.acks_read.clear()
    world.offset = 3 * HOUR
    third = world.sync()
    assert figures(third) == fleet_of(4, current=1, behind=3, stale=3, problem_nodes=3)
    assert spy.acks_read == [nodes[0].node_id]

    # nothing changed: no ack read, the cache not written again
    before = world.store.get(cache, max_bytes=1 << 24)
    spy.acks_read.clear()
    world.offset = 5 * HOUR
    assert figures(world.sync()) == fleet_of(4, current=1, behind=3, stale=3, problem_nodes=3)
    assert spy.acks_read == []
    after = world.store.get(cache, max_bytes=1 << 24)
    assert after.etag == before.etag

    # an unusable cache is an empty one: every ack read again, nothing fails
    world.store.put(cache, b"garbage")
    world.offset = 7 * HOUR
    assert figures(world.sync()) == fleet_of(4, current=1, behind=3, stale=3, problem_nodes=3)
    assert len(spy.acks_read) == 4


def test_a_failing_node_read_from_the_cache_still_fails(
    spied: tuple[World, ListingSpy], tmp_path: Path
) -> None:
    world, spy = spied
    world.add(world.host("a"))
    assert world.sync().certificates_published == 1
    broken = agent(world, tmp_path, "web-broken", extra=FAILING_HOOK)
    assert not broken.poll_once().ok
    world.offset = HOUR
    assert figures(world.sync()) == fleet_of(1, current=1, failing=1, problem_nodes=1)
    spy.acks_read.clear()
    world.offset = 3 * HOUR
    assert figures(world.sync()) == fleet_of(1, current=1, failing=1, problem_nodes=1)
    assert spy.acks_read == []


def test_the_fleet_cache_keeps_what_the_check_needs_sealed_for_the_sync_only(
    tmp_path: Path,
) -> None:
    store = FileStore(tmp_path)
    node_secret = ClusterSecret.generate("k1")  # what every node holds
    keys = SyncKeys(SigningKey.generate().sync_secret("state"), legacy=(node_secret,))
    failed = AckOrder("a.example.com", "failed", "0a", "check_command 'x' exited 1")
    ack = Ack("node1", "web-1", 5_000, 6, (AckOrder("b.example.com", "installed", "0b", ""),
                                            failed))  # fmt: skip
    known = {"node1": known_ack('"etag1"', ack)}
    assert known["node1"].ack.orders == (failed,)  # the installed order is not kept
    assert decode_known(encode_known(known)) == known
    owing = Ack("node2", "web-2", 5_000, 6, (AckOrder("c.example.com", "installed", "0c", ""),),
                (OwedUpdate("c.example.com", "systemctl reload nginx"),))  # fmt: skip
    kept = known_ack('"etag2"', owing)  # declared owed: the order and the list are kept
    assert kept.ack.orders == owing.orders and kept.ack.owed == owing.owed
    assert decode_known(encode_known({"node2": kept})) == {"node2": kept}
    cache = AckCache(store, "web", keys)
    assert cache.load() == {} and cache.save(known)
    assert not cache.save(known)  # unchanged: not written again
    assert AckCache(store, "web", keys).load() == known
    other = SyncKeys(SigningKey.generate().sync_secret("state"))
    assert AckCache(store, "web", other).load() == {}  # another signing key: an empty cache
    stored = store.get("v1/sync/fleet/web", max_bytes=1 << 24)
    assert b"web-1" not in stored.data  # sealed
    with pytest.raises(FormatError):  # not for the nodes' secret
        open_sealed("pending", "web", "/fleet", stored.data, [node_secret])
    # one a node sealed with the cluster secret (to hide itself) is not believed
    store.put(
        "v1/sync/fleet/web", seal("pending", "web", "/fleet", encode_known(known), [node_secret])
    )
    assert AckCache(store, "web", keys).load() == {}
