"""Containment: an error of any type in one cluster's (or one order's) work stays there.

A provider that raises what no provider should (MemoryError, RecursionError, a library's
KeyError) for one cluster or one order: the run reports it for that cluster or order and
goes on with the others; state the failed cluster had already made safe is saved, so the
next run does not publish the same certificates again as a new generation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Optional

from certfleet.sync import IssuedCert, ProviderOrder, RunSummary, run_sync
from certfleet.sync.apiv3_provider import ApiV3Provider
from tests.plugins.faults import Ledger
from tests.plugins.providers import PassThroughProvider
from tests.plugins.sandbox import Sandbox
from tests.plugins.sync_world import World, make_world


class OddProvider(PassThroughProvider):
    """The real provider, except that chosen clusters and orders raise odd exceptions."""

    def __init__(
        self,
        inner: ApiV3Provider,
        *,
        listing: dict[str, BaseException],
        fetching: dict[str, BaseException],
    ) -> None:
        super().__init__(inner)
        self.listing = listing
        self.fetching = fetching

    def list_orders(self, cluster: str) -> Sequence[ProviderOrder]:
        if cluster in self.listing:
            raise self.listing[cluster]
        return self.inner.list_orders(cluster)

    def fetch_certificate(
        self, order_name: str, pubkey_hash: str, *, wait: float
    ) -> Optional[IssuedCert]:
        if order_name in self.fetching:
            raise self.fetching[order_name]
        return self.inner.fetch_certificate(order_name, pubkey_hash, wait=wait)


def run_clusters(worlds: Sequence[World], provider: OddProvider) -> RunSummary:
    config = worlds[0].config()
    clusters = tuple(cluster for world in worlds for cluster in world.config().clusters)
    return run_sync(
        replace(config, clusters=clusters),
        store=worlds[0].store,
        provider=provider,
        clock=worlds[0].now,
    )


def test_odd_errors_are_reported_for_their_cluster_or_order_and_the_rest_proceeds(
    sandbox: Sandbox, tmp_path: Path, faults: Ledger
) -> None:
    url = (tmp_path / "store").as_uri()
    first = make_world(sandbox, url, "")
    worlds = [first] + [make_world(sandbox, url, "", signing_key=first.signing_key) for _ in "ab"]
    out_of_memory, deep, fine = worlds
    out_of_memory.add(out_of_memory.host("x"))
    recursing = deep.add(deep.host("recursing"))
    keyerror = deep.add(deep.host("keyerror"))
    good = deep.add(deep.host("good"))
    fine_order = fine.add(fine.host("fine"))
    provider = OddProvider(
        first.provider(),
        listing={out_of_memory.cluster: MemoryError()},
        fetching={recursing: RecursionError("maximum recursion depth"), keyerror: KeyError("x")},
    )
    faults.tried(3)
    summary = run_clusters(worlds, provider)
    provider.inner.close()
    assert summary.errors[f"cluster:{out_of_memory.cluster}"] == "unexpected MemoryError"
    assert summary.errors[recursing].startswith("unexpected RecursionError"), summary.errors
    assert summary.errors[keyerror].startswith("unexpected KeyError"), summary.errors
    assert len(summary.errors) == 3, summary.errors
    assert good in deep.published().entries and fine_order in fine.published().entries
    assert summary.complete


def test_an_odd_error_after_the_head_keeps_the_state_so_nothing_is_republished(
    sandbox: Sandbox, tmp_path: Path, faults: Ledger
) -> None:
    world = make_world(sandbox, (tmp_path / "store").as_uri(), "")
    name = world.add(world.host("kept"))
    raised: list[str] = []

    def fail_after_head(step: str) -> None:
        if step == "head" and not raised:
            raised.append(step)
            raise MemoryError

    faults.tried()
    summary = world.sync(checkpoint=fail_after_head)
    assert raised and summary.errors == {f"cluster:{world.cluster}": "unexpected MemoryError"}
    published = world.published()
    assert name in published.entries
    again = world.sync()
    assert again.errors == {}
    assert again.heads_published == 0 and again.keys_generated == 0, "the state was kept"
    assert world.published().head.generation == published.head.generation
    assert world.state().orders[name].bundle == published.entries[name].bundle_hash.hex()
