"""Backing off after a failed check_command or probe: ``node_agent.backoff``.

The pure rule by table and property; then real agents on a ``file://`` store with a clock
the test moves (``Agent(clock=...)``) and no jitter (``rng``), a check_command that appends
to a marker file (one line per run) and a store that records the keys it is asked for; a
reload through the ``Daemon``; ``--status`` data, the sealed ack and the metrics file; and
one probe that fails against real nginx.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import given
from hypothesis import strategies as st

from certfleet.bundle import iso_utc, open_ack
from certfleet.config import AgentConfig, parse_agent_config
from certfleet.store import Store, StoredObject
from node_agent.ack import ack_key
from node_agent.agent import Agent
from node_agent.agentstate import AgentState
from node_agent.backoff import FIRST_DELAY, JITTER, MAX_DELAY, hold, retry_delay
from node_agent.daemon import Daemon
from node_agent.result import PollResult
from node_agent.statestore import STATE_FILE, StateStore
from node_agent.status import build_status, format_status
from tests.plugins.nginx import SERVER_NAME as WWW
from tests.plugins.nginx_site import Site, closed_port

if TYPE_CHECKING:
    from tests.plugins.publisher import Publisher

NOW = int(time.time())  # the publisher's certificates are valid from a day before this
ORDER = "a.example"

# -- the pure rule ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempts", "delay"),
    [(1, 60), (2, 120), (3, 240), (4, 480), (5, 960), (6, 1920), (7, 3600), (8, 3600),
     (60, 3600), (0, 60)],
)  # fmt: skip
def test_the_delay_doubles_from_a_minute_up_to_an_hour(attempts: int, delay: int) -> None:
    assert retry_delay(attempts, 0.5) == delay


@given(st.integers(1, 10_000), st.floats(0.0, 1.0, exclude_max=True))
def test_the_jitter_stays_within_ten_percent(attempts: int, fraction: float) -> None:
    base = min(FIRST_DELAY * 2 ** min(attempts - 1, 16), MAX_DELAY)
    delay = retry_delay(attempts, fraction)
    assert base * (1 - JITTER) - 1 <= delay <= base * (1 + JITTER) + 1


def test_attempts_count_on_for_the_same_bundle_and_start_again_for_another() -> None:
    state = AgentState()
    first = hold(state, ORDER, cluster="web", bundle_hash="aa", error="e1", now=0, fraction=0.5)
    second = hold(state, ORDER, cluster="web", bundle_hash="aa", error="e2", now=60, fraction=0.5)
    assert (first.attempts, first.retry_at, second.attempts, second.retry_at) == (1, 60, 2, 180)
    assert second.detail() == "e2; retry at 1970-01-01T00:03:00Z (attempt 2 failed)"
    other = hold(state, ORDER, cluster="web", bundle_hash="bb", error="e3", now=200, fraction=0.0)
    assert (other.attempts, other.retry_at) == (1, 254)  # 60 - 10 %
    assert state.backoff == {ORDER: other}


# -- real agents --------------------------------------------------------------------------


class RecordingStore:
    """The real store; remembers the key of every get."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.url = inner.url
        self.readonly = inner.readonly
        self.stats = inner.stats
        self.gets: list[str] = []

    def get(self, key: str, *, max_bytes: int) -> StoredObject:
        self.gets.append(key)
        return self.inner.get(key, max_bytes=max_bytes)

    def bundle_gets(self) -> int:
        return sum("/bundles/" in key for key in self.gets)

    def __getattr__(self, name: str) -> Callable[..., object]:
        return getattr(self.inner, name)  # type: ignore[no-any-return]


