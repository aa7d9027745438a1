"""The post-reload TLS probe: ``node_agent.probe`` against a real TLS server on 127.0.0.1.

A Python ``ssl`` server in a thread serves a certificate the test chooses and can switch
to another one while the probe runs. Time is a fake clock that only the probe's sleeps
advance (``tests.plugins.fake_time.FakeTime``), except where the new certificate appears
after a real delay.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from certfleet.bundle import open_ack
from certfleet.config import parse_agent_config
from certfleet.config.address import HostPort
from node_agent.ack import ack_key
from node_agent.agent import Agent
from node_agent.probe import (
    MATCHED,
    OTHER_CERTIFICATE,
    UNREACHABLE,
    ProbeResult,
    leaf_fingerprint,
    probe,
    server_name,
)
from node_agent.status import build_status
from tests.plugins.fake_time import FakeTime
from tests.plugins.nginx import SERVER_NAME as WWW
from tests.plugins.nginx import Nginx
from tests.plugins.nginx_site import Site, closed_port, weak_bundle

if TYPE_CHECKING:
    from tests.plugins.publisher import Issued, Publisher, TestCa


def probe_in_fake_time(
    address: HostPort, name: str | None, new: Issued, timeout: float
) -> tuple[ProbeResult, FakeTime]:
    """Probe for ``new``'s leaf with a clock that only the probe's sleeps move."""
    fake = FakeTime()
    expected = leaf_fingerprint(new.cert_pem)
    result = probe(address, name, expected, timeout, clock=fake.clock, sleep=fake.sleep)
    return result, fake


class TlsServer:
    """Serves one certificate at a time on 127.0.0.1; ``serve(issued)`` switches it."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        self.address = HostPort("127.0.0.1", self.listener.getsockname()[1])
        self.context: ssl.SSLContext | None = None
        self.names: list[str | None] = []  # the SNI of each handshake
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def serve(self, issued: Issued) -> None:
        chained = self.tmp / f"{issued.serial}.pem"
        key = self.tmp / f"{issued.serial}.key"
        chained.write_bytes(issued.cert_pem + b"".join(issued.chain_pem))
        key.write_bytes(issued.key_pem)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(chained, key)
        context.sni_callback = self._sni
        self.context = context

    def _sni(self, _sock: ssl.SSLObject, name: str | None, _context: ssl.SSLContext) -> None:
        self.names.append(name)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(2)
                if self.context is None:
                    continue
                try:
                    self.context.wrap_socket(conn, server_side=True).close()
                except OSError:
                    pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.listener.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[TlsServer]:
    running = TlsServer(tmp_path)
    yield running
    running.close()


@pytest.fixture
def two(publisher_ca: TestCa) -> tuple[Issued, Issued]:
    """An old and a new leaf for www.example.com."""
    return publisher_ca.issue(["www.example.com"]), publisher_ca.issue(["www.example.com"])


def test_the_new_certificate_is_matched_on_the_first_attempt(
    server: TlsServer, two: tuple[Issued, Issued]
) -> None:
    _, new = two
    server.serve(new)
    result, fake = probe_in_fake_time(server.address, "www.example.com", new, 10)
    assert (result.ok, result.outcome, result.attempts) == (True, MATCHED, 1)
    assert result.served_serial == new.serial
    assert fake.sleeps == []
    assert server.names == ["www.example.com"]
    assert result.describe() == (
        f"{server.address} (SNI www.example.com) serves the new certificate (serial {new.serial})"
    )


def test_another_certificate_until_the_deadline_is_a_mismatch(
    server: TlsServer, two: tuple[Issued, Issued]
) -> None:
    old, new = two
    server.serve(old)
    result, fake = probe_in_fake_time(server.address, "www.example.com", new, 3)
    assert (result.ok, result.outcome) == (False, OTHER_CERTIFICATE)
    assert result.served_serial == old.serial
    assert result.attempts == len(fake.sleeps) + 1
    assert fake.sleeps == [0.1, 0.2, 0.4, 0.8, 1.0]  # backoff, capped; nothing past 3 s
    assert sum(fake.sleeps) <= 3
    assert result.describe().startswith(
        f"{server.address} (SNI www.example.com) still serves another certificate "
        f"(serial {old.serial}) after 6 attempts in 2.5 s"
    )


def test_nothing_listening_is_refused(two: tuple[Issued, Issued]) -> None:
    port = closed_port()
    result, fake = probe_in_fake_time(HostPort("127.0.0.1", port), None, two[1], 1)
    assert (result.ok, result.outcome, result.served_serial) == (False, UNREACHABLE, None)
    assert result.reason == "connection refused"
    assert result.attempts == 4 and sum(fake.sleeps) <= 1
    assert result.describe() == (
        f"127.0.0.1:{port} (no SNI): connection refused (4 attempts in 0.7 s)"
    )


