"""Unit tests of the ACME provider's pure parts: thumbprint, retry rule, problems, state,
config, and init's output (no CA involved)."""

from __future__ import annotations

import base64
import io
import json
import time
from pathlib import Path

import pytest

from certfleet.acme.certs import cert_id, split_chain
from certfleet.acme.errors import Problem
from certfleet.acme.retry import backoff, parse_retry_after, retry_at
from certfleet.acme.state import (
    AcmeState,
    AcmeStateConflict,
    AcmeStateError,
    AcmeStateStore,
    acme_state_key,
)
from certfleet.bundle import ClusterSecret, SigningKey, seal
from certfleet.cli import main
from certfleet.config.accountkey import (
    AccountKeyError,
    account_key_text,
    generate_account_key,
    jwk_thumbprint,
    key_authorization,
    load_account_key,
    thumbprint,
)
from certfleet.config.errors import ConfigErrors
from certfleet.config.sync import load_sync_config, parse_sync_config
from certfleet.store import open_store


def test_the_rfc_7638_example_key_has_the_rfc_thumbprint() -> None:
    members = {
        "kty": "RSA",
        "e": "AQAB",
        "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6"
        "tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65"
        "YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrd"
        "kt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnq"
        "DKgw",
    }
    assert jwk_thumbprint(members) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_the_thumbprint_agrees_with_josepy_and_survives_the_config_text_form() -> None:
    jose = pytest.importorskip("josepy", reason="josepy needs Python >= 3.10")
    key = generate_account_key()
    loaded = load_account_key(account_key_text(key))
    expected = jose.b64.b64encode(jose.JWKEC(key=key).thumbprint()).decode()
    assert thumbprint(loaded) == expected
    assert key_authorization("tok", loaded) == f"tok.{expected}"
    assert "\n" not in account_key_text(key)


@pytest.mark.parametrize("text", ["", "nonsense", "-----BEGIN PRIVATE KEY-----\\nAAAA", "{}"])
def test_an_unusable_account_key_is_refused_without_echoing_it(text: str) -> None:
    with pytest.raises(AccountKeyError) as caught:
        load_account_key(text)
    assert "AAAA" not in str(caught.value)


def test_backoff_doubles_from_five_minutes_to_a_day() -> None:
    assert [backoff(n) for n in (1, 2, 3)] == [300.0, 600.0, 1200.0]
    assert backoff(30) == 86400.0
    assert backoff(0) == 0.0


def test_retry_after_is_read_as_seconds_or_an_http_date() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after("120", now) == 120.0
    assert parse_retry_after("Tue, 14 Nov 2023 23:13:20 GMT", now) == pytest.approx(3600.0)
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None
    assert parse_retry_after("99999999", now) == 7 * 86400.0


def test_a_rate_limit_waits_for_the_retry_after_and_a_failure_for_the_backoff() -> None:
    now = 1000.0
    assert retry_at(now, 1, code="rateLimited", status=429, retry_after=30.0) == 1030.0
    assert retry_at(now, 1, code=None, status=503, retry_after=10.0) == 1010.0
    assert retry_at(now, 1, code="rateLimited", status=429, retry_after=None) == 1300.0
    assert retry_at(now, 3, code="unauthorized", status=403, retry_after=None) == 2200.0


def test_a_problem_summary_names_each_identifier_and_escapes_control_characters() -> None:
    problem = Problem.from_json(
        {
            "type": "urn:ietf:params:acme:error:unauthorized",
            "detail": "authorization failed",
            "subproblems": [
                {
                    "type": "urn:ietf:params:acme:error:incorrectResponse",
                    "detail": "bad\x1b[31m answer",
                    "identifier": {"type": "dns", "value": "www.example.com"},
                }
            ],
        }
    )
    summary = problem.summary()
    assert summary.startswith("unauthorized: authorization failed; www.example.com: ")
    assert "incorrectResponse" in summary and "\x1b" not in summary
    assert Problem.from_json(problem.as_json()) == problem


