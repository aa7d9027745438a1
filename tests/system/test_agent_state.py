"""The agent's state on disk: index + records, incremental saves, crashes; polls that touch little.

The state is a small ``state.json`` index and content-addressed record files under
``state.d/``. These tests check that a save writes only what changed, that a SIGKILL at any
instant of a save leaves a loadable, consistent state, that the old one-file layout is still
read, and that an agent's memory and disk agree after every kind of poll. The last ones use
a spy ``OrderTable`` (our own class, counting walks over the installed orders) to check that
a poll answered 304 walks no order unless something is due.
"""

from __future__ import annotations

import json
import os
import random
import signal
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, ItemsView, Iterator, KeysView, ValuesView
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from certfleet.bundle import ShardEntry, Tombstone
from certfleet.config import parse_agent_config
from node_agent.agent import Agent
from node_agent.agentstate import AgentState, InstalledOrder, OrderTable, OwedCommand, ShardRecord
from node_agent.errors import StateError
from node_agent.identity import node_id
from node_agent.statecodec import BUCKETS, bucket_of
from node_agent.statestore import RECORDS_DIR, StateStore

if TYPE_CHECKING:
    from tests.plugins.publisher import Publisher

ORDERS = 400


def order(
    name: str,
    serial: str = "1",
    previous: InstalledOrder | None = None,
    copies: dict[str, str] | None = None,
) -> InstalledOrder:
    return InstalledOrder(
        "web", name, "ab" * 32, serial, "ecdsa", 2_000_000_000, f"v{serial}", previous,
        copies or {},
    )  # fmt: skip


def shard(index: int, names: list[str], tag: str = "0") -> ShardRecord:
    digest = f"{index:02x}{tag}".ljust(64, "0")
    entries = tuple(ShardEntry(n, bytes(32), "1", 2_000_000_000, 0) for n in names)
    return ShardRecord(digest, entries, (Tombstone(f"gone{index}.example", 1_700_000_000),))


def big_state() -> AgentState:
    state = AgentState()
    names = [f"o{i}.example" for i in range(ORDERS)]
    cluster = state.cluster("web")
    cluster.shard_count = 4
    cluster.shards = {i: shard(i, names[i::4]) for i in range(4)}
    cluster.applied_etag, cluster.applied_generation = "etag", 7
    for name in names:
        state.orders[name] = order(name, previous=order(name, "0"), copies={"crt": f"/c/{name}"})
    state.owed.append(OwedCommand("reload", ["o1.example"], [], 7, 2, "exit 1"))
    return state


def record_files(state_dir: Path) -> dict[str, int]:
    """Every record file under state.d, relative path -> inode (a rewrite is a new inode)."""
    root = state_dir / RECORDS_DIR
    return {str(p.relative_to(root)): p.stat().st_ino for p in root.rglob("*") if p.is_file()}


# -- the store ---------------------------------------------------------------------------


def test_round_trip_layout_and_modes(tmp_path: Path) -> None:
    state = big_state()
    StateStore(str(tmp_path)).save(state)
    loaded = StateStore(str(tmp_path)).load()
    assert loaded == state and loaded.cluster("web").entries() == state.cluster("web").entries()
    index = (tmp_path / "state.json").read_bytes()
    assert b"o17.example" not in index  # names live in the records
    assert len(index) < 50 * BUCKETS  # one short line per bucket at most, whatever N is
    assert json.loads(index)["schema"] == 2
    files = record_files(tmp_path)
    buckets = {bucket_of(f"o{i}.example") for i in range(ORDERS)}
    assert sum(name.startswith("orders/") for name in files) == len(buckets)
    assert sum(name.startswith("shards/") for name in files) == 4
    for path in [tmp_path / "state.json", *(tmp_path / RECORDS_DIR).rglob("*")]:
        wanted = 0o700 if path.is_dir() else 0o600
        assert stat.S_IMODE(path.stat().st_mode) == wanted, path


