"""The sync lease against real stores: costs, back-off, take-over and races.

Every test runs against a ``file://`` store and SeaweedFS over S3 (the two backends whose
conditional writes the sync relies on). The clock is injected: a test moves it, never sleeps.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from certfleet.bundle import SigningKey
from certfleet.store import Store, open_store
from certfleet.store.selftest import PROBE_PREFIX
from certfleet.sync import LeaseHeldError, LeaseLostError
from certfleet.sync.layout import lease_key
from certfleet.sync.lease import Lease
from tests.plugins.seaweedfs import SeaweedFS

CLUSTER = "web"
SYNC_SECRET = SigningKey.generate().sync_secret("state")
DURATION = 60.0
RACERS = 8


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["file", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "file":
        yield open_store((tmp_path / "store").as_uri())
    else:
        seaweedfs: SeaweedFS = request.getfixturevalue("seaweedfs")
        s3_url: str = request.getfixturevalue("s3_url")
        yield open_store(s3_url, endpoint=seaweedfs.endpoint)


def lease(store: Store, clock: Clock) -> Lease:
    return Lease(store, CLUSTER, duration=DURATION, clock=clock, secret=SYNC_SECRET)


def stored(store: Store) -> dict[str, object]:
    got = store.get(lease_key(CLUSTER), max_bytes=1 << 24)
    value = json.loads(got.data)
    assert isinstance(value, dict)
    return value


def writes(store: Store) -> int:
    return store.stats.as_dict()["writes"]


def test_a_first_run_probes_the_store_creates_the_lease_and_releases_it(store: Store) -> None:
    clock = Clock()
    first = lease(store, clock)
    first.acquire()
    # the conditional-write probe (4 writes, 1 delete: no lease yet), then the create
    assert first.held and writes(store) == 5 and store.stats.deletes == 1
    assert list(store.list(PROBE_PREFIX)) == []
    assert stored(store)["expires_at"] == clock.now + DURATION
    first.release()
    assert not first.held and writes(store) == 6
    assert stored(store)["expires_at"] == 0.0


def test_a_released_lease_costs_two_writes_per_run(store: Store) -> None:
    clock = Clock()
    lease(store, clock).acquire()  # the first run ever (then crashed: never released)
    clock.now += DURATION + 1
    for _ in range(3):
        before = writes(store)
        run = lease(store, clock)
        run.acquire()
        run.release()
        assert writes(store) - before == 2, "take over by ETag, release; no refused create"
        clock.now += 1


def test_a_live_lease_is_never_written_to(store: Store) -> None:
    clock = Clock()
    holder = lease(store, clock)
    holder.acquire()
    before, held = writes(store), stored(store)
    clock.now += DURATION - 1
    with pytest.raises(LeaseHeldError) as caught:
        lease(store, clock).acquire()
    assert caught.value.expires_at == held["expires_at"]
    assert writes(store) == before and stored(store) == held
    holder.release()
    lease(store, clock).acquire()  # released: taken at once


def test_an_expired_or_unreadable_lease_is_taken_over(store: Store) -> None:
    clock = Clock()
    crashed = lease(store, clock)
    crashed.acquire()
    clock.now += DURATION + 1
    later = lease(store, clock)
    later.acquire()
    assert stored(store)["owner"] == later.owner != crashed.owner
    later.release()
    store.put(lease_key(CLUSTER), b"not json")
    last = lease(store, clock)
    last.acquire()
    assert stored(store)["owner"] == last.owner
    assert stored(store)["expires_at"] == clock.now + DURATION


def test_a_holder_that_overran_its_lease_cannot_release_the_new_one(store: Store) -> None:
    clock = Clock()
    slow = lease(store, clock)
    slow.acquire()
    clock.now += DURATION + 1
    later = lease(store, clock)
    later.acquire()
    taken = stored(store)
    slow.release()  # its ETag is stale: refused, only logged
    assert stored(store) == taken and not slow.held
    with pytest.raises(LeaseHeldError):
        lease(store, clock).acquire()


def test_a_refresh_after_a_take_over_loses(store: Store) -> None:
    clock = Clock()
    slow = lease(store, clock)
    slow.acquire()
    clock.now += DURATION + 1
    lease(store, clock).acquire()
    taken = stored(store)
    with pytest.raises(LeaseLostError):
        slow.refresh()
    assert stored(store) == taken and not slow.held


def test_a_refresh_extends_the_lease_for_its_holder(store: Store) -> None:
    clock = Clock()
    holder = lease(store, clock)
    holder.acquire()
    clock.now += DURATION / 4
    holder.refresh()
    assert stored(store)["expires_at"] == clock.now - DURATION / 4 + DURATION, "not yet due"
    clock.now += DURATION / 2
    holder.refresh()
    assert stored(store)["expires_at"] == clock.now + DURATION


@pytest.mark.parametrize("start", ["absent", "released", "expired"])
def test_of_racing_runs_exactly_one_takes_the_lease(store: Store, start: str) -> None:
    clock = Clock()
    if start != "absent":
        first = lease(store, clock)
        first.acquire()
        if start == "released":
            first.release()
        else:
            clock.now += DURATION + 1
    barrier = threading.Barrier(RACERS)
    won: list[Lease] = []
    lost: list[LeaseHeldError] = []

    def race() -> None:
        contender = lease(store, clock)
        barrier.wait()
        try:
            contender.acquire()
        except LeaseHeldError as err:
            lost.append(err)
        else:
            won.append(contender)

    threads = [threading.Thread(target=race) for _ in range(RACERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(won) == 1 and len(lost) == RACERS - 1
    assert stored(store)["owner"] == won[0].owner


@pytest.mark.parametrize(
    "forged",
    [
        b"[" * 100_000 + b"]" * 100_000,  # deep nesting: must not raise RecursionError
        json.dumps({"owner": "x", "expires_at": 9e18}).encode(),  # no MAC (older versions)
        json.dumps({"owner": "x", "expires_at": 9e18, "mac": "00" * 32}).encode(),  # forged
        b"{" + b" " * 100_000 + b"}",  # too big to parse
    ],
    ids=["deep", "unauthenticated", "forged-mac", "huge"],
)
def test_a_forged_or_malformed_lease_is_broken_and_taken_over(store: Store, forged: bytes) -> None:
    clock = Clock()
    store.put(lease_key(CLUSTER), forged)
    run = lease(store, clock)
    run.acquire()  # not held by anyone: a forged far-future expiry keeps nobody out
    assert run.held and stored(store)["owner"] == run.owner
    with pytest.raises(LeaseHeldError):  # the lease it wrote is authentic and live
        lease(store, clock).acquire()


def test_a_lease_written_with_another_sync_key_is_not_honoured(store: Store) -> None:
    clock = Clock()
    other = Lease(store, CLUSTER, duration=DURATION, clock=clock,
                  secret=SigningKey.generate().sync_secret("state"))  # fmt: skip
    other.acquire()
    mine = lease(store, clock)
    mine.acquire()
    assert mine.held and stored(store)["owner"] == mine.owner


def test_a_live_lease_of_the_previous_signing_key_is_honoured_while_it_is_configured(
    store: Store,
) -> None:
    clock = Clock()
    old = SigningKey.generate().sync_secret("state")
    Lease(store, CLUSTER, duration=DURATION, clock=clock, secret=old).acquire()
    rotated = Lease(
        store, CLUSTER, duration=DURATION, clock=clock, secret=SYNC_SECRET, previous=[old]
    )
    with pytest.raises(LeaseHeldError):  # a sync still running with the old key holds it
        rotated.acquire()
    clock.now += DURATION + 1
    rotated.acquire()
    assert rotated.held and stored(store)["owner"] == rotated.owner
