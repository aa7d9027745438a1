"""Owed on_update commands in the fleet check: read from the ack's declared ``owed`` list,
and from the wording of an old agent's ``detail`` when the ack has no such list."""

from __future__ import annotations

from pathlib import Path

from certfleet.bundle import Ack, AckOrder, ClusterSecret, OwedUpdate, seal_ack
from certfleet.bundle.layout import ack_key
from certfleet.store import Store, open_store
from certfleet.sync.nodereport import NodeReport, Published, read_nodes

CLUSTER = "web"
GENERATION = 1_700_000_000_000
SECRET = ClusterSecret.generate("k1")


def write_ack(store: Store, ack: Ack) -> None:
    store.put(ack_key(CLUSTER, ack.node_id), seal_ack(ack, cluster=CLUSTER, secrets=[SECRET]))


def read(store: Store) -> dict[str, NodeReport]:
    published = Published(GENERATION, 1_700_000_000, 1_700_086_400, None)
    found = read_nodes(store, CLUSTER, [SECRET], published, now=1_700_000_100, stale_after=3600)
    return {node.node_id: node for node in found.nodes}


def test_owed_commands_come_from_the_declared_list_whatever_the_detail_says(
    tmp_path: Path,
) -> None:
    store = open_store(f"file://{tmp_path}")
    reworded = AckOrder("a.example", "installed", "0a", "the reload hook keeps failing")
    fine = AckOrder("b.example", "installed", "0b", "on_update 'not owed' mentioned in passing")
    owed = (OwedUpdate("a.example", "systemctl reload nginx"),)
    write_ack(store, Ack("n-new", "web-1", GENERATION, 1_700_000_060, (reworded, fine), owed))
    node = read(store)["n-new"]
    assert node.owed == ("systemctl reload nginx",)
    assert node.failed == (reworded,)
    assert node.problems == ("failing",)


def test_an_old_agents_ack_is_read_from_its_detail_wording(tmp_path: Path) -> None:
    store = open_store(f"file://{tmp_path}")
    old = AckOrder("a.example", "installed", "0a", "on_update 'echo no >&2; exit 3' exit status 3")
    write_ack(store, Ack("n-old", "web-2", GENERATION, 1_700_000_060, (old,)))
    write_ack(
        store,
        Ack(
            "n-ok", "web-3", GENERATION, 1_700_000_060, (AckOrder("a.example", "installed", "0a"),)
        ),
    )
    nodes = read(store)
    assert nodes["n-old"].ack is not None and nodes["n-old"].ack.owed is None
    assert nodes["n-old"].owed == ("echo no >&2; exit 3",)
    assert nodes["n-old"].failed == (old,)
    assert nodes["n-ok"].owed == () and nodes["n-ok"].problems == ()