def test_a_save_writes_only_what_changed(tmp_path: Path) -> None:
    store = StateStore(str(tmp_path))
    state = big_state()
    store.save(state)
    before = record_files(tmp_path)
    # One order renewed, one removed, one shard replaced by a new one.
    state.orders["o5.example"] = order("o5.example", "2")
    del state.orders["o6.example"]
    cluster = state.cluster("web")
    cluster.shards = {**cluster.shards, 1: shard(1, ["o1.example", "o5.example"], tag="1")}
    store.save(state)
    after = record_files(tmp_path)
    touched = {bucket_of("o5.example"), bucket_of("o6.example")}
    added, gone = set(after) - set(before), set(before) - set(after)
    still_used = {b for b in touched if any(bucket_of(n) == b for n in state.orders)}
    assert len([n for n in added if n.startswith("orders/")]) == len(still_used)
    assert len([n for n in gone if n.startswith("orders/")]) == len(touched)
    assert [n for n in added if n.startswith("shards/")] == [f"shards/{shard(1, [], '1').hash}"]
    assert [n for n in gone if n.startswith("shards/")] == [f"shards/{shard(1, []).hash}"]
    assert all(after[n] == before[n] for n in set(after) & set(before))  # not rewritten
    assert StateStore(str(tmp_path)).load() == state
    assert not state.orders.changed
    # Nothing changed: the records are left alone (only the index is written again).
    store.save(state)
    assert record_files(tmp_path) == after


def test_a_second_object_or_a_missing_record(tmp_path: Path) -> None:
    store = StateStore(str(tmp_path))
    store.save(big_state())
    other = AgentState()  # another object than the tracked one: written in full
    other.orders["x.example"] = order("x.example")
    store.save(other)
    assert StateStore(str(tmp_path)).load() == other
    assert len(record_files(tmp_path)) == 1  # the other state's records were removed
    bucket = next((tmp_path / RECORDS_DIR / "orders").iterdir())
    bucket.write_bytes(bucket.read_bytes().replace(b'"1"', b'"2"'))
    with pytest.raises(StateError, match="does not match its name"):
        StateStore(str(tmp_path)).load()
    bucket.unlink()
    with pytest.raises(StateError, match="missing"):
        StateStore(str(tmp_path)).load()


def test_a_schema_1_state_file_is_read_and_replaced(tmp_path: Path) -> None:
    old = {
        "schema": 1,
        "clusters": {"web": {"applied_etag": "e", "applied_generation": 3,
                             "accepted_generation": 3, "valid_until": 9, "shard_count": 1,
                             "shards": {"0": {"hash": "cd" * 32, "entries": [
                                 {"order_name": "a.example", "bundle_hash": "ab" * 32,
                                  "serial": "1", "not_after": 5, "install_after": 0}],
                                 "tombstones": []}}}},
        "orders": {"a.example": {"cluster": "web", "safe_name": "a.example",
                                 "bundle_hash": "ab" * 32, "serial": "1", "key_type": "ecdsa",
                                 "not_after": 5, "version": "v1", "previous": None,
                                 "copies": {}, "copies_version": "v1", "removed_at": None,
                                 "installed_at": 4, "dns_names": ["a.example"]}},
        "owed": [{"command": "true", "updated": ["a.example"], "removed": [], "generation": 3,
                  "failures": 0, "last_error": ""}],
    }  # fmt: skip
    (tmp_path / "state.json").write_text(json.dumps(old))
    store = StateStore(str(tmp_path))
    state = store.load()
    assert state.orders["a.example"].version == "v1" and state.owed[0].command == "true"
    assert state.cluster("web").entries()["a.example"].bundle_hash == bytes.fromhex("ab" * 32)
    store.save(state)
    assert json.loads((tmp_path / "state.json").read_text())["schema"] == 2
    assert StateStore(str(tmp_path)).load() == state


WRITER = textwrap.dedent(
    """
    import sys
    from node_agent.agentstate import AgentState, InstalledOrder
    from node_agent.statestore import StateStore
    store = StateStore(sys.argv[1])
    state = store.load()
    generation = state.cluster("web").applied_generation
    names = [f"o{i}.example" for i in range(24)]
    print("ready", flush=True)
    while True:
        generation += 1
        for name in names:  # 24 orders in as many buckets, all at this generation
            state.orders[name] = InstalledOrder(
                "web", name, "ab" * 32, str(generation), "ecdsa", 9, f"v{generation}"
            )
        state.cluster("web").applied_generation = generation
        state.owed = []
        store.save(state)
    """
)