def _states(tmp_path: Path, key: SigningKey) -> AcmeStateStore:
    store = open_store(f"file://{tmp_path}/store")
    return AcmeStateStore(store, "web", key.sync_secret("state"), time.time)


def test_the_acme_state_round_trips_sealed_with_the_sync_only_secret(tmp_path: Path) -> None:
    key = SigningKey.generate()
    states = _states(tmp_path, key)
    state = states.load()
    state.account_url = "https://ca.example/acct/1"
    record = state.order("app.example.com")
    record.url, record.attempts, record.retry_at = "https://ca.example/order/9", 2, 1234.5
    record.problem = {"type": "urn:ietf:params:acme:error:rateLimited", "detail": "slow down"}
    assert states.save(state) is True
    assert states.save(state) is False  # unchanged: nothing written
    again = _states(tmp_path, key).load()
    assert again.encode() == state.encode()
    assert again.orders["app.example.com"].url == "https://ca.example/order/9"
    # sealed for the sync only: another signing key (or a cluster secret) cannot open it
    with pytest.raises(AcmeStateError, match="cannot be opened"):
        _states(tmp_path, SigningKey.generate()).load()


def test_a_forged_or_future_acme_state_is_refused(tmp_path: Path) -> None:
    key = SigningKey.generate()
    store = open_store(f"file://{tmp_path}/store")
    node_secret = ClusterSecret.generate("k1")
    forged = AcmeState(account_url="https://evil.example/acct").encode()
    store.put(acme_state_key("web"), seal("acme", "web", "/state", forged, (node_secret,)))
    with pytest.raises(AcmeStateError, match="cannot be opened"):
        _states(tmp_path, key).load()
    future = AcmeState(generation=int(time.time() * 1000) + 2 * 86_400_000).encode()
    secret = key.sync_secret("state")
    store.put(acme_state_key("web"), seal("acme", "web", "/state", future, (secret,)))
    with pytest.raises(AcmeStateError, match="a day ahead"):
        _states(tmp_path, key).load()


def test_a_concurrent_writer_of_the_acme_state_is_detected(tmp_path: Path) -> None:
    key = SigningKey.generate()
    first, second = _states(tmp_path, key), _states(tmp_path, key)
    a, b = first.load(), second.load()
    a.account_url = "https://ca.example/acct/a"
    b.account_url = "https://ca.example/acct/b"
    first.save(a)
    with pytest.raises(AcmeStateConflict, match="another writer"):
        second.save(b)


def _run(*argv: str) -> tuple[int, str, str]:
    import contextlib

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def test_init_writes_an_acme_config_and_thumbprint_prints_only_the_thumbprint(
    tmp_path: Path,
) -> None:
    config = tmp_path / "sync.hcl"
    code, _, err = _run(
        "init", "--provider", "acme", "--acme-directory", "https://ca.example/dir",
        "--acme-email", "ops@example.com", "--config", str(config),
        "--store", f"file://{tmp_path}/store",
    )  # fmt: skip
    assert code == 0, err
    assert config.stat().st_mode & 0o777 == 0o600
    loaded = load_sync_config(config)
    assert loaded.provider == "acme" and loaded.acme is not None
    assert loaded.acme.directory == "https://ca.example/dir"
    assert "account_key" not in repr(loaded.acme)
    code, out, _ = _run("acme", "thumbprint", "--config", str(config))
    assert code == 0
    assert out == thumbprint(load_account_key(loaded.acme.account_key)) + "\n"
    code, out, _ = _run("acme", "thumbprint", "--config", str(config), "--json")
    assert json.loads(out)["thumbprint"] == thumbprint(load_account_key(loaded.acme.account_key))


