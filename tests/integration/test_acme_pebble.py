"""The ACME provider against a real pebble: HTTP-01 answered statelessly by nginx with the
snippet of docs/acme.md, nonce rejection on, a certificate published to a file:// store and
verified against pebble's root; a sync with nothing to do makes no CA request."""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path

import pytest

pytest.importorskip("acme", reason="the ACME provider needs certbot's acme (Python >= 3.10)")

from certfleet.acme.client import AcmeClient
from certfleet.acme.state import AcmeStateStore
from certfleet.bundle import ClusterSecret, SigningKey, open_bundle, verify_head
from certfleet.config.accountkey import (
    account_key_text,
    generate_account_key,
    thumbprint,
)
from certfleet.config.sync import parse_sync_config
from certfleet.store import open_store
from certfleet.sync.acme_provider import AcmeProvider
from certfleet.sync.runner import run_sync
from tests.plugins.acme_world import Ident, MemoryRegistry, NotFound, Order, start_http01
from tests.plugins.binaries import require_binary
from tests.plugins.pebble import (
    Http01Nginx,
    Pebble,
    docs_nginx_snippet,
    openssl_verifies,
    published,
)

NAMES = ("app.example.test", "www.example.test")


def test_the_docs_nginx_snippet_answers_token_dot_thumbprint(tmp_path: Path) -> None:
    snippet = docs_nginx_snippet("abc_DEF-1")
    server = Http01Nginx(require_binary("nginx"), tmp_path / "n", _port(), snippet)
    try:
        assert server.get("/.well-known/acme-challenge/tok-EN_1") == (200, "tok-EN_1.abc_DEF-1")
        assert server.get("/.well-known/acme-challenge/bad%2Ftoken")[0] == 404
        assert server.get("/other")[0] == 404
    finally:
        server.stop()


def _port() -> int:
    from tests.plugins.pebble import free_port

    return free_port()


@pytest.fixture
def lab(pebble: Pebble, tmp_path: Path):  # type: ignore[no-untyped-def]
    key, server = start_http01(pebble, require_binary("nginx"), tmp_path / "nginx")
    yield pebble, key
    server.stop()


def _config(
    tmp_path: Path, pebble: Pebble, key_text: str, eab: tuple[str, str] | None = None
) -> object:
    signing = SigningKey.generate()
    secret = ClusterSecret.generate("k1")
    text = f'''
provider = "acme"
store = "file://{tmp_path}/store"
signing_key = "{signing.export()}"
issue_wait = "60s"
acme {{
  directory = "{pebble.directory_url}"
  email = "ops@example.test"
  account_key = "{key_text}"
  ca_bundle = "{pebble.ca_bundle}"
  {f'eab_kid = "{eab[0]}"  eab_hmac_key = "{eab[1]}"' if eab else ""}
}}
cluster "web" {{
  secret = "{secret.export()}"
  key_type = "ecdsa"
}}
'''
    return parse_sync_config(text, "sync.hcl")


def _provider(config, store, registry) -> AcmeProvider:  # type: ignore[no-untyped-def]
    acme = config.acme
    from certfleet.config.accountkey import load_account_key

    client = AcmeClient(
        acme.directory, load_account_key(acme.account_key), ca_bundle=acme.ca_bundle
    )
    states = AcmeStateStore(store, "web", config.signing_key.sync_secret("state"), time.time)
    return AcmeProvider(
        cluster="web", registry=registry, not_found=(NotFound,), client=client,
        config=acme, states=states,
    )  # fmt: skip


