"""Clock skew between the sync, the CA and the agents.

The sync stamps each entry with ``install_after`` by its own clock (not_before for a new
order; not_before + the skew margin for a renewal or rekey), and each head with
``valid_until``. An agent whose clock is behind defers, an agent ahead installs earlier,
one so far ahead that the head looks expired keeps serving what it has and says so
loudly; a sync whose clock is behind the CA's refuses the certificate as "not valid now"
and keeps its pending key, so nothing is lost once the clock is right.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from certfleet.config import parse_agent_config
from certfleet.sync import mark_rekey
from node_agent.agent import Agent
from tests.plugins.faults import Ledger, agent_config_text, cluster_stanza, installed_orders
from tests.plugins.sandbox import Sandbox
from tests.plugins.sync_world import World, make_world

HOUR = 3600.0
DAY = 86400.0


class SkewedAgent:
    """An agent whose clock is ``skew`` seconds off real time (the skew can change)."""

    def __init__(self, world: World, tmp: Path) -> None:
        self.skew = 0.0
        self.tmp = tmp
        stanza = cluster_stanza(world.cluster, world.secrets, [world.signing_key.public_key()])
        text = agent_config_text(world.store.url, tmp / "state", stanza)
        self.config = parse_agent_config(text, str(tmp / "agent.conf"))

    def poll(self) -> tuple[bool, tuple[str, ...], tuple[str, ...], str]:
        result = Agent(self.config, clock=lambda: time.time() + self.skew).poll_once()
        text = " / ".join(problem.message for problem in result.problems)
        return result.ok, result.installed, result.deferred, text

    def keys(self) -> dict[str, bytes]:
        return {n: s.key_pem for n, s in installed_orders(self.tmp / "state").items()}


@pytest.mark.fault
def test_agents_ahead_and_behind_the_sync(sandbox: Sandbox, tmp_path: Path, faults: Ledger) -> None:
    world = make_world(sandbox, (tmp_path / "store").as_uri(), "")
    world.settings["skew_margin"] = 2 * HOUR  # renewals install 1 h after now (not_before -1 h)
    name = world.add(f"clock.{world.cluster}.example")
    assert world.sync().errors == {}
    first = world.published().bundles[name].private_key_pem

    agent = SkewedAgent(world, tmp_path / "agent")
    agent.skew = -2 * HOUR  # behind the CA's backdated not_before: a new order waits
    faults.injected()
    ok, installed, deferred, _ = agent.poll()
    assert ok and installed == () and deferred == (name,)
    assert agent.keys() == {}
    agent.skew = 0.0  # its clock caught up: the deferred order is reconsidered (a 304 poll)
    ok, installed, _, _ = agent.poll()
    assert ok and installed == (name,) and agent.keys() == {name: first}

    mark_rekey(world.config(), world.cluster, [name], store=world.store)
    assert world.sync().errors == {}
    renewed = world.published()
    assert renewed.entries[name].install_after > time.time() + 0.9 * HOUR
    second = renewed.bundles[name].private_key_pem
    behind = SkewedAgent(world, tmp_path / "behind")
    behind.skew = -2 * HOUR
    ok, installed, deferred, _ = behind.poll()  # a fresh node behind: even the first waits
    assert ok and installed == () and deferred == (name,)

    ok, installed, deferred, _ = agent.poll()  # on time: the fleet cuts over in 1 h
    assert ok and deferred == (name,) and agent.keys() == {name: first}
    agent.skew = 1.5 * HOUR  # ahead: it cuts over now
    faults.injected()
    ok, installed, _, _ = agent.poll()
    assert ok and installed == (name,) and agent.keys() == {name: second}

    agent.skew = 8 * DAY  # so far ahead that the head (valid 7 days at most) looks expired
    faults.injected()
    ok, installed, _, text = agent.poll()
    assert not ok and "EXPIRED" in text and world.cluster in text
    assert agent.keys() == {name: second}, "an expired head must not remove anything"


@pytest.mark.fault
def test_a_sync_behind_the_ca_refuses_the_certificate_and_keeps_its_key(
    sandbox: Sandbox, tmp_path: Path, faults: Ledger
) -> None:
    world = make_world(sandbox, (tmp_path / "store").as_uri(), "")
    name = world.add(f"early.{world.cluster}.example")
    world.offset = -2 * HOUR  # the sync's clock is behind the CA's not_before (backdated 1 h)
    faults.injected()
    summary = world.sync()
    assert "not valid now" in summary.errors[name]
    assert summary.keys_generated == 1
    world.offset = 0.0
    summary = world.sync()
    assert summary.errors == {} and summary.keys_generated == 0, "the pending key is reused"
    assert summary.certificates_published == 1
    orders = [json.loads(path.read_text()) for path in (sandbox.data_dir / "orders").glob("*.json")]
    certs = next(order["certs"] for order in orders if order["name"] == name)
    assert len(certs) == 1, "one key, one CSR"
