"""``certfleet-agent`` as a daemon: readyfd, pidfile, SIGHUP (good and bad config), SIGTERM,
the store going away and coming back, acks, safe-name clashes and cached refusals.

The daemon runs as a real process (``python -m node_agent``), as a supervisor would run it;
``--status --json`` and the metrics file are read after each step.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

import node_agent.ack
from certfleet.bundle import open_ack
from certfleet.config import parse_agent_config
from certfleet.store import FileStore, StoreAccessDenied
from node_agent.ack import ack_key
from node_agent.agent import Agent
from tests.plugins.agent_process import AGENT, Daemon, agent_status, wait_for

if TYPE_CHECKING:
    from tests.plugins.publisher import Publisher
    from tests.plugins.seaweedfs import SeaweedFS


def order_status(config: Path, name: str) -> dict[str, Any]:
    return next(o for o in agent_status(config)["orders"] if o["order"] == name)


def metrics(path: Path) -> dict[str, float]:
    """The samples of a textfile-collector file, by ``name{labels}``."""
    samples = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


@pytest.fixture
def file_pub(tmp_path: Path, make_publisher: Callable[..., Publisher]) -> Publisher:
    (tmp_path / "store").mkdir()
    return make_publisher(f"file://{tmp_path}/store")


def write_config(
    tmp: Path, pub: Publisher, extra: str = "", *, interval: str = "1h", store: str | None = None
) -> Path:
    path = tmp / "agent.conf"
    path.write_text(
        f'store = "{store or pub.store.url}"\nstate_dir = "{tmp / "state"}"\n'
        f'poll_interval = "{interval}"\nmetrics_file = "{tmp / "metrics" / "agent.prom"}"\n'
        f'hook_timeout = "10s"\n' + pub.cluster_stanza() + extra
    )
    return path


def hook(tmp: Path, name: str) -> str:
    """A default block whose on_update appends ``<name>:$CERTFLEET_UPDATED_ORDERS`` to a log."""
    command = f"echo {name}:$CERTFLEET_UPDATED_ORDERS >> {tmp / 'hook.log'}"
    return f'default {{\n  on_update = ["{command}"]\n}}\n'


def hook_lines(tmp: Path) -> list[str]:
    path = tmp / "hook.log"
    return path.read_text().split() if path.exists() else []


# -- the lifecycle: readyfd, pidfile, SIGHUP good and bad, SIGTERM -------------------------


def test_daemon_lifecycle(tmp_path: Path, file_pub: Publisher, daemons: list[Daemon]) -> None:
    first = file_pub.issue("a.example")
    file_pub.publish()
    config = write_config(tmp_path, file_pub, hook(tmp_path, "one"))
    pidfile = tmp_path / "run" / "agent.pid"
    pidfile.parent.mkdir()
    daemon = Daemon(config, "--pidfile", str(pidfile))
    daemons.append(daemon)
    # readyfd: one newline, then closed, once the first poll is done.
    assert daemon.wait_ready() == b"\n"
    assert (tmp_path / "state" / "orders" / "a.example" / "ecdsa.crt.pem").exists()
    assert pidfile.read_text() == f"{daemon.process.pid}\n"
    assert hook_lines(tmp_path) == ["one:a.example"]
    assert order_status(config, "a.example")["serial"] == first.serial

    # A second agent on the same pid file refuses to start, naming the running one.
    refused = subprocess.run(
        [*AGENT, "--config", str(config), "--once", "--pidfile", str(pidfile)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert refused.returncode == 1
    assert f"already running as PID {daemon.process.pid}" in refused.stderr
    assert pidfile.read_text() == f"{daemon.process.pid}\n"  # untouched

    # SIGHUP with a good new config: read again, and a poll at once (the interval is 1 h).
    second = file_pub.issue("a.example")
    file_pub.publish()
    write_config(tmp_path, file_pub, hook(tmp_path, "two"))
    daemon.signal(signal.SIGHUP)
    wait_for(lambda: "two:a.example" in hook_lines(tmp_path), what="the reloaded hook")
    assert order_status(config, "a.example")["serial"] == second.serial
    assert "config reloaded" in daemon.stderr()

    # SIGHUP with a bad config: reported, the old config kept (its hook still runs).
    config.write_text(config.read_text() + "poll_interval = \n nonsense {")
    third = file_pub.issue("a.example")
    file_pub.publish()
    daemon.signal(signal.SIGHUP)
    wait_for(lambda: hook_lines(tmp_path).count("two:a.example") == 2, what="the old hook")
    assert "config reload failed, keeping the running config" in daemon.stderr()
    assert str(config) in daemon.stderr()  # the error names the file
    assert daemon.process.poll() is None
    write_config(tmp_path, file_pub, hook(tmp_path, "two"))  # good again, for --status
    assert order_status(config, "a.example")["serial"] == third.serial

    # SIGTERM: exits 0 at once, removes its pid file.
    started = time.monotonic()
    assert daemon.stop() == 0
    assert time.monotonic() - started < 5
    assert not pidfile.exists()
    assert "certfleet-agent stopped" in daemon.stderr()

    samples = metrics(tmp_path / "metrics" / "agent.prom")
    assert samples['certfleet_agent_generation{cluster="web"}'] == file_pub.generation
    assert samples["certfleet_agent_hook_failures_total"] == 0
    assert samples[
        'certfleet_agent_certificate_not_after_timestamp_seconds{order="a.example"}'
    ] == (third.not_after)


def test_a_stale_pid_file_is_replaced_and_a_live_pid_refuses_the_start(
    tmp_path: Path, file_pub: Publisher
) -> None:
    """A PID that no longer runs, or one whose process started after the file was written (a
    reused number), is stale: replaced. A live PID that was running when the file was written
    refuses the start, whatever the process is."""
    file_pub.issue("a.example")
    file_pub.publish()
    config = write_config(tmp_path, file_pub)
    pidfile = tmp_path / "agent.pid"
    command = [*AGENT, "--config", str(config), "--once", "--pidfile", str(pidfile)]

    def run_once() -> subprocess.CompletedProcess[str]:
        return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)

    gone = subprocess.Popen(["true"])
    gone.wait()
    other = subprocess.Popen(["sleep", "30"])
    try:
        pidfile.write_text(f"{other.pid}\n")  # written while `sleep` runs: it holds the file
        refused = run_once()
        assert refused.returncode == 1, refused.stderr
        assert f"already running as PID {other.pid} (the PID it names)" in refused.stderr
        assert pidfile.read_text() == f"{other.pid}\n"  # left as it was

        hour_ago = time.time() - 3600
        for stale, written_at in ((gone.pid, None), (other.pid, hour_ago)):
            pidfile.write_text(f"{stale}\n")
            if written_at is not None:  # `sleep` started after this file was written
                os.utime(pidfile, (written_at, written_at))
            done = run_once()
            assert done.returncode == 0, done.stderr
            assert f"stale pid file {pidfile} (PID {stale} is not running, or is a reused" in (
                done.stderr
            )
            assert not pidfile.exists()  # removed on exit
    finally:
        other.kill()
        other.wait()


def test_readyfd_must_be_open(tmp_path: Path, file_pub: Publisher) -> None:
    config = write_config(tmp_path, file_pub)
    done = subprocess.run(
        [*AGENT, "--config", str(config), "--readyfd", "97"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "--readyfd 97: not an open file descriptor" in done.stderr


def test_syslog_falls_back_to_stderr_without_dev_log(tmp_path: Path, file_pub: Publisher) -> None:
    file_pub.issue("a.example")
    file_pub.publish()
    config = write_config(tmp_path, file_pub)
    done = subprocess.run(
        [*AGENT, "--config", str(config), "--once", "--syslog"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    if os.path.exists("/dev/log"):
        assert "poll done" not in done.stderr  # went to syslog
    else:
        assert "cannot log to syslog at /dev/log" in done.stderr
        assert "poll done" in done.stderr


# -- the store going away and coming back --------------------------------------------------


def test_the_store_goes_away_and_comes_back(
    tmp_path: Path,
    s3_url: str,
    seaweedfs: SeaweedFS,
    make_publisher: Callable[..., Publisher],
    daemons: list[Daemon],
) -> None:
    pub = make_publisher(s3_url)
    pub.issue("a.example")
    pub.publish()
    store_lines = f'store_endpoint = "{seaweedfs.endpoint}"\n'
    config = write_config(tmp_path, pub, store_lines, interval="1s", store=s3_url)
    daemon = Daemon(config)
    daemons.append(daemon)
    daemon.wait_ready()
    prom = tmp_path / "metrics" / "agent.prom"
    last_ok = 'certfleet_agent_last_successful_poll_timestamp_seconds{cluster="web"}'
    assert metrics(prom)[last_ok] > 0
    try:
        seaweedfs.stop()
        wait_for(
            lambda: "unavailable" in (agent_status(config)["clusters"][0]["last_error"] or ""),
            what="a failed poll",
        )
        during = metrics(prom)[last_ok]
        time.sleep(1.5)
        assert metrics(prom)[last_ok] == during  # no successful poll while it is down
    finally:
        seaweedfs.start()
    renewed = pub.issue("a.example")
    pub.publish()
    # Back-off after a few failures is at most 8 s here; the daemon recovers by itself.
    wait_for(
        lambda: order_status(config, "a.example")["serial"] == renewed.serial,
        timeout=40,
        what="the renewal after the outage",
    )
    assert metrics(prom)[last_ok] > during
    assert agent_status(config)["clusters"][0]["last_error"] is None
    assert daemon.process.poll() is None
    assert daemon.stop() == 0


# -- acks ------------------------------------------------------------------------------------


def agent_for(tmp: Path, pub: Publisher, store: FileStore | None = None) -> Agent:
    text = (
        f'store = "{pub.store.url}"\nstate_dir = "{tmp / "state"}"\n'
        f'metrics_file = "{tmp / "agent.prom"}"\n' + pub.cluster_stanza()
    )
    return Agent(parse_agent_config(text, str(tmp / "agent.conf")), store=store)


def test_acks_are_written_only_when_something_changed(tmp_path: Path, file_pub: Publisher) -> None:
    installed = file_pub.issue("a.example")
    later = file_pub.issue("b.example", install_after=int(time.time()) + 3600)
    file_pub.publish()
    agent = agent_for(tmp_path, file_pub)
    agent.poll_once()
    key = ack_key("web", agent.node_id)
    ack_file = Path(file_pub.store.url[len("file://") :]) / key
    ack = open_ack(
        ack_file.read_bytes(), cluster="web", node_id=agent.node_id, secrets=file_pub.secrets
    )
    assert ack.generation == file_pub.generation
    states = {order.order_name: (order.state, order.serial) for order in ack.orders}
    assert states == {"a.example": ("installed", installed.serial), "b.example": ("deferred", "")}
    assert later.serial not in ack_file.read_bytes().decode("latin-1")  # sealed
    written = ack_file.stat().st_mtime_ns
    agent.poll_once()  # nothing changed: no ack written
    assert ack_file.stat().st_mtime_ns == written


def test_acks_of_large_clusters_list_only_the_exceptions(
    tmp_path: Path, file_pub: Publisher, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Above MAX_LISTED_ORDERS an ack leaves out the orders installed at its generation (their
    serial is the one that generation publishes), so it stays small at 100,000 orders."""
    monkeypatch.setattr(node_agent.ack, "MAX_LISTED_ORDERS", 2)
    for name in ("a.example", "b.example"):
        file_pub.issue(name)
    file_pub.issue("c.example", install_after=int(time.time()) + 3600)
    file_pub.publish()
    agent = agent_for(tmp_path, file_pub)
    assert agent.poll_once().installed == ("a.example", "b.example")
    ack_file = Path(file_pub.store.url[len("file://") :]) / ack_key("web", agent.node_id)
    ack = open_ack(
        ack_file.read_bytes(), cluster="web", node_id=agent.node_id, secrets=file_pub.secrets
    )
    assert ack.generation == file_pub.generation
    assert [(order.order_name, order.state) for order in ack.orders] == [("c.example", "deferred")]