class Node:
    """One agent (config file, state directory) whose check_command fails while ``broken``
    exists and appends a line to ``runs`` each time it runs."""

    def __init__(self, tmp: Path, pub: Publisher, extra: str = "") -> None:
        self.tmp = tmp
        self.pub = pub
        self.now = NOW
        self.runs = tmp / "runs.log"
        self.broken = tmp / "broken"
        self.config_path = tmp / "agent.conf"
        check = f"echo $CERTFLEET_UPDATED_ORDERS >> {self.runs}; test ! -e {self.broken}"
        self.config_path.write_text(
            f'store = "{pub.store.url}"\nstate_dir = "{tmp / "state"}"\n'
            f'metrics_file = "{tmp / "agent.prom"}"\n'
            + pub.cluster_stanza()
            + f'default {{\n  check_command = "{check}"\n}}\n'
            + extra
        )
        self.store = RecordingStore(pub.store)
        self.agent = self.make_agent(self.config())

    def config(self) -> AgentConfig:
        return parse_agent_config(self.config_path.read_text(), str(self.config_path))

    def make_agent(self, config: AgentConfig) -> Agent:
        return Agent(config, store=self.store, clock=lambda: self.now, rng=lambda: 0.5)  # type: ignore[arg-type]

    def poll(self, at: int) -> PollResult:
        self.now = at
        self.store.gets.clear()
        return self.agent.poll_once()

    def run_count(self) -> int:
        return len(self.runs.read_text().splitlines()) if self.runs.exists() else 0

    def serial(self) -> str | None:
        order = self.agent.state.orders.get(ORDER)
        return order.serial if order else None

    def status(self) -> dict[str, object]:
        status = build_status(self.config(), now=self.now)
        return next(o for o in status["orders"] if o["order"] == ORDER)

    def ack(self) -> tuple[str, str, str]:
        path = Path(self.pub.store.url[len("file://") :]) / ack_key("web", self.agent.node_id)
        ack = open_ack(
            path.read_bytes(), cluster="web", node_id=self.agent.node_id, secrets=self.pub.secrets
        )
        (order,) = [o for o in ack.orders if o.order_name == ORDER]
        return order.state, order.serial, order.detail

    def hook_failures(self) -> str:
        text = (self.tmp / "agent.prom").read_text()
        return next(line for line in text.splitlines() if line.startswith("certfleet_agent_hook"))


@pytest.fixture
def pub(tmp_path: Path, make_publisher: Callable[..., Publisher]) -> Publisher:
    (tmp_path / "store").mkdir()
    return make_publisher(f"file://{tmp_path}/store")


@pytest.fixture
def failed(tmp_path: Path, pub: Publisher) -> Iterator[tuple[Node, str, str]]:
    """A node that installed ``ORDER`` and then rolled its renewal back at ``NOW``:
    (the node, the serial served, the serial backing off)."""
    first = pub.issue(ORDER).serial
    pub.publish()
    node = Node(tmp_path, pub)
    assert node.poll(NOW - 600).installed == (ORDER,)
    node.broken.touch()
    renewed = pub.issue(ORDER).serial
    pub.publish()
    result = node.poll(NOW)
    assert result.rolled_back == (ORDER,) and node.run_count() == 2
    assert node.store.bundle_gets() == 1
    (problem,) = result.problems
    assert problem.message.startswith(f"order '{ORDER}': check_command ")
    assert problem.message.endswith(
        f"; rolled back to the previous version; retry at {iso_utc(NOW + 60)} (attempt 1 failed)"
    )
    yield node, first, renewed


def assert_held(node: Node, at: int, runs: int) -> PollResult:
    """A poll at ``at`` within the backoff: the failure reported, nothing fetched or run."""
    result = node.poll(at)
    assert not result.ok and result.installed == () and result.rolled_back == ()
    assert result.commands == () and node.run_count() == runs
    assert node.store.bundle_gets() == 0, node.store.gets
    (problem,) = result.problems
    assert problem.subject == f"order '{ORDER}'" and problem.cluster == "web"
    assert " retry at " in problem.message
    assert result.clusters[0].applied_generation < node.pub.generation  # the head waits
    return result


