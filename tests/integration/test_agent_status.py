"""``certfleet-agent --status`` and the metrics file, after installs, deferrals, failing
commands and an expired head."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from certfleet.config import parse_agent_config
from node_agent.agent import Agent
from node_agent.metrics import escape_label

if TYPE_CHECKING:
    from tests.plugins.publisher import Publisher

AGENT = [sys.executable, "-m", "node_agent"]
FAMILIES = (
    ("last_successful_poll_timestamp_seconds", "gauge"),
    ("generation", "gauge"),
    ("head_expired", "gauge"),
    ("refused_objects_total", "counter"),
    ("certificate_not_after_timestamp_seconds", "gauge"),
    ("certificate_installed_timestamp_seconds", "gauge"),
    ("hook_failures_total", "counter"),
)


@pytest.mark.parametrize(
    ("value", "escaped"),
    [
        ("plain.example", "plain.example"),
        ('a"b', 'a\\"b'),
        ("a\\b", "a\\\\b"),
        ("a\nb", "a\\nb"),
        ('\\"\n', '\\\\\\"\\n'),
    ],
)
def test_label_values_are_escaped(value: str, escaped: str) -> None:
    assert escape_label(value) == escaped


class Node:
    def __init__(self, tmp: Path, pub: Publisher, extra: str = "") -> None:
        self.tmp = tmp
        self.config_path = tmp / "agent.conf"
        self.metrics = tmp / "prom" / "agent.prom"
        self.config_path.write_text(
            f'store = "{pub.store.url}"\nstate_dir = "{tmp / "state"}"\n'
            f'metrics_file = "{self.metrics}"\nhook_timeout = "5s"\n' + pub.cluster_stanza() + extra
        )

    def agent(self, clock: Callable[[], float] = time.time) -> Agent:
        text = self.config_path.read_text()
        return Agent(parse_agent_config(text, str(self.config_path)), clock=clock)

    def status(self, *extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*AGENT, "--config", str(self.config_path), "--status", *extra],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip


@pytest.fixture
def pub(tmp_path: Path, make_publisher: Callable[..., Publisher]) -> Publisher:
    (tmp_path / "store").mkdir()
    return make_publisher(f"file://{tmp_path}/store")


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(path): (path.lstat().st_mtime_ns, path.lstat().st_size) for path in root.rglob("*")}


def test_status_and_metrics_after_installs_deferrals_and_failures(
    tmp_path: Path, pub: Publisher
) -> None:
    now = int(time.time())
    ok = pub.issue("ok.example", ["ok.example", "www.ok.example"])
    later = pub.issue("later.example", install_after=now + 3600)
    pub.publish()
    node = Node(
        tmp_path,
        pub,
        'default {\n  on_update = ["exit 3"]\n}\norder "ok.example" {\n  on_update = ["true"]\n}\n',
    )
    result = node.agent().poll_once()
    assert result.installed == ("ok.example",) and result.deferred == ("later.example",)

    before = snapshot(tmp_path / "state")
    done = node.status("--json")
    assert done.returncode == 0, done.stderr
    assert snapshot(tmp_path / "state") == before  # --status writes nothing
    report = json.loads(done.stdout)
    (cluster,) = report["clusters"]
    assert cluster["cluster"] == "web" and cluster["generation"] == pub.generation
    assert now <= cluster["last_successful_poll"] <= time.time()
    assert cluster["head_expired"] is False and cluster["last_error"] is None
    orders = {o["order"]: o for o in report["orders"]}
    assert orders["ok.example"]["names"] == ["ok.example", "www.ok.example"]
    assert orders["ok.example"]["serial"] == ok.serial
    assert orders["ok.example"]["not_after"] == ok.not_after
    assert now <= orders["ok.example"]["installed_at"] <= time.time()
    assert orders["ok.example"]["on_update"][0]["ok"] is True
    assert orders["later.example"]["serial"] is None
    assert orders["later.example"]["deferred_until"] == now + 3600
    assert orders["later.example"]["deferred_serial"] == later.serial
    assert report["node_id"] == (tmp_path / "state" / "node-id").read_text().strip()

    # The deferred order comes due; its on_update command fails and stays owed.
    node.agent(clock=lambda: now + 3601).poll_once()
    report = json.loads(node.status("--json").stdout)
    orders = {o["order"]: o for o in report["orders"]}
    assert orders["later.example"]["serial"] == later.serial
    assert orders["later.example"]["owed"][0]["command"] == "exit 3"
    assert orders["later.example"]["on_update"][0]["ok"] is False
    assert report["hook_failures_total"] == 1

    human = node.status().stdout
    assert "CLUSTER" in human and "LAST SUCCESSFUL POLL" in human
    assert "OWED (1 failures): exited with status 3" in human
    assert "ok.example www.ok.example" in human

    text = node.metrics.read_text()
    for family, kind in FAMILIES:
        assert f"# HELP certfleet_agent_{family} " in text
        assert f"# TYPE certfleet_agent_{family} {kind}\n" in text
    assert f'certfleet_agent_generation{{cluster="web"}} {pub.generation}\n' in text
    assert "certfleet_agent_hook_failures_total 1\n" in text
    not_after = 'certfleet_agent_certificate_not_after_timestamp_seconds{order="later.example"}'
    assert f"{not_after} {later.not_after}\n" in text
    assert 'certfleet_agent_refused_objects_total{cluster="web",kind="bundle"} 0\n' in text
    assert 'certfleet_agent_head_expired{cluster="web"} 0\n' in text
    assert not [name for name in os.listdir(node.metrics.parent) if name != "agent.prom"]


def test_an_expired_head_shows_in_status_and_metrics(tmp_path: Path, pub: Publisher) -> None:
    now = int(time.time())
    pub.issue("a.example")
    pub.publish(now=now - 7200, valid_for=3600)
    node = Node(tmp_path, pub)
    result = node.agent().poll_once()
    assert any("EXPIRED" in problem.message for problem in result.problems)
    assert 'certfleet_agent_head_expired{cluster="web"} 1\n' in node.metrics.read_text()
    assert 'refused_objects_total{cluster="web",kind="head"} 1\n' in node.metrics.read_text()
    report = json.loads(node.status("--json").stdout)
    assert report["clusters"][0]["last_error"].startswith("head of cluster web: EXPIRED")
    assert "EXPIRED" in node.status().stdout


def test_status_needs_no_network(tmp_path: Path, pub: Publisher) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    path = tmp_path / "agent.conf"
    path.write_text(
        f'store = "http://127.0.0.1:{port}/nowhere"\nstate_dir = "{tmp_path / "state"}"\n'
        + pub.cluster_stanza()
    )
    done = subprocess.run(
        [*AGENT, "--config", str(path), "--status"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "no orders installed yet" in done.stdout
    assert not (tmp_path / "state").exists()  # nothing made, not even the state directory
