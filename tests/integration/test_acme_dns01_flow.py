"""DNS-01 through the provider's seam, against a real pebble: a wildcard and its apex share
one ``_acme-challenge`` name (both values kept), mixed with an HTTP-01 name in the same
order; the values are written by a small writer into pebble-challtestsrv (pebble's DNS
server), so pebble validates them for real. One writer serves the whole run: one wait for
the values of every order, and the values removed when the run ends."""

from __future__ import annotations

import time
from pathlib import Path

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
    ChalltestsrvTxt,
    Ident,
    MemoryRegistry,
    NotFound,
    Order,
    start_http01,
    sync_config_text,
)
from tests.plugins.binaries import require_binary
from tests.plugins.pebble import Pebble, published


def test_wildcards_and_apexes_by_dns01_with_one_wait_and_http01_beside_them(
    pebble: Pebble, tmp_path: Path
) -> None:
    key, nginx = start_http01(pebble, require_binary("nginx"), tmp_path / "n")
    try:
        text = sync_config_text(tmp_path / "store", pebble, key)
        config = parse_sync_config(text, "sync.hcl")
        store = open_store(config.store)
        order = Order(
            "mixed.test",
            "web",
            (
                Ident("mixed.test", "dns"),
                Ident("*.mixed.test", "dns"),
                Ident("www.mixed.test", "http"),
            ),
        )
        other = Order("other.test", "web", (Ident("*.other.test", "dns"),))
        acme = config.acme
        assert acme is not None
        ChalltestsrvTxt.log = []
        provider = AcmeProvider(
            cluster="web", registry=MemoryRegistry(order, other), not_found=(NotFound,),
            client=AcmeClient(acme.directory, load_account_key(acme.account_key),
                              ca_bundle=acme.ca_bundle),
            config=acme,
            states=AcmeStateStore(store, "web", config.signing_key.sync_secret("state"), time.time),
            dns=lambda: ChalltestsrvTxt(pebble.chall_mgmt),
        )  # fmt: skip
        summary = run_sync(config, store=store, provider=provider)
        assert summary.errors == {}, summary.errors
        assert summary.certificates_published == 2
        record = published(config, store)["mixed.test"]
        assert record.dns_names == ("*.mixed.test", "mixed.test", "www.mixed.test")
        # one writer for the run, one wait for all its values; removed when the run ends
        adds = sorted(name for op, name in ChalltestsrvTxt.log if op == "add")
        assert adds == ["*.mixed.test", "*.other.test", "mixed.test"]  # www: HTTP-01
        assert ChalltestsrvTxt.log[3:] == [("wait", "")]
        provider.close()
        assert ChalltestsrvTxt.log[-1] == ("cleanup", "")
    finally:
        nginx.stop()
