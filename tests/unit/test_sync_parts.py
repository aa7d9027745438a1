"""The parts of a sync run, each built alone: a file:// store, a provider that signs CSRs
in process, a fake monotonic clock for the time budget (no lease, no sandbox, no S3)."""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from certfleet.bundle import ClusterSecret, SigningKey, verify_head
from certfleet.config import ClusterSyncConfig, SyncConfig
from certfleet.sandbox.ca import SandboxCa
from certfleet.store import Store, open_store
from certfleet.sync import IssuedCert, Provider, ProviderOrder
from certfleet.sync.audit import Audit
from certfleet.sync.budget import MAX_RESERVE, Budget
from certfleet.sync.context import RunContext
from certfleet.sync.engine import ClusterRun
from certfleet.sync.fleetcheck import FleetCheck
from certfleet.sync.headseen import HeadSeen, read_head
from certfleet.sync.issuer import Issuer
from certfleet.sync.layout import bundle_key, head_key, pending_prefix
from certfleet.sync.plan import Issue
from certfleet.sync.provider import ProviderNotFound
from certfleet.sync.publisher import Publisher
from certfleet.sync.state import ClusterState
from certfleet.sync.summary import RunTally
from certfleet.sync.writer import RunWriter
from tests.plugins.providers import sign_csr

CLUSTER = "parts"
NOW = 1_790_000_000


