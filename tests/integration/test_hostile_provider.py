"""The provider as the adversary (or simply broken): hostile names and bad certificates.

Names: the sandbox with ``--unsafe-names`` serves orders whose order or DNS names hold
path traversal, unicode, control characters, huge lengths and huge counts. Certificates:
``HostileProvider`` wraps the real APIv3 provider (the sandbox over HTTP) and, for chosen
orders, answers malformed PEM, a certificate for other names, for another key, an expired
one, one with a broken chain, a CA leaf or a leaf for client authentication only. Each
hostile order is refused with an error naming it and the rule it broke; every other order
of the same cluster is published as usual. Chains as CAs really deliver them (intermediate
and root in one PEM string, the root first, the chain inside the leaf's entry) are
normalised into what every agent installs; an agent refuses a CA leaf on its own too.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from pathlib import Path
from typing import Callable, Optional

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certfleet.bundle import Bundle
from certfleet.config import parse_agent_config
from certfleet.sync import IssuedCert, run_sync
from certfleet.sync.apiv3_provider import ApiV3Provider
from node_agent.agent import Agent
from node_agent.certificate import check_bundle
from node_agent.errors import RefusedError
from tests.plugins.faults import Ledger, agent_config_text, cluster_stanza, installed_orders
from tests.plugins.providers import PassThroughProvider
from tests.plugins.sandbox import Sandbox
from tests.plugins.sync_world import make_world, post_order

HOSTILE_ORDER_NAMES = [
    "../../etc/passwd",
    "a/b.example",
    "..",
    ".hidden.example",
    "ünïcode.example",
    "ctl\x01.example",
    "new\nline.example",
    "nul\x00.example",
    "x" * 254,
    "spaces in.example",
    "back\\slash.example",
]
HOSTILE_DNS_NAMES = [
    "../x.example",
    "ünïcode.example",
    "tab\t.example",
    "a" * 64 + ".example",
    ("abcdefghi." * 26) + "example",  # > 253 characters
    "*.*.example",
    "under_score.example",
    "-lead.example",
]
CLIENT_AUTH = ExtendedKeyUsageOID.CLIENT_AUTH
HUGE_COUNT = 100  # DNS names in one order, each ~250 characters (the sandbox allows 100)


@pytest.mark.fault
def test_hostile_names_are_refused_one_by_one(
    make_sandbox: Callable[..., Sandbox], tmp_path: Path, faults: Ledger
) -> None:
    sandbox = make_sandbox(unsafe_names=True)
    world = make_world(sandbox, (tmp_path / "store").as_uri(), "")
    good = [world.add(f"good{i}.{world.cluster}.example") for i in range(2)]
    hostile: list[str] = []
    for name in HOSTILE_ORDER_NAMES:
        post_order(sandbox, world.cluster, name, [f"ok.{world.cluster}.example"])
        hostile.append(name)
    for number, dns_name in enumerate(HOSTILE_DNS_NAMES):
        name = f"dns{number}.{world.cluster}.example"
        post_order(sandbox, world.cluster, name, [name, dns_name])
        hostile.append(name)
    huge = f"huge.{world.cluster}.example"
    long_label = "l" * 60
    filler = ".".join([long_label] * 3)
    post_order(sandbox, world.cluster, huge, [f"n{i}.{filler}.{huge}" for i in range(HUGE_COUNT)])
    faults.tried(len(hostile) + 1)
    hostile.append(huge)

    summary = world.sync()
    seen = world.published()
    assert set(seen.entries) - {huge} == set(good), "the safe orders must be published"
    for name in hostile:
        if name == huge:
            continue  # 100 long names are valid: published, or refused by name
        assert name in summary.errors, f"{name!r} was not refused"
        assert "refused" in summary.errors[name], summary.errors[name]
    for key in world.keys():  # no object key carries an order or DNS name
        assert world.cluster in key and "example" not in key and ".." not in key
    assert (huge in seen.entries) != (huge in summary.errors), summary.errors.get(huge)


class HostileProvider(PassThroughProvider):
    """The real provider, except that chosen orders get a corrupted certificate answer."""

    def __init__(
        self, inner: ApiV3Provider, corruptions: dict[str, str], root_pem: bytes = b""
    ) -> None:
        super().__init__(inner)
        self.corruptions = corruptions
        self.root_pem = root_pem
        self.keys: dict[str, x509.Certificate] = {}  # order -> the real leaf (for its key)
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        self.other_key = ec.generate_private_key(ec.SECP256R1())

    def fetch_certificate(
        self, order_name: str, pubkey_hash: str, *, wait: float
    ) -> Optional[IssuedCert]:
        real = self.inner.fetch_certificate(order_name, pubkey_hash, wait=wait)
        how = self.corruptions.get(order_name)
        if real is None or how is None:
            return real
        leaf = x509.load_pem_x509_certificate(real.certificate_pem)
        return corrupt(real, leaf, how, self)


def _forge(
    leaf: x509.Certificate,
    provider: HostileProvider,
    *,
    names: Sequence[str] | None = None,
    key: ec.EllipticCurvePrivateKey | None = None,
    days: tuple[int, int] = (-1, 30),
    extension: x509.ExtensionType | None = None,
) -> bytes:
    now = datetime.datetime.now(datetime.timezone.utc)
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    dns = list(names) if names is not None else sans.get_values_for_type(x509.DNSName)
    builder = x509.CertificateBuilder()
    if extension is not None:
        builder = builder.add_extension(extension, critical=False)
    forged = (
        builder.subject_name(leaf.subject)
        .issuer_name(leaf.issuer)
        .public_key(key.public_key() if key else leaf.public_key())  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + datetime.timedelta(days=days[0]))
        .not_valid_after(now + datetime.timedelta(days=days[1]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in dns]), False)
        .sign(provider.ca_key, hashes.SHA256())
    )
    return forged.public_bytes(Encoding.PEM)


def _stranger_ca(provider: HostileProvider) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "stranger")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(provider.other_key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(provider.other_key, hashes.SHA256())
    )
    return cert.public_bytes(Encoding.PEM)


def corrupt(
    real: IssuedCert, leaf: x509.Certificate, how: str, provider: HostileProvider
) -> IssuedCert:
    pem = real.certificate_pem
    if how == "malformed PEM":
        body = pem.split(b"\n")
        bad = b"\n".join([*body[:3], b"!!!not base64!!!", *body[4:]])
        return IssuedCert(bad, real.chain_pem, real.serial, real.not_before, real.not_after)
    if how == "truncated PEM":
        return IssuedCert(pem[: len(pem) // 2], real.chain_pem, real.serial, 0, 0)
    if how == "other names":
        forged = _forge(leaf, provider, names=["evil.example"])
    elif how == "another key":
        forged = _forge(leaf, provider, key=provider.other_key)
    elif how == "expired":
        forged = _forge(leaf, provider, days=(-90, -1))
    elif how == "not yet valid":
        forged = _forge(leaf, provider, days=(2, 90))
    elif how == "broken chain":
        return IssuedCert(pem, (_stranger_ca(provider),), real.serial, 0, 0)
    elif how == "chain out of order":
        return IssuedCert(pem, (*real.chain_pem, pem), real.serial, 0, 0)
    elif how == "stranger in the chain":
        return IssuedCert(pem, (*real.chain_pem, _stranger_ca(provider)), real.serial, 0, 0)
    elif how == "CA leaf":
        forged = _forge(leaf, provider, extension=x509.BasicConstraints(ca=True, path_length=None))
    elif how == "client-only leaf":
        forged = _forge(leaf, provider, extension=x509.ExtendedKeyUsage([CLIENT_AUTH]))
    elif how == "intermediate and root in one PEM":
        return IssuedCert(pem, (real.chain_pem[0] + provider.root_pem,), real.serial, 0, 0)
    elif how == "root first":
        return IssuedCert(pem, (provider.root_pem, *real.chain_pem), real.serial, 0, 0)
    elif how == "chain in the leaf entry":
        return IssuedCert(pem + b"".join(real.chain_pem), (), real.serial, 0, 0)
    elif how == "intermediate twice":
        return IssuedCert(pem, (*real.chain_pem, *real.chain_pem), real.serial, 0, 0)
    elif how == "malformed chain":
        return IssuedCert(pem, (b"-----BEGIN CERTIFICATE-----\nAAAA\n",), real.serial, 0, 0)
    else:
        raise AssertionError(how)
    return IssuedCert(forged, real.chain_pem, real.serial, 0, 0)


# how -> words the refusal must contain
BAD_ANSWERS = {
    "malformed PEM": "not a PEM certificate",
    "truncated PEM": "not a PEM certificate",
    "other names": "DNS names differ",
    "another key": "does not match the private key",
    "expired": "not valid now",
    "not yet valid": "not valid now",
    "broken chain": "chain",
    "chain out of order": "chain",
    "malformed chain": "chain certificate 1",
    "stranger in the chain": "chain certificate 2 is not on the leaf's issuing chain",
    "CA leaf": "is a CA certificate",
    "client-only leaf": "lacks serverAuth",
}
# how a real CA may deliver a chain: the sync normalises each into [intermediate]
AWKWARD_CHAINS = (
    "intermediate and root in one PEM",
    "root first",
    "chain in the leaf entry",
    "intermediate twice",
)


@pytest.mark.fault
def test_bad_certificates_are_refused_naming_the_order_and_the_rule(
    sandbox: Sandbox, tmp_path: Path, faults: Ledger
) -> None:
    world = make_world(sandbox, (tmp_path / "store").as_uri(), "")
    good = [world.add(f"fine{i}.{world.cluster}.example") for i in range(2)]
    victims = {world.add(f"v{i}.{world.cluster}.example"): how for i, how in enumerate(BAD_ANSWERS)}
    provider = HostileProvider(world.provider(), victims)
    summary = run_sync(world.config(), store=world.store, provider=provider, clock=world.now)
    faults.tried(len(victims))
    seen = world.published()
    assert set(seen.entries) == set(good)
    for name, how in victims.items():
        error = summary.errors.get(name, "")
        assert f"order {name}" in error and "certificate rejected" in error, (how, error)
        assert BAD_ANSWERS[how] in error, (how, error)
    # once the provider answers honestly, the same pending keys are published
    honest = run_sync(world.config(), store=world.store, provider=provider.inner, clock=world.now)
    assert honest.errors == {} and honest.keys_generated == 0
    assert set(world.published().entries) == set(good) | set(victims)
    provider.inner.close()


@pytest.mark.fault
def test_awkward_provider_chains_are_normalised_and_installed_by_an_agent(
    sandbox: Sandbox, tmp_path: Path, faults: Ledger
) -> None:
    world = make_world(sandbox, (tmp_path / "store").as_uri(), "")
    orders = {
        world.add(f"c{i}.{world.cluster}.example"): how for i, how in enumerate(AWKWARD_CHAINS)
    }
    provider = HostileProvider(world.provider(), orders, sandbox.root_pem)
    summary = run_sync(world.config(), store=world.store, provider=provider, clock=world.now)
    faults.tried(len(orders))
    provider.inner.close()
    assert summary.errors == {}
    seen = world.published()
    assert set(seen.bundles) == set(orders)
    root = x509.load_pem_x509_certificate(sandbox.root_pem)
    for name, how in orders.items():
        bundle = seen.bundles[name]
        assert len(x509.load_pem_x509_certificates(bundle.certificate_pem)) == 1, how
        assert len(bundle.chain_pem) == 1, (how, "one intermediate, no root")
        assert len(x509.load_pem_x509_certificates(bundle.chain_pem[0])) == 1, how
        intermediate = x509.load_pem_x509_certificate(bundle.chain_pem[0])
        assert intermediate != root and intermediate.issuer == root.subject, how
    stanza = cluster_stanza(world.cluster, world.secrets, [world.signing_key.public_key()])
    text = agent_config_text(world.store.url, tmp_path / "agent", stanza)
    result = Agent(parse_agent_config(text, str(tmp_path / "agent.conf"))).poll_once()
    assert result.ok, [problem.message for problem in result.problems]
    assert set(installed_orders(tmp_path / "agent")) == set(orders)


def test_the_agent_refuses_a_ca_leaf_or_a_client_only_leaf_on_its_own() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    key_pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    now = datetime.datetime.now(datetime.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "a.example")])
    for extension, words in (
        (x509.BasicConstraints(ca=True, path_length=None), "is a CA certificate"),
        (x509.ExtendedKeyUsage([CLIENT_AUTH]), "lacks serverAuth"),
    ):
        cert = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(7)
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("a.example")]), False)
            .add_extension(extension, critical=False)
            .sign(key, hashes.SHA256())
        )  # fmt: skip
        bundle = Bundle(
            "a.example", ("a.example",), "ecdsa", key_pem, cert.public_bytes(Encoding.PEM), (),
            "7", int(now.timestamp()) - 86400, int(now.timestamp()) + 30 * 86400,
        )  # fmt: skip
        with pytest.raises(RefusedError, match=words):
            check_bundle(bundle, object_name="bundle", now=int(now.timestamp()))
