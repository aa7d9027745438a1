"""The run summary under hostile input: it names the bad order, and no message holds a raw
control character (terminals and log lines get repr escapes) or an unbounded provider text.

Two sources: the sandbox with ``--unsafe-names`` (order and DNS names with control
characters), and a small proxy in front of the real sandbox that answers chosen calls with
hostile APIv3 error objects (escape sequences, NUL, newlines, 20,000 characters).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable
from urllib.parse import quote, urlsplit

import pytest
import requests

from certfleet.apiv3 import ApiClient
from certfleet.sync import run_sync
from certfleet.sync.apiv3_provider import ApiV3Provider
from certfleet.sync.errors import MAX_MESSAGE
from tests.plugins.sandbox import Sandbox
from tests.plugins.sync_world import FAST_RETRY, make_world, post_order

CONTROL_ORDER_NAMES = [
    "ctl\x01.example",
    "new\nline.example",
    "esc\x1b[31m.example",
    "nul\x00.example",
    "bidi\u202e.example",
    "del\x7f.example",
]
CONTROL_DNS_NAMES = ["tab\t.example", "bell\x07.example", "cr\r.example"]
HOSTILE_TEXT = "line1\nline2\r\x00\x1b]0;owned\x07\x1b[2J\u202e" + "A" * 20_000


def assert_printable(message: str, *, limit: int = MAX_MESSAGE + len("...(cut)")) -> None:
    bad = [char for char in message if not char.isprintable()]
    assert not bad, f"raw control characters {bad!r} in {message[:200]!r}"
    assert len(message) <= limit, f"{len(message)} characters"


def test_unsafe_names_are_named_and_escaped_in_the_summary(
    make_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    sandbox = make_sandbox(unsafe_names=True)
    world = make_world(sandbox, (tmp_path / "store").as_uri(), "")
    good = world.add(f"good.{world.cluster}.example")
    for name in CONTROL_ORDER_NAMES:
        post_order(sandbox, world.cluster, name, [f"ok.{world.cluster}.example"])
    dns_orders = {}
    for number, dns_name in enumerate(CONTROL_DNS_NAMES):
        order = f"dns{number}.{world.cluster}.example"
        post_order(sandbox, world.cluster, order, [order, dns_name])
        dns_orders[order] = dns_name

    summary = world.sync()
    assert set(world.published().entries) == {good}
    assert set(summary.errors) == {*CONTROL_ORDER_NAMES, *dns_orders}
    for name in CONTROL_ORDER_NAMES:
        message = summary.errors[name]
        assert_printable(message)
        assert message.startswith("order refused") and repr(name) in message, message
    for order, dns_name in dns_orders.items():
        message = summary.errors[order]
        assert_printable(message)
        assert repr(dns_name) in message, message
    summary_line = json.dumps(summary.as_dict())  # what --json prints: names escaped too
    assert_printable(summary_line, limit=len(summary_line))


class HostileFront:
    """A proxy in front of the sandbox: calls whose path contains one of ``spoiled`` get a
    hostile APIv3 error object (with ``status``); everything else is forwarded as is."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.spoiled: dict[str, int] = {}
        front = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def relay(self) -> None:
                for fragment, status in front.spoiled.items():
                    if fragment in self.path:
                        body = {"code": "evil\x1b[31m", "message": HOSTILE_TEXT}
                        front.send(self, status, json.dumps(body).encode(), {})
                        return
                length = int(self.headers.get("Content-Length") or 0)
                origin = urlsplit(front.sandbox.url)
                answer = requests.request(
                    self.command,
                    f"{origin.scheme}://{origin.netloc}{self.path}",
                    data=self.rfile.read(length) if length else None,
                    headers={k: v for k, v in self.headers.items() if k.lower() != "host"},
                    timeout=70,
                )
                kept = {"Content-Type": answer.headers.get("Content-Type", "application/json")}
                front.send(self, answer.status_code, answer.content, kept)

            do_GET = do_POST = do_PATCH = do_DELETE = relay

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @staticmethod
    def send(
        handler: BaseHTTPRequestHandler, status: int, body: bytes, headers: Mapping[str, str]
    ) -> None:
        handler.send_response(status)
        for key, value in {"Content-Type": "application/json", **headers}.items():
            handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}{urlsplit(self.sandbox.url).path}"


@pytest.fixture
def front(sandbox: Sandbox) -> Iterator[HostileFront]:
    proxy = HostileFront(sandbox)
    proxy.thread.start()
    yield proxy
    proxy.server.shutdown()
    proxy.server.server_close()


@pytest.mark.parametrize("status", [400, 500])
def test_hostile_provider_answers_are_named_and_escaped(
    front: HostileFront, tmp_path: Path, status: int
) -> None:
    world = make_world(front.sandbox, (tmp_path / "store").as_uri(), "")
    fine = world.add(f"fine.{world.cluster}.example")
    victim = world.add(f"victim.{world.cluster}.example")
    front.spoiled = {f"/orders/{quote(victim)}/certs": status}
    provider = ApiV3Provider(ApiClient(front.url, front.sandbox.api_key, retry=FAST_RETRY))
    try:
        summary = run_sync(world.config(), store=world.store, provider=provider, clock=world.now)
        assert set(world.published().entries) == {fine}
        assert set(summary.errors) == {victim}
        message = summary.errors[victim]
        assert_printable(message)
        assert f"order {victim}" in message and "\\x1b]0;owned\\x07" in message, message
        front.spoiled = {f"cluster={world.cluster}": status}  # the listing itself
        listing = run_sync(world.config(), store=world.store, provider=provider, clock=world.now)
        message = listing.errors[f"cluster:{world.cluster}"]
        assert_printable(message)
        assert f"cluster {world.cluster}" in message and "line1\\nline2" in message, message
    finally:
        provider.close()
