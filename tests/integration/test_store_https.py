"""The https:// store on ``http.client`` + ``ssl``: TLS verification, the size cap, retries,
Retry-After, kept-alive connections the server closed, Basic auth
(tests/integration/test_store.py runs the shared contract over it too)."""

from __future__ import annotations

import base64
import http.server
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from certfleet.store import HttpsStore, ObjectTooLarge, StoreError, StoreUnavailable
from certfleet.store.https import tls_context
from tests.plugins.publisher import TestCa

KEY = "v1/clusters/web/head"


class Scripted(http.server.BaseHTTPRequestHandler):
    """Answers from a script: a list of (status, headers, body), the last one repeated."""

    protocol_version = "HTTP/1.1"
    script: ClassVar[list[tuple[int, dict[str, str], bytes]]] = []
    seen: ClassVar[list[dict[str, str]]] = []
    close_after: ClassVar[bool] = False

    def do_GET(self) -> None:
        Scripted.seen.append(dict(self.headers))
        status, headers, body = (
            Scripted.script.pop(0) if len(Scripted.script) > 1 else Scripted.script[0]
        )
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        if "Content-Length" not in headers and "Transfer-Encoding" not in headers:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if headers.get("Transfer-Encoding") == "chunked":
            for start in range(0, len(body), 65536):
                chunk = body[start : start + 65536]
                self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.wfile.write(body)
        if Scripted.close_after:
            self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:
        pass


def serve(context: ssl.SSLContext | None) -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Scripted)
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def plain() -> Iterator[int]:
    Scripted.script, Scripted.seen, Scripted.close_after = [(200, {}, b"x")], [], False
    yield from serve(None)


@pytest.fixture
def tls(tmp_path: Path, publisher_ca: TestCa) -> Iterator[tuple[int, Path]]:
    issued = publisher_ca.issue(["localhost"])
    (tmp_path / "chain.pem").write_bytes(issued.cert_pem + b"".join(issued.chain_pem))
    (tmp_path / "key.pem").write_bytes(issued.key_pem)
    (tmp_path / "root.pem").write_bytes(publisher_ca.root_pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "chain.pem", tmp_path / "key.pem")
    Scripted.script, Scripted.seen, Scripted.close_after = [(200, {}, b"x")], [], False
    for port in serve(context):
        yield port, tmp_path / "root.pem"


def test_tls_is_verified(tls: tuple[int, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    port, root = tls
    Scripted.script = [(200, {"ETag": '"e1"'}, b"signed head")]
    store = HttpsStore(f"https://localhost:{port}/fleet", cafile=str(root))
    stored = store.get(KEY, max_bytes=1 << 24)
    assert stored.data == b"signed head" and stored.etag == '"e1"'
    assert Scripted.seen[-1]["User-Agent"] == "certfleet"
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    untrusted = HttpsStore(f"https://localhost:{port}/fleet", max_attempts=3)
    before = len(Scripted.seen)
    with pytest.raises(StoreError) as caught:
        untrusted.get(KEY, max_bytes=1 << 24)
    assert "TLS certificate verification failed" in str(caught.value)
    assert len(Scripted.seen) == before  # no request went out, and no retry


def test_the_default_context_verifies_names_and_certificates() -> None:
    context = tls_context()
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


@pytest.mark.parametrize("chunked", [False, True])
def test_answers_over_the_size_cap_are_refused(plain: int, chunked: bool) -> None:
    headers = {"Transfer-Encoding": "chunked"} if chunked else {}
    Scripted.script = [(200, headers, b"y" * 300_000)]
    store = HttpsStore(f"http://127.0.0.1:{plain}/fleet")
    with pytest.raises(ObjectTooLarge) as caught:
        store.get(KEY, max_bytes=200_000)
    assert "over the cap of 200000 bytes" in str(caught.value) and KEY in str(caught.value)
    assert not isinstance(caught.value, StoreUnavailable)
    Scripted.script = [(200, {}, b"small")]
    stored = store.get(KEY, max_bytes=200_000)  # the connection was dropped and a new one works
    assert stored.data == b"small"


def test_server_errors_are_retried_with_retry_after(plain: int) -> None:
    Scripted.script = [(503, {"Retry-After": "2"}, b""), (429, {}, b""), (200, {}, b"ok")]
    waits: list[float] = []
    store = HttpsStore(f"http://127.0.0.1:{plain}/fleet", max_attempts=3, sleep=waits.append)
    stored = store.get(KEY, max_bytes=1 << 24)
    assert stored.data == b"ok"
    assert waits == [2.0, 0.4]
    assert store.stats.requests == 3 and store.stats.reads == 1
    Scripted.script = [(500, {}, b"")]
    with pytest.raises(StoreUnavailable) as caught:
        store.get(KEY, max_bytes=1 << 24)
    assert "HTTP 500" in str(caught.value)


def test_a_connection_closed_while_idle_is_reopened_silently(plain: int) -> None:
    store = HttpsStore(f"http://127.0.0.1:{plain}/fleet", max_attempts=1)
    Scripted.script = [(200, {"ETag": '"a"'}, b"one")]
    assert store.get(KEY, max_bytes=1 << 24).data == b"one"
    Scripted.close_after = True  # the server drops the kept-alive connection after answering
    assert store.get_if_changed(KEY, etag='"b"', max_bytes=1 << 24) is not None
    # max_attempts=1: no failure may be counted
    assert store.get(KEY, max_bytes=1 << 24).data == b"one"
    # 200 with the same ETag: unchanged
    assert store.get_if_changed(KEY, etag='"a"', max_bytes=1 << 24) is None


def test_not_modified_is_an_answer_to_a_conditional_get_only(plain: int) -> None:
    store = HttpsStore(f"http://127.0.0.1:{plain}/fleet", max_attempts=1)
    Scripted.script = [(304, {"ETag": '"a"'}, b"")]
    assert store.get_if_changed(KEY, etag='"a"', max_bytes=1 << 24) is None
    assert Scripted.seen[-1]["If-None-Match"] == '"a"'
    with pytest.raises(StoreError) as caught:  # a plain GET asked for the object itself
        store.get(KEY, max_bytes=1 << 24)
    assert "HTTP 304" in str(caught.value) and "If-None-Match" not in Scripted.seen[-1]


def test_basic_auth_from_the_url_is_sent_but_never_shown(plain: int) -> None:
    store = HttpsStore(f"http://reader:s3cret@127.0.0.1:{plain}/fleet", max_attempts=1)
    Scripted.script = [(403, {}, b"")]
    with pytest.raises(StoreError) as caught:
        store.get(KEY, max_bytes=1 << 24)
    expected = "Basic " + base64.b64encode(b"reader:s3cret").decode()
    assert Scripted.seen[-1]["Authorization"] == expected
    assert "s3cret" not in str(caught.value) + repr(store) + store.url


def test_plain_http_only_for_loopback() -> None:
    with pytest.raises(ValueError, match="loopback"):
        HttpsStore("http://certs.example.com/fleet")
