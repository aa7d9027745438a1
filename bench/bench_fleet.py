"""The sync's fleet check: every ack read (1,000 nodes), and only the changed ones (10,000).

``fleet_check(seaweedfs)`` (the ``fleet`` section of bench/run.py) writes 1,000 real sealed
acks (each reporting 10 installed orders; a tenth of the nodes behind, a twentieth
failing) under one cluster's ``acks/`` in SeaweedFS, then times a full read of them:
``certfleet.sync.nodereport.read_nodes`` without what an earlier check kept (list, read
``READERS`` at a time, open with the cluster secret, assess against the head) through the
same ``S3Store`` the sync uses. The store's counters give the requests and bytes. Several
trials; the median is the figure.

``changed`` (in the same section): 10,000 such acks, checked as the sync's fleet check
does (``certfleet.sync.fleetcache.AckCache`` loaded, ``read_nodes`` with what it kept,
the cache saved): a first check (every ack read), then 1 % of the acks written again, then
a second check, which reads only those. Its time, requests and CPU, split into listing,
cache and reads, and the estimate for 100,000 nodes (each part grows linearly with N at 1 %
changed: LIST pages, the cache's size, the reads) against the fleet check's share of a
300 s run.
"""

from __future__ import annotations

import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from certfleet.bundle import Ack, AckOrder, ClusterSecret, SigningKey, seal_ack
from certfleet.sandbox.devstack import SeaweedFS
from certfleet.store import S3Store
from certfleet.sync.fleetcache import AckCache
from certfleet.sync.layout import ack_key
from certfleet.sync.nodereport import READERS, Published, count_nodes, read_nodes
from certfleet.sync.sealing import SyncKeys

CLUSTER = "bench-fleet"
NODES = 1000
ORDERS_PER_ACK = 10
TRIALS = 5
SYNC_SECRET = SigningKey.generate().sync_secret("state")  # what seals the fleet cache
CHANGED_NODES = 10_000
CHANGED_SHARE = 0.01
# A 300 s run: the check gets at most half of what is left beyond the 5 s reserve.
CHECK_BUDGET_SECONDS = (300 - 5) * 0.5


def _ack(number: int, generation: int, now: int) -> Ack:
    behind = number % 10 == 0
    failing = number % 20 == 5
    orders = tuple(
        AckOrder(
            f"order-{i}.example.com",
            "failed" if failing and i == 0 else "installed",
            f"{number:08x}{i:04x}",
            "check_command 'nginx -t' exited with status 1" if failing and i == 0 else "",
        )
        for i in range(ORDERS_PER_ACK)
    )
    return Ack(
        f"node{number:04d}{os.urandom(6).hex()}",
        f"web-{number:04d}",
        generation - (3_600_000 if behind else 0),
        now - 60,
        orders,
    )


def _write(store: S3Store, secret: ClusterSecret, acks: list[Ack]) -> int:
    sealed = [(a.node_id, seal_ack(a, cluster=CLUSTER, secrets=[secret])) for a in acks]
    with ThreadPoolExecutor(READERS) as pool:
        list(pool.map(lambda item: store.put(ack_key(CLUSTER, item[0]), item[1]), sealed))
    return len(sealed[0][1])


def _check(seaweedfs: SeaweedFS, secret: ClusterSecret, published: Published, now: int,
           nodes: int) -> dict[str, Any]:  # fmt: skip
    """One fleet check as the sync does it, timed part by part, from a fresh store handle."""
    store = S3Store(seaweedfs.bucket, "bench-fleet-changed", endpoint=seaweedfs.endpoint)
    cache = AckCache(store, CLUSTER, SyncKeys(SYNC_SECRET))
    started, cpu = time.perf_counter(), time.process_time()
    known = cache.load()
    loaded = time.perf_counter()
    found = read_nodes(
        store, CLUSTER, [secret], published, now=now, stale_after=3600.0, known=known
    )
    read = time.perf_counter()
    cache.save(found.known)
    saved = time.perf_counter()
    wall = saved - started
    stats = store.stats.as_dict()
    if len(found.nodes) != nodes or found.unread:
        raise RuntimeError(f"the check saw {len(found.nodes)} of {nodes} nodes")
    return {
        "wall_seconds": round(wall, 3),
        "cpu_seconds": round(time.process_time() - cpu, 3),
        "cache_load_seconds": round(loaded - started, 3),
        "list_and_read_seconds": round(read - loaded, 3),
        "cache_save_seconds": round(saved - read, 3),
        "requests": stats["requests"],
        "lists": stats["lists"],
        "reads": stats["reads"],
        "writes": stats["writes"],
        "acks_read": found.reads,
        "bytes_in": stats["bytes_in"],
        "bytes_out": stats["bytes_out"],
        "figures": count_nodes(found.nodes),
    }


