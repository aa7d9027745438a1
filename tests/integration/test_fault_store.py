"""Faults on the wire: SeaweedFS stopped in the middle of sync runs and agent polls, and the
sandbox at a high fault rate with latency.

Each test injects its faults at a named point (a sync checkpoint, the n-th store read of
an agent poll, the sandbox's seeded fault plan), then lets the system recover and checks
that it converges with nothing lost: every order published once with one key, the
generation rising, the agent's files complete and matching the publication.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Callable

import pytest

from certfleet.config import parse_agent_config
from certfleet.store import Store, StoredObject
from node_agent.agent import Agent
from tests.plugins.faults import Ledger, agent_config_text, cluster_stanza, installed_orders
from tests.plugins.sandbox import Sandbox
from tests.plugins.seaweedfs import SeaweedFS
from tests.plugins.sync_world import World, make_world

OUTAGE_STEPS = ("csr", "shard")  # where the store goes down
HIGH_FAULT_RATE = 0.5
LATENCY = 0.02
FAULTY_ORDERS = 4
MAX_RUNS = 12


@pytest.fixture
def store_back_up(seaweedfs: SeaweedFS) -> Iterator[SeaweedFS]:
    """SeaweedFS, restarted at teardown whatever the test did to it."""
    yield seaweedfs
    seaweedfs.start()


def agent_for(world: World, tmp: Path, *, store: Store | None = None, endpoint: str = "") -> Agent:
    stanza = cluster_stanza(world.cluster, world.secrets, [world.signing_key.public_key()])
    text = agent_config_text(world.store.url, tmp / "state", stanza, endpoint=endpoint)
    return Agent(parse_agent_config(text, str(tmp / "agent.conf")), store=store)


def served_keys(tmp: Path) -> dict[str, bytes]:
    return {name: item.key_pem for name, item in installed_orders(tmp / "state").items()}


@pytest.mark.fault
def test_store_stopped_mid_sync_then_restarted_converges(
    sandbox: Sandbox, s3_url: str, store_back_up: SeaweedFS, faults: Ledger
) -> None:
    seaweedfs = store_back_up
    world = make_world(sandbox, s3_url, seaweedfs.endpoint)
    world.settings["lease_duration"] = 30.0
    first = world.add(f"first.{world.cluster}.example")
    assert world.sync().errors == {}
    generation = world.published().head.generation
    names = {first}
    for step in OUTAGE_STEPS:
        names.add(world.add(f"{step}.{world.cluster}.example"))

        def outage(reached: str, step: str = step) -> None:
            if reached == step and seaweedfs.running:
                seaweedfs.stop()
                faults.injected()

        failed = world.sync(checkpoint=outage)
        assert not seaweedfs.running
        assert failed.errors, f"a run that lost its store at {step!r} reported nothing"
        seaweedfs.start()
        world.offset += world.config().lease_duration + 1  # the lease could not be released
        summary = world.sync()
        assert summary.errors == {}, (step, summary.errors)
        seen = world.published()
        assert set(seen.entries) == names, step
        assert seen.head.generation > generation, step
        generation = seen.head.generation
    csrs = provider_csr_counts(sandbox, world.cluster)
    assert all(count == 1 for count in csrs.values()), f"an order got two keys: {csrs}"


class OutageAfter:
    """The real store, stopped (the SeaweedFS process) after ``reads`` successful reads."""

    def __init__(self, inner: Store, seaweedfs: SeaweedFS, reads: int) -> None:
        self.inner = inner
        self.seaweedfs = seaweedfs
        self.left = reads
        self.url = inner.url
        self.readonly = inner.readonly
        self.stats = inner.stats

    def get(self, key: str, *, max_bytes: int) -> StoredObject:
        self._read()
        return self.inner.get(key, max_bytes=max_bytes)

    def get_if_changed(self, key: str, *, max_bytes: int, etag: str) -> StoredObject | None:
        self._read()
        return self.inner.get_if_changed(key, max_bytes=max_bytes, etag=etag)

    def _read(self) -> None:
        if self.left == 0 and self.seaweedfs.running:
            self.seaweedfs.stop()
        self.left -= 1

    def __getattr__(self, name: str) -> Callable[..., object]:
        return getattr(self.inner, name)  # type: ignore[no-any-return]


@pytest.mark.fault
def test_store_stopped_mid_poll_keeps_files_and_the_next_poll_completes(
    sandbox: Sandbox, s3_url: str, store_back_up: SeaweedFS, tmp_path: Path, faults: Ledger
) -> None:
    seaweedfs = store_back_up
    world = make_world(sandbox, s3_url, seaweedfs.endpoint)
    names = [world.add(f"{x}.{world.cluster}.example") for x in ("a", "b", "c")]
    assert world.sync().errors == {}
    endpoint = seaweedfs.endpoint
    assert agent_for(world, tmp_path, endpoint=endpoint).poll_once().ok
    first = served_keys(tmp_path)
    for name in names:
        world.edit(name, name, f"www.{name}")
    assert world.sync().errors == {}
    published = {n: b.private_key_pem for n, b in world.published().bundles.items()}
    # reads of the poll: the head, changed shards, then bundles; stop after 1 and 3
    for reads in (1, 3):
        faulty = OutageAfter(agent_for(world, tmp_path, endpoint=endpoint).store, seaweedfs, reads)
        agent = agent_for(world, tmp_path, store=faulty, endpoint=endpoint)  # type: ignore[arg-type]
        result = agent.poll_once()
        faults.injected()
        assert not result.ok, reads
        now = served_keys(tmp_path)
        assert set(now) == set(first), "files lost in an outage"
        assert all(now[n] in (first[n], published[n]) for n in now)
        assert not seaweedfs.running
        seaweedfs.start()
    result = agent_for(world, tmp_path, endpoint=endpoint).poll_once()
    assert result.ok, result.problems
    assert served_keys(tmp_path) == published


def provider_csr_counts(sandbox: Sandbox, cluster: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for path in (sandbox.data_dir / "orders").glob("*.json"):
        order = json.loads(path.read_text())
        if order["cluster"] == cluster:
            counts[order["name"]] = len(order["certs"])
    return counts


@pytest.mark.fault
def test_sandbox_at_a_high_fault_rate_with_latency_converges_without_duplicates(
    make_sandbox: Callable[..., Sandbox], sandbox: Sandbox, tmp_path: Path, faults: Ledger
) -> None:
    seed = random.Random(11).randrange(1 << 30)
    faulty = make_sandbox(fault_rate=HIGH_FAULT_RATE, latency=LATENCY, seed=seed)
    world = make_world(faulty, (tmp_path / "store").as_uri(), "")
    names = set()
    for number in range(FAULTY_ORDERS):  # created through the faults, retried until made
        for _ in range(MAX_RUNS):
            try:
                names.add(world.add(f"o{number}.{world.cluster}.example"))
                break
            except Exception:
                if f"o{number}.{world.cluster}.example" in orders_of(faulty, world.cluster):
                    names.add(f"o{number}.{world.cluster}.example")
                    break
    assert len(names) == FAULTY_ORDERS
    runs = 0
    while runs < MAX_RUNS:
        runs += 1
        summary = world.sync()
        if summary.errors == {} and summary.complete:
            published = set(world.published().entries) if world.keys() else set()
            if published == names:
                break
        world.offset += world.config().lease_duration + 1
    assert set(world.published().entries) == names, f"not converged after {runs} runs"
    injected = faulty.log_path.read_text().count("injecting fault")
    faults.injected(injected)
    assert injected > 0
    counts = provider_csr_counts(faulty, world.cluster)
    assert all(count == 1 for count in counts.values()), f"duplicate CSRs: {counts}"


def orders_of(sandbox: Sandbox, cluster: str) -> set[str]:
    names = set()
    for path in (sandbox.data_dir / "orders").glob("*.json"):
        order = json.loads(path.read_text())
        if order["cluster"] == cluster:
            names.add(order["name"])
    return names
