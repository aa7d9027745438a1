"""DNS-01 records (certfleet.acme.dns) against real servers: bind9 by RFC 2136 with TSIG,
Route 53 as moto serves it, CNAME delegation looked up through a real DNS server."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import dns.query
import dns.rcode
import dns.tsig
import dns.update
import pytest

from certfleet.acme.dns import (
    DnsChallenges,
    DnsError,
    DnsProviderConfig,
    challenge_record,
    choose_block,
    dns_challenges,
)
from certfleet.acme.dns.lookup import parse_address
from tests.plugins.acme_lab import (
    TSIG_KEY_NAME,
    Bind9,
    Challtestsrv,
    MotoRoute53,
    free_port,
)
from tests.plugins.binaries import require_binary

V1 = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
V2 = "BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB"
V3 = "CCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCC"


def rfc(zones: tuple[str, ...]) -> DnsProviderConfig:
    return DnsProviderConfig(kind="rfc2136", zones=zones, server="127.0.0.1:53")


def r53(zones: tuple[str, ...]) -> DnsProviderConfig:
    return DnsProviderConfig(kind="route53", zones=zones)


# --- pure rules -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("record", "expected_zone", "expected_kind"),
    [
        ("_acme-challenge.www.example.com", "example.com", "rfc2136"),
        ("_acme-challenge.a.sub.example.com", "sub.example.com", "route53"),
        ("_acme-challenge.sub.example.com", "sub.example.com", "route53"),
        ("_acme-challenge.SUB.Example.COM.", "sub.example.com", "route53"),
        ("_acme-challenge.notexample.com", None, "route53"),  # not a suffix at a label
        ("_acme-challenge.other.test", None, "route53"),
    ],
)
def test_the_longest_zone_suffix_chooses_the_block_else_the_default_block(
    record: str, expected_zone: str | None, expected_kind: str
) -> None:
    blocks = [rfc(("example.com",)), r53(("sub.example.com",)), r53(())]
    block, zone = choose_block(record, blocks)
    assert (zone, block.kind) == (expected_zone, expected_kind)
    if zone is None:
        assert block.zones == ()


def test_a_record_no_block_covers_is_an_error_naming_it() -> None:
    with pytest.raises(DnsError) as caught:
        choose_block("_acme-challenge.other.test", [rfc(("example.com",))])
    assert caught.value.record == "_acme-challenge.other.test"
    assert "example.com" in str(caught.value)


@pytest.mark.parametrize(
    ("identifier", "record"),
    [
        ("example.com", "_acme-challenge.example.com"),
        ("*.example.com", "_acme-challenge.example.com"),
        ("WWW.Example.com.", "_acme-challenge.www.example.com"),
    ],
)
def test_apex_and_wildcard_share_one_challenge_record(identifier: str, record: str) -> None:
    assert challenge_record(identifier) == record


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("127.0.0.1:5353", ("127.0.0.1", 5353)),
        ("10.0.0.2", ("10.0.0.2", 53)),
        ("[::1]:5300", ("::1", 5300)),
        ("::1", ("::1", 53)),
    ],
)
def test_resolver_addresses_parse(text: str, address: tuple[str, int]) -> None:
    assert parse_address(text) == address


@pytest.mark.parametrize("text", ["ns.example.com:53", "127.0.0.1:0", "127.0.0.1:x", "[::1"])
def test_bad_resolver_addresses_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_address(text)


def test_the_tsig_secret_is_redacted_from_the_block_repr() -> None:
    block = DnsProviderConfig(kind="rfc2136", zones=(), tsig_secret="c2VjcmV0LXZhbHVl")
    assert "c2VjcmV0LXZhbHVl" not in repr(block)
    assert "rfc2136" in repr(block)


def test_a_value_that_is_not_base64url_is_refused_before_anything_is_sent(bind9: Bind9) -> None:
    challenges = dns_challenges([bind9.block()], [])
    with pytest.raises(DnsError, match="base64url"):
        challenges._backend(bind9.block()).add("_acme-challenge.x.test", "x.test", 'a" "b')
    assert challenges.records == []


# --- rfc2136 against bind9 --------------------------------------------------------------


LAB_ZONES = {
    "example.test": '_acme-challenge IN TXT "kept-by-someone-else"\n'
    "_acme-challenge.shop IN CNAME shop.acme.example.net.\n",
    "acme.example.net": "",
}


def add_lab_zones(server: Bind9) -> None:
    """example.test (a foreign TXT value at the apex's challenge name and a customer's
    CNAME), the zone delegated to (acme.example.net), and locked.test (no updates)."""
    for zone, records in LAB_ZONES.items():
        server.add_zone(zone, records)
    server.add_zone("locked.test", updatable=False)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bind9]:
    """One bind9 for the tests of this module that leave its zones as they found them."""
    server = Bind9(require_binary("named"), tmp_path_factory.mktemp("bind9"), free_port())
    add_lab_zones(server)
    server.start()
    yield server
    server.stop()


def test_apex_and_wildcard_values_are_both_served_then_exactly_removed(lab: Bind9) -> None:
    record = "_acme-challenge.example.test"
    challenges = dns_challenges([lab.block(("example.test",))], [lab.server])
    challenges.add("example.test", V1)
    challenges.add("*.example.test", V2)
    challenges.add("*.example.test", V2)  # the same value twice is written once
    started = time.monotonic()
    challenges.wait_until_served(10)
    assert time.monotonic() - started < 5
    assert lab.txt(record) == {"kept-by-someone-else", V1, V2}
    assert challenges.records == [('dns "rfc2136" (zones example.test)', record, (V1, V2))]
    challenges.cleanup()
    assert lab.txt(record) == {"kept-by-someone-else"}
    assert challenges.records == []


def test_a_cname_at_the_challenge_name_moves_the_record_to_the_delegated_zone(
    lab: Bind9,
) -> None:
    # Only the delegated-to zone has a block: the customer's zone is never written.
    challenges = dns_challenges([lab.block(("acme.example.net",))], [lab.server])
    with challenges:
        challenges.add("shop.example.test", V1)
        challenges.add("*.shop.example.test", V3)
        challenges.wait_until_served(10)
        assert lab.txt("shop.acme.example.net") == {V1, V3}
        assert challenges.records[0][1] == "shop.acme.example.net"
    assert lab.txt("shop.acme.example.net") == set()


def test_the_default_block_finds_the_zone_by_the_servers_soa(lab: Bind9) -> None:
    challenges = dns_challenges([lab.block(())], [lab.server])
    with challenges:
        challenges.add("deep.www.example.test", V1)
        challenges.wait_until_served(10)
        assert lab.txt("_acme-challenge.deep.www.example.test") == {V1}
    assert lab.txt("_acme-challenge.deep.www.example.test") == set()


def test_values_are_removed_when_the_order_fails_midway(lab: Bind9) -> None:
    with pytest.raises(RuntimeError), dns_challenges([lab.block()], [lab.server]) as challenges:
        challenges.add("www.example.test", V1)
        assert lab.txt("_acme-challenge.www.example.test") == {V1}
        raise RuntimeError("the CA said no")
    assert lab.txt("_acme-challenge.www.example.test") == set()


def test_a_wrong_tsig_secret_names_record_and_block_but_not_the_secret(lab: Bind9) -> None:
    wrong = "d3Jvbmctc2VjcmV0LXdyb25nLXNlY3JldC13cm9uZw=="
    challenges = dns_challenges([lab.block(("example.test",), tsig_secret=wrong)], [lab.server])
    with pytest.raises(DnsError) as caught:
        challenges.add("www.example.test", V1)
    message = str(caught.value)
    assert caught.value.record == "_acme-challenge.www.example.test"
    assert 'dns "rfc2136" (zones example.test)' in message
    assert "TSIG" in message
    assert wrong not in message and lab.tsig_secret not in message
    assert lab.txt("_acme-challenge.www.example.test") == set()


def test_an_update_the_zone_policy_refuses_is_reported_with_a_hint(lab: Bind9) -> None:
    # locked.test grants no update to anyone
    challenges = dns_challenges([lab.block(("locked.test",))], [lab.server])
    with pytest.raises(DnsError) as caught:
        challenges.add("www.locked.test", V1)
    assert "answered REFUSED to the update of zone locked.test" in caught.value.reason
    assert "update policy" in caught.value.reason


def test_waiting_for_a_value_the_server_does_not_serve_times_out(lab: Bind9) -> None:
    challenges = dns_challenges([lab.block(("example.test",))], [lab.server])
    challenges.add("www.example.test", V1)
    # someone removes it behind our back
    update = dns.update.UpdateMessage(
        "example.test", keyring=dns.tsig.Key(TSIG_KEY_NAME, lab.tsig_secret, "hmac-sha256")
    )
    update.delete("_acme-challenge.www.example.test.", "TXT")
    response = dns.query.tcp(update, "127.0.0.1", port=lab.port, timeout=3)
    assert response.rcode() == dns.rcode.NOERROR
    started = time.monotonic()
    with pytest.raises(DnsError, match="not served before the deadline") as caught:
        challenges.wait_until_served(1.5)
    assert 1.4 < time.monotonic() - started < 4
    assert "served 0 of 1" in caught.value.reason
    challenges.cleanup()


def test_cleanup_logs_but_never_raises_when_the_server_is_gone(
    bind9: Bind9, caplog: pytest.LogCaptureFixture
) -> None:
    add_lab_zones(bind9)
    bind9.start()
    lab = bind9
    challenges = dns_challenges([lab.block(("example.test",))], [lab.server])
    challenges.add("www.example.test", V1)
    lab.stop()
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="certfleet.acme.dns"):
        challenges.cleanup()
    assert time.monotonic() - started < 10
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "_acme-challenge.www.example.test" in warnings[0]
    assert lab.tsig_secret not in warnings[0]


def test_a_cname_lookup_with_no_answering_resolver_is_an_error_in_bounded_time(
    lab: Bind9,
) -> None:
    # bind answers REFUSED for a zone it does not hold; a closed port never answers
    challenges = dns_challenges([lab.block()], [lab.server])
    with pytest.raises(DnsError, match="no resolver answered"):
        challenges.add("www.example.org", V1)
    silent = DnsChallenges([lab.block()], ["127.0.0.1:9"])
    started = time.monotonic()
    with pytest.raises(DnsError) as caught:
        silent.add("www.example.test", V1)
    assert caught.value.block == "CNAME lookup"
    assert time.monotonic() - started < 10
    assert lab.txt("_acme-challenge.www.example.test") == set()


# --- route53 against moto ---------------------------------------------------------------


def test_route53_upserts_every_value_and_removes_only_ours(
    moto_route53: MotoRoute53, challtestsrv: Challtestsrv
) -> None:
    zone_id = moto_route53.create_zone("example.com")
    record = "_acme-challenge.example.com"
    moto_route53.client().change_resource_record_sets(
        HostedZoneId=zone_id,
        ChangeBatch={"Changes": [{"Action": "CREATE", "ResourceRecordSet": {
            "Name": record, "Type": "TXT", "TTL": 300,
            "ResourceRecords": [{"Value": '"someone-elses"'}]}}]},
    )  # fmt: skip
    challenges = dns_challenges([r53(("example.com",))], [challtestsrv.dns_address])
    challenges.add("example.com", V1)
    challenges.add("*.example.com", V2)
    challenges.wait_until_served(10)
    assert moto_route53.txt(zone_id, record) == ['"someone-elses"', f'"{V1}"', f'"{V2}"']
    assert moto_route53.ttl(zone_id, record) == 300  # the set keeps its owner's TTL
    challenges.cleanup()
    assert moto_route53.txt(zone_id, record) == ['"someone-elses"']


def test_route53_deletes_the_set_when_only_our_values_were_there(
    moto_route53: MotoRoute53, challtestsrv: Challtestsrv
) -> None:
    zone_id = moto_route53.create_zone("example.com")
    challenges = dns_challenges([r53(())], [challtestsrv.dns_address])  # zone found by name
    with challenges:
        challenges.add("www.example.com", V1)
        challenges.add("*.www.example.com", V2)
        challenges.wait_until_served(10)
        assert moto_route53.txt(zone_id, "_acme-challenge.www.example.com") == [
            f'"{V1}"', f'"{V2}"'
        ]  # fmt: skip
    assert moto_route53.txt(zone_id, "_acme-challenge.www.example.com") == []


def test_route53_follows_a_cname_to_the_zone_it_delegates_to(
    moto_route53: MotoRoute53, challtestsrv: Challtestsrv
) -> None:
    zone_id = moto_route53.create_zone("acme.example.com")
    challtestsrv.set_cname("_acme-challenge.shop.customer.test", "shop.acme.example.com")
    block = DnsProviderConfig(kind="route53", zones=("acme.example.com",), hosted_zone_id=zone_id)
    with dns_challenges([block], [challtestsrv.dns_address]) as challenges:
        challenges.add("shop.customer.test", V1)
        challenges.wait_until_served(10)
        assert moto_route53.txt(zone_id, "shop.acme.example.com") == [f'"{V1}"']
    assert moto_route53.txt(zone_id, "shop.acme.example.com") == []


def test_route53_prefers_the_public_zone_and_refuses_to_guess_between_two(
    moto_route53: MotoRoute53, challtestsrv: Challtestsrv
) -> None:
    moto_route53.create_zone("example.com", private=True)
    public = moto_route53.create_zone("example.com")
    with dns_challenges([r53(("example.com",))], [challtestsrv.dns_address]) as challenges:
        challenges.add("www.example.com", V1)
        assert moto_route53.txt(public, "_acme-challenge.www.example.com") == [f'"{V1}"']
    moto_route53.create_zone("example.com")
    with pytest.raises(DnsError, match="set hosted_zone_id"):
        dns_challenges([r53(("example.com",))], [challtestsrv.dns_address]).add(
            "www.example.com", V1
        )


def test_route53_without_a_matching_hosted_zone_names_the_record_and_block(
    moto_route53: MotoRoute53, challtestsrv: Challtestsrv
) -> None:
    challenges = dns_challenges([r53(("example.com",))], [challtestsrv.dns_address])
    with pytest.raises(DnsError) as caught:
        challenges.add("www.example.com", V1)
    assert caught.value.record == "_acme-challenge.www.example.com"
    assert caught.value.block == 'dns "route53" (zones example.com)'
    assert "no hosted zone" in caught.value.reason
