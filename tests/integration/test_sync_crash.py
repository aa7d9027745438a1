"""A crash injected after every durable step of a run, then a rerun: the sync converges.

The run under test rekeys one published order, issues a new one and tombstones a removed
one. For every step k a fresh world crashes the run at step k (a ``BaseException``, like
a killed process: the lease is not released), moves the clock past the lease, reruns, and
checks: every CSR'd key was stored in the sync state before its CSR (no lost key), no key
is submitted twice and each order gets exactly one new key (no second CSR), the final
generation is above every generation written before (none lost), and the published state
is what a clean run gives. A final run then has nothing to do.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

from certfleet.bundle import peek_head
from certfleet.store import ObjectNotFound
from certfleet.sync import IssuedCert, Provider, ProviderOrder, mark_rekey, run_sync
from certfleet.sync.apiv3_provider import ApiV3Provider
from certfleet.sync.keypair import load_private_key, pubkey_hash
from tests.plugins.sandbox import Sandbox
from tests.plugins.sync_world import World, make_world


class Crash(BaseException):
    """A simulated process death at a checkpoint."""


@dataclass
class Witness(Provider):
    """A provider that checks, at every CSR, that its key is already in the sync state."""

    inner: ApiV3Provider
    world: World
    submitted: list[tuple[str, str]] = field(default_factory=list)

    def list_orders(self, cluster: str) -> Sequence[ProviderOrder]:
        return self.inner.list_orders(cluster)

    def get_order(self, name: str) -> ProviderOrder:
        return self.inner.get_order(name)

    def submit_csr(self, order_name: str, csr_pem: bytes) -> str:
        state = self.world.state()
        answer = self.inner.submit_csr(order_name, csr_pem)
        assert state.pending[order_name].pubkey_hash == answer, "CSR before its key was stored"
        self.submitted.append((order_name, answer))
        return answer

    def fetch_certificate(
        self, order_name: str, pubkey_hash: str, *, wait: float
    ) -> IssuedCert | None:
        return self.inner.fetch_certificate(order_name, pubkey_hash, wait=wait)


def generation(world: World) -> int:
    try:
        return peek_head(world.head_bytes()).generation
    except ObjectNotFound:
        return 0


def crash_at(target: tuple[str, int] | None) -> tuple[list[str], Callable[[str], None]]:
    """A checkpoint that records steps and crashes at the n-th occurrence of one step."""
    steps: list[str] = []

    def checkpoint(step: str) -> None:
        steps.append(step)
        if target is not None and (step, steps.count(step)) == target:
            raise Crash(step)

    return steps, checkpoint


def scenario(sandbox: Sandbox, store_url: str, tag: str) -> tuple[World, str, str, str, bytes]:
    """A published order to rekey, one removed and one added since: (world, names, key)."""
    world = make_world(sandbox, store_url, "")
    rekeyed = world.add(f"rekeyed.{tag}.example.com")
    removed = world.add(f"removed.{tag}.example.com")
    assert world.sync().errors == {}
    old_key = world.published().bundles[rekeyed].private_key_pem
    mark_rekey(world.config(), world.cluster, [rekeyed], store=world.store)
    world.remove(removed)
    added = world.add(f"added.{tag}.example.com")
    return world, rekeyed, removed, added, old_key


def test_every_step_is_recorded_in_order(sandbox: Sandbox, tmp_path: Path) -> None:
    world = make_world(sandbox, tmp_path.as_uri(), "")
    world.add(world.host("steps"))
    steps, checkpoint = crash_at(None)
    world.sync(checkpoint=checkpoint)
    assert steps[:4] == ["lease", "loaded", "audited", "listed"], "a first run sweeps"
    assert steps.index("pending-saved") < steps.index("csr") < steps.index("bundle")
    assert steps.index("bundle") < steps.index("shard") < steps.index("head") < steps.index("saved")
    steps, checkpoint = crash_at(None)
    world.sync(checkpoint=checkpoint)
    assert steps == ["lease", "loaded", "listed", "saved"], "no sweep until it is due"


@pytest.mark.fault
def test_a_crash_after_any_step_then_a_rerun_converges(sandbox: Sandbox, tmp_path: Path) -> None:
    # A local directory store (real conditional writes) keeps ~16 crash/rerun rounds fast;
    # the same flows run against SeaweedFS in tests/integration/test_sync.py.
    reference, *_ = scenario(sandbox, (tmp_path / "reference").as_uri(), "ref")
    steps, checkpoint = crash_at(None)
    reference.sync(checkpoint=checkpoint)
    targets = [(step, steps[: i + 1].count(step)) for i, step in enumerate(steps)]
    assert len(targets) >= 12
    for number, target in enumerate(targets):
        world, rekeyed, removed, added, old_key = scenario(
            sandbox, (tmp_path / f"k{number}").as_uri(), f"k{number}"
        )
        before = generation(world)
        witness = Witness(world.provider(), world)
        _, checkpoint = crash_at(target)
        try:
            run_sync(
                world.config(), store=world.store, provider=witness, clock=world.now,
                checkpoint=checkpoint,
            )  # fmt: skip
        except Crash:
            pass
        else:  # this world's orders hash into fewer shards than the reference's
            assert target[0] == "shard", target
            continue
        written = generation(world)
        world.offset += world.config().lease_duration + 1
        rerun = run_sync(world.config(), store=world.store, provider=witness, clock=world.now)
        assert rerun.errors == {}, (target, rerun.errors)

        seen = world.published()
        assert set(seen.entries) == {rekeyed, added}, target
        assert set(seen.tombstones) == {removed}, target
        assert seen.bundles[rekeyed].private_key_pem != old_key
        assert seen.head.generation > before and seen.head.generation >= written
        assert len(witness.submitted) == len(set(witness.submitted)), "a key CSR'd twice"
        assert sorted(name for name, _ in witness.submitted) == sorted([rekeyed, added])
        for name, submitted_hash in witness.submitted:
            key = load_private_key(seen.bundles[name].private_key_pem)
            assert pubkey_hash(key) == submitted_hash, target
        world.offset += 1
        quiet = world.sync()
        assert quiet.heads_published == 0 and quiet.keys_generated == 0, target
        witness.inner.close()