def test_sigkill_during_saves_leaves_a_consistent_state(tmp_path: Path) -> None:
    rng = random.Random(1009)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    last = 0
    for _ in range(8):
        with subprocess.Popen(
            [sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE, env=env
        ) as process:
            assert process.stdout is not None and process.stdout.readline() == b"ready\n"
            time.sleep(rng.uniform(0.01, 0.25))
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=30)
        state = StateStore(str(tmp_path)).load()
        generation = state.cluster("web").applied_generation
        assert generation >= last  # saves are never undone
        last = generation
        serials = {o.serial for o in state.orders.values()}
        assert serials == ({str(generation)} if generation else set()), (generation, serials)
    # The next save removes whatever a kill left behind (temporary or unreferenced files).
    store = StateStore(str(tmp_path))
    state = store.load()
    state.orders["extra.example"] = order("extra.example")
    store.save(state)
    index = json.loads((tmp_path / "state.json").read_text())
    assert sorted(record_files(tmp_path)) == sorted(f"orders/{n}" for n in index["orders"].values())


# -- the agent ---------------------------------------------------------------------------


class SpyTable(OrderTable):
    """An OrderTable that counts the walks over every installed order."""

    walks = 0

    def __iter__(self) -> Iterator[str]:
        self.walks += 1
        return super().__iter__()

    def keys(self) -> KeysView[str]:
        self.walks += 1
        return super().keys()

    def values(self) -> ValuesView[InstalledOrder]:
        self.walks += 1
        return super().values()

    def items(self) -> ItemsView[str, InstalledOrder]:
        self.walks += 1
        return super().items()


def spy_on(agent: Agent) -> SpyTable:
    """Put a SpyTable in the place of the agent's orders (before its first poll)."""
    spy = SpyTable(agent.state.orders.items())
    spy.changed = set(agent.state.orders.changed)
    agent.state.orders = spy
    return spy


class CountingStore(StateStore):
    saves = 0

    def save(self, state: AgentState) -> None:
        self.saves += 1
        super().save(state)


@pytest.fixture
def pub(tmp_path: Path, make_publisher: Callable[..., Publisher]) -> Publisher:
    (tmp_path / "store").mkdir()
    return make_publisher(f"file://{tmp_path}/store")


def make_agent(
    pub: Publisher, tmp_path: Path, clock: Callable[[], float], extra: str = ""
) -> Agent:
    text = (
        f'store = "{pub.store.url}"\nstate_dir = "{tmp_path / "state"}"\n'
        f'metrics_file = "{tmp_path / "metrics" / "agent.prom"}"\n' + pub.cluster_stanza() + extra
    )
    agent = Agent(parse_agent_config(text, "test.conf"), clock=clock)
    agent.states = CountingStore(str(tmp_path / "state"))
    agent.state = agent.states.load()
    return agent


def assert_saved(agent: Agent) -> None:
    assert StateStore(agent.config.state_dir).load() == agent.state


