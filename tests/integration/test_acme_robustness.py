"""The ACME provider when things go wrong, against a real pebble (faults injected by a
proxy in front of it): rate limits and 503 for one order only, badNonce storms, a crash
after finalize, an order cut by the time budget."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import pytest

pytest.importorskip("acme", reason="the ACME provider needs certbot's acme (Python >= 3.10)")

from certfleet.acme.client import AcmeClient
from certfleet.acme.state import AcmeState, AcmeStateStore
from certfleet.bundle import ClusterSecret, SigningKey
from certfleet.config.accountkey import account_key_text, load_account_key
from certfleet.config.sync import SyncConfig, parse_sync_config
from certfleet.store import Store, open_store
from certfleet.sync.acme_provider import AcmeProvider
from certfleet.sync.runner import run_sync
from tests.plugins.acme_world import MemoryRegistry, NotFound, one_name_orders, start_http01
from tests.plugins.binaries import require_binary
from tests.plugins.faultproxy import FaultProxy
from tests.plugins.pebble import Pebble


class CountingClient(AcmeClient):
    """Counts new orders (the request that must not repeat on a resume)."""

    new_orders: list[tuple[str, ...]]

    def new_order(self, identifiers: Any, **kwargs: Any) -> Any:
        self.new_orders.append(tuple(identifiers))
        return super().new_order(identifiers, **kwargs)


@dataclass
class Lab:
    pebble: Pebble
    proxy: FaultProxy
    key_text: str
    config: SyncConfig
    store: Store

    def provider(
        self, registry: MemoryRegistry, states: AcmeStateStore | None = None
    ) -> AcmeProvider:
        acme = self.config.acme
        assert acme is not None
        client = CountingClient(
            self.proxy.directory_url, load_account_key(acme.account_key), ca_bundle=acme.ca_bundle
        )
        client.new_orders = []
        return AcmeProvider(
            cluster="web", registry=registry, not_found=(NotFound,), client=client, config=acme,
            states=states or self.states(),
        )  # fmt: skip

    def states(self) -> AcmeStateStore:
        secret = self.config.signing_key.sync_secret("state")
        return AcmeStateStore(self.store, "web", secret, time.time)


@pytest.fixture
def lab(pebble: Pebble, tmp_path: Path, fault_proxy: Callable[..., FaultProxy]):  # type: ignore[no-untyped-def]
    key, nginx = start_http01(pebble, require_binary("nginx"), tmp_path / "nginx")
    proxy = fault_proxy(
        pebble.directory_url, ca_bundle=pebble.ca_bundle, tls=(pebble.certificate, pebble.key)
    )
    text = f'''
provider = "acme"
store = "file://{tmp_path}/store"
signing_key = "{SigningKey.generate().export()}"
issue_wait = "60s"
acme {{
  directory = "{proxy.directory_url}"
  account_key = "{account_key_text(key)}"
  ca_bundle = "{pebble.ca_bundle}"
}}
cluster "web" {{
  secret = "{ClusterSecret.generate("k1").export()}"
  key_type = "ecdsa"
}}
'''
    config = parse_sync_config(text, "sync.hcl")
    yield Lab(pebble, proxy, account_key_text(key), config, open_store(config.store))
    nginx.stop()


def _new_order_for(name: str) -> Callable[[dict[str, Any]], bool]:
    """A fault proxy ``when``: the new-order request of ``name`` (by its JWS payload)."""

    def match(payload: dict[str, Any]) -> bool:
        return name in [i.get("value") for i in payload.get("identifiers", ())]

    return match


def test_a_rate_limit_delays_that_order_only_for_the_retry_after(lab: Lab) -> None:
    lab.proxy.rate_limit(
        "/order-plz", retry_after=3600, times=5, when=_new_order_for("limited.example.test"),
        detail="too many certificates",
    )  # fmt: skip
    registry = MemoryRegistry(*one_name_orders("limited.example.test", "ok.example.test"))
    provider = lab.provider(registry)
    before = time.time()
    summary = run_sync(lab.config, store=lab.store, provider=provider)
    assert summary.certificates_published == 1  # ok.example.test was not held up
    assert "rateLimited: too many certificates" in summary.errors["limited.example.test"]
    record = lab.states().load().orders["limited.example.test"]
    assert before + 3590 <= record.retry_at <= time.time() + 3610  # Retry-After, not backoff
    assert record.problem is not None and record.problem["status"] == 429

    # the next run asks nothing for it and says it is waiting
    again = lab.provider(registry)
    summary = run_sync(lab.config, store=lab.store, provider=again)
    assert "waiting until" in summary.errors["limited.example.test"]
    assert again.client.new_orders == []  # type: ignore[attr-defined]


def test_a_503_with_retry_after_is_honoured(lab: Lab) -> None:
    lab.proxy.unavailable(
        "/order-plz", retry_after=120, times=5, when=_new_order_for("busy.example.test"),
        detail="maintenance",
    )  # fmt: skip
    provider = lab.provider(MemoryRegistry(*one_name_orders("busy.example.test")))
    before = time.time()
    summary = run_sync(lab.config, store=lab.store, provider=provider)
    assert "maintenance" in summary.errors["busy.example.test"]
    record = lab.states().load().orders["busy.example.test"]
    assert before + 115 <= record.retry_at <= time.time() + 125


def test_bad_nonces_are_retried_more_than_once(lab: Lab) -> None:
    storm = lab.proxy.inject(
        "/order-plz", status=400, problem="badNonce", times=4,
        when=_new_order_for("nonce.example.test"), detail="JWS has an invalid anti-replay nonce",
    )  # fmt: skip
    provider = lab.provider(MemoryRegistry(*one_name_orders("nonce.example.test")))
    summary = run_sync(lab.config, store=lab.store, provider=provider)
    assert storm.injected == 4
    assert summary.errors == {} and summary.certificates_published == 1


class Crash(Exception):
    pass


class CrashAfterFinalize(AcmeStateStore):
    def save(self, state: AcmeState) -> bool:
        if any(o.status in ("processing", "valid") for o in state.orders.values()):
            raise Crash("killed after finalize")
        return super().save(state)


def test_a_crash_after_finalize_downloads_instead_of_ordering_again(lab: Lab) -> None:
    registry = MemoryRegistry(*one_name_orders("crash.example.test"))
    secret = lab.config.signing_key.sync_secret("state")
    crashing = lab.provider(registry, CrashAfterFinalize(lab.store, "web", secret, time.time))
    crashed = run_sync(lab.config, store=lab.store, provider=crashing)
    assert any("killed after finalize" in error for error in crashed.errors.values())
    assert crashed.certificates_published == 0
    saved = lab.states().load().orders["crash.example.test"]
    assert saved.url and saved.status == "ready"

    resumed = lab.provider(registry)
    summary = run_sync(lab.config, store=lab.store, provider=resumed)
    assert summary.errors == {} and summary.certificates_published == 1
    assert resumed.client.new_orders == []  # type: ignore[attr-defined]


def test_an_order_cut_by_the_time_budget_resumes_from_its_url(lab: Lab) -> None:
    registry = MemoryRegistry(*one_name_orders("slow.example.test"))
    hurried = replace(lab.config, issue_wait=0.0)
    first = lab.provider(registry)
    summary = run_sync(hurried, store=lab.store, provider=first)
    assert summary.certificates_published == 0 and summary.errors == {}
    url = lab.states().load().orders["slow.example.test"].url
    assert url and first.client.new_orders == [("slow.example.test",)]  # type: ignore[attr-defined]

    second = lab.provider(registry)
    summary = run_sync(lab.config, store=lab.store, provider=second)
    assert summary.certificates_published == 1
    assert second.client.new_orders == []  # type: ignore[attr-defined]


def test_a_rate_limited_poll_keeps_the_order_and_resumes_it_after_the_wait(lab: Lab) -> None:
    hits = lab.proxy.rate_limit(
        "^/my-order/", retry_after=2, times=1, when=lambda payload: not payload,  # POST-as-GET
        detail="polling too fast",
    )  # fmt: skip
    registry = MemoryRegistry(*one_name_orders("poll.example.test"))
    first = lab.provider(registry)
    summary = run_sync(lab.config, store=lab.store, provider=first)
    assert hits.injected == 1 and "polling too fast" in summary.errors["poll.example.test"]
    kept = lab.states().load().orders["poll.example.test"]
    assert kept.url and kept.retry_at > time.time()

    early = lab.provider(registry)
    summary = run_sync(lab.config, store=lab.store, provider=early)
    assert "waiting until" in summary.errors["poll.example.test"]
    assert early.client.request_count == 0

    time.sleep(max(0.0, kept.retry_at - time.time()) + 0.2)
    later = lab.provider(registry)
    summary = run_sync(lab.config, store=lab.store, provider=later)
    assert summary.errors == {} and summary.certificates_published == 1
    assert later.client.new_orders == []  # type: ignore[attr-defined]
