"""The HTTP-01 snippets of docs/acme.md, run exactly as written (read from the doc) in real
nginx, HAProxy and Apache httpd on 127.0.0.1: each answers ``<token>.<thumbprint>`` as
text/plain, refuses a malformed token or a path elsewhere, and a real CA (pebble, nonce
rejection on) validates HTTP-01 through HAProxy and Apache for an issued certificate
(nginx's own run against pebble is in tests/integration/test_acme_pebble.py)."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable

import pytest

pytest.importorskip("acme", reason="the ACME provider needs certbot's acme (Python >= 3.10)")

from certfleet.config.accountkey import generate_account_key, thumbprint
from certfleet.config.sync import parse_sync_config
from certfleet.store import open_store
from certfleet.sync.runner import run_sync
from tests.plugins.acme_world import (
    MemoryRegistry,
    acme_provider,
    one_name_orders,
    sync_config_text,
)
from tests.plugins.binaries import require_binary
from tests.plugins.http01 import Http01Apache, Http01Haproxy
from tests.plugins.pebble import (
    Http01Nginx,
    Http01Server,
    Pebble,
    docs_http01_snippet,
    free_port,
    published,
)

THUMB = "abc_DEF-1"
Start = Callable[[str, Path, int, str], Http01Server]
SERVERS: dict[str, tuple[str, Start]] = {
    "nginx": ("nginx", Http01Nginx),
    "haproxy": ("haproxy", Http01Haproxy),
    "apache": ("apache2", Http01Apache),
}
REFUSED = (
    "/.well-known/acme-challenge/bad%2Ftoken",  # an escaped slash
    "/.well-known/acme-challenge/a.b",  # a character outside base64url
    "/.well-known/acme-challenge/a/b",  # a deeper path
    "/.well-known/acme-challenge/",  # no token
    "/x/.well-known/acme-challenge/tok",  # not at the root
    "/other",
)


def _start(server: str, directory: Path, port: int, thumb: str) -> Http01Server:
    binary, start = SERVERS[server]
    return start(require_binary(binary), directory, port, docs_http01_snippet(server, thumb))


def _fetch(port: int, path: str) -> tuple[int, str, str]:
    """(status, content type, body) of a GET with a Host header, as a CA sends it."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", headers={"Host": "app.example.test"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return int(answer.status), answer.headers["Content-Type"], answer.read().decode()
    except urllib.error.HTTPError as err:
        return int(err.code), err.headers["Content-Type"] or "", err.read().decode()


@pytest.mark.parametrize("server", sorted(SERVERS))
def test_the_docs_snippet_answers_token_dot_thumbprint_and_refuses_malformed_tokens(
    server: str, tmp_path: Path
) -> None:
    running = _start(server, tmp_path / server, free_port(), THUMB)
    try:
        for token in ("tok-EN_1", "LoNg" * 16, "x"):
            status, content_type, body = _fetch(
                running.port, f"/.well-known/acme-challenge/{token}"
            )
            assert (status, body) == (200, f"{token}.{THUMB}")
            assert content_type.split(";")[0] == "text/plain"
        # the query string is not part of the token
        assert _fetch(running.port, "/.well-known/acme-challenge/tok?x=1")[2] == f"tok.{THUMB}"
        for path in REFUSED:
            status, _, body = _fetch(running.port, path)
            assert status == 404, (path, status, body)
            assert THUMB not in body, path
    finally:
        running.stop()


@pytest.mark.parametrize("server", ["haproxy", "apache"])
def test_pebble_validates_http01_through_the_docs_snippet(
    server: str, pebble: Pebble, tmp_path: Path
) -> None:
    names = ("app.example.test", "www.example.test")
    pebble.start()  # nonce rejection at pebble's default rate
    key = generate_account_key()
    running = _start(server, tmp_path / server, pebble.http_port, thumbprint(key))
    try:
        config = parse_sync_config(sync_config_text(tmp_path / "store", pebble, key), "sync.hcl")
        store = open_store(config.store)
        provider = acme_provider(config, store, MemoryRegistry(*one_name_orders(*names)))
        try:
            summary = run_sync(config, store=store, provider=provider)
        finally:
            provider.close()
        assert summary.errors == {}, (summary.errors, pebble.log()[-3000:])
        assert summary.certificates_published == 2
        assert sorted(published(config, store)) == sorted(names)
    finally:
        running.stop()
