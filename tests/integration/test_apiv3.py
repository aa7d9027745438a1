"""The APIv3 client: retry and read-back logic against a scripted local HTTP server (with an
injected clock and sleep), then a faulty workload against the real sandbox."""

from __future__ import annotations

import json
import logging
import random
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import urlsplit

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from certfleet import __version__
from certfleet.apiv3 import (
    ApiClient,
    ApiError,
    ApiUnavailable,
    Conflict,
    Identifier,
    MalformedResponse,
    NotFound,
    RateLimited,
    RetryPolicy,
    ServerError,
    Unauthorized,
    csr_pubkey_hash,
)
from certfleet.apiv3.transport import MAX_ANSWER
from tests.plugins.fake_time import FakeTime
from tests.plugins.sandbox import Sandbox, unique_cluster
from tests.plugins.trickle import Trickle

API_KEY = "123_supersecretkeyvalue"


@dataclass
class Sent:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class Script:
    """Answers to send, in order; ``("drop",)`` closes the connection without an answer,
    ``("truncate", status, text)`` promises more bytes than it sends."""

    answers: list[tuple[Any, ...]] = field(default_factory=list)
    sent: list[Sent] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def order_json(name: str = "example.com", cluster: str | None = "web") -> dict[str, Any]:
    return {
        "name": name,
        "cluster": cluster,
        "identifiers": [{"type": "dns", "value": name, "approval": "http"}],
        "state": "active",
        "created_at": "2024-05-01T10:00:00Z",
        "updated_at": "2024-05-01T10:00:00Z",
    }


def make_handler(script: Script) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            with script.lock:
                script.sent.append(
                    Sent(
                        self.command,
                        self.path,
                        dict(self.headers.items()),
                        json.loads(raw) if raw else None,
                    )
                )
                answer = script.answers.pop(0) if script.answers else (500, {}, {"code": "x"})
            if answer[0] == "drop":
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            if answer[0] == "truncate":
                _, status, text = answer
                data = text.encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[: len(data) // 2])
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            status, headers, body = answer
            data = b"" if body is None else json.dumps(body).encode()
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PATCH = do_DELETE = _serve

    return Handler


@pytest.fixture
def scripted() -> Iterator[tuple[Script, str]]:
    script = Script()
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(script))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield script, f"http://127.0.0.1:{server.server_address[1]}/api/v3"
    finally:
        server.shutdown()
        server.server_close()


def client_for(url: str, fake: FakeTime, *, attempts: int = 5, seconds: float = 60.0) -> ApiClient:
    return ApiClient(
        url,
        API_KEY,
        retry=RetryPolicy(max_attempts=attempts, max_seconds=seconds, base_delay=1.0, max_delay=8),
        connect_timeout=2,
        read_timeout=5,
        sleep=fake.sleep,
        clock=fake.clock,
        rng=random.Random(7),
    )


def make_csr(name: str) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(Encoding.PEM).decode()


def test_sends_bearer_auth_user_agent_and_json(scripted: tuple[Script, str]) -> None:
    script, url = scripted
    script.answers = [(201, {}, order_json("shop.example.com"))]
    with client_for(url, FakeTime()) as client:
        order = client.create_order(
            [Identifier("shop.example.com", "http")], cluster="web", name=None
        )
    assert order.name == "shop.example.com" and order.cluster == "web"
    assert order.created_at is not None and order.created_at.year == 2024
    (sent,) = script.sent
    assert (sent.method, sent.path) == ("POST", "/api/v3/orders")
    assert sent.headers["Authorization"] == f"Bearer {API_KEY}"
    assert sent.headers["User-Agent"] == f"certfleet/{__version__}"
    assert sent.body == {
        "name": "shop.example.com",
        "cluster": "web",
        "identifiers": [{"type": "dns", "value": "shop.example.com", "approval": "http"}],
    }


def test_429_waits_at_least_retry_after(scripted: tuple[Script, str]) -> None:
    script, url = scripted
    script.answers = [
        (429, {"Retry-After": "7"}, {"code": "rate_limited", "message": "slow down"}),
        (200, {}, order_json()),
    ]
    fake = FakeTime()
    order = client_for(url, fake).get_order("example.com")
    assert order.name == "example.com"
    assert len(script.sent) == 2
    assert len(fake.sleeps) == 1 and fake.sleeps[0] >= 7


