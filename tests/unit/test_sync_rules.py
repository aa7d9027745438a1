"""The sync's pure parts: renewal rules, planning, key/CSR, verification, state, layout."""

from __future__ import annotations

import datetime
from typing import Callable

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import strategies as st

from certfleet.acme.state import acme_state_key
from certfleet.bundle.names import UnsafeNameError
from certfleet.registry.registry import registry_key
from certfleet.sync.errors import CertificateRejected
from certfleet.sync.keypair import build_csr, generate_key, load_private_key, private_key_pem
from certfleet.sync.keypair import pubkey_hash as key_hash
from certfleet.sync.layout import (
    ack_key,
    bundle_key,
    fleet_cache_key,
    head_key,
    lease_key,
    pending_key,
    shard_key,
    state_key,
)
from certfleet.sync.plan import Plan, plan_cluster
from certfleet.sync.provider import ProviderOrder
from certfleet.sync.renewal import install_after, renewal_due, renewal_window
from certfleet.sync.state import ClusterState, HeadRecord, OrderRecord, PendingRecord
from certfleet.sync.verifier import verify_issued

DAY = 86400
H = "ab" * 32


@pytest.mark.parametrize(
    ("lifetime", "left", "renew_days", "due"),
    [
        (90 * DAY, 31 * DAY, None, False),
        (90 * DAY, 29 * DAY, None, True),
        (90 * DAY, 40 * DAY, 30, False),
        (90 * DAY, 20 * DAY, 30, True),
        (3 * DAY, 2 * DAY, 30, False),  # the window is capped at half the lifetime
        (3 * DAY, DAY, 30, True),
        (90 * DAY, -1, None, True),
    ],
)
def test_renewal_due(lifetime: int, left: int, renew_days: int | None, due: bool) -> None:
    not_before = 1_000_000
    not_after = not_before + lifetime
    assert renewal_due(not_before, not_after, not_after - left, renew_days) is due


@given(
    st.integers(0, 2**40),
    st.integers(1, 400 * DAY),
    st.none() | st.integers(1, 365),
)
def test_a_fresh_certificate_is_never_due(not_before: int, lifetime: int, days: int | None) -> None:
    not_after = not_before + lifetime
    assert 0 <= renewal_window(not_before, not_after, days) <= lifetime // 2
    if lifetime >= 2:
        assert not renewal_due(not_before, not_after, not_before, days)


def test_install_after() -> None:
    assert install_after(100, 3600, immediate=False) == 3700
    assert install_after(100, 3600, immediate=True) == 100


def record(
    names: tuple[str, ...], *, key_type: str = "ecdsa", not_after: int = 90 * DAY
) -> OrderRecord:
    return OrderRecord(names, key_type, H, H, "01", 0, not_after, 0, ("k1",))


def pending(names: tuple[str, ...], reason: str = "new") -> PendingRecord:
    return PendingRecord(H, H, names, "ecdsa", 0, reason)


def plan(state: ClusterState, *orders: ProviderOrder, now: int = DAY) -> Plan:
    return plan_cluster(
        "web", orders, state, now=now, key_type_for=lambda name: "ecdsa", renew_days=None
    )


def test_plan_new_names_renewal_rekey_and_missing() -> None:
    state = ClusterState.new()
    state.orders["same"] = record(("same.example",))
    state.orders["edited"] = record(("edited.example",))
    state.orders["old"] = record(("old.example",), not_after=DAY + 10)
    state.orders["marked"] = record(("marked.example",))
    state.orders["gone"] = record(("gone.example",))
    state.orders["typed"] = record(("typed.example",), key_type="rsa")
    state.rekey.add("marked")
    result = plan(
        state,
        ProviderOrder("same", "web", ("same.example",)),
        ProviderOrder("edited", "web", ("edited.example", "WWW.edited.example")),
        ProviderOrder("old", "web", ("old.example",)),
        ProviderOrder("marked", "web", ("marked.example",)),
        ProviderOrder("typed", "web", ("typed.example",)),
        ProviderOrder("new", "web", ("new.example",)),
        ProviderOrder("elsewhere", "db", ("x.example",)),
        ProviderOrder("../bad", "web", ("bad.example",)),
    )
    reasons = {issue.order.name: issue.reason for issue in result.issue}
    assert reasons == {
        "edited": "names", "old": "renewal", "marked": "rekey", "typed": "key_type", "new": "new",
    }  # fmt: skip
    assert result.listed["edited"].dns_names == ("edited.example", "www.edited.example")
    assert result.missing == ("gone",)
    assert set(result.invalid) == {"../bad"}