def test_a_304_poll_walks_no_order_and_a_change_poll_saves_once(
    pub: Publisher, tmp_path: Path
) -> None:
    now = time.time()
    clock = [now]
    for i in range(12):
        pub.issue(f"o{i}.example")
    later = pub.issue("later.example", install_after=int(now) + 600)
    pub.publish()
    agent = make_agent(pub, tmp_path, lambda: clock[0])
    spy = spy_on(agent)
    result = agent.poll_once()
    assert result.ok and len(result.installed) == 12 and result.deferred == ("later.example",)
    assert_saved(agent)
    metrics = tmp_path / "metrics" / "agent.prom"
    acks = list((tmp_path / "store").rglob("acks/*"))
    assert len(acks) == 1
    ack_written = acks[0].stat().st_mtime_ns
    spy.walks = 0
    for _ in range(3):  # nothing new, one order deferred: no walk, no save, no ack
        clock[0] += 60
        result = agent.poll_once()
        assert result.ok and result.clusters[0].head == "unchanged"
        assert result.deferred == ("later.example",) and not result.installed
    assert spy.walks == 0 and agent.states.saves == 1  # type: ignore[attr-defined]
    assert acks[0].stat().st_mtime_ns == ack_written
    text = metrics.read_text()
    last_poll = 'certfleet_agent_last_successful_poll_timestamp_seconds{cluster="web"}'
    assert f"{last_poll} {int(clock[0])}\n" in text
    assert 'order="o3.example"' in text and 'order="later.example"' not in text

    clock[0] = now + 601  # the deferred order is due: installed by a poll answered 304
    result = agent.poll_once()
    assert result.clusters[0].head == "unchanged"
    assert result.ok and result.installed == ("later.example",) and not result.deferred
    assert agent.states.saves == 2  # type: ignore[attr-defined]
    assert 'order="later.example"' in metrics.read_text()
    assert acks[0].stat().st_mtime_ns != ack_written
    assert agent.state.orders["later.example"].serial == later.serial
    assert_saved(agent)

    pub.issue("o3.example")  # a change: one save for the whole poll
    pub.publish()
    result = agent.poll_once()
    assert result.ok and result.installed == ("o3.example",)
    assert agent.states.saves == 3  # type: ignore[attr-defined]
    assert_saved(agent)
    walks = spy.walks
    clock[0] += 60
    assert agent.poll_once().ok and spy.walks == walks and agent.states.saves == 3  # type: ignore[attr-defined]


def test_memory_and_disk_agree_after_every_kind_of_poll(pub: Publisher, tmp_path: Path) -> None:
    log = tmp_path / "hook.log"
    extra = (
        f'default {{\n  on_update = ["echo run >> {log}"]\n'
        f'  files {{ crt = "{tmp_path}/copies/${{ORDER_NAME}}.crt" }}\n}}\n'
        'order "drop.example" {\n  remove = "delete"\n  remove_after = "1h"\n}\n'
        'order "bad.example" {\n  check_command = "false"\n}\n'
    )
    now = time.time()
    clock = [now]
    for name in ("keep.example", "drop.example", "bad.example", "*.wild.example"):
        pub.issue(name)
    pub.publish()
    agent = make_agent(pub, tmp_path, lambda: clock[0], extra)
    result = agent.poll_once()
    assert not result.ok and result.rolled_back == ("bad.example",)  # a first install removed
    assert_saved(agent)
    pub.remove("keep.example")
    pub.remove("drop.example")
    pub.remove("bad.example")
    pub.issue("*.wild.example")
    pub.publish()
    result = agent.poll_once()
    assert sorted(result.retired) == ["drop.example", "keep.example"]
    assert result.installed == ("*.wild.example",)
    assert agent.state.orders["keep.example"].removed_at is not None
    assert_saved(agent)
    clock[0] = now + 3601  # the grace period ends: deleted by a poll answered 304
    result = agent.poll_once()
    assert result.clusters[0].head == "unchanged" and result.removed == ("drop.example",)
    assert "drop.example" not in agent.state.orders and result.retired == ("keep.example",)
    assert log.read_text().count("run") == 3  # bad's rollback ran none; wild twice; drop once
    assert not (tmp_path / "copies" / "drop.example.crt").exists()
    assert_saved(agent)
    # A restart (or a reload) reads the same state and does nothing more.
    again = make_agent(pub, tmp_path, lambda: clock[0], extra)
    assert again.state == agent.state
    result = again.poll_once()
    assert not result.installed and not result.removed and result.retired == ("keep.example",)
    assert (tmp_path / "copies" / "_.wild.example.crt").read_bytes() == (
        tmp_path / "state" / "orders" / "_.wild.example" / "ecdsa.crt.pem"
    ).read_bytes()
    assert again.state == agent.state


def test_node_id_is_made_once_whole_and_an_empty_file_is_replaced(tmp_path: Path) -> None:
    state_dir = str(tmp_path / "state")
    first = node_id(state_dir)
    assert len(first) == 32 and node_id(state_dir) == first
    assert os.listdir(state_dir) == ["node-id"]  # no temporary file left beside it
    (tmp_path / "state" / "node-id").write_text("")  # as a kill mid-write once left it
    second = node_id(state_dir)
    assert second != first and (tmp_path / "state" / "node-id").read_text() == f"{second}\n"