def test_a_failing_check_command_backs_off_doubling_up_to_the_cap(
    failed: tuple[Node, str, str],
) -> None:
    node, first, _ = failed
    at, runs = NOW, 2
    for delay in (60, 120, 240, 480, 960, 1920, 3600, 3600):
        for wait in (1, delay // 2, delay - 1):
            assert_held(node, at + wait, runs)
        at += delay
        result = node.poll(at)  # the retry: one attempt, and one more failure
        runs += 1
        assert result.rolled_back == (ORDER,) and node.run_count() == runs
        assert node.store.bundle_gets() == 1
        held = node.agent.state.backoff[ORDER]
        assert (held.attempts, held.retry_at) == (runs - 1, at + min(2 * delay, 3600))
        assert node.serial() == first
    node.broken.unlink()  # fixed by hand: picked up at the next retry
    result = node.poll(node.agent.state.backoff[ORDER].retry_at)
    assert result.ok and result.installed == (ORDER,), result.problems
    assert (
        node.agent.state.backoff == {}
        and StateStore(node.agent.config.state_dir).load().backoff == {}
    )
    assert result.clusters[0].applied_generation == node.pub.generation
    assert node.poll(node.now + 60).commands == ()


def test_a_new_bundle_is_tried_at_once(failed: tuple[Node, str, str]) -> None:
    node, _, _ = failed
    assert_held(node, NOW + 10, 2)
    fixed = node.pub.issue(ORDER).serial  # the sync published another bundle
    node.pub.publish()
    result = node.poll(NOW + 20)
    assert result.rolled_back == (ORDER,) and node.run_count() == 3  # tried, failed again
    held = node.agent.state.backoff[ORDER]
    assert (held.attempts, held.retry_at) == (1, NOW + 80)  # counted afresh
    node.broken.unlink()
    node.pub.issue(ORDER)
    node.pub.publish()
    assert node.poll(NOW + 30).installed == (ORDER,)
    assert node.serial() != fixed and node.agent.state.backoff == {}


def test_a_restart_keeps_the_backoff(failed: tuple[Node, str, str]) -> None:
    node, _, _ = failed
    saved = node.agent.state.backoff
    node.agent = node.make_agent(node.config())  # a new process on the same state_dir
    assert node.agent.state.backoff == saved
    assert_held(node, NOW + 30, 2)
    node.agent = node.make_agent(node.config())
    assert node.poll(NOW + 60).rolled_back == (ORDER,)  # at retry_at, not before
    assert node.agent.state.backoff[ORDER].attempts == 2


def test_a_reload_ends_the_backoff(failed: tuple[Node, str, str]) -> None:
    node, _, renewed = failed
    daemon = Daemon(str(node.config_path), node.config(), make_agent=node.make_agent)
    daemon.agent = node.agent
    node.broken.unlink()  # the operator fixed the server, then SIGHUP
    node.now = NOW + 5
    assert daemon.poll().commands == ()  # no reload asked: still backing off
    daemon.request_reload()  # what SIGHUP does
    result = daemon.poll()
    assert result.ok and result.installed == (ORDER,), result.problems
    assert node.run_count() == 3
    assert daemon.agent.state.orders[ORDER].serial == renewed
    assert StateStore(node.agent.config.state_dir).load().backoff == {}


def test_status_ack_and_metrics_show_the_failure_and_the_retry(
    failed: tuple[Node, str, str],
) -> None:
    node, first, renewed = failed
    result = assert_held(node, NOW + 30, 2)
    shown = node.status()
    assert (shown["retry_at"], shown["attempts"]) == (NOW + 60, 1)
    assert shown["serial"] == first and shown["deferred_until"] is None
    assert str(shown["failure"]).startswith(f"order '{ORDER}': check_command ")
    text = format_status(build_status(node.config(), now=node.now))
    assert "RETRY AT" in text and "(in 30 s), attempt 1 failed" in text
    assert "backing off" in text and "retry at " in text
    assert node.ack() == ("failed", first, result.problems[0].message)
    assert node.hook_failures() == "certfleet_agent_hook_failures_total 1"  # not once a poll
    node.poll(NOW + 60)  # the second attempt
    assert node.hook_failures() == "certfleet_agent_hook_failures_total 2"
    assert node.ack()[2].endswith(f"retry at {iso_utc(NOW + 180)} (attempt 2 failed)")
    as_json = json.loads(json.dumps(build_status(node.config(), now=node.now)))
    assert as_json["orders"][0]["attempts"] == 2 and as_json["hook_failures_total"] == 2
    assert as_json["orders"][0]["serial"] == first != renewed


def test_a_first_install_that_fails_its_check_is_removed_and_backs_off(
    tmp_path: Path, pub: Publisher
) -> None:
    pub.issue(ORDER)
    pub.publish()
    node = Node(tmp_path, pub)
    node.broken.touch()
    result = node.poll(NOW)
    assert result.rolled_back == (ORDER,) and node.serial() is None
    assert result.problems[0].message.endswith(
        "; removed (a first install: there is no previous version); "
        f"retry at {iso_utc(NOW + 60)} (attempt 1 failed)"
    )
    assert not (tmp_path / "state" / "orders" / ORDER).exists()
    assert_held(node, NOW + 59, 1)
    shown = node.status()
    assert (shown["cluster"], shown["serial"], shown["retry_at"]) == ("web", None, NOW + 60)
    assert node.ack()[:2] == ("failed", "")
    node.broken.unlink()
    assert node.poll(NOW + 60).installed == (ORDER,)


def test_an_order_no_longer_published_drops_its_backoff(failed: tuple[Node, str, str]) -> None:
    node, _, _ = failed
    node.pub.remove(ORDER, NOW)
    node.pub.publish()
    result = node.poll(NOW + 10)
    assert result.ok and result.retired == (ORDER,), result.problems
    assert node.agent.state.backoff == {}


def test_a_state_file_without_backoffs_loads(failed: tuple[Node, str, str]) -> None:
    node, _, _ = failed
    path = Path(node.agent.config.state_dir) / STATE_FILE
    index = json.loads(path.read_text())
    assert list(index["backoff"]) == [ORDER]
    del index["backoff"]  # as an agent before backoffs wrote it
    path.write_text(json.dumps(index))
    node.agent = node.make_agent(node.config())
    assert node.agent.state.backoff == {}
    assert node.poll(NOW + 10).rolled_back == (ORDER,)  # no backoff: tried at once
    assert "backoff" in json.loads(path.read_text())


def test_a_failed_probe_backs_off_with_real_nginx(site: Site) -> None:
    clock = [float(NOW)]
    config = site.probing("true").config  # nginx never loads the new files
    agent = Agent(config, clock=lambda: clock[0], rng=lambda: 0.5)
    site.pub.issue(WWW)
    site.pub.publish()
    result = agent.poll_once()
    assert result.rolled_back == (WWW,)
    assert [run.ok for run in result.commands] == [True, False, True]
    for at in (NOW + 1, NOW + 59):
        clock[0] = at
        held = agent.poll_once()  # no switch, no reload, no probe
        assert held.commands == () and held.rolled_back == () and not held.ok
        assert held.problems[0].message.endswith(f"retry at {iso_utc(NOW + 60)} (attempt 1 failed)")
    clock[0] = NOW + 60
    again = agent.poll_once()
    assert again.rolled_back == (WWW,) and [run.ok for run in again.commands] == [True, False, True]
    assert agent.state.backoff[WWW].retry_at == NOW + 180
    assert site.crt.read_bytes() == site.first.certificate_pem
    assert site.served_serial() == int(site.first.serial, 16)


def test_a_first_install_not_served_yet_is_kept_and_not_held(
    tmp_path: Path, pub: Publisher
) -> None:
    pub.issue(WWW)
    pub.publish()
    text = (
        f'store = "{pub.store.url}"\nstate_dir = "{tmp_path / "state"}"\n'
        + pub.cluster_stanza()
        + f'default {{\n  probe = "127.0.0.1:{closed_port()}"\n  probe_timeout = "1s"\n}}\n'
    )
    agent = Agent(parse_agent_config(text, "agent.conf"))
    result = agent.poll_once()
    assert result.installed == (WWW,) and result.not_served == (WWW,) and result.ok
    assert agent.state.backoff == {}
    assert agent.poll_once().ok