def test_plan_resumes_a_matching_pending_key_and_drops_a_stale_one() -> None:
    state = ClusterState.new()
    state.pending["resumed"] = pending(("resumed.example",))
    state.pending["stale"] = pending(("stale.example",))
    result = plan(
        state,
        ProviderOrder("resumed", "web", ("resumed.example",)),
        ProviderOrder("stale", "web", ("stale.example", "more.example")),
    )
    assert result.resume == ("resumed",)
    assert result.drop_pending == ("stale",)
    assert [issue.order.name for issue in result.issue] == ["stale"]


def test_a_rekey_mark_after_a_pending_rekey_key_replaces_that_key_too() -> None:
    """Making a key clears its order's mark, so a mark next to a pending key is newer than it
    (found by the SIGKILL suite: the old pending key was published and the mark survived)."""
    state = ClusterState.new()
    state.orders["twice"] = record(("twice.example",))
    state.pending["twice"] = pending(("twice.example",), reason="rekey")
    state.rekey.add("twice")
    result = plan(state, ProviderOrder("twice", "web", ("twice.example",)))
    assert result.resume == ()
    assert result.drop_pending == ("twice",)
    assert [(issue.order.name, issue.reason) for issue in result.issue] == [("twice", "rekey")]


def test_an_empty_listing_only_asks_for_confirmation() -> None:
    state = ClusterState.new()
    state.orders["a"] = record(("a.example",))
    state.pending["b"] = pending(("b.example",))
    result = plan(state)
    assert result.missing == ("a", "b") and result.issue == ()


def test_state_round_trips_canonically() -> None:
    state = ClusterState.new()
    state.orders["a"] = record(("a.example",))
    state.pending["b"] = pending(("b.example",))
    state.tombstones["c"] = 5
    state.rekey.add("a")
    state.head = HeadRecord(7, 1, 2, ("k1",))
    state.unreferenced[bundle_key("web", H)] = 9
    encoded = state.encode()
    assert ClusterState.decode(encoded).encode() == encoded
    assert ClusterState.decode(encoded) == state


def test_object_keys_carry_no_names() -> None:
    assert head_key("web") == "v1/clusters/web/head"
    assert shard_key("web", H) == f"v1/clusters/web/shards/{H}"
    assert bundle_key("web", H) == f"v1/clusters/web/bundles/{H}"
    assert ack_key("web", "n" * 32) == f"v1/clusters/web/acks/{'n' * 32}"
    assert lease_key("web") == "v1/sync/lease/web"
    assert state_key("web") == "v1/sync/state/web"
    assert pending_key("web", H) == f"v1/sync/pending/web/{H}"
    assert fleet_cache_key("web") == "v1/sync/fleet/web"
    assert registry_key("web") == "v1/sync/orders/web"
    assert acme_state_key("web") == "v1/sync/acme/web"
    with pytest.raises(ValueError):
        bundle_key("web", "example.com")


@pytest.mark.parametrize(
    "build", [head_key, lease_key, state_key, fleet_cache_key, registry_key, acme_state_key]
)
@pytest.mark.parametrize("cluster", ["../web", "web/x", "", "Web", "a" * 41])
def test_no_object_key_leaves_its_cluster_for_a_name_that_is_not_a_cluster_name(
    build: Callable[[str], str], cluster: str
) -> None:
    with pytest.raises(UnsafeNameError):
        build(cluster)


def test_keys_and_csrs() -> None:
    key = generate_key("ecdsa")
    assert key_hash(load_private_key(private_key_pem(key))) == key_hash(key)
    csr = x509.load_pem_x509_csr(build_csr(key, ["a.example", "b.example"]))
    names = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["a.example", "b.example"]
    with pytest.raises(ValueError):
        generate_key("dsa")


