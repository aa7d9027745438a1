"""When a node cuts over: ``stagger``, ``update_window`` and ``urgent_before``.

The pure rule (``node_agent.schedule``) by tables and properties; then real agents on a
``file://`` store, with a clock the test moves (``Agent(clock=...)``), publications from
the publisher plugin, ``--status`` data (``build_status``) and the sealed acks.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import given
from hypothesis import strategies as st

from certfleet.bundle import ClusterSecret, SigningKey, iso_utc, open_ack
from certfleet.config import AgentConfig, parse_agent_config
from certfleet.config.window import UpdateWindow
from node_agent.ack import ack_key
from node_agent.agent import Agent
from node_agent.daemon import Daemon
from node_agent.schedule import (
    INSTALL_AFTER,
    STAGGER,
    UPDATE_WINDOW,
    Deferral,
    deferral,
    stagger_fraction,
    window_opening,
)
from node_agent.status import build_status, format_status

if TYPE_CHECKING:
    from tests.plugins.publisher import Publisher

DAY = 86400
HOUR = 3600
# A Monday 00:00 UTC, in the past (the publisher's CA is valid from a day before "now").
MONDAY = 1_763_942_400  # 2025-11-24
assert time.gmtime(MONDAY)[6] == 0 and MONDAY % DAY == 0


CLUSTER = (
    f'cluster "web" {{\n  secret = "{ClusterSecret("k1", bytes(32)).export()}"\n'
    f'  publisher = "{SigningKey(bytes(range(32))).public_key().export()}"\n}}\n'
)


def config(text: str = "") -> AgentConfig:
    return parse_agent_config('store = "file:///srv/x"\n' + CLUSTER + text, "agent.conf")


# -- the pure rule ------------------------------------------------------------------------


def test_stagger_fractions_are_stable_spread_and_per_order() -> None:
    nodes = [f"{n:032x}" for n in range(400)]
    fractions = [stagger_fraction(node, "a.example") for node in nodes]
    assert fractions == [stagger_fraction(node, "a.example") for node in nodes]  # stable
    assert all(0.0 <= f < 1.0 for f in fractions)
    assert len(set(fractions)) == len(fractions)
    assert sum(f < 0.25 for f in fractions) > 60 and sum(f >= 0.75 for f in fractions) > 60
    last = max(nodes, key=lambda node: stagger_fraction(node, "a.example"))
    assert stagger_fraction(last, "b.example") != stagger_fraction(last, "a.example")


@pytest.mark.parametrize(
    ("window", "at", "opens"),
    [
        ((180, 300), 2 * HOUR, 3 * HOUR),  # before: today 03:00
        ((180, 300), 3 * HOUR, 3 * HOUR),  # at the opening
        ((180, 300), 4 * HOUR + 59 * 60, 4 * HOUR + 59 * 60),  # inside
        ((180, 300), 5 * HOUR, DAY + 3 * HOUR),  # closed at 05:00: tomorrow
        ((1320, 120), HOUR, HOUR),  # 22:00-02:00, at 01:00: still open since yesterday
        ((1320, 120), 2 * HOUR, 22 * HOUR),  # closed at 02:00: tonight
        ((1320, 120), 21 * HOUR, 22 * HOUR),
        ((1320, 120), 23 * HOUR, 23 * HOUR),
    ],
)
def test_window_opening(window: tuple[int, int], at: int, opens: int) -> None:
    assert window_opening(UpdateWindow(*window), MONDAY + at) == MONDAY + opens


def test_window_days_are_the_days_it_opens_on() -> None:
    weekend = UpdateWindow(1320, 120, (5, 6))  # Saturday and Sunday nights
    assert window_opening(weekend, MONDAY) == MONDAY  # Sunday night's window: open till 02:00
    assert window_opening(weekend, MONDAY + 2 * HOUR) == MONDAY + 5 * DAY + 22 * HOUR
    whole_tuesday = UpdateWindow(0, 0, (1,))
    assert window_opening(whole_tuesday, MONDAY + HOUR) == MONDAY + DAY
    assert window_opening(whole_tuesday, MONDAY + DAY + 23 * HOUR) == MONDAY + DAY + 23 * HOUR


@given(
    st.integers(0, 1439),
    st.integers(0, 1439),
    st.sets(st.integers(0, 6), min_size=1),
    st.integers(MONDAY, MONDAY + 30 * DAY),
)
def test_window_opening_is_the_first_open_instant(
    start: int, end: int, days: set[int], at: int
) -> None:
    window = UpdateWindow(start, end, tuple(sorted(days)))
    opens = window_opening(window, at)
    assert at <= opens < at + 8 * DAY

    def is_open(moment: int) -> bool:
        for back in range(2):
            day_start = moment - moment % DAY - back * DAY
            started = day_start + start * 60
            weekday = (day_start // DAY + 3) % 7
            if weekday in days and started <= moment < started + window.length:
                return True
        return False

    assert is_open(opens)
    assert opens == at or not is_open(opens - 1)


NOW = MONDAY + 2 * HOUR  # Monday 02:00 UTC
SERVED = NOW + 60 * DAY  # the not_after of the certificate being served


@pytest.mark.parametrize(
    ("text", "install_after", "serving", "expected"),
    [
        ("", NOW + 60, SERVED, Deferral(NOW + 60, INSTALL_AFTER)),
        ("", NOW - 60, SERVED, None),
        ('update_window = "03:00-05:00"', NOW - 60, SERVED, Deferral(NOW + HOUR, UPDATE_WINDOW)),
        ('update_window = "03:00-05:00"', NOW - 60, None, None),  # a first install: now
        ('update_window = "01:00-03:00"', NOW - 60, SERVED, None),  # open
        ('update_window = "22:00-02:30"', NOW - 60, SERVED, None),  # open since Sunday 22:00
        (  # install_after inside the window: that is the time
            'update_window = "01:00-03:00"',
            NOW + 600,
            SERVED,
            Deferral(NOW + 600, INSTALL_AFTER),
        ),
        (  # install_after after the window closes: tomorrow's window
            'update_window = "01:00-03:00"',
            NOW + 2 * HOUR,
            SERVED,
            Deferral(MONDAY + DAY + HOUR, UPDATE_WINDOW),
        ),
        ('stagger = "1h"', NOW - 2 * HOUR, SERVED, None),  # every turn is over
        ('stagger = "1h"', NOW, None, None),  # a first install
        (  # the certificate served expires in 3 days: within urgent_before (7 days)
            'stagger = "1h"\nupdate_window = "03:00-05:00"',
            NOW - 60,
            NOW + 3 * DAY,
            None,
        ),
        ('update_window = "03:00-05:00"', NOW - 60, NOW - DAY, None),  # already expired
        (  # the window opens after the urgency point: the wait ends there
            'update_window = "03:00-05:00"\nurgent_before = "2d"',
            NOW - 60,
            NOW + 2 * DAY + 1800,
            Deferral(NOW + 1800, UPDATE_WINDOW),
        ),
        (  # urgent_before = 0: only an expired certificate overrides
            'update_window = "03:00-05:00"\nurgent_before = 0',
            NOW - 60,
            NOW + 600,
            Deferral(NOW + 600, UPDATE_WINDOW),
        ),
    ],
)
def test_deferral(
    text: str, install_after: int, serving: int | None, expected: Deferral | None
) -> None:
    found = deferral(
        config(text),
        node_id="n1",
        order_name="a.example",
        install_after=install_after,
        serving_not_after=serving,
        now=NOW,
    )
    assert found == expected


def test_stagger_turn_is_install_after_plus_the_nodes_share() -> None:
    rule = config('stagger = "30m"')
    turn = NOW + int(1800 * stagger_fraction("n1", "a.example"))
    found = deferral(rule, node_id="n1", order_name="a.example", install_after=NOW,
                     serving_not_after=SERVED, now=NOW)  # fmt: skip
    assert found == (Deferral(turn, STAGGER) if turn > NOW else None)
    later = deferral(rule, node_id="n1", order_name="a.example", install_after=NOW,
                     serving_not_after=SERVED, now=turn)  # fmt: skip
    assert later is None


# -- real agents --------------------------------------------------------------------------


class Node:
    """One agent's config file and state directory, with a clock the test sets."""

    def __init__(
        self, tmp: Path, pub: Publisher, extra: str = "", name: str = "node", node_id: str = ""
    ) -> None:
        self.tmp = tmp / name
        (self.tmp / "state").mkdir(parents=True)
        # A fixed node id makes the stagger turns, and so the test, deterministic.
        (self.tmp / "state" / "node-id").write_text(f"{node_id or MIDDLE_NODE}\n")
        self.pub = pub
        self.now = NOW
        self.config_path = self.tmp / "agent.conf"
        self.write(extra)
        self.agent = self.make_agent(self.config())

    def write(self, extra: str) -> None:
        self.config_path.write_text(
            f'store = "{self.pub.store.url}"\nstate_dir = "{self.tmp / "state"}"\n'
            + self.pub.cluster_stanza()
            + extra
        )

    def config(self) -> AgentConfig:
        return parse_agent_config(self.config_path.read_text(), str(self.config_path))

    def make_agent(self, config: AgentConfig) -> Agent:
        return Agent(config, clock=lambda: self.now)

    def poll(self, at: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
        self.now = at
        result = self.agent.poll_once()
        assert result.ok, result.problems
        return result.installed, result.deferred

    def serial(self, order: str) -> str:
        return self.agent.state.orders[order].serial

    def status(self, order: str) -> dict[str, object]:
        status = build_status(self.config(), now=self.now)
        return next(o for o in status["orders"] if o["order"] == order)

    def ack(self) -> dict[str, tuple[str, str]]:
        path = Path(self.pub.store.url[len("file://") :]) / ack_key("web", self.agent.node_id)
        ack = open_ack(
            path.read_bytes(), cluster="web", node_id=self.agent.node_id, secrets=self.pub.secrets
        )
        return {order.order_name: (order.state, order.detail) for order in ack.orders}


@pytest.fixture
def pub(tmp_path: Path, make_publisher: Callable[..., Publisher]) -> Publisher:
    (tmp_path / "store").mkdir()
    return make_publisher(f"file://{tmp_path}/store")


def middle_node() -> str:
    """A node id whose turn for a.example is in the middle half of the stagger."""
    return next(
        node
        for node in (f"{n:032x}" for n in range(100))
        if 0.25 < stagger_fraction(node, "a.example") < 0.75
    )


MIDDLE_NODE = middle_node()


def issue(pub: Publisher, order: str, at: int, **options: object) -> str:
    """A certificate issued at ``at`` (backdated a day), cut over at ``at``; its serial."""
    bundle = pub.issue(order, not_before=at - DAY, install_after=at, **options)
    pub.publish(now=at)
    return bundle.serial


def test_stagger_defers_a_renewal_until_the_nodes_turn(tmp_path: Path, pub: Publisher) -> None:
    first = issue(pub, "a.example", NOW - HOUR)
    node = Node(tmp_path, pub, 'stagger = "2h"\n')
    assert node.poll(NOW) == (("a.example",), ())  # a first install is never staggered
    renewed = issue(pub, "a.example", NOW + 60)
    turn = NOW + 60 + int(2 * HOUR * stagger_fraction(node.agent.node_id, "a.example"))
    assert NOW + 61 + HOUR // 2 < turn < NOW + 60 + HOUR * 3 // 2
    assert node.poll(NOW + 61) == ((), ("a.example",))
    assert node.serial("a.example") == first
    shown = node.status("a.example")
    assert (shown["deferred_until"], shown["deferred_reason"]) == (turn, STAGGER)
    assert shown["deferred_serial"] == renewed and shown["serial"] == first
    text = format_status(build_status(node.config(), now=node.now))
    assert ", stagger" in text
    assert node.ack()["a.example"] == ("deferred", f"stagger until {iso_utc(turn)}")
    assert node.poll(turn - 1) == ((), ("a.example",))  # a 304 poll, still waiting
    assert node.poll(turn) == (("a.example",), ())  # a 304 poll at its turn
    assert node.serial("a.example") == renewed
    assert node.status("a.example")["deferred_until"] is None
    assert node.ack()["a.example"][0] == "installed"


def test_nodes_get_different_turns_within_the_stagger(tmp_path: Path, pub: Publisher) -> None:
    issue(pub, "a.example", NOW - HOUR)
    nodes = [
        Node(tmp_path, pub, 'stagger = "30m"\n', f"n{i}", node_id=f"{7 * i + 1:032x}")
        for i in range(6)
    ]
    for node in nodes:
        assert node.poll(NOW) == (("a.example",), ())
    issue(pub, "a.example", NOW + 60)
    turns = []
    for node in nodes:
        assert node.poll(NOW + 60) in (((), ("a.example",)), (("a.example",), ()))
        turns.append(node.status("a.example")["deferred_until"] or NOW + 60)
    assert all(isinstance(t, int) and NOW + 60 <= t < NOW + 60 + 1800 for t in turns)
    assert len(set(turns)) == len(turns)
    canary = min(range(len(nodes)), key=turns.__getitem__)
    moment = turns[canary]
    done = [node.poll(moment)[0] == ("a.example",) for node in nodes]
    assert done[canary] and done.count(True) < len(nodes)  # the canary first, not everyone


@pytest.mark.parametrize(
    ("window", "closed", "opens"),
    [
        ("03:00-05:00", NOW, MONDAY + 3 * HOUR),
        ("03:00-05:00", MONDAY + 5 * HOUR, MONDAY + DAY + 3 * HOUR),
        ("22:00-02:00", NOW, MONDAY + 22 * HOUR),
    ],
)
def test_update_window_defers_a_renewal_until_it_opens(
    tmp_path: Path, pub: Publisher, window: str, closed: int, opens: int
) -> None:
    first = issue(pub, "a.example", closed - HOUR)
    issue(pub, "b.example", closed - HOUR)
    node = Node(tmp_path, pub, f'update_window = "{window}"\n')
    assert node.poll(closed) == (("a.example", "b.example"), ())  # first installs: at once
    renewed = issue(pub, "a.example", closed)
    assert node.poll(closed) == ((), ("a.example",))
    shown = node.status("a.example")
    assert (shown["deferred_until"], shown["deferred_reason"]) == (opens, UPDATE_WINDOW)
    assert node.ack()["a.example"] == ("deferred", f"update window until {iso_utc(opens)}")
    assert node.poll(opens - 1) == ((), ("a.example",))
    assert node.serial("a.example") == first
    assert node.poll(opens) == (("a.example",), ())
    assert node.serial("a.example") == renewed


def test_an_expiring_certificate_overrides_stagger_and_window(
    tmp_path: Path, pub: Publisher
) -> None:
    pub.issue("a.example", not_before=NOW - DAY, lifetime=4 * DAY, install_after=NOW - HOUR)
    pub.issue("b.example", not_before=NOW - DAY, install_after=NOW - HOUR)
    pub.publish(now=NOW - HOUR)
    node = Node(tmp_path, pub, 'stagger = "6h"\nupdate_window = "03:00-05:00"\n')
    assert node.poll(NOW) == (("a.example", "b.example"), ())
    renewed = issue(pub, "a.example", NOW + 60)  # a.example's certificate ends in 3 days
    issue(pub, "b.example", NOW + 60)  # b.example's in 89: it waits for the window
    installed, deferred = node.poll(NOW + 60)
    assert (installed, deferred) == (("a.example",), ("b.example",))
    assert node.serial("a.example") == renewed
    assert node.status("b.example")["deferred_reason"] in (STAGGER, UPDATE_WINDOW)


def test_removals_are_never_delayed(tmp_path: Path, pub: Publisher) -> None:
    issue(pub, "a.example", NOW - HOUR)
    node = Node(tmp_path, pub, 'stagger = "6h"\nupdate_window = "03:00-05:00"\n'
                'default {\n  remove = "delete"\n  remove_after = 0\n}\n')  # fmt: skip
    assert node.poll(NOW) == (("a.example",), ())
    pub.remove("a.example", NOW)
    pub.publish(now=NOW + 60)
    node.now = NOW + 60
    result = node.agent.poll_once()
    assert result.removed == ("a.example",)
    assert not (tmp_path / "node" / "state" / "orders" / "a.example").exists()


def test_a_reload_recomputes_the_deferral(tmp_path: Path, pub: Publisher) -> None:
    issue(pub, "a.example", NOW - HOUR)
    node = Node(tmp_path, pub, 'update_window = "03:00-05:00"\n')
    assert node.poll(NOW) == (("a.example",), ())
    renewed = issue(pub, "a.example", NOW)
    assert node.poll(NOW + 60) == ((), ("a.example",))
    daemon = Daemon(str(node.config_path), node.config(), make_agent=node.make_agent)
    daemon.agent = node.agent
    node.write('update_window = "02:00-04:00"\n')  # now open
    daemon.request_reload()  # what SIGHUP does
    result = daemon.poll()  # the same minute, the same head (a 304 for the old agent)
    assert result.ok and result.installed == ("a.example",)
    assert daemon.agent.state.orders["a.example"].serial == renewed


def test_a_missed_window_waits_for_the_next_one(tmp_path: Path, pub: Publisher) -> None:
    issue(pub, "a.example", NOW - HOUR)
    node = Node(tmp_path, pub, 'update_window = "03:00-05:00"\n')
    assert node.poll(NOW) == (("a.example",), ())
    issue(pub, "a.example", NOW)
    assert node.poll(NOW + 60) == ((), ("a.example",))
    assert node.ack()["a.example"] == (
        "deferred",
        f"update window until {iso_utc(MONDAY + 3 * HOUR)}",
    )
    # The node was down from 02:01 to 05:30: a 304 poll finds the window closed again.
    assert node.poll(MONDAY + 5 * HOUR + 1800) == ((), ("a.example",))
    tomorrow = MONDAY + DAY + 3 * HOUR
    assert node.status("a.example")["deferred_until"] == tomorrow
    assert node.ack()["a.example"] == ("deferred", f"update window until {iso_utc(tomorrow)}")
