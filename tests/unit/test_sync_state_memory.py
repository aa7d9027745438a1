"""The sync's state at scale: its bytes are the canonical JSON document they always were,
and loading or saving a large state stays within a small multiple of its size.

A no-change sync of 100,000 orders must fit a 512 MB Lambda (docs/performance.md
"Scale"): the state's load must not hold its sealed bytes, its plaintext, a parsed JSON
tree and its records all at once, nor keep its plaintext for the run, and a save of a
state that did not change must not encode it whole. Memory is measured with
``tracemalloc`` (Python's own allocations: deterministic, unlike times).
"""

from __future__ import annotations

import hashlib
import json
import os
import tracemalloc
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import pytest

from certfleet.bundle import SigningKey
from certfleet.store import Store, open_store
from certfleet.sync.errors import StateError
from certfleet.sync.layout import state_key
from certfleet.sync.sealing import SyncKeys
from certfleet.sync.state import (
    IDENTITY,
    KIND,
    ClusterState,
    HeadRecord,
    OrderRecord,
    PendingRecord,
    ShardRecord,
    StateStore,
)

CLUSTER = "web"
KEYS = SyncKeys(SigningKey.generate().sync_secret("state"))
ORDERS = 20_000


def record(index: int) -> OrderRecord:
    name = f"host{index}.web.test"
    return OrderRecord(
        (name, f"alt.{name}") if index % 7 == 0 else (name,),
        "rsa" if index % 3 == 0 else "ecdsa",
        os.urandom(32).hex(), os.urandom(32).hex(), os.urandom(16).hex(),
        1_700_000_000 + index, 1_800_000_000 + index, 1_700_000_100 + index,
        ("k1", "k2") if index % 2 else ("k1",),
    )  # fmt: skip


def large_state(orders: int) -> ClusterState:
    state = ClusterState.new()
    for index in range(orders):
        state.orders[record(index).dns_names[0]] = record(index)
    return state


def canonical(state: ClusterState) -> bytes:
    """The state's document as the state format defines it: one JSON document, keys
    sorted, no spaces."""
    document = {
        "version": 1,
        "shard_key": state.shard_key.hex(),
        "orders": {name: asdict(rec) for name, rec in state.orders.items()},
        "pending": {name: asdict(rec) for name, rec in state.pending.items()},
        "tombstones": state.tombstones,
        "rekey": sorted(state.rekey),
        "shards": [asdict(rec) for rec in state.shards],
        "shard_secret_ids": list(state.shard_secret_ids),
        "head": None if state.head is None else asdict(state.head),
        "unreferenced": state.unreferenced,
        "last_sweep": state.last_sweep,
        "last_fleet_check": state.last_fleet_check,
    }
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return open_store((tmp_path / "store").as_uri())


@pytest.fixture
def traced() -> Iterator[None]:
    tracemalloc.start()
    try:
        yield
    finally:
        tracemalloc.stop()


def test_the_encoding_is_the_canonical_document_and_decodes_to_the_same_state() -> None:
    state = large_state(50)
    state.pending["p.web.test"] = PendingRecord(
        "aa" * 32, "bb" * 32, ("p.web.test",), "rsa", 5, "new"
    )
    state.tombstones.update({"gone.web.test": 7, "old.web.test": 3})
    state.rekey.update({"host1.web.test", "host0.web.test"})
    state.shards = [ShardRecord("cc" * 32, "dd" * 32), ShardRecord("ee" * 32, "ff" * 32)]
    state.shard_secret_ids = ("k1", "k2")
    state.head = HeadRecord(12, 34, 56, ("k1",))
    state.unreferenced = {"v1/x": 9}
    state.last_sweep, state.last_fleet_check = 11, 22
    for each in (state, ClusterState.new()):
        encoded = each.encode()
        assert encoded == canonical(each)
        assert each.digest() == hashlib.sha256(encoded).digest()
        again = ClusterState.decode(encoded)
        assert again == each and again.encode() == encoded
    # equal key types and secret id tuples are shared between the decoded records
    decoded = list(ClusterState.decode(state.encode()).orders.values())
    assert len({id(rec.key_type) for rec in decoded}) == 2
    assert len({id(rec.secret_ids) for rec in decoded}) == 2


@pytest.mark.parametrize("where", ["pending", "unreferenced", "tombstones", "head"])
def test_an_order_record_where_none_belongs_is_refused(store: Store, where: str) -> None:
    """Records are made while the JSON is parsed, from any object with exactly an order
    record's fields: one in another place must still be refused, not taken."""
    document = json.loads(large_state(2).encode())
    document[where] = (
        asdict(record(5)) if where == "head" else {"host5.web.test": asdict(record(5))}
    )
    plain = json.dumps(document).encode()
    store.put(state_key(CLUSTER), KEYS.seal(KIND, CLUSTER, IDENTITY, plain))
    with pytest.raises(StateError, match="not valid JSON of this version"):
        StateStore(store, CLUSTER, KEYS).load(now_ms=0)


@pytest.mark.usefixtures("traced")
def test_a_large_state_loads_without_holding_its_sealed_bytes_or_plaintext(store: Store) -> None:
    state = large_state(ORDERS)
    size = len(state.encode())
    StateStore(store, CLUSTER, KEYS).save(state)
    del state
    stores = StateStore(store, CLUSTER, KEYS)
    tracemalloc.reset_peak()
    before, _ = tracemalloc.get_traced_memory()
    loaded = stores.load(now_ms=0)
    after, peak = tracemalloc.get_traced_memory()
    assert len(loaded.orders) == ORDERS
    # kept: the records only (before: the records as dicts and the plaintext, 3.4 times the size)
    assert after - before < 2.3 * size
    # at most: the plaintext as bytes and as text, and the records (before: 6 times)
    assert peak - before < 4.5 * size


@pytest.mark.usefixtures("traced")
def test_an_unchanged_large_state_is_saved_by_digest_without_encoding_it_whole(
    store: Store,
) -> None:
    stores = StateStore(store, CLUSTER, KEYS)
    state = stores.load(now_ms=0)
    state.orders.update((rec.dns_names[0], rec) for rec in map(record, range(ORDERS)))
    size = len(state.encode())
    assert stores.save(state)
    writes = store.stats.as_dict()["writes"]
    tracemalloc.reset_peak()
    before, _ = tracemalloc.get_traced_memory()
    assert not stores.save(state)
    _, peak = tracemalloc.get_traced_memory()
    assert store.stats.as_dict()["writes"] == writes
    assert peak - before < size / 20  # before: a JSON tree and the encoding, 4 times the size
    # a change is still seen, and written: its plaintext is let go once encrypted, so the
    # save holds two copies of the state's size at most (before: three, and a JSON tree)
    state.orders.pop("host3.web.test")
    tracemalloc.reset_peak()
    before, _ = tracemalloc.get_traced_memory()
    assert stores.save(state)
    _, peak = tracemalloc.get_traced_memory()
    assert peak - before < 2.3 * size
    assert StateStore(store, CLUSTER, KEYS).load(now_ms=0) == state
