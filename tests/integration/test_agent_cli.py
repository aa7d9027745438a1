"""``certfleet-agent``: --check-config, --once exit statuses, file:// and http://, the loop."""

from __future__ import annotations

import functools
import http.server
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

import certfleet
from node_agent import cli
from node_agent.loop import Schedule, run_loop
from node_agent.result import ClusterOutcome, PollResult
from tests.plugins.closedpipe import run_into_closed_pipe

if TYPE_CHECKING:
    from tests.plugins.publisher import Publisher
    from tests.plugins.seaweedfs import SeaweedFS
    from tests.plugins.trickle import Trickle
    from tests.plugins.wire import WireProxy


def agent_command(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "node_agent", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def write_config(path: Path, store: str, publisher: Publisher, extra: str = "") -> Path:
    path.write_text(
        f'store = "{store}"\nstate_dir = "{path.parent / "state"}"\npoll_interval = "1s"\n'
        + publisher.cluster_stanza()
        + extra
    )
    return path


@pytest.fixture
def file_store(tmp_path: Path, make_publisher: Callable[..., Publisher]) -> Publisher:
    (tmp_path / "store").mkdir()
    return make_publisher(f"file://{tmp_path}/store")


# -- stdout closed early ------------------------------------------------------------------


def test_status_into_a_closed_pipe_ends_quietly(tmp_path: Path, file_store: Publisher) -> None:
    """``--status --json | head -1``: exit 141 (128 + SIGPIPE) and nothing on stderr."""
    config = write_config(tmp_path / "agent.conf", "file:///srv/store", file_store)
    for mode in (["--status", "--json"], ["--status"], ["--check-config"]):
        done = run_into_closed_pipe(
            [sys.executable, "-m", "node_agent", "--config", str(config), *mode]
        )
        assert (done.returncode, done.stderr) == (141, ""), mode
    assert agent_command("--config", str(config), "--status").returncode == 0


# -- --check-config -----------------------------------------------------------------------


def test_check_config_accepts_a_good_config_without_touching_the_disk(
    tmp_path: Path, file_store: Publisher
) -> None:
    config = write_config(tmp_path / "agent.conf", "s3://bucket/prefix", file_store)
    done = agent_command("--config", str(config), "--check-config")
    assert done.returncode == 0, done.stderr
    assert "OK" in done.stdout
    assert not (tmp_path / "state").exists()


def test_check_config_names_file_line_and_option(tmp_path: Path, file_store: Publisher) -> None:
    config = write_config(
        tmp_path / "agent.conf",
        "file:///srv/store",
        file_store,
        'default {\n  key_perm = "0666"\n}\n',
    )
    done = agent_command("--config", str(config), "--check-config")
    assert done.returncode == 2
    line = len(config.read_text().splitlines()) - 1
    assert f"{config}:{line}" in done.stderr and "key_perm" in done.stderr
    no_cluster = tmp_path / "empty.conf"
    no_cluster.write_text('store = "file:///srv/store"\n')
    done = agent_command("--config", str(no_cluster), "--check-config")
    assert done.returncode == 2 and "cluster" in done.stderr
    done = agent_command("--config", str(tmp_path / "missing.conf"), "--check-config")
    assert done.returncode == 2 and "missing.conf" in done.stderr
    assert agent_command("--bogus").returncode == 2


# -- --once over file:// and http:// ------------------------------------------------------


def test_once_over_a_file_store_exits_0_then_1_on_a_refusal(
    tmp_path: Path, file_store: Publisher
) -> None:
    file_store.issue("a.example")
    file_store.issue("b.example")
    file_store.publish()
    config = write_config(tmp_path / "agent.conf", file_store.store.url, file_store)
    done = agent_command("--config", str(config), "--once")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "state" / "orders" / "a.example" / "ecdsa.crt.pem").exists()
    file_store.issue("a.example")
    file_store.issue("b.example")
    file_store.publish()
    key = file_store.bundle_key("a.example")
    file_store.store.put(key, b"not a bundle")
    done = agent_command("--config", str(config), "--once")
    assert done.returncode == 1
    assert "'a.example'" in done.stderr and "integrity check failed" in done.stderr
    assert "1 installed" in done.stderr  # b.example, despite a.example's refusal


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[str]:
    handler = functools.partial(_QuietHandler, directory=str(tmp_path / "store"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_once_over_an_http_store(tmp_path: Path, file_store: Publisher, http_server: str) -> None:
    file_store.issue("*.example.com")
    file_store.publish()
    config = write_config(tmp_path / "agent.conf", http_server, file_store)
    assert cli.main(["--config", str(config), "--once"]) == 0
    assert (tmp_path / "state" / "orders" / "_.example.com" / "ecdsa.key.pem").exists()
    assert cli.main(["--config", str(config), "--once"]) == 0  # unchanged: nothing to do


# -- the loop -----------------------------------------------------------------------------


def _result(head: str) -> PollResult:
    return PollResult(clusters=(ClusterOutcome("web", head, 1, 1),))


def test_schedule_jitters_and_caps_the_backoff() -> None:
    schedule = Schedule(60.0, jitter=0.1, backoff_cap=900.0)
    assert schedule.wait(0, lambda: 0.0) == pytest.approx(54.0)
    assert schedule.wait(0, lambda: 1.0) == pytest.approx(66.0)
    assert schedule.wait(2, lambda: 0.5) == pytest.approx(240.0)
    assert schedule.wait(50, lambda: 0.5) == pytest.approx(900.0)


def test_loop_survives_failures_backs_off_and_stops_on_the_event() -> None:
    stop = threading.Event()
    waits: list[float] = []
    outcomes = iter(["raise", "unreachable", "new", "stop"])

    def poll() -> PollResult:
        outcome = next(outcomes)
        if outcome == "raise":
            raise RuntimeError("disk full")
        if outcome == "stop":
            stop.set()
        return _result(outcome)

    class RecordingEvent(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:
            waits.append(timeout or 0.0)
            return self.is_set()

    stop = RecordingEvent()
    assert run_loop(poll, Schedule(10.0, jitter=0.0), stop) == 4
    assert waits == [20.0, 40.0, 10.0, 10.0]


def test_sigterm_stops_the_daemon(tmp_path: Path, file_store: Publisher) -> None:
    file_store.issue("a.example")
    file_store.publish()
    config = write_config(tmp_path / "agent.conf", file_store.store.url, file_store)
    process = subprocess.Popen(
        [sys.executable, "-m", "node_agent", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        link = tmp_path / "state" / "orders" / "a.example"
        deadline = time.monotonic() + 30
        while not link.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert link.exists()
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=10)
        assert process.returncode == 0
        assert time.monotonic() - started < 5
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()
    assert "stopped" in stderr
    assert os.path.exists(tmp_path / "state" / "state.json")


def test_loop_logs_slow_polls_and_the_store_coming_back(caplog: pytest.LogCaptureFixture) -> None:
    stop = threading.Event()
    now = [0.0]
    outcomes = iter(["unreachable", "unreachable", "new", "new"])

    def poll() -> PollResult:
        outcome = next(outcomes, "new")
        now[0] += 31.0 if outcome == "unreachable" else 1.0  # a hung store: 31 s a poll
        if now[0] > 62.5:  # after the first good poll
            stop.set()
        return _result(outcome)

    class Instant(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:
            return self.is_set()

    stop = Instant()
    with caplog.at_level("INFO", logger="node_agent.loop"):
        run_loop(poll, Schedule(10.0, jitter=0.0), stop, clock=lambda: now[0])
    messages = [r.getMessage() for r in caplog.records]
    assert sum("slow poll: it took 31.0 s" in m for m in messages) == 2
    assert any("the store answers again: poll succeeded after 2 failed" in m for m in messages)


def test_once_against_a_trickling_store_ends_at_the_deadline(
    tmp_path: Path, file_store: Publisher, trickle: Trickle
) -> None:
    """A server that sends one byte every 0.2 s for ever: --once gives up on the head after
    the store deadline (30 s) and exits 1, instead of hanging. (The secrets were proven by
    an earlier run against the real store, as for a cron job whose store then hung.)"""
    file_store.issue("a.example")
    file_store.publish()
    config = write_config(tmp_path / "agent.conf", file_store.store.url, file_store)
    assert agent_command("--config", str(config), "--once").returncode == 0
    write_config(tmp_path / "agent.conf", f"{trickle.url}/fleet", file_store)
    started = time.monotonic()
    done = agent_command("--config", str(config), "--once")
    took = time.monotonic() - started
    assert done.returncode == 1, done.stderr
    assert 25 < took < 45, took
    assert "deadline" in done.stderr


def test_sigterm_during_a_hung_poll_stops_within_seconds(
    tmp_path: Path, file_store: Publisher, trickle: Trickle
) -> None:
    config = write_config(tmp_path / "agent.conf", f"{trickle.url}/fleet", file_store)
    process = subprocess.Popen(
        [sys.executable, "-m", "node_agent", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert trickle.first_request.wait(30), "the agent never asked for its head"
        time.sleep(1.0)  # well inside the poll, the server still trickling
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=20)
        took = time.monotonic() - started
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()
    assert process.returncode == 0
    assert took < 3.0, took
    assert "cancelled: the agent is stopping" in stderr and "stopped" in stderr


def test_an_idle_once_run_is_one_conditional_get_and_no_ack(
    tmp_path: Path,
    make_publisher: Callable[..., Publisher],
    s3_url: str,
    seaweedfs: SeaweedFS,
    wire_proxy: Callable[[str], WireProxy],
) -> None:
    """cron's ``--once`` after the first: the head answered 304, nothing else, no ack PUT
    (the digest of the last ack written is kept in state.json)."""
    publisher = make_publisher(s3_url)
    publisher.issue("a.example")
    publisher.publish()
    proxy = wire_proxy(seaweedfs.endpoint)
    config = write_config(
        tmp_path / "agent.conf", s3_url, publisher, f'store_endpoint = "{proxy.url}"\n'
    )
    first = agent_command("--config", str(config), "--once")
    assert first.returncode == 0, first.stderr
    assert any(method == "PUT" and "/acks/" in path for method, path in proxy.seen())
    proxy.requests.clear()
    for _ in range(2):
        again = agent_command("--config", str(config), "--once")
        assert again.returncode == 0, again.stderr
    seen = proxy.seen()
    assert [method for method, _ in seen] == ["GET", "GET"], seen
    assert all(path.endswith("/head") for _, path in seen)
    assert all("If-None-Match" in headers for _, _, headers in proxy.requests)
    publisher.issue("a.example")  # a renewal: the next run installs it and reports it
    publisher.publish()
    proxy.requests.clear()
    assert agent_command("--config", str(config), "--once").returncode == 0
    assert sum(method == "PUT" for method, _ in proxy.seen()) == 1


def test_what_a_store_server_says_is_escaped_in_logs_and_status(
    tmp_path: Path, file_store: Publisher, trickle: Trickle
) -> None:
    """A status line with a terminal escape, a newline-free line break and a bidi override:
    neither the --once log nor --status shows them raw."""
    trickle.answer = "HTTP/1.1 2\x1b[31m00 OK\u202eevil\rforged: line\r\n\r\n".encode()
    config = write_config(tmp_path / "agent.conf", f"{trickle.url}/fleet", file_store)
    done = agent_command("--config", str(config), "--once")
    assert done.returncode == 1
    assert "\\x1b" in done.stderr, done.stderr  # shown escaped...
    for raw in ("\x1b", "\u202e", "\r", "\xe2\x80\xae"):
        assert raw not in done.stderr  # ...never raw
    assert all(line.startswith(("20", "certfleet-agent:")) for line in done.stderr.splitlines())
    status = agent_command("--config", str(config), "--status")
    assert status.returncode == 0, status.stderr
    assert "\\x1b" in status.stdout
    assert "\x1b" not in status.stdout and "\r" not in status.stdout


def test_version_prints_the_package_version() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "node_agent", "--version"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"certfleet-agent {certfleet.__version__}\n"
