"""certfleet.registry on a file:// store and on SeaweedFS: the order calls, conditional writes
under concurrent writers, the sealing (a node's forgery or a foreign secret is refused), and
what the untrusted store sees (no order or DNS name in a key or in the bytes); the
revision every write raises, and a held registry refusing a delete or an older copy."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from certfleet.bundle import ClusterSecret, SigningKey, seal
from certfleet.registry import (
    Identifier,
    OrderExists,
    OrderRegistry,
    RegistryError,
    RegistryNotFound,
    RegistryOrder,
    RegistryRead,
    RegistryRolledBack,
    UnknownCluster,
    descends,
    registry_key,
)
from certfleet.registry.registry import MAX_HISTORY
from certfleet.store import Store, open_store
from tests.plugins.seaweedfs import SeaweedFS

SECRET = SigningKey.generate().sync_secret("registry")
HTTP = Identifier("example.com", "http")
WWW = Identifier("www.example.com", "http")


@pytest.fixture(params=["file", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "file":
        (tmp_path / "store").mkdir()
        yield open_store(f"file://{tmp_path / 'store'}")
    else:
        seaweedfs: SeaweedFS = request.getfixturevalue("seaweedfs")
        yield open_store(request.getfixturevalue("s3_url"), endpoint=seaweedfs.endpoint)


def registry(store: Store, clusters: tuple[str, ...] = ("web", "mail")) -> OrderRegistry:
    return OrderRegistry(store, SECRET, clusters, clock=lambda: 1_700_000_000.0)


def test_create_get_list_edit_delete(store: Store) -> None:
    orders = registry(store)
    assert orders.list("web") == ()
    made = orders.create("web", [HTTP, WWW])
    assert (made.name, made.cluster, made.dns_names) == (
        "example.com",
        "web",
        ("example.com", "www.example.com"),
    )
    orders.create("web", [Identifier("*.b.example", "dns")], name="b")
    assert [o.name for o in orders.list("web")] == ["b", "example.com"]
    assert orders.list("mail") == ()
    assert orders.get("example.com") == made
    wild = Identifier("*.example.com", "dns")
    changed = orders.set_identifiers("example.com", [HTTP, wild])
    assert changed.identifiers == (HTTP, wild)
    assert registry(store).get("example.com").identifiers == (HTTP, wild)
    orders.delete("example.com")
    with pytest.raises(RegistryNotFound):
        orders.get("example.com")
    with pytest.raises(RegistryNotFound):
        orders.delete("example.com")
    assert [o.name for o in orders.list("web")] == ["b"]


def test_names_are_one_namespace_and_rules_hold(store: Store) -> None:
    orders = registry(store)
    orders.create("web", [HTTP])
    with pytest.raises(OrderExists) as caught:
        orders.create("web", [WWW], name="example.com")
    assert "already exists" in str(caught.value)
    with pytest.raises(OrderExists):
        orders.create("mail", [HTTP])
    with pytest.raises(UnknownCluster):
        orders.create("elsewhere", [WWW])
    with pytest.raises(UnknownCluster):
        orders.list("elsewhere")
    with pytest.raises(Exception, match="wildcard"):
        orders.create("web", [Identifier("*.x.example", "http")])
    with pytest.raises(Exception, match="DNS name"):
        orders.create("web", [Identifier("../x", "http")])


def test_the_store_sees_neither_order_nor_dns_names(store: Store) -> None:
    registry(store).create("web", [Identifier("secret-customer.example", "http")])
    assert list(store.list("v1/")) == ["v1/sync/orders/web"]
    assert registry_key("web") == "v1/sync/orders/web"
    stored = store.get("v1/sync/orders/web", max_bytes=1 << 25)
    assert b"secret-customer" not in stored.data


def test_two_concurrent_creates_of_one_name_one_wins(store: Store) -> None:
    barrier = threading.Barrier(8)
    outcomes: list[str] = []

    def attempt(index: int) -> None:
        mine = registry(store)  # one handle each, as separate processes would have
        barrier.wait()
        try:
            mine.create("web", [Identifier(f"n{index}.example", "http")], name="contested")
            outcomes.append("created")
        except OrderExists:
            outcomes.append("exists")

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(outcomes) == ["created"] + ["exists"] * 7
    assert [o.name for o in registry(store).list("web")] == ["contested"]


def test_concurrent_creates_of_different_names_all_land(store: Store) -> None:
    barrier = threading.Barrier(6)

    def attempt(index: int) -> None:
        mine = registry(store)
        barrier.wait()
        mine.create("web", [Identifier(f"host{index}.example", "http")])

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(registry(store).list("web")) == 6


def test_a_forged_or_foreign_registry_is_refused_never_read_as_empty(store: Store) -> None:
    registry(store).create("web", [HTTP])
    node_secret = ClusterSecret.generate("k1")  # what a node holds: a cluster secret
    with pytest.raises(RegistryError, match="cannot be opened"):
        OrderRegistry(store, node_secret, ("web",)).list("web")
    forged = {"version": 1, "orders": []}
    store.put(
        "v1/sync/orders/web",
        seal("registry", "web", "/orders", json.dumps(forged).encode(), [node_secret]),
    )
    with pytest.raises(RegistryError):
        registry(store).list("web")
    moved = seal("registry", "mail", "/orders", json.dumps(forged).encode(), [SECRET])
    store.put("v1/sync/orders/web", moved)  # another cluster's object, moved
    with pytest.raises(RegistryError, match="cannot be opened"):
        registry(store).list("web")
    hostile = {
        "version": 1,
        "orders": [
            {
                "name": "../../etc",
                "cluster": "web",
                "identifiers": [{"value": "a.example", "approval": "http"}],
                "created_at": 1,
                "updated_at": 1,
            }
        ],
    }
    store.put(
        "v1/sync/orders/web",
        seal("registry", "web", "/orders", json.dumps(hostile).encode(), [SECRET]),
    )
    with pytest.raises(RegistryError, match="malformed"):
        registry(store).list("web")


def test_after_a_signing_key_rotation_reseal_makes_the_registry_open_again(
    store: Store,
) -> None:
    registry(store).create("web", [HTTP, WWW])
    new_secret = SigningKey.generate().sync_secret("registry")
    with pytest.raises(RegistryError, match="cannot be opened"):
        OrderRegistry(store, new_secret, ("web",)).list("web")
    rotating = OrderRegistry(store, new_secret, ("web", "mail"), previous=[SECRET])
    assert rotating.get("example.com").dns_names == ("example.com", "www.example.com")
    assert rotating.reseal("web") == 1
    assert rotating.reseal("mail") == 0  # no object yet: nothing to do
    rotated = OrderRegistry(store, new_secret, ("web",))
    assert rotated.get("example.com").dns_names == ("example.com", "www.example.com")
    assert rotated.reseal("web") == 1  # already resealed: left as it is
    with pytest.raises(RegistryError):
        registry(store).list("web")  # the old secret opens it no more


def test_every_write_raises_the_revision_and_a_held_registry_cannot_go_back(
    store: Store,
) -> None:
    orders = registry(store)
    assert orders.read("web").revision == 0  # no object
    orders.create("web", [HTTP])
    assert orders.read("web").revision == 1
    orders.set_identifiers("example.com", [HTTP, WWW])
    orders.set_identifiers("example.com", [HTTP, WWW])  # unchanged: no write
    assert orders.read("web").revision == 2
    copy = store.get("v1/sync/orders/web", max_bytes=1 << 20).data
    orders.create("web", [Identifier("c.example", "http")])
    orders.delete("c.example")
    assert orders.read("web").revision == 4

    history = orders.read("web").history
    assert len(history) == 4 and len(set(history)) == 4 and len(history[-1]) == 16
    acted = history[-1]
    sync = registry(store)
    sync.hold("web", 4, acted)
    assert [o.name for o in sync.list("web")] == ["example.com"]
    assert sync.revision("web") == (4, acted)
    orders.create("web", [Identifier("d.example", "http")])
    sync.list("web")
    assert sync.revision("web") == (5, orders.read("web").write_id)  # the last read since
    sync.hold("web", 4, acted)
    store.put("v1/sync/orders/web", copy)  # an older copy, written back
    with pytest.raises(RegistryRolledBack, match=r"revision 2 \(an old copy\)") as old:
        sync.list("web")
    assert (old.value.found, old.value.held) == (2, 4)
    assert "v1/sync/orders/web" in str(old.value) and "registry restore" in str(old.value)
    store.delete("v1/sync/orders/web")
    with pytest.raises(RegistryRolledBack, match="missing"):
        sync.get("example.com")  # never "no such order"
    assert orders.list("web") == ()  # not held: as before, no object is no order
    for index in range(6):  # made anew by the order API, up to a higher revision
        orders.create("web", [Identifier(f"n{index}.example", "http")])
    assert orders.read("web").revision == 6
    with pytest.raises(RegistryRolledBack, match="does not descend") as anew:
        sync.list("web")
    assert anew.value.forked
    store.put("v1/sync/orders/web", copy)  # the old copy again, written over up to 6
    for index in range(4):
        orders.create("web", [Identifier(f"f{index}.example", "http")])
    assert orders.read("web").revision == 6
    with pytest.raises(RegistryRolledBack, match="does not descend"):
        sync.list("web")

    restored = sync.restore("web", [orders_of(HTTP)], after=4, write_id=acted)
    assert (restored.revision, restored.history[0]) == (5, acted)
    assert [o.name for o in sync.list("web")] == ["example.com"]
    store.put("v1/sync/orders/web", b"garbage a node wrote")
    written = sync.restore("web", [orders_of(WWW)], after=5, write_id=restored.write_id)
    assert written.revision == 6
    assert sync.get("www.example.com").dns_names == ("www.example.com",)


def test_a_registry_without_revision_reads_as_the_first_and_gets_one_at_its_next_write(
    store: Store,
) -> None:
    old = {"version": 1, "orders": []}
    store.put(
        "v1/sync/orders/web", seal("registry", "web", "/orders", json.dumps(old).encode(), [SECRET])
    )
    orders = registry(store)
    assert (orders.read("web").revision, orders.read("web").history) == (1, ())
    orders.create("web", [HTTP])
    assert orders.read("web").revision == 2 and len(orders.read("web").history) == 1
    sealed = {"version": 1, "revision": 0, "orders": []}
    store.put(
        "v1/sync/orders/web",
        seal("registry", "web", "/orders", json.dumps(sealed).encode(), [SECRET]),
    )
    with pytest.raises(RegistryError, match="revision is not a positive integer"):
        orders.list("web")


def orders_of(ident: Identifier) -> RegistryOrder:
    return RegistryOrder(ident.value, "web", (ident,), 1, 1)


def test_descends_checks_the_write_acted_on_as_far_back_as_the_history_reaches() -> None:
    found = RegistryRead((), 7, ("a1", "b2", "c3"))  # the writes of revisions 5, 6 and 7
    assert descends(found, 7, "c3") and descends(found, 5, "a1")
    assert not descends(found, 6, "a1") and not descends(found, 8, "c3")  # fork; older
    assert descends(found, 4, "ff") and descends(found, 6, "")  # beyond the history; unknown
    assert not descends(RegistryRead((), 0), 1, "")  # missing after one was seen
    assert MAX_HISTORY == 256