def test_a_server_that_speaks_no_tls_fails_the_handshake(two: tuple[Issued, Issued]) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:

        def answer_plain_http() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.recv(4096)
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")

        thread = threading.Thread(target=answer_plain_http, daemon=True)
        thread.start()
        result = probe(
            HostPort("127.0.0.1", listener.getsockname()[1]), "www.example.com",
            leaf_fingerprint(two[1].cert_pem), 0.05,
        )  # fmt: skip
        thread.join(timeout=5)
    assert (result.outcome, result.attempts) == (UNREACHABLE, 1)
    assert result.reason.startswith("TLS handshake failed: "), result.reason


def test_the_new_certificate_appearing_after_a_delay_is_matched_in_time(
    server: TlsServer, two: tuple[Issued, Issued]
) -> None:
    old, new = two
    server.serve(old)
    switch = threading.Timer(0.6, server.serve, (new,))
    switch.start()
    started = time.monotonic()
    result = probe(server.address, "www.example.com", leaf_fingerprint(new.cert_pem), 5)
    switch.join()
    assert result.ok and result.served_serial == new.serial
    assert result.attempts >= 3  # the old certificate was seen first
    assert 0.6 <= time.monotonic() - started < 3


@pytest.mark.parametrize(
    ("order", "names", "override", "expected"),
    [
        # The order's name (the first DNS name as ordered), not the first of the sorted names.
        ("www.example.com", ["api.example.com", "www.example.com"], None, "www.example.com"),
        ("WWW.example.com", ["api.example.com", "www.example.com"], None, "www.example.com"),
        ("*.example.com", ["*.example.com", "example.com"], None, "certfleet-probe.example.com"),
        # An order named otherwise: its first name that is not a wildcard.
        ("shop", ["*.example.com", "example.com"], None, "example.com"),
        ("shop", ["*.example.com"], None, "certfleet-probe.example.com"),
        ("shop", ["*.a.example.com", "*.b.example.com"], None, "certfleet-probe.a.example.com"),
        ("*.example.com", ["*.example.com"], "shop.example.com", "shop.example.com"),
        ("shop", [], None, None),
    ],
)
def test_server_name(
    order: str, names: list[str], override: str | None, expected: str | None
) -> None:
    assert server_name(order, names, override) == expected


# -- the agent with real nginx on loopback -------------------------------------------------


def test_a_reload_that_serves_the_new_certificate_passes_the_probe(site: Site) -> None:
    agent = site.probing(site.nginx.command("-s", "reload"))
    renewed = site.pub.issue(WWW)
    site.pub.publish()
    result = agent.poll_once()
    assert result.ok and result.installed == (WWW,), result.problems
    address = f"127.0.0.1:{site.nginx.port}"
    assert [(run.command, run.ok) for run in result.commands] == [
        (site.nginx.command("-s", "reload"), True),
        (f"probe {address}", True),
    ]
    assert result.commands[1].detail == (
        f"{address} (SNI {WWW}) serves the new certificate (serial {renewed.serial})"
    )
    assert site.served_after_reload(renewed.serial) == int(renewed.serial, 16)
    assert site.ack(agent)[WWW] == ("installed", renewed.serial, "")


def test_a_server_that_keeps_the_old_certificate_is_rolled_back_and_retried(site: Site) -> None:
    agent = site.probing("true")  # "reloads" nothing: nginx keeps serving the first one
    renewed = site.pub.issue(WWW)
    site.pub.publish()
    result = agent.poll_once()
    assert result.rolled_back == (WWW,) and result.installed == () and not result.ok
    assert [(run.command, run.ok) for run in result.commands] == [
        ("true", True),  # the reload after the switch
        (f"probe 127.0.0.1:{site.nginx.port}", False),
        ("true", True),  # again, after the rollback
    ]
    (problem,) = result.problems
    assert problem.cluster == "web"
    assert problem.message.startswith(
        f"order '{WWW}': probe 127.0.0.1:{site.nginx.port} (SNI {WWW}) still serves another "
        f"certificate (serial {site.first.serial}) after "
    )
    assert "; rolled back to the previous version; retry at " in problem.message
    assert problem.message.endswith(" (attempt 1 failed)")
    assert site.crt.read_bytes() == site.first.certificate_pem  # the old files are back
    assert site.served_serial() == int(site.first.serial, 16)
    assert site.ack(agent)[WWW] == ("failed", site.first.serial, problem.message)
    report = build_status(agent.config, now=int(time.time()))
    assert report["hook_failures_total"] == 1
    assert report["orders"][0]["serial"] == site.first.serial
    assert "certfleet_agent_hook_failures_total 1\n" in (site.tmp / "agent.prom").read_text()

    # The head is not applied, but the version backs off: the next poll (within a minute)
    # reports the failure again without switching, reloading or probing.
    again = agent.poll_once()
    assert again.rolled_back == () and again.commands == () and not again.ok
    assert again.problems[0].message.startswith(problem.message.split("; retry at ")[0])
    assert site.crt.read_bytes() == site.first.certificate_pem

    # With a real reload in the config (reloaded: that ends the backoff), the head goes through.
    fixed = site.probing(site.nginx.command("-s", "reload"))
    fixed.clear_backoff()
    done = fixed.poll_once()
    assert done.ok and done.installed == (WWW,), done.problems
    assert site.crt.read_bytes() == renewed.certificate_pem
    assert site.served_after_reload(renewed.serial) == int(renewed.serial, 16)