def test_503_backoff_is_jittered_and_bounded_by_attempts(
    scripted: tuple[Script, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    script, url = scripted
    script.answers = [(503, {}, {"code": "unavailable", "message": "busy"})] * 10
    fake = FakeTime()
    with pytest.raises(ServerError) as caught:
        client_for(url, fake, attempts=4).get_order("example.com")
    assert len(script.sent) == 4
    assert caught.value.status == 503 and caught.value.code == "unavailable"
    assert caught.value.message == "busy"
    assert len(fake.sleeps) == 3
    for attempt, delay in enumerate(fake.sleeps, start=1):
        assert 0 <= delay <= min(8, 2 ** (attempt - 1))
    assert "retrying in" in caplog.text and "failed after 4 attempt(s)" in caplog.text
    assert API_KEY not in caplog.text


def test_retries_stop_at_the_time_budget(scripted: tuple[Script, str]) -> None:
    script, url = scripted
    script.answers = [(429, {"Retry-After": "10"}, {"code": "rate_limited"})] * 10
    fake = FakeTime()
    with pytest.raises(RateLimited) as caught:
        client_for(url, fake, attempts=10, seconds=25).get_order("example.com")
    assert caught.value.retry_after == 10
    assert len(script.sent) == 3  # t=0, t=10, t=20; a wait to t=30 would pass the budget
    assert sum(fake.sleeps) <= 25


def test_connection_refused_is_api_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    fake = FakeTime()
    with pytest.raises(ApiUnavailable) as caught:
        client_for(f"http://127.0.0.1:{port}/api/v3", fake, attempts=3).get_order("x.example")
    assert caught.value.status is None
    assert len(fake.sleeps) == 2


def test_dropped_post_is_read_back_instead_of_resent(scripted: tuple[Script, str]) -> None:
    script, url = scripted
    script.answers = [("drop",), (200, {}, order_json())]
    order = client_for(url, FakeTime()).create_order(
        [Identifier("example.com", "http")], cluster="web"
    )
    assert order.name == "example.com"
    assert [(s.method, s.path) for s in script.sent] == [
        ("POST", "/api/v3/orders"),
        ("GET", "/api/v3/orders/example.com"),
    ]


def test_post_resent_when_read_back_finds_nothing(scripted: tuple[Script, str]) -> None:
    script, url = scripted
    script.answers = [
        (502, {}, {"code": "bad_gateway"}),
        (404, {}, {"code": "not_found", "message": "no such order"}),
        (201, {}, order_json()),
    ]
    order = client_for(url, FakeTime()).create_order(
        [Identifier("example.com", "http")], cluster="web"
    )
    assert order.state == "active"
    assert [s.method for s in script.sent] == ["POST", "GET", "POST"]


def test_conflict_after_a_lost_attempt_is_our_own_order(scripted: tuple[Script, str]) -> None:
    script, url = scripted
    script.answers = [
        ("drop",),
        ("drop",),  # the read-back is lost too, so the client sends the POST again
        (200, {}, order_json()),  # ... which the retried read-back within finds
    ]
    order = client_for(url, FakeTime()).create_order(
        [Identifier("example.com", "http")], cluster="web"
    )
    assert order.name == "example.com"
    assert [s.method for s in script.sent] == ["POST", "GET", "GET"]

    script.sent.clear()
    script.answers = [
        (500, {}, {"code": "internal"}),
        (404, {}, {"code": "not_found"}),
        (409, {}, {"code": "order_exists", "message": "taken"}),
        (200, {}, order_json()),
    ]
    order = client_for(url, FakeTime()).create_order(
        [Identifier("example.com", "http")], cluster="web"
    )
    assert [s.method for s in script.sent] == ["POST", "GET", "POST", "GET"]


def test_conflict_with_someone_elses_order_is_raised(scripted: tuple[Script, str]) -> None:
    script, url = scripted
    script.answers = [(409, {}, {"code": "order_exists", "message": "order exists"})]
    with pytest.raises(Conflict) as caught:
        client_for(url, FakeTime()).create_order([Identifier("example.com", "http")])
    assert caught.value.code == "order_exists" and caught.value.status == 409
    assert len(script.sent) == 1


def test_truncated_csr_answer_is_read_back_by_pubkey_hash(scripted: tuple[Script, str]) -> None:
    script, url = scripted
    csr = make_csr("example.com")
    digest = csr_pubkey_hash(csr)
    script.answers = [
        ("truncate", 200, json.dumps({"pubkey_hash": digest, "state": "pending"})),
        (200, {}, {"state": "pending", "retry_after": 2}),
    ]
    result = client_for(url, FakeTime()).submit_csr("example.com", csr)
    assert (result.pubkey_hash, result.state) == (digest, "pending")
    assert [(s.method, s.path) for s in script.sent] == [
        ("POST", "/api/v3/orders/example.com/csrs"),
        ("GET", f"/api/v3/orders/example.com/certs/{digest}"),
    ]
    assert script.sent[0].body == {"csr": csr}


def test_lost_delete_then_404_is_success(scripted: tuple[Script, str]) -> None:
    script, url = scripted
    script.answers = [("drop",), (404, {}, {"code": "not_found"})]
    client_for(url, FakeTime()).delete_order("*.example.com")
    assert [(s.method, s.path) for s in script.sent] == [
        ("DELETE", "/api/v3/orders/*.example.com"),
        ("GET", "/api/v3/orders/*.example.com"),
    ]


def test_errors_are_typed_and_never_show_the_key(scripted: tuple[Script, str]) -> None:
    script, url = scripted
    script.answers = [
        (404, {}, {"code": "not_found", "message": "order missing.example not found"}),
        (401, {}, {"code": "unauthorized", "message": "bad API key"}),
        (400, {}, {"code": "invalid_identifier", "message": "bad name"}),
    ]
    client = client_for(url, FakeTime())
    with pytest.raises(NotFound) as missing:
        client.get_order("missing.example")
    with pytest.raises(Unauthorized) as denied:
        client.get_order("example.com")
    with pytest.raises(ApiError) as invalid:
        client.update_order("example.com", [Identifier("a b", "http")])
    assert len(script.sent) == 3  # none of these is retried
    assert missing.value.code == "not_found" and "missing.example" in str(missing.value)
    assert "GET /orders/missing.example" in str(missing.value)
    assert json.loads(missing.value.body)["code"] == "not_found"
    assert denied.value.status == 401
    assert type(invalid.value) is ApiError and invalid.value.code == "invalid_identifier"
    for text in (str(missing.value), str(denied.value), str(invalid.value), repr(client)):
        assert API_KEY not in text
    assert "redacted" in repr(client)


def test_pagination_follows_next_and_refuses_a_loop(scripted: tuple[Script, str]) -> None:
    script, url = scripted
    script.answers = [
        (200, {}, {"orders": [order_json("a.example")], "next": "c1"}),
        (200, {}, {"orders": [order_json("b.example")], "next": "c2"}),
        (200, {}, {"orders": [], "next": None}),
    ]
    client = client_for(url, FakeTime())
    names = [order.name for order in client.iter_orders("web", page_size=1)]
    assert names == ["a.example", "b.example"]
    assert [s.path for s in script.sent] == [
        "/api/v3/orders?cluster=web&limit=1",
        "/api/v3/orders?cluster=web&limit=1&after=c1",
        "/api/v3/orders?cluster=web&limit=1&after=c2",
    ]
    script.answers = [
        (200, {}, {"orders": [], "next": "same"}),
        (200, {}, {"orders": [], "next": "same"}),
    ]
    with pytest.raises(MalformedResponse):
        list(client.iter_orders())


def test_long_poll_and_issued_certificate(scripted: tuple[Script, str]) -> None:
    script, url = scripted
    script.answers = [
        (
            200,
            {},
            {
                "state": "issued",
                "crt": "LEAF",
                "chain": ["INTERMEDIATE"],
                "serial": "0a1b",
                "not_before": "2024-05-01T09:00:00Z",
                "not_after": "2024-08-01T09:00:00Z",
            },
        )
    ]
    cert = client_for(url, FakeTime()).get_cert("example.com", "ab" * 32, poll=90)
    assert cert.issued and cert.chain == ("INTERMEDIATE",) and cert.serial == "0a1b"
    assert cert.not_after is not None and cert.not_after.month == 8
    assert script.sent[0].path.endswith("?poll=60")


def test_an_answer_over_the_cap_is_refused_before_it_is_read(
    scripted: tuple[Script, str],
) -> None:
    """A hostile provider's 17 MiB answer: refused from its Content-Length, not retried."""
    script, url = scripted
    script.answers = [(200, {}, {**order_json(), "pad": "x" * (17 * 1024 * 1024)})]
    with client_for(url, FakeTime()) as client, pytest.raises(MalformedResponse) as caught:
        client.get_order("example.com")
    assert "refused" in str(caught.value) and str(MAX_ANSWER) in str(caught.value)
    assert len(script.sent) == 1


def test_a_trickling_provider_is_given_up_on_at_the_deadline(trickle: Trickle) -> None:
    """One byte every 0.2 s for ever: no per-read timeout trips, the call's deadline does."""
    started = time.monotonic()
    with client_for(f"{trickle.url}/api/v3", FakeTime(), attempts=1, seconds=2.0) as client:
        with pytest.raises(ApiUnavailable) as caught:
            client.get_order("example.com")
    assert time.monotonic() - started < 4.0
    assert "no complete answer" in str(caught.value)


# -- against the sandbox -------------------------------------------------------------------


class RecordingSession(requests.Session):
    """Notes the outcome of every request sent (instrumentation, not a mock)."""

    def __init__(self) -> None:
        super().__init__()
        self.outcomes: list[tuple[str, str, int | None]] = []

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        path = urlsplit(request.url or "").path
        try:
            response = super().send(request, **kwargs)
        except requests.RequestException:
            self.outcomes.append((request.method or "", path, None))
            raise
        self.outcomes.append((request.method or "", path, response.status_code))
        return response


@pytest.mark.fault
def test_100_calls_at_30_percent_faults(make_sandbox: Callable[..., Sandbox]) -> None:
    server = make_sandbox(fault_rate=0.3, seed=11)
    cluster = unique_cluster("w")
    session = RecordingSession()
    asked: list[float] = []

    def sleep(seconds: float) -> None:
        # The sandbox's 429s are random faults, not a real limiter: note the wait asked
        # for (checked below against Retry-After) and keep the test fast.
        asked.append(seconds)
        time.sleep(min(seconds, 0.02))

    client = ApiClient(
        server.url,
        server.api_key,
        retry=RetryPolicy(max_attempts=12, max_seconds=30, base_delay=0.01, max_delay=0.1),
        session=session,
        sleep=sleep,
    )
    names = [f"o{i:02d}.example.com" for i in range(20)]
    hashes: dict[str, str] = {}
    calls = 0
    started = time.monotonic()
    with client:
        for name in names:
            order = client.create_order([Identifier(name, "http")], cluster=cluster)
            assert order.name == name and order.cluster == cluster
            csr = make_csr(name)
            result = client.submit_csr(name, csr)
            assert result.pubkey_hash == csr_pubkey_hash(csr)
            hashes[name] = result.pubkey_hash
            cert = client.get_cert(name, result.pubkey_hash)
            assert cert.issued and cert.crt and cert.chain
            calls += 3
        for name in names[:10]:
            extra = "www." + name
            updated = client.update_order(
                name, [Identifier(name, "http"), Identifier(extra, "dns")]
            )
            assert updated.dns_names == (name, extra)
            assert client.get_order(name).dns_names == (name, extra)
            calls += 2
        for name in names[10:]:
            client.delete_order(name)
            calls += 1
        cursor = None
        for _ in range(10):
            page = client.list_orders(cluster, limit=1, after=cursor)
            cursor = page.next
            calls += 1
        assert calls == 100
        remaining = [order.name for order in client.iter_orders(cluster, page_size=3)]
    elapsed = time.monotonic() - started

    assert remaining == names[:10]
    created = [o for o in session.outcomes if o[:2] == ("POST", "/api/v3/orders")]
    assert sum(1 for o in created if o[2] == 201) == 20  # no order created twice
    for name in names:
        csr_posts = [o[2] for o in session.outcomes if o[1] == f"/api/v3/orders/{name}/csrs"]
        assert csr_posts.count(201) == 1 and 200 not in csr_posts  # each CSR sent once
    faults = [o for o in session.outcomes if o[2] in (None, 429, 500)]
    assert len(faults) >= 20  # the faults did happen ...
    limited = sum(1 for o in session.outcomes if o[2] == 429)
    assert sum(1 for s in asked if s >= 1.0) >= limited  # ... and Retry-After: 1 was honoured
    assert elapsed < 60