def test_every_documented_acme_option_parses_to_its_value() -> None:
    """provider, acme {} with every option, both dns kinds (route53 on one line, its id
    optional), dns_resolvers and a cluster that keeps the other provider."""
    text = f"""store = "file:///tmp/x"
signing_key = "{SigningKey.generate().export()}"
provider = "acme"                      # "sslmate" (the default) or "acme"
acme {{
  directory    = "https://acme-v02.api.letsencrypt.org/directory"
  email        = "ops@example.com"
  account_key  = "{account_key_text(generate_account_key())}"
  ca_bundle    = "/path/ca.pem"
  eab_kid      = "kid-1"
  eab_hmac_key = "c2VjcmV0LWhtYWMta2V5"
  profile      = "tlsserver"
}}
dns "rfc2136" {{
  server         = "127.0.0.1:53"
  tsig_key_name  = "acme-update."
  tsig_algorithm = "hmac-sha256"
  tsig_secret    = "c2VjcmV0LXRzaWcta2V5"
  zones          = ["example.test"]
}}
dns "route53" {{ zones = ["example.com"]  hosted_zone_id = "Z123" }}
dns "route53" {{ }}
dns_resolvers = ["127.0.0.1:5353"]
cluster "web" {{ secret = "{ClusterSecret.generate("k1").export()}" }}
cluster "legacy" {{
  secret   = "{ClusterSecret.generate("k2").export()}"
  provider = "sslmate"
}}
"""
    config = parse_sync_config(text, "sync.hcl")
    assert config.acme is not None
    assert (config.acme.directory, config.acme.email, config.acme.ca_bundle) == (
        "https://acme-v02.api.letsencrypt.org/directory",
        "ops@example.com",
        "/path/ca.pem",
    )
    assert (config.acme.eab_kid, config.acme.eab_hmac_key, config.acme.profile) == (
        "kid-1",
        "c2VjcmV0LWhtYWMta2V5",
        "tlsserver",
    )
    rfc2136, route53, default = config.dns
    assert (rfc2136.kind, rfc2136.zones, rfc2136.server) == (
        "rfc2136",
        ("example.test",),
        "127.0.0.1:53",
    )
    assert (rfc2136.tsig_key_name, rfc2136.tsig_algorithm) == ("acme-update.", "hmac-sha256")
    assert rfc2136.tsig_secret == "c2VjcmV0LXRzaWcta2V5"
    assert (route53.kind, route53.zones, route53.hosted_zone_id) == (
        "route53",
        ("example.com",),
        "Z123",
    )
    assert (default.kind, default.zones, default.hosted_zone_id) == ("route53", (), None)
    assert config.dns_resolvers == ("127.0.0.1:5353",)
    assert (config.provider_for("web"), config.provider_for("legacy")) == ("acme", "sslmate")


def test_a_zone_in_two_dns_blocks_is_refused() -> None:
    account_key = account_key_text(generate_account_key())
    text = (
        f'store = "file:///tmp/x"  signing_key = "{SigningKey.generate().export()}"\n'
        f'provider = "acme"  acme {{ directory = "https://ca.example/dir"  '
        f'account_key = "{account_key}" }}\n'
        'dns "route53" { zones = ["example.com", "Example.org."] }\n'
        'dns "route53" { zones = ["example.org"] }\n'
    )
    with pytest.raises(ConfigErrors) as caught:
        parse_sync_config(text, "sync.hcl")
    assert str(caught.value) == (
        "sync.hcl:3: option \"dns\": zone 'example.org' is in more than one block "
        "(valid: each zone in one block)"
    )


def test_acme_config_errors_name_the_line_and_option(tmp_path: Path) -> None:
    signing = SigningKey.generate().export()
    text = f"""store = "file:///tmp/x"
signing_key = "{signing}"
provider = "acme"
acme {{
  directory = "not a url"
  account_key = "-----BEGIN PRIVATE KEY-----\\\\nAAAA"
  eab_kid = "kid"
}}
dns "bind" {{ }}
"""
    with pytest.raises(ConfigErrors) as caught:
        parse_sync_config(text, "sync.hcl")
    message = str(caught.value)
    assert 'sync.hcl:5: option "directory" in acme' in message
    assert 'option "account_key" in acme' in message and "AAAA" not in message
    assert 'option "eab_hmac_key"' in message
    assert "unknown DNS provider 'bind'" in message


