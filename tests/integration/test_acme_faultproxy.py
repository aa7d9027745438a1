"""The lab's fault proxy (tests/plugins/faultproxy.py) in front of a real pebble: injected
429/503 answers are what an ACME client expects (problem document, Retry-After, a usable
nonce), bounded in number, and everything else passes through with the URLs rewritten."""

from __future__ import annotations

from typing import Any, Callable

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.plugins.faultproxy import FaultProxy

acme_client = pytest.importorskip("acme.client", reason="certbot's acme needs Python >= 3.10")
import josepy  # noqa: E402
from acme import crypto_util, messages  # noqa: E402


@pytest.fixture
def proxy(lab_pebble: Any, fault_proxy: Callable[..., FaultProxy]) -> tuple[FaultProxy, Any]:
    pebble = lab_pebble(dns_server="127.0.0.1:9")
    pebble.env = {"PEBBLE_WFE_NONCEREJECT": "0"}
    pebble.start()
    started = fault_proxy(
        pebble.directory_url, ca_bundle=pebble.ca_bundle, tls=(pebble.certificate, pebble.key)
    )
    return started, pebble


def test_the_directory_through_the_proxy_points_back_at_the_proxy(
    proxy: tuple[FaultProxy, Any],
) -> None:
    fault, pebble = proxy
    directory = requests.get(fault.directory_url, verify=str(pebble.ca_bundle), timeout=10).json()
    assert directory["newOrder"].startswith(fault.base + "/")
    assert fault.injected == 0 and fault.requests[0].status == 200


def test_a_rate_limit_is_injected_once_with_retry_after_and_a_fresh_nonce(
    proxy: tuple[FaultProxy, Any],
) -> None:
    fault, pebble = proxy
    fault.rate_limit("/order-plz", retry_after=3, times=1)
    answer = requests.post(fault.base + "/order-plz", data=b"{}", verify=str(pebble.ca_bundle),
                           timeout=10)  # fmt: skip
    assert answer.status_code == 429
    assert answer.headers["Retry-After"] == "3"
    assert answer.headers["Content-Type"] == "application/problem+json"
    assert answer.json()["type"] == "urn:ietf:params:acme:error:rateLimited"
    assert answer.headers["Replay-Nonce"]
    # then a real client: its next new-order passes, the nonce it got from the fault works
    key = josepy.JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
    network = acme_client.ClientNetwork(key, alg=josepy.ES256, verify_ssl=str(pebble.ca_bundle))
    client = acme_client.ClientV2(
        acme_client.ClientV2.get_directory(fault.directory_url, network), network
    )
    network.account = client.new_account(
        messages.NewRegistration.from_data(terms_of_service_agreed=True)
    )
    fault.rate_limit("/order-plz", retry_after=1, times=1)
    csr = crypto_util.make_csr(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        ["www.example.test"],
    )  # fmt: skip
    with pytest.raises(messages.Error) as caught:
        client.new_order(csr)
    assert caught.value.code == "rateLimited"
    order = client.new_order(csr)  # the fault was bounded to one
    assert order.body.status == messages.STATUS_PENDING
    assert order.uri.startswith(fault.base + "/")
    assert [seen.status for seen in fault.requests if seen.injected] == [429, 429]


def test_unavailable_skips_then_fails_a_bounded_number_of_times(
    proxy: tuple[FaultProxy, Any],
) -> None:
    fault, pebble = proxy
    rule = fault.unavailable("/nonce-plz", times=2, skip=1)
    rule.method = "HEAD"
    statuses = [
        requests.head(
            fault.base + "/nonce-plz", verify=str(pebble.ca_bundle), timeout=10
        ).status_code
        for _ in range(5)
    ]
    assert statuses == [200, 503, 503, 200, 200]
    assert rule.injected == 2 and fault.injected == 2
    with pytest.raises(ValueError):
        fault.inject("/x", status=503, times=0)


def test_a_fault_can_pick_one_order_by_its_jws_payload(proxy: tuple[FaultProxy, Any]) -> None:
    fault, pebble = proxy
    key = josepy.JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
    network = acme_client.ClientNetwork(key, alg=josepy.ES256, verify_ssl=str(pebble.ca_bundle))
    client = acme_client.ClientV2(
        acme_client.ClientV2.get_directory(fault.directory_url, network), network
    )
    network.account = client.new_account(
        messages.NewRegistration.from_data(terms_of_service_agreed=True)
    )
    rule = fault.rate_limit(
        "/order-plz", retry_after=60, times=5,
        when=lambda payload: "limited.example.test" in str(payload.get("identifiers")),
    )  # fmt: skip

    def csr(name: str) -> bytes:
        key_pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )  # fmt: skip
        return bytes(crypto_util.make_csr(key_pem, [name]))

    assert client.new_order(csr("ok.example.test")).body.status == messages.STATUS_PENDING
    with pytest.raises(messages.Error) as caught:
        client.new_order(csr("limited.example.test"))
    assert caught.value.code == "rateLimited"
    assert rule.injected == 1 and rule.matched == 1