def test_an_order_is_issued_by_pebble_published_and_verifies_against_its_root(
    lab, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    pebble, key = lab
    config = _config(tmp_path, pebble, account_key_text(key))
    store = open_store(config.store)
    registry = MemoryRegistry(
        Order("app.example.test", "web", tuple(Ident(n, "http") for n in NAMES))
    )

    provider = _provider(config, store, registry)
    started = time.monotonic()
    summary = run_sync(config, store=store, provider=provider)
    issuance = time.monotonic() - started
    print(f"issuance of one 2-name order against pebble: {issuance:.2f} s, "
          f"{provider.client.request_count} CA requests")  # fmt: skip
    assert summary.errors == {}, summary.errors
    assert summary.certificates_published == 1

    # the head is signed by the config's key and the bundle holds a chain to pebble's root
    cluster = config.cluster("web")
    head = verify_head(
        store.get("v1/clusters/web/head", max_bytes=1 << 24).data,
        cluster="web",
        publishers=[config.signing_key.public_key()],
    )
    assert head.generation > 0
    record = published(config, store)["app.example.test"]
    bundle = open_bundle(
        store.get(f"v1/clusters/web/bundles/{record.bundle}", max_bytes=1 << 24).data,
        cluster="web", order_name="app.example.test", secrets=cluster.secrets,
    )  # fmt: skip
    assert bundle.dns_names == NAMES
    (tmp_path / "leaf.pem").write_bytes(bundle.certificate_pem)
    (tmp_path / "chain.pem").write_bytes(b"".join(bundle.chain_pem))
    openssl_verifies(pebble.root_pem(), tmp_path / "leaf.pem", tmp_path / "chain.pem")

    # the account URL is in the sealed ACME state; no order is left in flight
    acme_state = AcmeStateStore(store, "web", config.signing_key.sync_secret("state"), time.time)
    loaded = acme_state.load()
    assert loaded.account_url and loaded.account_url.startswith("https://127.0.0.1")
    assert loaded.orders["app.example.test"].url is None
    assert loaded.orders["app.example.test"].cert_id

    # a sync with nothing to do asks the CA nothing
    again = _provider(config, store, registry)
    quiet = run_sync(config, store=store, provider=again)
    assert quiet.errors == {} and quiet.certificates_published == 0
    assert again.client.request_count == 0
    print(f"no-change sync: {again.client.request_count} CA requests, "
          f"{quiet.store_requests} store requests")  # fmt: skip

    # an order gone from the registry is tombstoned, still without a CA request
    registry.orders.clear()
    gone = _provider(config, store, registry)
    summary = run_sync(config, store=store, provider=gone)
    assert summary.tombstones == 1 and summary.errors == {}
    assert gone.client.request_count == 0


def test_a_failed_validation_is_reported_with_the_problem_and_waits(
    pebble: Pebble, tmp_path: Path
) -> None:
    pebble.start()
    key = generate_account_key()
    # nginx answers with another account's thumbprint: validation fails for real
    snippet = docs_nginx_snippet(thumbprint(generate_account_key()))
    server = Http01Nginx(require_binary("nginx"), tmp_path / "nginx", pebble.http_port, snippet)
    try:
        config = _config(tmp_path, pebble, account_key_text(key))
        store = open_store(config.store)
        registry = MemoryRegistry(
            Order("bad.example.test", "web", (Ident("bad.example.test", "http"),))
        )
        provider = _provider(config, store, registry)
        summary = run_sync(config, store=store, provider=provider)
        assert summary.certificates_published == 0
        error = summary.errors["bad.example.test"]
        assert "bad.example.test: unauthorized" in error or "incorrectResponse" in error, error
        assert "next attempt after" in error
        state = AcmeStateStore(store, "web", config.signing_key.sync_secret("state"), time.time)
        record = state.load().orders["bad.example.test"]
        assert record.attempts == 1 and record.url is None
        assert record.retry_at > time.time() + 200
        assert record.problem is not None and record.problem["subproblems"]

        # the next run waits: no CA request, the problem reported again
        later = _provider(config, store, registry)
        summary = run_sync(config, store=store, provider=later)
        assert "waiting until" in summary.errors["bad.example.test"]
        assert later.client.request_count == 0

        # new names make a new order at once: the backoff was for the old ones
        registry.orders["bad.example.test"] = Order(
            "bad.example.test",
            "web",
            (Ident("bad.example.test", "http"), Ident("b2.example.test", "http")),
        )
        changed = _provider(config, store, registry)
        summary = run_sync(config, store=store, provider=changed)
        assert "next attempt after" in summary.errors["bad.example.test"]
        assert changed.client.request_count > 0
        record = state.load().orders["bad.example.test"]
        assert record.attempts == 1 and record.names == ["b2.example.test", "bad.example.test"]
    finally:
        server.stop()


@pytest.mark.slow
def test_a_hundred_orders_are_issued_in_one_run(lab, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    pebble, key = lab
    config = _config(tmp_path, pebble, account_key_text(key))
    config = replace(config, issue_wait=600.0)
    store = open_store(config.store)
    names = [f"n{i:03d}.example.test" for i in range(100)]
    registry = MemoryRegistry(*(Order(n, "web", (Ident(n, "http"),)) for n in names))
    provider = _provider(config, store, registry)
    started = time.monotonic()
    summary = run_sync(config, store=store, provider=provider)
    took = time.monotonic() - started
    print(f"100 orders against pebble in one run: {took:.1f} s ({took / 100:.2f} s per order), "
          f"{provider.client.request_count} CA requests")  # fmt: skip
    assert summary.errors == {}, summary.errors
    assert summary.certificates_published == 100


def test_a_ca_requiring_eab_registers_the_account_with_the_binding(
    pebble: Pebble, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    hmac_key = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W"
    pebble.extra_config = {
        "externalAccountBindingRequired": True,
        "externalAccountMACKeys": {"kid-1": hmac_key},
    }
    key, server = start_http01(pebble, require_binary("nginx"), tmp_path / "nginx")
    try:
        registry = MemoryRegistry(
            Order("eab.example.test", "web", (Ident("eab.example.test", "http"),))
        )
        plain = _config(tmp_path / "plain", pebble, account_key_text(key))
        store = open_store(plain.store)
        summary = run_sync(plain, store=store, provider=_provider(plain, store, registry))
        assert "externalAccountRequired" in summary.errors["eab.example.test"]

        bound = _config(tmp_path / "bound", pebble, account_key_text(key), eab=("kid-1", hmac_key))
        store = open_store(bound.store)
        caplog.set_level(logging.DEBUG)
        summary = run_sync(bound, store=store, provider=_provider(bound, store, registry))
        assert summary.errors == {} and summary.certificates_published == 1
        # nothing secret reaches a log line, even at DEBUG (the acme library's too)
        logged = caplog.text
        assert "JWS payload" in logged or "Sending POST" in logged  # DEBUG was on
        body = account_key_text(key).split("\\n")[1]
        for secret in (hmac_key, body, bound.signing_key.export().split(":")[1]):
            assert secret not in logged
        assert hmac_key not in repr(bound.acme) and body not in repr(bound.acme)
    finally:
        server.stop()
