"""DNS-01 end to end: pebble validates, for real, TXT records that certfleet.acme.dns wrote
into bind9 by RFC 2136, for a wildcard order and for a name delegated by CNAME, and the
values the route53 backend wrote into moto (mirrored to challtestsrv, since moto serves no
DNS); and the newer pebble of the lab offers ARI (renewalInfo) and profiles.

The ACME side is certbot's ``acme`` client driven by the test (the sync's own ACME flow has
its tests elsewhere); pebble's ``-dnsserver`` is the bind9 that the records go to.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any, Callable

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from certfleet.acme.dns import DnsProviderConfig, dns_challenges
from tests.plugins.acme_lab import Bind9, Challtestsrv, MotoRoute53
from tests.plugins.pebble import openssl_verifies

acme_client = pytest.importorskip("acme.client", reason="certbot's acme needs Python >= 3.10")
import josepy  # noqa: E402
from acme import challenges, crypto_util, messages  # noqa: E402


def new_client(directory_url: str, ca_bundle: Path) -> tuple[Any, josepy.JWK]:
    key = josepy.JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
    network = acme_client.ClientNetwork(
        key, alg=josepy.ES256, verify_ssl=str(ca_bundle), user_agent="certfleet-tests"
    )
    directory = acme_client.ClientV2.get_directory(directory_url, network)
    client = acme_client.ClientV2(directory, network)
    account = client.new_account(
        messages.NewRegistration.from_data(email="ops@example.test", terms_of_service_agreed=True)
    )
    network.account = account
    return client, key


def order_by_dns01(
    client: Any,
    account_key: josepy.JWK,
    names: list[str],
    bind9: Bind9 | None,
    zones: tuple[str, ...],
    *,
    blocks: list[DnsProviderConfig] | None = None,
    resolvers: list[str] | None = None,
    mirror: Callable[[str, tuple[str, ...]], None] | None = None,
) -> tuple[str, list[tuple[str, str, tuple[str, ...]]]]:
    """Order ``names``, prove every one by DNS-01 through certfleet.acme.dns, finalize.

    The block is bind9's for ``zones`` unless ``blocks`` (and ``resolvers``) are given;
    ``mirror(record, values)`` runs once the values are served, before the challenges are
    answered (to copy what Route 53 holds to the DNS server pebble asks)."""
    if bind9 is not None:
        blocks, resolvers = [bind9.block(zones)], [bind9.server]
    assert blocks is not None and resolvers is not None
    key = ec.generate_private_key(ec.SECP256R1())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )  # fmt: skip
    order = client.new_order(crypto_util.make_csr(key_pem, names))
    with dns_challenges(blocks, resolvers) as records:
        answers = []
        for authorization in order.authorizations:
            if authorization.body.status == messages.STATUS_VALID:
                continue
            identifier = authorization.body.identifier.value
            if authorization.body.wildcard:
                identifier = "*." + identifier
            dns01 = next(
                c for c in authorization.body.challenges if isinstance(c.chall, challenges.DNS01)
            )
            records.add(identifier, dns01.chall.validation(account_key))
            answers.append(dns01)
        records.wait_until_served(10)
        written = records.records
        for _block, record, values in written if mirror else ():
            mirror(record, values)
        for dns01 in answers:
            client.answer_challenge(dns01, dns01.chall.response(account_key))
        deadline = datetime.datetime.now() + datetime.timedelta(seconds=60)
        order = client.poll_and_finalize(order, deadline)
    return order.fullchain_pem, written


@pytest.fixture
def lab(bind9: Bind9, bind9_resolver: Bind9, lab_pebble: Any) -> tuple[Bind9, Any]:
    """bind9 holding the zones, pebble asking a recursive bind9 in front of it (as Let's
    Encrypt asks its resolvers, which follow a CNAME into the zone it points to)."""
    bind9.add_zone("example.test", "_acme-challenge.shop IN CNAME shop.acme.example.net.\n")
    bind9.add_zone("acme.example.net")
    bind9.start()
    bind9_resolver.start()
    pebble = lab_pebble(dns_server=bind9_resolver.server)
    # certbot's client retries a badNonce once only; the sync's own client is tested with
    # pebble's default rejection rate.
    pebble.env = {"PEBBLE_WFE_NONCEREJECT": "0"}
    pebble.start()
    return bind9, pebble


def test_a_wildcard_and_its_apex_are_validated_by_dns01_through_bind9(
    lab: tuple[Bind9, Any], tmp_path: Path
) -> None:
    bind9, pebble = lab
    client, account_key = new_client(pebble.directory_url, pebble.ca_bundle)
    chain, written = order_by_dns01(
        client, account_key, ["*.example.test", "example.test"], bind9, ("example.test",)
    )
    leaf = x509.load_pem_x509_certificates(chain.encode())[0]
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sorted(names.get_values_for_type(x509.DNSName)) == ["*.example.test", "example.test"]
    # both values lived at the one shared name while pebble validated, and are gone now
    assert [(record, len(values)) for _block, record, values in written] == [
        ("_acme-challenge.example.test", 2)
    ]
    assert bind9.txt("_acme-challenge.example.test") == set()
    (tmp_path / "chain.pem").write_text(chain)
    openssl_verifies(pebble.root_pem(), tmp_path / "chain.pem", tmp_path / "chain.pem")


def test_pebble_really_asks_bind9_a_value_that_is_not_there_fails_validation(
    lab: tuple[Bind9, Any],
) -> None:
    bind9, pebble = lab
    client, account_key = new_client(pebble.directory_url, pebble.ca_bundle)
    key_pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )  # fmt: skip
    order = client.new_order(crypto_util.make_csr(key_pem, ["www.example.test"]))
    authorization = order.authorizations[0]
    dns01 = next(c for c in authorization.body.challenges if isinstance(c.chall, challenges.DNS01))
    with dns_challenges([bind9.block(("example.test",))], [bind9.server]) as records:
        records.add("www.example.test", "not-the-key-authorization-digest")
        records.wait_until_served(10)
        client.answer_challenge(dns01, dns01.chall.response(account_key))
        deadline = datetime.datetime.now() + datetime.timedelta(seconds=30)
        with pytest.raises(Exception) as caught:
            client.poll_and_finalize(order, deadline)
    assert "invalid" in repr(caught.value).lower() or "value" in str(caught.value).lower()
    final = client.poll(authorization)[0]
    assert final.body.status == messages.STATUS_INVALID
    problem = next(c.error for c in final.body.challenges if c.error is not None)
    assert problem.typ == "urn:ietf:params:acme:error:unauthorized"


def test_a_name_delegated_by_cname_is_validated_in_the_zone_it_points_to(
    lab: tuple[Bind9, Any],
) -> None:
    bind9, pebble = lab
    client, account_key = new_client(pebble.directory_url, pebble.ca_bundle)
    # no block for example.test: only the delegated-to zone can be written
    chain, written = order_by_dns01(
        client, account_key, ["shop.example.test"], bind9, ("acme.example.net",)
    )
    leaf = x509.load_pem_x509_certificates(chain.encode())[0]
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["shop.example.test"]
    assert [record for _block, record, _values in written] == ["shop.acme.example.net"]
    assert bind9.txt("shop.acme.example.net") == set()


def test_route53_values_are_validated_by_pebble_through_a_mirror(
    moto_route53: MotoRoute53, challtestsrv: Challtestsrv, lab_pebble: Any
) -> None:
    # moto cannot answer DNS: what it holds once INSYNC is copied to challtestsrv, the
    # DNS server pebble asks, so pebble validates exactly the values the backend wrote.
    zone_id = moto_route53.create_zone("example.com")
    pebble = lab_pebble(dns_server=challtestsrv.dns_address)
    pebble.env = {"PEBBLE_WFE_NONCEREJECT": "0"}
    pebble.start()
    client, account_key = new_client(pebble.directory_url, pebble.ca_bundle)

    def mirror(record: str, values: tuple[str, ...]) -> None:
        held = moto_route53.txt(zone_id, record)
        assert held == [f'"{value}"' for value in values]
        for raw in held:
            challtestsrv.set_txt(record, raw.strip('"'))

    block = DnsProviderConfig(kind="route53", zones=("example.com",))
    chain, written = order_by_dns01(
        client, account_key, ["*.example.com", "example.com"], None, (),
        blocks=[block], resolvers=[challtestsrv.dns_address], mirror=mirror,
    )  # fmt: skip
    leaf = x509.load_pem_x509_certificates(chain.encode())[0]
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sorted(names.get_values_for_type(x509.DNSName)) == ["*.example.com", "example.com"]
    assert [(record, len(values)) for _block, record, values in written] == [
        ("_acme-challenge.example.com", 2)
    ]
    assert moto_route53.txt(zone_id, "_acme-challenge.example.com") == []


# --- the newer pebble (ARI, profiles) ---------------------------------------------------


def test_the_newer_pebble_offers_renewal_info_and_profiles(
    pebble_new: str, bind9: Bind9, bind9_resolver: Bind9, lab_pebble: Any
) -> None:
    bind9.add_zone("example.test")
    bind9.start()
    bind9_resolver.start()
    pebble = lab_pebble(binary=pebble_new, dns_server=bind9_resolver.server)
    pebble.env = {"PEBBLE_WFE_NONCEREJECT": "0"}
    pebble.start()
    directory = pebble.directory()
    assert str(directory["renewalInfo"]).startswith(pebble.directory_url.rsplit("/", 1)[0])
    profiles = directory["meta"]["profiles"]
    assert isinstance(profiles, dict) and profiles
    # a certificate it issued has a suggested renewal window inside its lifetime
    client, account_key = new_client(pebble.directory_url, pebble.ca_bundle)
    chain, _written = order_by_dns01(
        client, account_key, ["www.example.test"], bind9, ("example.test",)
    )
    leaf = x509.load_pem_x509_certificates(chain.encode())[0]
    renew_at, _ask_again = client.renewal_time(chain.encode())
    assert renew_at is not None
    not_before = leaf.not_valid_before_utc.replace(tzinfo=None)
    not_after = leaf.not_valid_after_utc.replace(tzinfo=None)
    assert not_before < renew_at.astimezone(datetime.timezone.utc).replace(tzinfo=None) < not_after


def test_the_distributions_pebble_offers_neither(lab_pebble: Any) -> None:
    pebble = lab_pebble(dns_server="127.0.0.1:9")
    pebble.start()
    directory = pebble.directory()
    assert "renewalInfo" not in directory
    assert "profiles" not in directory.get("meta", {})
