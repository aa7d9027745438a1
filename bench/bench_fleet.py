"""The sync's fleet check at 1,000 nodes: one LIST and one GET per ack, from SeaweedFS.

``fleet_check(seaweedfs)`` (the ``fleet`` section of bench/run.py) writes 1,000 real sealed
acks (each reporting 10 installed orders; a tenth of the nodes behind, a twentieth
failing) under one cluster's ``acks/`` in SeaweedFS, then times what a sync run's fleet
check does with them: ``certfleet.sync.fleet.read_nodes`` (list, read ``READERS`` at a
time, open with the cluster secret, assess against the head) through the same ``S3Store``
the sync uses. The store's counters give the requests and bytes. Several trials; the
median is the figure.
"""

from __future__ import annotations

import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from certfleet.bundle import Ack, AckOrder, ClusterSecret, seal_ack
from certfleet.devstack import SeaweedFS
from certfleet.store import S3Store
from certfleet.sync.fleet import READERS, Published, count_nodes, read_nodes
from certfleet.sync.layout import ack_key

CLUSTER = "bench-fleet"
NODES = 1000
ORDERS_PER_ACK = 10
TRIALS = 5


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
    return {
        "nodes": NODES,
        "orders_per_ack": ORDERS_PER_ACK,
        "readers": READERS,
        "ack_bytes": len(sealed[0][1]),
        "median_wall_seconds": median,
        "trials": trials,
    }
