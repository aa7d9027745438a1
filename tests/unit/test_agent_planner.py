"""A poll after a clean one looks only at what a new head changed, and ends as a full pass would.

Two agents read one publication (a file:// store): ``steady`` polls on (after its first
poll, a new head makes it look only at the orders of the shards whose hash moved), and a
fresh ``Agent`` over a second state directory makes every poll of ``reference`` a full
pass. After each change (a renewal, a removal, an order deferred by ``install_after`` and
its time coming, a wildcard order, a new order) both must hold the same orders and write
the same ack lines. Acks list only exceptions above ``MAX_LISTED_ORDERS``; the test lowers
it so that a small publication is in that mode.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import node_agent.ack
import node_agent.agent
from certfleet.bundle import AckOrder, open_ack
from certfleet.config import parse_agent_config
from node_agent.agent import Agent
from tests.plugins.publisher import Publisher

ORDERS = 24


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Pair:
    """The steady agent, and the config of the full-pass reference."""

    def __init__(self, pub: Publisher, tmp: Path, clock: Clock) -> None:
        self.pub = pub
        self.clock = clock
        self.texts = {
            name: (
                f'store = "{pub.store.url}"\nstate_dir = "{tmp / name}"\n' + pub.cluster_stanza()
            )
            for name in ("steady", "reference")
        }
        self.steady = Agent(parse_agent_config(self.texts["steady"], "steady.conf"), clock=clock)
        self.full_passes = 0
        plan_all = self.steady.planner.plan_all

        def counted(*args: Any) -> Any:
            self.full_passes += 1
            return plan_all(*args)

        self.steady.planner.plan_all = counted  # type: ignore[method-assign]

    def poll(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """Poll both; (what steady holds, what reference holds): orders and ack lines."""
        steady = self.steady.poll_once()
        reference_agent = Agent(
            parse_agent_config(self.texts["reference"], "reference.conf"), clock=self.clock
        )
        reference = reference_agent.poll_once()
        assert steady.ok and reference.ok, (steady.problems, reference.problems)
        return self._holds(self.steady), self._holds(reference_agent)

    def _holds(self, agent: Agent) -> dict[str, Any]:
        stored = self.pub.store.get(f"{self.pub.prefix()}/acks/{agent.node_id}", max_bytes=1 << 24)
        ack = open_ack(
            stored.data, cluster=self.pub.cluster, node_id=agent.node_id, secrets=self.pub.secrets
        )
        orders = {
            name: (order.bundle_hash, order.removed_at)
            for name, order in agent.state.orders.items()
        }
        lines: list[AckOrder] = list(ack.orders)
        return {"orders": orders, "ack": lines, "generation": ack.generation}


@pytest.fixture
def pair(
    tmp_path: Path, make_publisher: Callable[..., Publisher], monkeypatch: pytest.MonkeyPatch
) -> Pair:
    monkeypatch.setattr(node_agent.ack, "MAX_LISTED_ORDERS", 8)
    monkeypatch.setattr(node_agent.agent, "MAX_LISTED_ORDERS", 8)
    (tmp_path / "store").mkdir()
    pub = make_publisher(f"file://{tmp_path / 'store'}")
    for number in range(ORDERS):
        pub.issue(f"o{number:02d}.example.com")
    pub.publish()
    return Pair(pub, tmp_path, Clock(time.time()))


def test_each_change_ends_as_a_full_pass_would(pair: Pair) -> None:
    pub = pair.pub
    steady, reference = pair.poll()
    assert steady == reference and len(steady["orders"]) == ORDERS
    assert pair.full_passes == 1  # the first poll of an agent

    steps: list[Callable[[], None]] = [
        lambda: pub.issue("o03.example.com"),  # a renewal
        lambda: pub.remove("o05.example.com"),  # removed upstream: kept, reported
        lambda: pub.issue("late.example.com", install_after=int(pair.clock.now) + 600),
        lambda: pub.issue("o07.example.com", install_after=int(pair.clock.now) + 600),
        lambda: pub.issue("new.example.com"),
    ]
    for step in steps:
        step()
        pub.publish()
        steady, reference = pair.poll()
        assert steady == reference
    assert pair.full_passes == 1  # every one of those polls looked only at what changed
    lines = {line.order_name: line.state for line in steady["ack"]}
    assert lines == {
        "o05.example.com": "removed",
        "late.example.com": "deferred",
        "o07.example.com": "deferred",
    }

    pair.clock.now += 601  # their time has come: installed on a poll answered 304
    steady, reference = pair.poll()
    assert steady == reference
    assert {line.order_name for line in steady["ack"]} == {"o05.example.com"}

    pub.issue("*.wild.example.com")  # may share a directory: a full pass
    pub.publish()
    steady, reference = pair.poll()
    assert steady == reference and "*.wild.example.com" in steady["orders"]
    assert pair.full_passes == 2