def test_a_reload_nginx_refuses_is_rolled_back_and_reloaded_again(site: Site) -> None:
    """systemd's ExecReload for nginx is a SIGHUP: it succeeds even when nginx then refuses
    the new files, and without check_command only the probe sees that."""
    renewed = site.pub.issue(WWW)
    site.pub.publish()
    assert site.agent(site.nginx.command("-s", "reload")).poll_once().ok
    assert site.nginx.process is not None
    hup = f"kill -HUP {site.nginx.process.pid}"
    agent = site.probing(hup)
    weak = weak_bundle(site.pub)
    site.pub.set_entry(weak, site.pub.put_bundle(weak))
    site.pub.publish()
    result = agent.poll_once()
    assert result.rolled_back == (WWW,) and not result.ok
    assert [run.ok for run in result.commands] == [True, False, True]
    assert f"(serial {renewed.serial})" in result.problems[0].message
    assert site.crt.read_bytes() == renewed.certificate_pem
    time.sleep(0.3)  # the second SIGHUP
    assert site.served_after_reload(renewed.serial) == int(renewed.serial, 16)
    assert site.nginx.process.poll() is None
    assert "ee key too small" in (site.nginx.prefix / "error.log").read_text()


def test_the_probe_sends_the_order_name_to_nginx_with_two_vhosts(
    tmp_path: Path, make_publisher: Callable[..., Publisher], nginx: Nginx
) -> None:
    """The order www.example.com also covers api.example.com, which sorts first (the sync
    stores names sorted) and which nginx serves from another server block with another
    certificate: the probe must send www.example.com, the order's name."""
    (tmp_path / "store").mkdir()
    pub = make_publisher(f"file://{tmp_path}/store")
    names = ["api.example.com", WWW]
    pub.issue(WWW, names)
    pub.publish()
    state = tmp_path / "state"
    base = f'store = "{pub.store.url}"\nstate_dir = "{state}"\n' + pub.cluster_stanza()
    assert Agent(parse_agent_config(base, "agent.conf")).poll_once().installed == (WWW,)
    other = pub.ca.issue(["api.example.com"])
    api_crt, api_key = tmp_path / "api.crt", tmp_path / "api.key"
    api_crt.write_bytes(other.cert_pem + b"".join(other.chain_pem))
    api_key.write_bytes(other.key_pem)
    order_dir = state / "orders" / WWW
    nginx.write_config(
        order_dir / "ecdsa.chained.pem", order_dir / "ecdsa.key.pem",
        {"api.example.com": (api_crt, api_key)},
    )  # fmt: skip
    nginx.start()
    root = tmp_path / "root.pem"
    root.write_bytes(pub.ca.root_pem)
    assert nginx.served(root, "api.example.com").serial_number == int(other.serial, 16)

    renewed = pub.issue(WWW, names)
    pub.publish()
    probing = (
        f'default {{\n  on_update = ["{nginx.command("-s", "reload")}"]\n'
        f'  probe = "127.0.0.1:{nginx.port}"\n  probe_timeout = "5s"\n}}\n'
    )
    result = Agent(parse_agent_config(base + probing, "agent.conf")).poll_once()
    assert result.ok and result.installed == (WWW,), result.problems
    probed = result.commands[-1]
    assert probed.ok and f"(SNI {WWW})" in probed.detail, probed
    # The probe saw the renewed leaf on one connection; an old worker may still answer the
    # next one for a moment after a reload, so wait (bounded) as every reload test does.
    assert nginx.served_after_reload(root, int(renewed.serial, 16)).serial_number == int(
        renewed.serial, 16
    )