class DeniesWrites(FileStore):
    """A store whose credentials can read but not write, like a read-only IAM policy."""

    puts = 0

    def put(self, key: str, data: bytes) -> str:
        DeniesWrites.puts += 1
        raise StoreAccessDenied("AccessDenied", url=self.url, key=key)


def test_acks_stop_after_access_denied(
    tmp_path: Path, file_pub: Publisher, caplog: pytest.LogCaptureFixture
) -> None:
    file_pub.issue("a.example")
    file_pub.publish()
    store = DeniesWrites(str(file_pub.store.url)[len("file://") :])
    agent = agent_for(tmp_path, file_pub, store)
    caplog.set_level("INFO", logger="node_agent.ack")
    assert agent.poll_once().ok  # a refused ack is no problem of the poll
    file_pub.issue("a.example")
    file_pub.publish()
    assert agent.poll_once().ok
    assert DeniesWrites.puts == 1  # tried once, then skipped
    assert [r.levelname for r in caplog.records if "acks disabled" in r.message] == ["INFO"]


# -- safe names, refusals, clusters removed from the config -----------------------------------


def test_wildcard_and_underscore_names_clash(tmp_path: Path, file_pub: Publisher) -> None:
    file_pub.issue("*.example.com", ["*.example.com"])
    file_pub.issue("_.example.com", ["www.example.com"])
    file_pub.publish()
    agent = agent_for(tmp_path, file_pub)
    result = agent.poll_once()
    assert result.installed == ("*.example.com",)
    assert [p.subject for p in result.problems] == ["order '_.example.com' of cluster web"]
    assert "belongs to order '*.example.com'" in result.problems[0].message
    leaf = (tmp_path / "state" / "orders" / "_.example.com" / "ecdsa.crt.pem").read_bytes()
    assert leaf == file_pub.bundles["*.example.com"].certificate_pem
    # Once installed, the directory stays with its order.
    assert agent.poll_once().installed == ()