def issue_chain(key: ec.EllipticCurvePrivateKey, names: list[str]) -> tuple[bytes, bytes]:
    """A root-signed intermediate and an intermediate-signed leaf for ``key``."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test intermediate")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(1)
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(2)
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    pem = serialization.Encoding.PEM
    return leaf.public_bytes(pem), ca.public_bytes(pem)


def test_verification_accepts_a_good_certificate_and_names_each_refusal() -> None:
    key = generate_key("ecdsa")
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    leaf, chain = issue_chain(key, ["a.example", "b.example"])
    now = int(datetime.datetime.now(datetime.timezone.utc).timestamp())

    def verify(**changes: object) -> object:
        args: dict[str, object] = {
            "order_name": "a", "key": key, "dns_names": ["b.example", "a.example"],
            "certificate_pem": leaf, "chain_pem": [chain], "now": now, **changes,
        }  # fmt: skip
        return verify_issued(**args)  # type: ignore[arg-type]

    assert verify()
    cases = {
        "does not match the private key": {"key": generate_key("ecdsa")},
        "DNS names differ": {"dns_names": ["a.example"]},
        "not valid now": {"now": now + 2 * DAY},
        "chain certificate 1 is not on the leaf's issuing chain": {"chain_pem": [leaf]},
        "not a PEM certificate": {"certificate_pem": b"junk"},
    }
    for reason, changes in cases.items():
        with pytest.raises(CertificateRejected, match=reason):
            verify(**changes)
    assert verify().chain_pem == (), "a self-signed issuer is a root: not published"  # type: ignore[attr-defined]


def _ca(
    name: str, key: ec.EllipticCurvePrivateKey, issuer: str, issuer_key: ec.EllipticCurvePrivateKey
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(issuer_key, hashes.SHA256())
    )  # fmt: skip


def test_provider_chains_are_split_ordered_and_stripped_of_the_root() -> None:
    key = generate_key("ecdsa")
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    root_key, inter_key, other_key = (ec.generate_private_key(ec.SECP256R1()) for _ in "abc")
    pem = serialization.Encoding.PEM
    root = _ca("root", root_key, "root", root_key).public_bytes(pem)
    inter = _ca("inter", inter_key, "root", root_key).public_bytes(pem)
    stranger = _ca("inter", other_key, "root", other_key).public_bytes(pem)  # same name
    now = datetime.datetime.now(datetime.timezone.utc)
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "a.example")]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "inter")]))
        .public_key(key.public_key()).serial_number(9)
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("a.example")]), False)
        .sign(inter_key, hashes.SHA256())
    ).public_bytes(pem)  # fmt: skip

    def verify(certificate: bytes, chain: list[bytes]) -> tuple[bytes, ...]:
        verified = verify_issued(
            order_name="a", key=key, dns_names=["a.example"], certificate_pem=certificate,
            chain_pem=chain, now=int(now.timestamp()),
        )  # fmt: skip
        assert verified.certificate_pem == leaf
        return verified.chain_pem

    for certificate, chain in (
        (leaf, [inter]),
        (leaf, [inter + root]),  # one PEM string, as many CAs deliver it
        (leaf, [root, inter]),
        (leaf + inter + root, []),
        (leaf, [inter, inter]),
    ):
        assert verify(certificate, chain) == (inter,)
    for chain, reason in (
        ([stranger], "chain certificate 1 is not on the leaf's issuing chain"),
        ([inter, stranger], "chain certificate 2 is not on"),
        ([inter + stranger], "chain certificate 1 is not on"),
        ([inter, leaf], "chain certificate 2 is not on"),
    ):
        with pytest.raises(CertificateRejected, match=reason):
            verify(leaf, chain)


def test_a_provider_suggested_renewal_time_replaces_the_lifetime_rule() -> None:
    state = ClusterState.new()
    for name in ("early", "later", "bogus", "plain"):
        state.orders[name] = record((f"{name}.example",))  # 90 days from 0
    listing = [ProviderOrder(n, "web", (f"{n}.example",)) for n in state.orders]
    now = 10 * DAY  # far from the lifetime rule's 60 days
    result = plan_cluster(
        "web", listing, state, now=now, key_type_for=lambda name: "ecdsa", renew_days=None,
        renew_at={"early": 5 * DAY, "later": 70 * DAY, "bogus": 200 * DAY},
    )  # fmt: skip
    assert [issue.order.name for issue in result.issue] == ["early"]
    # a suggestion is never later than the last tenth of the lifetime (day 81 here)
    suggested = {"early": 5 * DAY, "later": 85 * DAY, "bogus": 200 * DAY}
    for day, due in ((80, ["early"]), (82, ["bogus", "early", "later"])):
        late = plan_cluster(
            "web", listing, state, now=day * DAY, key_type_for=lambda name: "ecdsa",
            renew_days=None, renew_at=suggested,
        )  # fmt: skip
        assert (
            sorted(issue.order.name for issue in late.issue if issue.order.name != "plain") == due
        )
