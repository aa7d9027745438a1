"""The sync killed with SIGKILL at random points, again and again: nothing is lost.

``ITERATIONS`` seeded rounds. Each round changes the provider side (a new order, an edit,
a removal or a rekey, drawn from the seed), starts ``certfleet sync --once -vv`` as a real
subprocess and, once it has taken its lease (its debug log says so), kills it with SIGKILL
after a seeded random fraction of the time the last complete run worked (so the kills
spread over the whole run; some runs finish first).
After each round the test plays the next scheduler tick finding the dead run's lease
expired, and checks what the store and the provider hold:

- no lost key: every CSR the provider ever received is for a key the sync held (seen in
  its encrypted state, pending or published, at some check): a CSR for a key the sync no
  longer has would be a certificate nobody can use;
- no lost publication: the head's generation never decreases, and every published bundle
  opens, its key matches its certificate, and its certificate covers its DNS names;

and after the last round one clean run converges: every order of the cluster is published
with its current names, each with a key the provider issued for, and a second run has
nothing to do. The store is a local directory (real atomic conditional writes) to keep the
rounds fast; the same flows run against SeaweedFS in tests/integration/test_fault_store.py.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509

from certfleet.bundle import peek_head
from certfleet.store import ObjectNotFound
from certfleet.sync import mark_rekey
from certfleet.sync.keypair import load_private_key, pubkey_hash, spki_hash
from certfleet.sync.lease import Lease
from tests.plugins.faults import Ledger
from tests.plugins.sandbox import Sandbox
from tests.plugins.sync_world import World, make_world, sync_config_text

ITERATIONS = 50
SEED = 20240611
WORK_GUESS = 0.3  # seconds a run works after taking its lease, until one is measured
START_TIMEOUT = 30.0


def provider_csrs(sandbox: Sandbox, cluster: str) -> dict[str, list[str]]:
    """Every pubkey hash the sandbox received a CSR for, by order (its own records)."""
    found: dict[str, list[str]] = {}
    for path in (sandbox.data_dir / "orders").glob("*.json"):
        order = json.loads(path.read_text())
        if order["cluster"] == cluster:
            found[order["name"]] = [cert["pubkey_hash"] for cert in order["certs"]]
    return found


def provider_orders(world: World) -> dict[str, tuple[str, ...]]:
    provider = world.provider()
    try:
        return {o.name: o.dns_names for o in provider.list_orders(world.cluster)}
    finally:
        provider.close()


class Observer:
    """What the checks remember between rounds: keys the sync held, the last generation."""

    def __init__(self, world: World, faults: Ledger) -> None:
        self.world = world
        self.faults = faults
        self.known: set[str] = set()
        self.generation = 0

    def expire_lease(self) -> None:
        """The next tick, long after the dead run's lease ran out: take it over, release."""
        later = Lease(self.world.store, self.world.cluster, duration=1.0,
                      clock=lambda: time.time() + 3600,
                      secret=self.world.sync_keys().current)  # fmt: skip
        later.acquire()
        later.release()

    def check(self, label: str) -> None:
        state = self.world.state()
        self.known |= {record.pubkey_hash for record in state.pending.values()}
        self.known |= {record.pubkey_hash for record in state.orders.values()}
        try:
            generation = peek_head(self.world.head_bytes()).generation
        except ObjectNotFound:
            generation = 0
        if generation < self.generation:
            self.faults.lost(f"{label}: generation fell from {self.generation} to {generation}")
        self.generation = generation
        if generation:
            for name, bundle in self.world.published().bundles.items():
                leaf = x509.load_pem_x509_certificate(bundle.certificate_pem)
                key_hash = pubkey_hash(load_private_key(bundle.private_key_pem))
                if spki_hash(leaf.public_key()) != key_hash:  # type: ignore[arg-type]
                    self.faults.lost(f"{label}: {name}: published key does not match its cert")
                self.known.add(key_hash)
        for order, hashes in provider_csrs(self.world.sandbox, self.world.cluster).items():
            for key_hash in hashes:
                if key_hash not in self.known:
                    self.faults.lost(f"{label}: {order}: CSR for key {key_hash[:12]} was lost")


def wait_for_lease(process: subprocess.Popen[bytes], log: Path) -> bool:
    """Wait until the run logs that it took its lease (True), or ends first (False)."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if b"lease taken" in log.read_bytes():
            return True
        if process.poll() is not None:
            return False
        time.sleep(0.005)
    raise AssertionError(f"the sync did not start: {log.read_text(errors='replace')[-2000:]}")


def change_provider(world: World, rng: random.Random, number: int) -> str:
    """One seeded change on the provider side; returns what it was."""
    orders = sorted(provider_orders(world))
    roll = rng.random()
    if not orders or roll < 0.55:
        return "add " + world.add(f"k{number}.{world.cluster}.example")
    name = rng.choice(orders)
    if roll < 0.7:
        world.edit(name, name, f"extra{number}.{world.cluster}.example")
        return f"edit {name}"
    if roll < 0.8:
        world.remove(name)
        return f"remove {name}"
    mark_rekey(world.config(), world.cluster, [name], store=world.store)
    return f"rekey {name}"


@pytest.mark.fault
def test_sigkill_at_random_points_loses_no_key_order_or_publication(
    sandbox: Sandbox, tmp_path: Path, faults: Ledger
) -> None:
    world = make_world(sandbox, (tmp_path / "store").as_uri(), "")
    config = tmp_path / "sync.conf"
    config.write_text(sync_config_text(world))
    config.chmod(0o600)
    rng = random.Random(SEED)
    observer = Observer(world, faults)
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    killed = finished = 0
    work = WORK_GUESS
    for number in range(ITERATIONS):
        change = change_provider(world, rng, number)
        fraction = rng.random()
        log = tmp_path / f"sync{number}.log"
        with log.open("wb") as err:
            process = subprocess.Popen(
                [sys.executable, "-m", "certfleet", "sync", "--once", "-vv", "--config",
                 str(config)],
                stdout=subprocess.DEVNULL, stderr=err, env=env,
            )  # fmt: skip
        delay = 0.0
        if wait_for_lease(process, log):
            started = time.monotonic()
            delay = fraction * work * 1.1
            try:
                process.wait(delay)
                work = time.monotonic() - started
            except subprocess.TimeoutExpired:
                pass
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            faults.injected()
            killed += 1
        else:
            finished += 1
        process.wait(60)
        if process.returncode not in (0, -signal.SIGKILL):  # only order-level errors
            assert process.returncode == 1, log.read_text(errors="replace")[-3000:]
        observer.expire_lease()
        observer.check(f"round {number} ({change}, {delay:.2f}s)")
    assert killed >= ITERATIONS // 2, (killed, finished)

    # the final clean run converges
    summary = world.sync()
    assert summary.errors == {}, summary.errors
    observer.check("final run")
    seen = world.published()
    wanted = provider_orders(world)
    assert set(seen.entries) == set(wanted)
    csrs = provider_csrs(sandbox, world.cluster)
    for name, names in wanted.items():
        bundle = seen.bundles[name]
        assert bundle.dns_names == names, name
        assert pubkey_hash(load_private_key(bundle.private_key_pem)) in csrs[name]
    quiet = world.sync()
    assert quiet.heads_published == 0 and quiet.keys_generated == 0 and quiet.errors == {}, (
        quiet.as_dict(),
        summary.as_dict(),
    )
    print(f"SIGKILL rounds: {ITERATIONS}, killed {killed}, finished {finished}")
