"""``certfleet doctor --api``: against the sandbox every read-only call answers as modeled and
nothing changes; against a server that answers otherwise, or none, it says which call and
how, and exits 1."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

import pytest

from certfleet.apiv3 import ApiClient, Identifier
from tests.plugins.cli import CliRun
from tests.plugins.sandbox import Sandbox, unique_cluster

Cli = Callable[..., CliRun]


@pytest.fixture
def api_env(monkeypatch: pytest.MonkeyPatch, cli_home: object) -> Callable[[str, str], None]:
    def point(url: str, key: str) -> None:
        monkeypatch.setenv("CERTFLEET_API_ENDPOINT", url)
        monkeypatch.setenv("CERTFLEET_API_KEY", key)

    return point


def snapshot(sandbox: Sandbox, cluster: str) -> list[dict[str, Any]]:
    with ApiClient(sandbox.url, sandbox.api_key) as client:
        return [order.to_json() for order in client.iter_orders(cluster)]


def test_the_sandbox_answers_every_call_as_modeled_and_nothing_changes(
    certfleet_cli: Cli, api_env: Callable[[str, str], None], sandbox: Sandbox
) -> None:
    cluster = unique_cluster("doc")
    with ApiClient(sandbox.url, sandbox.api_key) as client:
        for n in range(3):  # three orders: two pages of two
            name = f"d{n}.{cluster}.example.com"
            client.create_order([Identifier(name, "http")], cluster=cluster)
    before = snapshot(sandbox, cluster)
    api_env(sandbox.url, sandbox.api_key)

    human = certfleet_cli("doctor", "--api", "--cluster", cluster)
    assert human.code == 0, human.out + human.err
    assert "all 7 calls answered as modeled" in human.out
    assert "ANSWERED DIFFERENTLY" not in human.out and "NOT REACHABLE" not in human.out
    assert human.out.count("not exercised: it writes") == 4
    report = certfleet_cli("doctor", "--api", "--cluster", cluster, "--json").json()
    assert report["ok"] is True and report["cluster"] == cluster
    outcomes = {call["call"]: call["outcome"] for call in report["calls"]}
    assert outcomes[f"GET /orders?cluster={cluster}&limit=2&after=CURSOR"] == "as_modeled"
    assert outcomes["GET /orders/{name}"] == "as_modeled"
    assert outcomes["POST /orders/{name}/csrs"] == "skipped"
    sources = {call["call"]: call["source"] for call in report["calls"]}
    assert sources["GET /orders/{name}"] == "documented"
    assert sources[f"GET /orders?cluster={cluster}&limit=2"] == "modeled"
    assert snapshot(sandbox, cluster) == before  # read-only

    empty = certfleet_cli("doctor", "--api", "--cluster", unique_cluster("none"), "--json")
    assert empty.code == 0
    skipped = {c["call"]: c["detail"] for c in empty.json()["calls"] if c["outcome"] == "skipped"}
    assert "no order to read" in skipped["GET /orders/{name}"]


def test_with_a_sync_config_its_key_endpoint_and_first_cluster_are_checked(
    certfleet_cli: Cli, sandbox: Sandbox, tmp_path: Path
) -> None:
    config = str(tmp_path / "sync.hcl")
    made = certfleet_cli(
        "init", "--config", config, "--store", f"file://{tmp_path}/store",
        "--api-endpoint", sandbox.url, "--api-key", sandbox.api_key,
    )  # fmt: skip
    assert made.code == 0, made.err
    cluster = unique_cluster("cfg")
    assert certfleet_cli("clusters", "add", cluster, "--config", config).code == 0
    report = certfleet_cli("doctor", "--api", "--config", config, "--json")
    assert report.code == 0, report.out + report.err
    assert report.json()["cluster"] == cluster and report.json()["endpoint"] == sandbox.url
    assert sandbox.api_key not in report.out + report.err


class Otherwise(BaseHTTPRequestHandler):
    """An API that answers every call, but not as certfleet models it."""

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path.endswith("/orders") and "Authorization" not in self.headers:
            self._answer(200, {"orders": []})  # no auth needed at all
        elif path.endswith("/orders") and self.headers["Authorization"].startswith("Basic"):
            body = b"<html><title>Sign in</title></html>"  # a login page
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif path.endswith("/orders"):
            self._answer(200, {"items": [], "next_page": None})  # another shape
        elif "/certs/" in path:
            self._answer(200, {"state": "pending", "retry_after": 5})
        else:  # an unknown order: another code, with a terminal escape in it
            self._answer(404, {"code": "gone\x1b[2J", "message": "no such order"})

    def _answer(self, status: int, document: object) -> None:
        body = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def otherwise() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Otherwise)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/api/v3"
    server.shutdown()
    server.server_close()


def test_a_server_that_answers_differently_is_reported_call_by_call(
    certfleet_cli: Cli, api_env: Callable[[str, str], None], otherwise: str
) -> None:
    api_env(otherwise, "123_doctorkey")
    result = certfleet_cli("doctor", "--api", "--cluster", "web")
    assert result.code == 1
    assert "123_doctorkey" not in result.out + result.err
    assert "\x1b" not in result.out
    report = certfleet_cli("doctor", "--api", "--cluster", "web", "--json").json()
    assert report["ok"] is False
    found = {call["call"]: (call["outcome"], call["detail"]) for call in report["calls"]}
    assert found["GET /orders?cluster=web&limit=2"] == ("different", "answer has no orders list")
    assert found["GET /orders/certfleet-doctor.invalid"] == (
        "different",
        "HTTP 404 with code gone\x1b[2J (modeled: not_found)",
    )
    assert "HTTP 404 with code gone\\x1b[2J (modeled: not_found)" in result.out  # escaped
    assert found["GET /orders/{name}/certs/{pubkey_hash} (a key never submitted)"] == (
        "different",
        "answered with success for something that does not exist",
    )
    assert found["GET /orders with Basic auth (the key as user, an empty password)"] == (
        "different",
        "HTTP 200 with a body that is not JSON (text/html)",
    )
    assert found["GET /orders without auth (an error object with a code)"] == (
        "different",
        "HTTP 200 (modeled: 401 or 403)",
    )
    assert found["GET /orders/{name}"][0] == "skipped"
    assert "5 of 5 calls did not answer as modeled" in result.out
    assert result.out.count("ANSWERED DIFFERENTLY") == 5


def test_an_endpoint_nobody_answers_is_not_reachable(
    certfleet_cli: Cli, api_env: Callable[[str, str], None]
) -> None:
    with socket.socket() as probe:  # a port that was free a moment ago: connection refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    api_env(f"http://127.0.0.1:{port}/api/v3", "123_doctorkey")
    result = certfleet_cli("doctor", "--api", "--json")
    assert result.code == 1
    outcomes = [c["outcome"] for c in result.json()["calls"] if c["outcome"] != "skipped"]
    assert outcomes and set(outcomes) == {"unreachable"}


def test_doctor_needs_to_be_told_what_to_check(certfleet_cli: Cli) -> None:
    refused = certfleet_cli("doctor")
    assert refused.code == 2 and "--api" in refused.err and refused.out == ""
