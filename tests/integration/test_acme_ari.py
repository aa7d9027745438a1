"""Renewal with ARI (RFC 9773) and ACME profiles, against the newer pebble that has both:
a 6-day certificate from the requested profile, its renewal time taken from the CA's
window (asked again only after the Retry-After), and the renewal naming the old
certificate (``replaces``)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("acme", reason="the ACME provider needs certbot's acme (Python >= 3.10)")

from certfleet.acme.client import AcmeClient
from certfleet.acme.state import AcmeStateStore
from certfleet.config.accountkey import load_account_key
from certfleet.config.sync import parse_sync_config
from certfleet.store import open_store
from certfleet.sync.acme_provider import AcmeProvider
from certfleet.sync.runner import run_sync
from tests.plugins.acme_world import (
    MemoryRegistry,
    NotFound,
    one_name_orders,
    start_http01,
    sync_config_text,
)
from tests.plugins.binaries import require_binary
from tests.plugins.pebble import Pebble, published

SIX_DAYS = 518400


class RecordingClient(AcmeClient):
    orders: list[dict[str, Any]]

    def new_order(self, identifiers: Any, **kwargs: Any) -> Any:
        self.orders.append(dict(kwargs, identifiers=tuple(identifiers)))
        return super().new_order(identifiers, **kwargs)


def test_a_short_lived_profile_certificate_is_renewed_in_the_ari_window_with_replaces(
    pebble_ari: Pebble, tmp_path: Path
) -> None:
    pebble_ari.extra_config = {
        "profiles": {
            "default": {"description": "90 days", "validityPeriod": 7776000},
            "shortlived": {"description": "6 days", "validityPeriod": SIX_DAYS},
        }
    }
    key, nginx = start_http01(pebble_ari, require_binary("nginx"), tmp_path / "n")
    try:
        profile = '  profile = "shortlived"\n'
        text = sync_config_text(tmp_path / "store", pebble_ari, key, profile)
        config = parse_sync_config(text, "sync.hcl")
        store = open_store(config.store)
        registry = MemoryRegistry(*one_name_orders("short.example.test"))
        ahead = {"s": 0.0}  # the runs' clock: real time, moved forward for the renewal

        def clock() -> float:
            return time.time() + ahead["s"]

        def provider() -> AcmeProvider:
            acme = config.acme
            assert acme is not None
            client = RecordingClient(
                acme.directory, load_account_key(acme.account_key), ca_bundle=acme.ca_bundle
            )
            client.orders = []
            states = AcmeStateStore(store, "web", config.signing_key.sync_secret("state"), clock)
            return AcmeProvider(
                cluster="web", registry=registry, not_found=(NotFound,), client=client,
                config=acme, states=states, clock=clock,
            )  # fmt: skip

        first = provider()
        summary = run_sync(config, store=store, provider=first, clock=clock)
        assert summary.errors == {} and summary.certificates_published == 1
        assert first.client.orders[0]["profile"] == "shortlived"  # type: ignore[attr-defined]
        assert first.client.orders[0]["replaces"] is None  # type: ignore[attr-defined]
        record = published(config, store)["short.example.test"]
        assert SIX_DAYS - 3600 <= record.not_after - record.not_before <= SIX_DAYS + 3600

        # the first quiet run asks the CA for the window; the next asks nothing
        asking = provider()
        summary = run_sync(config, store=store, provider=asking, clock=clock)
        assert summary.certificates_published == 0
        assert asking.client.request_count >= 1
        acme_state = AcmeStateStore(store, "web", config.signing_key.sync_secret("state"), clock)
        ari = acme_state.load().orders["short.example.test"]
        assert ari.renew_at is not None and ari.cert_id
        assert record.not_before < ari.renew_at < record.not_after
        quiet = provider()
        run_sync(config, store=store, provider=quiet, clock=clock)
        assert quiet.client.request_count == 0

        # past the suggested time: renewed, naming the old certificate
        ahead["s"] = ari.renew_at + 60 - time.time()
        renewing = provider()
        summary = run_sync(config, store=store, provider=renewing, clock=clock)
        assert summary.errors == {} and summary.certificates_published == 1
        assert renewing.client.orders[0]["replaces"] == ari.cert_id  # type: ignore[attr-defined]
        renewed = acme_state.load().orders["short.example.test"]
        assert renewed.cert_id and renewed.cert_id != ari.cert_id

        # a replaces the CA refuses (that certificate was replaced already: 409) falls back
        # to a plain order instead of failing
        stale = acme_state.load()
        stale.orders["short.example.test"].cert_id = ari.cert_id
        stale.orders["short.example.test"].renew_at = int(clock()) - 1  # due now
        stale.orders["short.example.test"].ari_next_check = int(clock()) + 86400
        acme_state.save(stale)
        rekeyed = provider()
        summary = run_sync(config, store=store, provider=rekeyed, clock=clock)
        assert summary.errors == {} and summary.certificates_published == 1
        sent = [order["replaces"] for order in rekeyed.client.orders]  # type: ignore[attr-defined]
        assert sent == [ari.cert_id, None]
    finally:
        nginx.stop()