def test_an_acme_state_sealed_before_a_signing_key_rotation_is_opened_and_resealed(
    tmp_path: Path,
) -> None:
    old, new = SigningKey.generate(), SigningKey.generate()
    store = open_store(f"file://{tmp_path}/store")
    before = AcmeStateStore(store, "web", old.sync_secret("state"), time.time)
    state = before.load()
    state.account_url = "https://ca.example/acct/1"
    before.save(state)
    rotated = AcmeStateStore(
        store, "web", new.sync_secret("state"), time.time, previous=(old.sync_secret("state"),)
    )
    loaded = rotated.load()
    assert loaded.account_url == "https://ca.example/acct/1"
    assert rotated.save(loaded) is True  # written again, sealed with the new key
    assert AcmeStateStore(store, "web", new.sync_secret("state"), time.time).load().account_url
    with pytest.raises(AcmeStateError):
        AcmeStateStore(store, "web", old.sync_secret("state"), time.time).load()


def _leaf(serial: int, names: list[str]) -> bytes:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    issuer_key = ec.generate_private_key(ec.SECP256R1())
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test issuer")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=6))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), False
        )
        .sign(issuer_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.mark.parametrize("serial", [1, 0x7F, 0x80, 0xFF00, (1 << 159) - 1, 0x87654321DEADBEEF])
def test_the_ari_certificate_id_matches_rfc_9773_and_certbot(serial: int) -> None:
    leaf = _leaf(serial, ["a.example"])
    identifier = cert_id(leaf)
    aki, _, encoded_serial = identifier.partition(".")
    raw = base64.urlsafe_b64decode(encoded_serial + "=" * (-len(encoded_serial) % 4))
    assert int.from_bytes(raw, "big", signed=True) == serial  # a positive DER INTEGER
    assert raw[0] < 0x80 and len(aki) == 27  # SHA-1 key identifier, 20 bytes
    certbot = pytest.importorskip("acme.client", reason="certbot's acme needs Python >= 3.10")
    from cryptography import x509

    ours = certbot._renewal_info_path_component(x509.load_pem_x509_certificate(leaf))
    assert identifier == ours


def test_a_chain_is_split_into_leaf_and_intermediates() -> None:
    first, second = _leaf(5, ["a.example"]), _leaf(6, ["b.example"])
    assert split_chain(first + second) == (first, (second,))
    with pytest.raises(ValueError):
        split_chain(b"")


@pytest.mark.parametrize("form", ["one line", "quoted, several lines", "heredoc", "jwk"])
def test_the_account_key_may_be_written_as_pem_in_any_hcl_form_or_as_a_jwk(form: str) -> None:
    from cryptography.hazmat.primitives import serialization

    key = generate_account_key()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    numbers = key.private_numbers()
    jwk = json.dumps(
        {
            "kty": "EC", "crv": "P-256",
            "x": base64.urlsafe_b64encode(numbers.public_numbers.x.to_bytes(32, "big")).decode(),
            "y": base64.urlsafe_b64encode(numbers.public_numbers.y.to_bytes(32, "big")).decode(),
            "d": base64.urlsafe_b64encode(numbers.private_value.to_bytes(32, "big")).decode(),
        }
    ).replace('"', '\\\\"')  # fmt: skip
    value = {
        "one line": f'"{account_key_text(key)}"',
        "quoted, several lines": f'"{pem}"',
        "heredoc": f"<<EOT\n{pem}EOT",
        "jwk": f'"{jwk}"',
    }[form]
    text = f"""store = "file:///tmp/x"
signing_key = "{SigningKey.generate().export()}"
provider = "acme"
acme {{
  directory = "https://ca.example/dir"
  account_key = {value}
}}
"""
    config = parse_sync_config(text, "sync.hcl")
    assert config.acme is not None
    assert thumbprint(load_account_key(config.acme.account_key)) == thumbprint(key)