class FakeMonotonic:
    """A monotonic clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class InProcessProvider(Provider):
    """A provider whose CA signs each submitted CSR at once, in process."""

    def __init__(self, orders: Sequence[ProviderOrder]) -> None:
        self.orders = {order.name: order for order in orders}
        self.ca = SandboxCa.create(datetime.datetime.fromtimestamp(NOW, datetime.timezone.utc))
        self.issued: dict[str, IssuedCert] = {}
        self.fetches = 0

    def list_orders(self, cluster: str) -> Sequence[ProviderOrder]:
        return [order for order in self.orders.values() if order.cluster == cluster]

    def get_order(self, name: str) -> ProviderOrder:
        if name not in self.orders:
            raise ProviderNotFound("get order", name)
        return self.orders[name]

    def submit_csr(self, order_name: str, csr_pem: bytes) -> str:
        now = datetime.datetime.fromtimestamp(NOW, datetime.timezone.utc)
        names = self.orders[order_name].dns_names
        pubkey_hash, self.issued[order_name] = sign_csr(self.ca, csr_pem, names, now)
        return pubkey_hash

    def fetch_certificate(
        self, order_name: str, pubkey_hash: str, *, wait: float = 0.0
    ) -> IssuedCert | None:
        self.fetches += 1
        if order_name not in self.issued:
            raise ProviderNotFound("fetch certificate", order_name)
        return self.issued[order_name]


def context(tmp_path: Path, **settings: Any) -> tuple[RunContext, Store]:
    store = open_store(f"file://{tmp_path}/store")
    policy = ClusterSyncConfig(name=CLUSTER, secrets=(ClusterSecret.generate("k1"),))
    config = SyncConfig(
        store=store.url, signing_key=SigningKey.generate(), clusters=(policy,), **settings
    )
    return RunContext.of(CLUSTER, policy, config, lambda: float(NOW)), store


def fresh_state(writer: RunWriter) -> ClusterState:
    return writer.states.load(now_ms=NOW * 1000)


ORDER = ProviderOrder("web", CLUSTER, ("web.example.com",))


def issue_one(
    ctx: RunContext, store: Store, tally: RunTally
) -> tuple[RunWriter, ClusterState, InProcessProvider]:
    writer = RunWriter(store, ctx)
    state = fresh_state(writer)
    provider = InProcessProvider([ORDER])
    issuer = Issuer(ctx, writer, provider, state, budget=Budget(None), tally=tally)
    issuer.generate([Issue(ORDER, "new")], NOW)
    issuer.collect([])
    return writer, state, provider


# -- Budget ----------------------------------------------------------------------------


def test_a_budget_without_deadline_is_never_spent() -> None:
    budget = Budget(None, monotonic=FakeMonotonic())
    assert budget.out_of_time() is False and budget.left() is None
    assert budget.until(7.0) == pytest.approx(1007.0)
    assert budget.exhausted is False


@pytest.mark.parametrize(("seconds", "reserve"), [(8.0, 2.0), (100.0, MAX_RESERVE), (-3.0, 0.0)])
def test_the_reserve_is_a_quarter_of_the_time_left_at_most_five_seconds(
    seconds: float, reserve: float
) -> None:
    clock = FakeMonotonic()
    assert Budget(clock.now + seconds, monotonic=clock).reserve == pytest.approx(reserve)


def test_a_budget_is_spent_at_the_reserve_and_stays_marked() -> None:
    clock = FakeMonotonic()
    budget = Budget(clock.now + 40.0, monotonic=clock)  # reserve 5 s
    clock.now += 34.9
    assert budget.out_of_time() is False and budget.left() == pytest.approx(0.1)
    clock.now += 0.1
    assert budget.out_of_time() is True and budget.exhausted is True
    clock.now -= 10.0  # a later question does not unmark it
    assert budget.exhausted is True


def test_a_wait_ends_at_the_reserve_and_what_remains_is_never_negative() -> None:
    clock = FakeMonotonic()
    budget = Budget(clock.now + 20.0, monotonic=clock)  # reserve 5 s
    until = budget.until(60.0)
    assert until == pytest.approx(clock.now + 15.0)
    assert budget.until(3.0) == pytest.approx(clock.now + 3.0)
    clock.now += 30.0
    assert budget.remaining(until) == 0.0


# -- RunWriter -------------------------------------------------------------------------


def test_the_writer_checkpoints_refreshes_and_hands_over_retired_objects(tmp_path: Path) -> None:
    ctx, store = context(tmp_path)
    steps: list[str] = []
    refreshed: list[bool] = []
    writer = RunWriter(store, ctx, checkpoint=steps.append, refresh=lambda: refreshed.append(True))
    writer.put_content("x/abc", b"one")
    writer.put_content("x/abc", b"one")  # content-addressed: the second create is success
    assert store.get("x/abc", max_bytes=16).data == b"one"
    writer.step("bundle")
    assert steps == ["bundle"] and refreshed == [True]
    writer.retire("x/abc")
    assert writer.take_retired() == ["x/abc"] and writer.take_retired() == []


# -- Issuer ----------------------------------------------------------------------------


def test_the_issuer_alone_turns_an_issue_into_a_recorded_bundle(tmp_path: Path) -> None:
    ctx, store = context(tmp_path)
    tally = RunTally()
    writer, state, _ = issue_one(ctx, store, tally)
    assert tally.errors == {}
    counts = tally.counts
    assert (counts.keys_generated, counts.csrs_submitted, counts.certificates_published) == (
        1,
        1,
        1,
    )
    assert counts.provider_calls == 2  # submit_csr, fetch_certificate
    record = state.orders["web"]
    assert state.pending == {}
    bundle = writer.open_bundle("web", record)
    assert bundle.dns_names == ("web.example.com",)
    assert record.secret_ids == ("k1",)
    retired = writer.take_retired()
    assert len(retired) == 1 and retired[0].startswith(pending_prefix(CLUSTER))


def test_the_issuer_starts_nothing_once_the_budget_is_spent(tmp_path: Path) -> None:
    ctx, store = context(tmp_path)
    clock = FakeMonotonic()
    budget = Budget(clock.now + 10.0, monotonic=clock)
    clock.now += 10.0
    writer = RunWriter(store, ctx)
    state = fresh_state(writer)
    tally = RunTally()
    provider = InProcessProvider([ORDER])
    Issuer(ctx, writer, provider, state, budget=budget, tally=tally).generate(
        [Issue(ORDER, "new")], NOW
    )
    assert tally.counts.keys_generated == 0 and state.pending == {} and provider.issued == {}
    assert budget.exhausted


# -- Publisher -------------------------------------------------------------------------


def test_the_publisher_alone_writes_a_signed_head_and_collects_garbage_after_grace(
    tmp_path: Path,
) -> None:
    ctx, store = context(tmp_path, gc_grace=3600.0)
    tally = RunTally()
    writer, state, _ = issue_one(ctx, store, tally)
    publisher = Publisher(ctx, writer, state, NOW, budget=Budget(None), tally=tally)
    seen = HeadSeen(None, None)
    publisher.publish(seen)
    data = store.get(head_key(CLUSTER), max_bytes=1 << 16).data
    head = verify_head(data, cluster=CLUSTER, publishers=[ctx.settings.signing_key.public_key()])
    assert tally.counts.heads_published == 1 and tally.generations[CLUSTER] == head.generation
    assert len(state.unreferenced) == 1  # the pending key, now in the bundle
    publisher.collect_garbage(seen, None)
    assert tally.counts.objects_deleted == 0  # within gc_grace
    later = Publisher(ctx, writer, state, NOW + 3600, budget=Budget(None), tally=tally)
    later.collect_garbage(read_head(store, CLUSTER, ctx.settings.signing_key.public_key()), None)
    assert tally.counts.objects_deleted == 1 and state.unreferenced == {}


# -- Audit -----------------------------------------------------------------------------


def test_the_audit_alone_marks_an_order_whose_bundle_is_lost_for_a_new_key(
    tmp_path: Path,
) -> None:
    ctx, store = context(tmp_path)
    tally = RunTally()
    _, state, _ = issue_one(ctx, store, tally)
    lost = bundle_key(CLUSTER, state.orders["web"].bundle)
    store.delete(lost)
    audit = Audit(ctx, store, state, NOW, budget=Budget(None), tally=tally)
    assert audit.due(forced=False)  # never swept
    audit.check(audit.list_objects(), verify=True)
    assert audit.damaged == {lost}
    assert state.rekey == {"web"} and tally.counts.objects_repaired == 1


# -- FleetCheck ------------------------------------------------------------------------


def test_the_fleet_check_alone_waits_for_a_head_then_reports_an_empty_fleet(
    tmp_path: Path,
) -> None:
    ctx, store = context(tmp_path, fleet_check_interval=60.0)
    tally = RunTally()
    writer, state, _ = issue_one(ctx, store, tally)
    check = FleetCheck(ctx, store, state, NOW, budget=Budget(None), tally=tally)
    assert check.run_if_due() is False  # nothing published yet
    Publisher(ctx, writer, state, NOW, budget=Budget(None), tally=tally).publish(
        HeadSeen(None, None)
    )
    assert check.run_if_due() is True
    assert state.last_fleet_check == NOW and tally.fleet[CLUSTER]["problem_nodes"] == 0


def test_the_fleet_check_leaves_itself_to_the_next_run_with_under_a_second_left(
    tmp_path: Path,
) -> None:
    ctx, store = context(tmp_path, fleet_check_interval=60.0)
    tally = RunTally()
    writer, state, _ = issue_one(ctx, store, tally)
    Publisher(ctx, writer, state, NOW, budget=Budget(None), tally=tally).publish(
        HeadSeen(None, None)
    )
    clock = FakeMonotonic()
    budget = Budget(clock.now + 20.0, monotonic=clock)  # reserve 5 s
    clock.now += 14.5
    assert FleetCheck(ctx, store, state, NOW, budget=budget, tally=tally).run_if_due() is False
    assert state.last_fleet_check != NOW and CLUSTER not in tally.fleet


# -- ClusterRun: the parts together, on a fake clock -------------------------------------


def test_a_cluster_run_past_its_budget_issues_nothing_and_reports_itself_incomplete(
    tmp_path: Path,
) -> None:
    ctx, store = context(tmp_path)
    clock = FakeMonotonic()
    tally = RunTally()
    steps: list[str] = []
    run = ClusterRun(
        cluster=CLUSTER,
        policy=ctx.policy,
        settings=ctx.settings,
        store=store,
        open_provider=lambda: InProcessProvider([ORDER]),
        clock=lambda: float(NOW),
        deadline=clock.now + 4.0,  # reserve 1 s
        tally=tally,
        checkpoint=steps.append,
        monotonic=clock,
    )
    clock.now += 3.0
    run.run()
    assert tally.counts.keys_generated == 0 and tally.complete is False
    assert steps[:2] == ["lease", "loaded"] and {"listed", "saved"} <= set(steps)
    assert "pending-key" not in steps and "csr" not in steps
    assert tally.counts.orders_seen == 1 and tally.errors == {}
    assert tally.counts.provider_calls == 1  # the listing only


# -- RunTally and RunSummary -----------------------------------------------------------


def test_a_tally_turns_into_a_summary_whose_json_keeps_every_key() -> None:
    tally = RunTally()
    tally.count(keys_generated=1, provider_calls=2)
    tally.count(keys_generated=1, store_reads=7)
    tally.error("web", "boom")
    tally.generations[CLUSTER] = 5
    summary = tally.summary([CLUSTER], duration=1.23456)
    assert (summary.keys_generated, summary.provider_calls, summary.store_reads) == (2, 2, 7)
    assert summary.orders_seen == 0 and summary.generation == 5 and not summary.ok
    assert summary.as_dict() == {
        "clusters": [CLUSTER],
        "orders_seen": 0,
        "keys_generated": 2,
        "csrs_submitted": 0,
        "certificates_published": 0,
        "tombstones": 0,
        "objects_deleted": 0,
        "objects_repaired": 0,
        "objects_verified": 0,
        "errors": {"web": "boom"},
        "store_reads": 7,
        "store_writes": 0,
        "store_requests": 0,
        "provider_calls": 2,
        "generation": 5,
        "generations": {CLUSTER: 5},
        "skipped": [],
        "heads_published": 0,
        "complete": True,
        "duration": 1.235,
        "fleet": {},
        "fleet_problem_nodes": None,
    }
    with pytest.raises(AttributeError):
        tally.count(no_such_counter=1)


class AdvisingProvider(InProcessProvider):
    """An in-process provider that also suggests renewal times (as ACME's ARI does)."""

    def __init__(self, orders: Sequence[ProviderOrder], renew_at: dict[str, int]) -> None:
        super().__init__(orders)
        self.renew_at = renew_at
        self.asked: list[tuple[str, tuple[str, ...]]] = []

    def renewal_times(self, cluster: str, names: Sequence[str]) -> dict[str, int]:
        self.asked.append((cluster, tuple(names)))
        return self.renew_at


def test_a_cluster_run_opens_its_provider_once_and_follows_its_suggested_renewal_time(
    tmp_path: Path,
) -> None:
    ctx, store = context(tmp_path)
    opened: list[InProcessProvider] = []

    def run(provider: InProcessProvider) -> RunTally:
        def open_provider() -> InProcessProvider:
            opened.append(provider)
            return provider

        tally = RunTally()
        ClusterRun(
            cluster=CLUSTER,
            policy=ctx.policy,
            settings=ctx.settings,
            store=store,
            open_provider=open_provider,
            clock=lambda: float(NOW),
            deadline=None,
            tally=tally,
            checkpoint=lambda step: None,
        ).run()
        assert tally.errors == {}
        return tally

    first = InProcessProvider([ORDER])
    assert run(first).counts.certificates_published == 1 and opened == [first]
    quiet = AdvisingProvider([ORDER], {})
    assert run(quiet).counts.keys_generated == 0 and quiet.asked == [(CLUSTER, ("web",))]
    due = AdvisingProvider([ORDER], {"web": NOW})
    assert run(due).counts.keys_generated == 1 and opened == [first, quiet, due]