def test_a_refused_bundle_is_not_fetched_again(tmp_path: Path, file_pub: Publisher) -> None:
    now = int(time.time())
    file_pub.issue("expired.example", not_before=now - 7200, lifetime=3600)
    file_pub.issue("good.example")
    file_pub.publish()
    agent = agent_for(tmp_path, file_pub)
    first = agent.poll_once()
    assert first.installed == ("good.example",)
    assert "has expired" in first.problems[0].message
    reads = agent.store.stats.reads
    again = agent.poll_once()  # the head is not applied, so it is read again: but not the bundle
    assert "not fetched again" in again.problems[0].message
    assert agent.store.stats.reads == reads + 1
    samples = metrics(tmp_path / "agent.prom")
    assert samples['certfleet_agent_refused_objects_total{cluster="web",kind="bundle"}'] == 2


def test_orders_of_a_cluster_removed_from_the_config_are_reported(
    tmp_path: Path, file_pub: Publisher, make_publisher: Callable[..., Publisher]
) -> None:
    file_pub.issue("a.example")
    file_pub.publish()
    config = write_config(tmp_path, file_pub)
    assert subprocess.run([*AGENT, "--config", str(config), "--once"], timeout=60).returncode == 0
    other = make_publisher(file_pub.store.url, cluster="mail")
    other.issue("mx.example")
    other.publish()
    config = write_config(tmp_path, other)
    done = subprocess.run(
        [*AGENT, "--config", str(config), "--once"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "cluster web: the cluster is no longer in the config" in done.stderr
    report = agent_status(config)
    orphan = next(o for o in report["orders"] if o["order"] == "a.example")
    assert orphan["cluster"] == "web" and orphan["cluster_configured"] is False
    assert (tmp_path / "state" / "orders" / "a.example").exists()  # files kept
    human = subprocess.run(
        [*AGENT, "--config", str(config), "--status"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    assert "web (not configured)" in human and "mx.example" in human


# -- what infra/ ships -------------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[2]


def test_the_example_config_checks_out() -> None:
    example = REPO / "infra" / "examples" / "certfleet-agent.conf"
    done = subprocess.run(
        [*AGENT, "--check-config", "--config", str(example)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    config = parse_agent_config(example.read_text(), str(example))
    unit = (REPO / "infra" / "systemd" / "certfleet-agent.service").read_text()
    writable = [
        path.lstrip("-")
        for line in unit.splitlines()
        if line.startswith("ReadWritePaths=")
        for path in line.split("=", 1)[1].split()
    ]
    # Every path the example writes is writable under the unit's ProtectSystem=strict.
    wanted = [config.state_dir, str(config.metrics_file)] + [
        template for order in config.orders for _, template in config.settings_for(order.name).files
    ]
    for path in wanted:
        assert any(path == root or path.startswith(root + "/") for root in writable), path
    settings = (
        "Restart=always", "ExecReload=/bin/kill -HUP $MAINPID", "ProtectSystem=strict",
        "ProtectHome=yes", "PrivateTmp=yes", "NoNewPrivileges=yes", "KillMode=mixed",
    )  # fmt: skip
    for setting in settings:
        assert f"\n{setting}\n" in unit