def test_a_first_install_not_served_yet_is_kept_and_not_counted_as_a_failure(
    tmp_path: Path, make_publisher: Callable[..., Publisher], caplog: pytest.LogCaptureFixture
) -> None:
    """A probe set in ``default`` meets a new order whose server block does not exist yet:
    nothing to fall back to, so "not served yet", never a failed run or a problem."""
    port = closed_port()
    (tmp_path / "store").mkdir()
    pub = make_publisher(f"file://{tmp_path}/store")
    issued = pub.issue(WWW)
    pub.publish()
    text = (
        f'store = "{pub.store.url}"\nstate_dir = "{tmp_path / "state"}"\n'
        f'metrics_file = "{tmp_path / "agent.prom"}"\n'
        + pub.cluster_stanza()
        + f'default {{\n  probe = "127.0.0.1:{port}"\n  probe_timeout = "1s"\n}}\n'
    )
    agent = Agent(parse_agent_config(text, "agent.conf"))
    with caplog.at_level("INFO", logger="node_agent.probestep"):
        result = agent.poll_once()
    assert result.ok and result.problems == ()
    assert result.installed == (WWW,) and result.rolled_back == ()
    assert result.not_served == (WWW,) and "1 not served yet" in result.summary()
    assert [run for run in result.commands if not run.ok] == []
    assert f"order '{WWW}': not served yet: probe 127.0.0.1:{port} (SNI {WWW})" in caplog.text
    crt = tmp_path / "state" / "orders" / WWW / "ecdsa.crt.pem"
    assert crt.read_bytes() == issued.certificate_pem
    report = build_status(agent.config, now=int(time.time()))
    assert report["hook_failures_total"] == 0
    assert "certfleet_agent_hook_failures_total 0\n" in (tmp_path / "agent.prom").read_text()
    path = tmp_path / "store" / ack_key("web", agent.node_id)
    ack = open_ack(path.read_bytes(), cluster="web", node_id=agent.node_id, secrets=pub.secrets)
    assert [(o.order_name, o.state) for o in ack.orders] == [(WWW, "installed")]


def test_orders_sharing_the_on_update_go_back_together_and_a_failed_reload_is_not_probed(
    tmp_path: Path, make_publisher: Callable[..., Publisher]
) -> None:
    (tmp_path / "store").mkdir()
    pub = make_publisher(f"file://{tmp_path}/store")
    old = {name: pub.issue(name) for name in ("a.example", "b.example", "c.example")}
    pub.publish()
    log = tmp_path / "reloads.log"
    text = (
        f'store = "{pub.store.url}"\nstate_dir = "{tmp_path / "state"}"\n'
        + pub.cluster_stanza()
        + f'default {{ on_update = ["echo $CERTFLEET_UPDATED_ORDERS >> {log}"] }}\n'
        + f'order "a.example" {{ probe = "127.0.0.1:{closed_port()}"\nprobe_timeout = "1s" }}\n'
        + 'order "c.example" { on_update = "true" }\n'
    )
    agent = Agent(parse_agent_config(text, "agent.conf"))
    first = agent.poll_once()
    assert first.installed == ("a.example", "b.example", "c.example")
    assert first.ok and first.not_served == ("a.example",)  # kept, not a failure
    assert not agent.poll_once().problems  # the first install's probe is not retried
    log.write_text("")
    new = {name: pub.issue(name) for name in old}
    pub.publish()
    result = agent.poll_once()
    # a failed its probe; b shares its on_update and goes back too; c (another command) stays.
    assert result.rolled_back == ("a.example", "b.example")
    assert result.installed == ("c.example",)
    messages = [problem.message for problem in result.problems]
    assert messages[0].startswith("order 'a.example': probe 127.0.0.1:")
    assert messages[1] == (
        "order 'b.example': shares an on_update command with order 'a.example', whose probe "
        "failed; rolled back to the previous version"
    )
    assert log.read_text() == "a.example b.example\na.example b.example\n"  # reloaded twice
    state = tmp_path / "state" / "orders"
    for name, served in (("a.example", old), ("b.example", old), ("c.example", new)):
        assert (state / name / "ecdsa.crt.pem").read_bytes() == served[name].certificate_pem

    # A reload that fails is retried on the next poll; the probe waits for one that works.
    failing = Agent(parse_agent_config(text.replace(f"echo $CERTFLEET_UPDATED_ORDERS >> {log}",
                                                    "false"), "agent.conf"))  # fmt: skip
    assert list(failing.state.backoff) == ["a.example"]  # b was only rolled back with it
    failing.clear_backoff()  # what a config reload does
    result = failing.poll_once()
    assert [(run.command, run.ok) for run in result.commands] == [("false", False)]
    assert result.installed == ("a.example", "b.example") and result.rolled_back == ()
