"""The ACME state forgets removed orders, against a real pebble: the run that tombstones an
order (or drops its pending key) drops its ACME record after publishing, the other orders'
records stay, and no CA request is made for it; an order removed while its ACME order is
pending (a DNS-01 value answered, the run cut short) leaves neither a record nor a TXT
value behind, and the order kept beside it is finished as usual. The authorizations of such
an order are deactivated at the CA (except one of a name a kept order also has); a
deactivation the CA fails is logged, the record dropped all the same and never retried.
The client's deactivation accepts an authorization already ended or unknown to the CA."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import pytest

pytest.importorskip("acme", reason="the ACME provider needs certbot's acme (Python >= 3.10)")

from certfleet.acme.client import AcmeClient
from certfleet.acme.errors import AcmeError
from certfleet.acme.flow import DnsChallengeWriter
from certfleet.acme.state import AcmeState, AcmeStateStore, OrderState
from certfleet.bundle import ClusterSecret, SigningKey
from certfleet.config.accountkey import account_key_text, generate_account_key, load_account_key
from certfleet.config.sync import parse_sync_config
from certfleet.store import Store, open_store
from certfleet.sync.provider import ProviderNotFound
from certfleet.sync.runner import run_sync
from tests.plugins.acme_lab import txt_at
from tests.plugins.acme_world import (
    ChalltestsrvTxt,
    Ident,
    MemoryRegistry,
    Order,
    acme_provider,
    one_name_orders,
    start_http01,
    sync_config_text,
)
from tests.plugins.binaries import require_binary
from tests.plugins.faultproxy import FaultProxy
from tests.plugins.pebble import Pebble, published


def _sync(config: Any, store: Store, provider: Any) -> Any:
    try:
        return run_sync(config, store=store, provider=provider)
    finally:
        provider.close()


def _acme_state(config: Any, store: Store) -> AcmeStateStore:
    return AcmeStateStore(store, "web", config.signing_key.sync_secret("state"), time.time)


@contextmanager
def _http01_world(
    pebble: Pebble, tmp_path: Path, proxied: Callable[..., FaultProxy] | None = None
) -> Iterator[tuple[Any, Store, FaultProxy | None]]:
    """pebble started, nginx answering HTTP-01 for a new account key, and the sync config
    and store of cluster ``web`` (its directory through a fault proxy made by ``proxied``
    when given, yielded too)."""
    key, nginx = start_http01(pebble, require_binary("nginx"), tmp_path / "n")
    try:
        text = sync_config_text(tmp_path / "store", pebble, key)
        proxy = None
        if proxied is not None:
            proxy = proxied(
                pebble.directory_url,
                ca_bundle=pebble.ca_bundle,
                tls=(pebble.certificate, pebble.key),
            )
            text = text.replace(pebble.directory_url, proxy.directory_url)
        config = parse_sync_config(text, "s.hcl")
        yield config, open_store(config.store), proxy
    finally:
        nginx.stop()


def _account_client(config: Any, account_url: str | None) -> AcmeClient:
    """A client of the sync's ACME account (as the test's own eyes at the CA)."""
    acme = config.acme
    client = AcmeClient(
        acme.directory, load_account_key(acme.account_key), ca_bundle=acme.ca_bundle
    )
    assert account_url
    client.use_account(account_url)
    return client


def _authz_statuses(client: AcmeClient, order_url: str | None) -> dict[str, str]:
    """The status of each authorization of the ACME order at ``order_url``, by name."""
    assert order_url
    statuses = {}
    for url in client.order(order_url).authorizations:
        authz = client.authorization(url)
        name = ("*." if authz.wildcard else "") + str(authz.identifier.value)
        statuses[name] = str(authz.status.name)
    return statuses


def _until_valid(client: AcmeClient, order_url: str | None) -> dict[str, str]:
    """Waits (15 s at most) until pebble has validated every authorization of the order."""
    deadline = time.monotonic() + 15
    while True:
        statuses = _authz_statuses(client, order_url)
        if set(statuses.values()) == {"valid"} or time.monotonic() > deadline:
            return statuses
        time.sleep(0.2)


def test_a_removed_order_loses_its_record_and_the_others_keep_theirs(
    pebble: Pebble, tmp_path: Path
) -> None:
    with _http01_world(pebble, tmp_path) as (config, store, _):
        registry = MemoryRegistry(*one_name_orders("kept.example.test", "gone.example.test"))
        summary = _sync(config, store, acme_provider(config, store, registry))
        assert summary.errors == {} and summary.certificates_published == 2
        before = _acme_state(config, store).load()
        assert sorted(before.orders) == ["gone.example.test", "kept.example.test"]
        kept = before.orders["kept.example.test"]
        assert kept.cert_id

        # a record left behind by an older version, of an order the sync state never knew
        stale = _acme_state(config, store)
        state = stale.load()
        state.orders["ghost.example.test"] = OrderState(url="https://ca.invalid/order/1")
        stale.save(state)

        del registry.orders["gone.example.test"]  # certfleet rm
        provider = acme_provider(config, store, registry)
        summary = _sync(config, store, provider)
        assert summary.errors == {} and summary.tombstones == 1
        assert provider.client.request_count == 0  # forgetting asks the CA nothing
        after = _acme_state(config, store).load()
        assert sorted(after.orders) == ["kept.example.test"]
        assert after.orders["kept.example.test"] == kept
        assert sorted(published(config, store)) == ["kept.example.test"]

        # the next run has nothing to forget: the ACME state is not written again
        quiet = acme_provider(config, store, registry)
        summary = _sync(config, store, quiet)
        assert summary.errors == {} and quiet.client.request_count == 0
        assert _acme_state(config, store).load().generation == after.generation


def test_an_order_removed_while_its_acme_order_is_pending_leaves_nothing_behind(
    pebble: Pebble, tmp_path: Path
) -> None:
    with _http01_world(pebble, tmp_path) as (config, store, _):
        registry = MemoryRegistry(
            Order("kept.example.test", "web", (Ident("kept.example.test"),)),
            Order("gone.example.test", "web", (Ident("*.gone.example.test", "dns"),)),
        )
        ChalltestsrvTxt.log = []

        def dns() -> DnsChallengeWriter:
            return ChalltestsrvTxt(pebble.chall_mgmt)

        # the first run orders both, answers the challenges and stops waiting at once
        cut_short = replace(config, issue_wait=0.0)
        summary = _sync(cut_short, store, acme_provider(cut_short, store, registry, dns))
        assert summary.certificates_published == 0 and summary.csrs_submitted == 2
        pending = _acme_state(config, store).load()
        assert pending.orders["gone.example.test"].url  # the ACME order is in flight
        assert pending.orders["kept.example.test"].url
        assert ("add", "*.gone.example.test") in ChalltestsrvTxt.log
        assert ChalltestsrvTxt.log[-1] == ("cleanup", "")  # removed at the run's end

        del registry.orders["gone.example.test"]  # certfleet rm while pending
        ChalltestsrvTxt.log = []
        summary = _sync(config, store, acme_provider(config, store, registry, dns))
        assert summary.errors == {}, summary.errors
        assert summary.certificates_published == 1  # the kept order's pending ACME order
        after: AcmeState = _acme_state(config, store).load()
        assert sorted(after.orders) == ["kept.example.test"]
        assert after.orders["kept.example.test"].cert_id
        assert ChalltestsrvTxt.log == []  # nothing written for the removed order
        dns_server = ("127.0.0.1", pebble.dns_port)
        assert txt_at(dns_server, "_acme-challenge.gone.example.test") == set()
        assert sorted(published(config, store)) == ["kept.example.test"]
        # nothing pending or valid is left at the CA for the name given up
        eyes = _account_client(config, pending.account_url)
        gone_authz = _authz_statuses(eyes, pending.orders["gone.example.test"].url)
        assert set(gone_authz.values()) <= {"deactivated", "invalid"}, gone_authz


def _cut_short_run(config: Any, store: Store, registry: MemoryRegistry) -> AcmeState:
    """A run that orders and answers everything, then stops waiting at once; the ACME
    state it leaves (every order in flight)."""
    cut_short = replace(config, issue_wait=0.0)
    summary = _sync(cut_short, store, acme_provider(cut_short, store, registry))
    assert summary.certificates_published == 0 and summary.errors == {}, summary.errors
    state = _acme_state(config, store).load()
    assert all(record.url for record in state.orders.values())
    return state


def test_the_authorizations_of_an_order_removed_while_pending_are_deactivated(
    pebble: Pebble, tmp_path: Path
) -> None:
    with _http01_world(pebble, tmp_path) as (config, store, _):
        both = Ident("both.example.test")  # a name the kept order has too
        registry = MemoryRegistry(
            Order("kept.example.test", "web", (Ident("kept.example.test"), both)),
            Order("gone.example.test", "web", (Ident("gone.example.test"), both)),
        )
        pending = _cut_short_run(config, store, registry)
        eyes = _account_client(config, pending.account_url)
        gone_url = pending.orders["gone.example.test"].url
        assert _until_valid(eyes, gone_url) == {
            "gone.example.test": "valid", "both.example.test": "valid",
        }  # fmt: skip

        del registry.orders["gone.example.test"]  # certfleet rm before the order finished
        provider = acme_provider(config, store, registry)
        summary = _sync(config, store, provider)
        assert summary.errors == {} and summary.certificates_published == 1
        assert sorted(_acme_state(config, store).load().orders) == ["kept.example.test"]
        assert _authz_statuses(eyes, gone_url) == {
            "gone.example.test": "deactivated",  # no longer usable by the account
            "both.example.test": "valid",  # the kept order's name: left alone
        }  # fmt: skip
        assert sorted(published(config, store)) == ["kept.example.test"]

        quiet = acme_provider(config, store, registry)  # nothing left to deactivate
        assert _sync(config, store, quiet).errors == {} and quiet.client.request_count == 0


def test_a_failed_deactivation_is_logged_and_the_record_dropped_anyway(
    pebble: Pebble,
    tmp_path: Path,
    fault_proxy: Callable[..., FaultProxy],
    caplog: pytest.LogCaptureFixture,
) -> None:
    with _http01_world(pebble, tmp_path, fault_proxy) as (config, store, proxy):
        assert proxy is not None
        gone = ("gone-a.example.test", "gone-b.example.test")
        registry = MemoryRegistry(*one_name_orders("kept.example.test", *gone))
        pending = _cut_short_run(config, store, registry)
        eyes = _account_client(config, pending.account_url)
        for name in gone:
            assert _until_valid(eyes, pending.orders[name].url) == {name: "valid"}

        fault = proxy.inject(
            "/authZ/", status=500, times=10, detail="down\x1b[2J",
            when=lambda p: p.get("status") == "deactivated",
        )  # fmt: skip
        for name in gone:
            del registry.orders[name]
        with caplog.at_level(logging.WARNING, logger="certfleet.sync.acme_provider"):
            summary = _sync(config, store, acme_provider(config, store, registry))
        assert summary.errors == {} and summary.certificates_published == 1
        # one attempt; after a failure of the CA's own, the other order is not tried either
        assert fault.injected == 1
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1, warnings
        assert "removed order gone-a.example.test left to expire at the CA" in warnings[0]
        assert "serverInternal: down\\x1b[2J" in warnings[0]  # the CA's text, escaped
        assert sorted(_acme_state(config, store).load().orders) == ["kept.example.test"]
        for name in gone:  # left to expire at the CA
            assert _authz_statuses(eyes, pending.orders[name].url) == {name: "valid"}

        quiet = acme_provider(config, store, registry)  # never tried again
        assert _sync(config, store, quiet).errors == {} and quiet.client.request_count == 0
        assert fault.injected == 1


def test_no_deactivation_starts_past_its_time(
    pebble: Pebble, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with _http01_world(pebble, tmp_path) as (config, store, _):
        registry = MemoryRegistry(*one_name_orders("kept.example.test", "gone.example.test"))
        pending = _cut_short_run(config, store, registry)
        eyes = _account_client(config, pending.account_url)
        gone_url = pending.orders["gone.example.test"].url
        assert _until_valid(eyes, gone_url) == {"gone.example.test": "valid"}

        del registry.orders["gone.example.test"]
        hurried = acme_provider(config, store, registry, deactivation_time=-1.0)
        with caplog.at_level(logging.WARNING, logger="certfleet.sync.acme_provider"):
            summary = _sync(config, store, hurried)
        assert summary.errors == {} and summary.certificates_published == 1
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert warnings == [
            "cluster web: out of time: authorizations of 1 removed order(s) left to expire "
            "at the CA"
        ]
        assert sorted(_acme_state(config, store).load().orders) == ["kept.example.test"]
        assert _authz_statuses(eyes, gone_url) == {"gone.example.test": "valid"}


def test_deactivating_accepts_an_authorization_ended_or_unknown(
    pebble: Pebble, fault_proxy: Callable[..., FaultProxy]
) -> None:
    pebble.start()
    proxy = fault_proxy(
        pebble.directory_url, ca_bundle=pebble.ca_bundle, tls=(pebble.certificate, pebble.key)
    )
    client = AcmeClient(
        proxy.directory_url, generate_account_key(), ca_bundle=str(pebble.ca_bundle)
    )
    try:
        client.register(None)
        _, order = client.new_order(["one.example.test", "two.example.test"])
        one, two = order.authorizations
        assert client.deactivate(one) == "deactivated"
        assert client.authorization(one).status.name == "deactivated"
        # a CA that refuses to deactivate what is deactivated already (as Boulder does)
        refusal = proxy.inject("/authZ/", status=400, problem="malformed", times=2,
                               when=lambda p: p.get("status") == "deactivated")  # fmt: skip
        assert client.deactivate(one) == "deactivated"
        with pytest.raises(AcmeError) as refused:  # ...but a pending one is refused for real
            client.deactivate(two)
        assert refused.value.problem is not None and refused.value.problem.code == "malformed"
        assert refusal.injected == 2
        assert client.authorization(two).status.name == "pending"
        assert client.deactivate(one.rsplit("/", 1)[0] + "/no-such-authz") == "gone"  # 404
    finally:
        client.close()


class ReAddingRegistry(MemoryRegistry):
    """A registry where ``back`` is added again (``certfleet add``) right after the run's
    listing: the second reading has it."""

    def __init__(self, back: Order, *orders: Order) -> None:
        super().__init__(*orders)
        self.back = back

    def list(self, cluster: str) -> list[Order]:
        listed = super().list(cluster)
        self.orders[self.back.name] = self.back
        return listed


def test_an_order_added_back_since_the_listing_keeps_its_record(tmp_path: Path) -> None:
    key = generate_account_key()
    text = f'''
provider = "acme"
store = "file://{tmp_path}/store"
signing_key = "{SigningKey.generate().export()}"
acme {{
  directory = "https://127.0.0.1:9/dir"
  account_key = "{account_key_text(key)}"
}}
cluster "web" {{ secret = "{ClusterSecret.generate("k1").export()}" }}
'''
    config = parse_sync_config(text, "s.hcl")
    store = open_store(config.store)
    states = _acme_state(config, store)
    state = states.load()
    for name in ("back.example.test", "gone.example.test", "listed.example.test"):
        state.order(name).cert_id = f"id-of-{name}"
    states.save(state)
    (listed,) = one_name_orders("listed.example.test")
    (back,) = one_name_orders("back.example.test")
    registry = ReAddingRegistry(back, listed)
    provider = acme_provider(config, store, registry)
    assert provider.forget_removed("web", ["listed.example.test"]) == []  # state not read
    listing = provider.list_orders("web")
    assert provider.state.orders  # read by this run (the engine asks for renewal times)
    names = [order.name for order in listing]
    assert provider.forget_removed("web", names) == ["gone.example.test"]
    kept = _acme_state(config, store).load().orders
    assert sorted(kept) == ["back.example.test", "listed.example.test"]
    assert provider.client.request_count == 0

    # a run that reads no ACME state for its work reads it when an order was found gone
    # (an order removed while only its key was pending, in a cluster with nothing published)
    states.save(_with_record(states.load(), "pending-only.example.test"))
    later = acme_provider(config, store, MemoryRegistry(listed, back))
    assert later.forget_removed("web", names) == []  # nothing confirmed gone: no read
    with pytest.raises(ProviderNotFound):
        later.get_order("pending-only.example.test")
    assert later.forget_removed("web", names) == ["pending-only.example.test"]
    assert sorted(_acme_state(config, store).load().orders) == sorted(kept)


def _with_record(state: AcmeState, name: str) -> AcmeState:
    state.order(name).url = "https://ca.invalid/order/2"
    return state