def changed_acks(seaweedfs: SeaweedFS, nodes: int = CHANGED_NODES) -> dict[str, Any]:
    """A full check of ``nodes`` acks, 1 % of them written again, a second check."""
    os.environ.update(seaweedfs.env)
    secret = ClusterSecret.generate("k1")
    now = int(time.time())
    generation = now * 1000
    writer = S3Store(seaweedfs.bucket, "bench-fleet-changed", endpoint=seaweedfs.endpoint)
    acks = [_ack(number, generation, now) for number in range(nodes)]
    started = time.perf_counter()
    ack_bytes = _write(writer, secret, acks)
    write_seconds = time.perf_counter() - started
    published = Published(generation, now - 2 * 3600, now + 86400, None)
    first = _check(seaweedfs, secret, published, now, nodes)
    changed = acks[:: int(1 / CHANGED_SHARE)]
    _write(writer, secret, [replace(a, reported_at=a.reported_at + 1) for a in changed])
    second = _check(seaweedfs, secret, published, now, nodes)
    scale = 100_000 / nodes
    estimate = second["wall_seconds"] * scale
    return {
        "nodes": nodes,
        "changed": len(changed),
        "ack_bytes": ack_bytes,
        "write_seconds": round(write_seconds, 1),
        "first_check": first,
        "second_check": second,
        "estimated_100000_nodes_seconds": round(estimate, 1),
        "check_budget_seconds_of_a_300_s_run": CHECK_BUDGET_SECONDS,
        "estimated_100000_nodes_fits": estimate < CHECK_BUDGET_SECONDS,
    }


def fleet_check(seaweedfs: SeaweedFS) -> dict[str, Any]:
    os.environ.update(seaweedfs.env)
    secret = ClusterSecret.generate("k1")
    now = int(time.time())
    generation = now * 1000
    store = S3Store(seaweedfs.bucket, "bench-fleet", endpoint=seaweedfs.endpoint)
    acks = [_ack(number, generation, now) for number in range(NODES)]
    sealed = [(a.node_id, seal_ack(a, cluster=CLUSTER, secrets=[secret])) for a in acks]
    with ThreadPoolExecutor(READERS) as pool:
        list(pool.map(lambda item: store.put(ack_key(CLUSTER, item[0]), item[1]), sealed))
    published = Published(generation, now - 2 * 3600, now + 86400, None)
    trials: list[dict[str, Any]] = []
    for _ in range(TRIALS):
        reader = S3Store(seaweedfs.bucket, "bench-fleet", endpoint=seaweedfs.endpoint)
        started = time.perf_counter()
        cpu = time.process_time()
        found = read_nodes(reader, CLUSTER, [secret], published, now=now, stale_after=3600.0)
        wall = time.perf_counter() - started
        stats = reader.stats.as_dict()
        trials.append(
            {
                "wall_seconds": round(wall, 3),
                "cpu_seconds": round(time.process_time() - cpu, 3),
                "requests": stats["requests"],
                "lists": stats["lists"],
                "reads": stats["reads"],
                "bytes_in": stats["bytes_in"],
                "figures": count_nodes(found.nodes),
            }
        )
    median = statistics.median(trial["wall_seconds"] for trial in trials)
    try:
        changed: dict[str, Any] = changed_acks(seaweedfs)
    except Exception as err:  # noqa: BLE001 (recorded; the full-read figures stand)
        changed = {"error": f"{type(err).__name__}: {err}"}
    return {
        "changed": changed,
        "nodes": NODES,
        "orders_per_ack": ORDERS_PER_ACK,
        "readers": READERS,
        "ack_bytes": len(sealed[0][1]),
        "median_wall_seconds": median,
        "trials": trials,
    }
