"""The post-reload TLS probe: ``node_agent.probe`` against a real TLS server on 127.0.0.1.

A Python ``ssl`` server in a thread serves a certificate the test chooses and can switch
to another one while the probe runs. Time is a fake clock that only the probe's sleeps
advance (test_apiv3's ``FakeTime``), except where the new certificate appears after a real
delay.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from certfleet.config.address import HostPort
from node_agent.probe import (
    MATCHED,
    OTHER_CERTIFICATE,
    UNREACHABLE,
    ProbeResult,
    leaf_fingerprint,
    probe,
    server_name,
)
from tests.test_apiv3 import FakeTime

if TYPE_CHECKING:
    from tests.plugins.publisher import Issued, TestCa


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
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # free once closed, and nothing listens on it
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
    ("names", "override", "expected"),
    [
        (["www.example.com", "example.com"], None, "www.example.com"),
        (["*.example.com", "example.com"], None, "example.com"),
        (["*.example.com"], None, "certfleet-probe.example.com"),
        (["*.a.example.com", "*.b.example.com"], None, "certfleet-probe.a.example.com"),
        (["*.example.com"], "shop.example.com", "shop.example.com"),
        ([], None, None),
    ],
)
def test_server_name(names: list[str], override: str | None, expected: str | None) -> None:
    assert server_name(names, override) == expected
