"""The APIv3 sandbox over real HTTP: every endpoint, errors, auth, the test CA, faults."""

from __future__ import annotations

import datetime
import hashlib
import json
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable
from urllib.parse import quote

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certfleet.sandbox.state import bulk_create, numbered_specs
from tests.plugins.binaries import require_binary
from tests.plugins.help_page import curl_help_page
from tests.plugins.sandbox import Sandbox, unique_cluster

RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
Make = Callable[..., Sandbox]


# -- helpers --------------------------------------------------------------------------------


def call(sb: Sandbox, method: str, path: str, **kwargs: Any) -> requests.Response:
    kwargs.setdefault("headers", sb.headers)
    return requests.request(method, sb.url + path, timeout=30, **kwargs)


def create(sb: Sandbox, cluster: str, *names: str, **extra: Any) -> requests.Response:
    approval = extra.pop("approval", "dns")
    body = {
        "cluster": cluster,
        "identifiers": [{"type": "dns", "value": n, "approval": approval} for n in names],
        **extra,
    }
    return call(sb, "POST", "/orders", json=body)


def error_code(answer: requests.Response) -> str:
    assert answer.headers["Content-Type"] == "application/json"
    body = answer.json()
    assert isinstance(body["message"], str) and body["message"]
    return str(body["code"])


def make_csr(names: list[str], key: Any = None, cn: str | None = None) -> tuple[Any, str]:
    key = key or ec.generate_private_key(ec.SECP256R1())
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn or names[0])])
    )
    builder = builder.add_extension(
        x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False
    )
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    csr = builder.sign(key, algorithm)
    return key, csr.public_bytes(serialization.Encoding.PEM).decode()


def issued(sb: Sandbox, order: str, csr_pem: str) -> dict[str, Any]:
    answer = call(sb, "POST", f"/orders/{order}/csrs", json={"csr": csr_pem})
    assert answer.status_code in (200, 201), answer.text
    cert = call(sb, "GET", f"/orders/{order}/certs/{answer.json()['pubkey_hash']}")
    assert cert.status_code == 200
    body: dict[str, Any] = cert.json()
    return body


def openssl_verify(
    root_pem: bytes, cert: dict[str, Any], where: Path
) -> subprocess.CompletedProcess[str]:
    openssl = require_binary("openssl")
    (where / "root.pem").write_bytes(root_pem)
    (where / "chain.pem").write_text("".join(cert["chain"]))
    (where / "leaf.pem").write_text(cert["crt"])
    return subprocess.run(
        [
            openssl,
            "verify",
            "-purpose",
            "sslserver",
            "-CAfile",
            "root.pem",
            "-untrusted",
            "chain.pem",
            "leaf.pem",
        ],
        cwd=where,
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )


def until_clean(attempt: Callable[[], requests.Response], tries: int = 50) -> requests.Response:
    """Repeat a GET against a faulty sandbox until it answers with well-formed JSON."""
    for _ in range(tries):
        try:
            answer = attempt()
        except requests.ConnectionError:
            continue
        if answer.status_code in (429, 500):
            continue
        try:
            answer.json()
        except ValueError:
            continue
        return answer
    raise AssertionError("the sandbox never answered cleanly")


# -- startup, help, auth --------------------------------------------------------------------


def test_help_says_it_is_a_test_double() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "certfleet.sandbox", "--help"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert "TEST DOUBLE" in out and "not SSLMate" in out
    for option in (
        "--port",
        "--api-key",
        "--data",
        "--issue-delay",
        "--cert-lifetime",
        "--fault-rate",
        "--latency",
        "--unsafe-names",
        "--seed",
    ):
        assert option in out


def test_bad_option_is_a_usage_error() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "certfleet.sandbox", "--fault-rate", "2"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert run.returncode == 2
    assert "between 0 and 1" in run.stderr


# --config is accepted by every certfleet subcommand, the sandbox too (it reads none).
@pytest.mark.parametrize("extra", [[], ["--config", "/nonexistent/sync.hcl"]])
def test_a_port_in_use_is_named(extra: list[str]) -> None:
    taken = socket.socket()
    try:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = subprocess.run(
            [sys.executable, "-m", "certfleet", "sandbox", "--port", str(port), *extra],
            capture_output=True, text=True, check=False, timeout=60,
        )  # fmt: skip
    finally:
        taken.close()
    assert run.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}: address already in use" in run.stderr
    assert "Traceback" not in run.stderr and "listening" not in run.stdout


def test_auth_bearer_basic_and_wrong_key(sandbox: Sandbox) -> None:
    path = "/orders?cluster=nobody"
    assert call(sandbox, "GET", path).status_code == 200
    basic = requests.get(sandbox.url + path, auth=(sandbox.api_key, ""), timeout=10)
    assert basic.status_code == 200
    for headers in ({}, {"Authorization": "Bearer wrong-key-123"}, {"Authorization": "Basic !!"}):
        answer = call(sandbox, "GET", path, headers=headers)
        assert answer.status_code == 401
        assert error_code(answer) == "unauthorized"
        assert "wrong-key-123" not in answer.text
    with_password = requests.get(sandbox.url + path, auth=(sandbox.api_key, "pw"), timeout=10)
    assert with_password.status_code == 401
    wrong_user = requests.get(sandbox.url + path, auth=("nope", ""), timeout=10)
    assert wrong_user.status_code == 401


def test_root_pem_is_public_and_a_ca(sandbox: Sandbox) -> None:
    root = x509.load_pem_x509_certificate(sandbox.root_pem)
    assert root.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert "TEST" in root.subject.rfc4514_string()


# -- orders ---------------------------------------------------------------------------------


def test_order_lifecycle(sandbox: Sandbox) -> None:
    cluster = unique_cluster()
    first = f"www.{cluster}.example"
    made = create(sandbox, cluster, first.upper(), f"{cluster}.example", approval="http")
    assert made.status_code == 201
    order = made.json()
    assert order["name"] == first  # default name: the first DNS name, lowercase
    assert order["cluster"] == cluster
    assert order["identifiers"] == [
        {"type": "dns", "value": first, "approval": "http"},
        {"type": "dns", "value": f"{cluster}.example", "approval": "http"},
    ]
    assert order["state"] == "awaiting_csr"
    assert RFC3339.fullmatch(order["created_at"]) and RFC3339.fullmatch(order["updated_at"])

    again = create(sandbox, cluster, first)
    assert again.status_code == 409 and error_code(again) == "order_exists"
    assert call(sandbox, "GET", f"/orders/{first}").json() == order

    new_names = [{"type": "dns", "value": f"api.{cluster}.example", "approval": "dns"}]
    patched = call(sandbox, "PATCH", f"/orders/{first}", json={"identifiers": new_names})
    assert patched.status_code == 200
    assert patched.json()["identifiers"] == new_names
    assert call(sandbox, "GET", f"/orders/{first}").json()["identifiers"] == new_names

    moved = call(sandbox, "PATCH", f"/orders/{first}", json={"cluster": cluster + "-b"})
    assert moved.json()["cluster"] == cluster + "-b"

    deleted = call(sandbox, "DELETE", f"/orders/{first}")
    assert deleted.status_code == 204 and deleted.content == b""
    for method in ("GET", "DELETE"):
        gone = call(sandbox, method, f"/orders/{first}")
        assert gone.status_code == 404 and error_code(gone) == "not_found"
    missing = call(sandbox, "PATCH", f"/orders/{first}", json={"identifiers": new_names})
    assert missing.status_code == 404


def test_explicit_name(sandbox: Sandbox) -> None:
    cluster = unique_cluster()
    made = create(sandbox, cluster, f"a.{cluster}.example", name=f"Star_{cluster}.*")
    assert made.status_code == 201
    got = call(sandbox, "GET", "/orders/" + quote(f"Star_{cluster}.*", safe=""))
    assert got.json()["name"] == f"Star_{cluster}.*"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (
            {"cluster": "c", "identifiers": [{"type": "dns", "value": "a b.example"}]},
            400,
            "invalid_dns_name",
        ),
        (
            {"cluster": "c", "identifiers": [{"type": "dns", "value": "a..example"}]},
            400,
            "invalid_dns_name",
        ),
        (
            {"cluster": "c", "identifiers": [{"type": "dns", "value": "x" * 64 + ".example"}]},
            400,
            "invalid_dns_name",
        ),
        (
            {
                "cluster": "c",
                "identifiers": [{"type": "dns", "value": ("a" * 60 + ".") * 5 + "com"}],
            },
            400,
            "invalid_dns_name",
        ),
        (
            {"cluster": "c", "identifiers": [{"type": "dns", "value": "a.*.example"}]},
            400,
            "invalid_dns_name",
        ),
        (
            {"cluster": "c", "identifiers": [{"type": "dns", "value": "under_score.example"}]},
            400,
            "invalid_dns_name",
        ),
        (
            {
                "cluster": "c",
                "identifiers": [{"type": "dns", "value": "ok.example"}],
                "name": "../x",
            },
            400,
            "invalid_order_name",
        ),
        (
            {
                "cluster": "c",
                "identifiers": [{"type": "dns", "value": "ok.example"}],
                "name": ".hidden",
            },
            400,
            "invalid_order_name",
        ),
        (
            {"cluster": "Bad_Cluster", "identifiers": [{"type": "dns", "value": "ok.example"}]},
            400,
            "invalid_cluster",
        ),
        ({"identifiers": [{"type": "dns", "value": "ok.example"}]}, 400, "missing_field"),
        ({"cluster": "c", "identifiers": []}, 400, "invalid_request"),
        (
            {"cluster": "c", "identifiers": [{"type": "dns", "value": "ok.example"}], "x": 1},
            400,
            "unknown_field",
        ),
        (
            {"cluster": "c", "identifiers": [{"type": "ip", "value": "10.0.0.1"}]},
            400,
            "unsupported_identifier",
        ),
        (
            {"cluster": "c", "identifiers": [{"value": "ok.example", "approval": "email"}]},
            400,
            "invalid_approval",
        ),
        (
            {"cluster": "c", "identifiers": [{"value": "d.example"}, {"value": "D.example"}]},
            400,
            "duplicate_identifier",
        ),
        (
            {"cluster": "c", "identifiers": [{"value": "*.w.example", "approval": "http"}]},
            422,
            "approval_not_allowed",
        ),
        ([1, 2], 400, "invalid_request"),
    ],
)
def test_bad_orders_refused(sandbox: Sandbox, body: Any, status: int, code: str) -> None:
    answer = call(sandbox, "POST", "/orders", json=body)
    assert answer.status_code == status
    assert error_code(answer) == code


def test_bad_requests(sandbox: Sandbox) -> None:
    bad_json = call(
        sandbox,
        "POST",
        "/orders",
        data=b"{not json",
        headers={**sandbox.headers, "Content-Type": "application/json"},
    )
    assert bad_json.status_code == 400 and error_code(bad_json) == "invalid_json"
    nowhere = call(sandbox, "GET", "/nowhere")
    assert nowhere.status_code == 404 and error_code(nowhere) == "not_found"
    wrong_method = call(sandbox, "PUT", "/orders")
    assert wrong_method.status_code == 405 and error_code(wrong_method) == "method_not_allowed"
    for query, code in (
        ("limit=0", "invalid_limit"),
        ("limit=x", "invalid_limit"),
        ("after=%ff%fe", "invalid_cursor"),
    ):
        answer = call(sandbox, "GET", "/orders?" + query)
        assert answer.status_code == 400 and error_code(answer) == code


def test_wildcard_orders(sandbox: Sandbox) -> None:
    cluster = unique_cluster()
    wildcard = f"*.{cluster}.example"
    refused = create(sandbox, cluster, wildcard, approval="http")
    assert refused.status_code == 422 and error_code(refused) == "approval_not_allowed"
    assert wildcard in refused.json()["message"]
    made = create(sandbox, cluster, wildcard, approval="dns")
    assert made.status_code == 201
    assert made.json()["identifiers"][0] == {"type": "dns", "value": wildcard, "approval": "dns"}
    implicit = call(
        sandbox,
        "POST",
        "/orders",
        json={
            "cluster": cluster,
            "name": "implicit",
            "identifiers": [{"type": "dns", "value": f"*.b.{cluster}.example"}],
        },
    )
    assert implicit.json()["identifiers"][0]["approval"] == "dns"
    _, csr = make_csr([wildcard])
    cert = issued(sandbox, quote(wildcard, safe=""), csr)
    leaf = x509.load_pem_x509_certificate(cert["crt"].encode())
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == [wildcard]


def test_pagination_is_stable_and_complete(sandbox: Sandbox) -> None:
    cluster, other = unique_cluster(), unique_cluster()
    names = sorted(f"n{i:02d}.{cluster}.example" for i in range(7))
    for name in reversed(names):
        assert create(sandbox, cluster, name).status_code == 201
        assert create(sandbox, other, "o-" + name).status_code == 201
    seen: list[str] = []
    sizes: list[int] = []
    cursor = None
    for _ in range(10):
        query = f"/orders?cluster={cluster}&limit=3" + (f"&after={cursor}" if cursor else "")
        page = call(sandbox, "GET", query).json()
        seen += [o["name"] for o in page["orders"]]
        sizes.append(len(page["orders"]))
        assert all(o["cluster"] == cluster for o in page["orders"])
        cursor = page["next"]
        if cursor is None:
            break
    assert seen == names
    assert sizes == [3, 3, 1]
    default = call(sandbox, "GET", f"/orders?cluster={cluster}").json()
    assert [o["name"] for o in default["orders"]] == names and default["next"] is None
    huge = call(sandbox, "GET", f"/orders?cluster={cluster}&limit=100000")
    assert huge.status_code == 200 and len(huge.json()["orders"]) == 7


# -- CSRs and certificates ------------------------------------------------------------------


@pytest.mark.parametrize("key_kind", ["ecdsa-p256", "ecdsa-p384", "rsa-2048"])
def test_certificate_is_real_and_verifies(sandbox: Sandbox, tmp_path: Path, key_kind: str) -> None:
    cluster = unique_cluster()
    names = [f"www.{cluster}.example", f"{cluster}.example"]
    assert create(sandbox, cluster, *names).status_code == 201
    key = {
        "ecdsa-p256": lambda: ec.generate_private_key(ec.SECP256R1()),
        "ecdsa-p384": lambda: ec.generate_private_key(ec.SECP384R1()),
        "rsa-2048": lambda: rsa.generate_private_key(65537, 2048),
    }[key_kind]()
    _, csr = make_csr(list(reversed(names)), key, cn=names[1])  # order of names is free
    before = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    answer = call(sandbox, "POST", f"/orders/{names[0]}/csrs", json={"csr": csr})
    assert answer.status_code == 201
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert answer.json() == {"pubkey_hash": hashlib.sha256(spki).hexdigest(), "state": "issued"}

    cert = call(sandbox, "GET", f"/orders/{names[0]}/certs/{answer.json()['pubkey_hash']}").json()
    assert cert["state"] == "issued" and len(cert["chain"]) == 1
    verified = openssl_verify(sandbox.root_pem, cert, tmp_path)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "leaf.pem: OK" in verified.stdout

    leaf = x509.load_pem_x509_certificate(cert["crt"].encode())
    assert (
        leaf.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        == spki
    )
    assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == names[0]
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == names
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    leaf.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    inter = x509.load_pem_x509_certificate(cert["chain"][0].encode())
    inter_ski = inter.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == inter_ski.digest
    assert cert["serial"] == format(leaf.serial_number, "x")
    assert RFC3339.fullmatch(cert["not_before"]) and RFC3339.fullmatch(cert["not_after"])
    not_before = leaf.not_valid_before_utc
    assert cert["not_before"] == not_before.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert abs((before - datetime.timedelta(hours=1) - not_before).total_seconds()) <= 5
    lifetime = leaf.not_valid_after_utc - not_before - datetime.timedelta(hours=1)
    assert abs(lifetime.total_seconds() - 90 * 86400) <= 5
    order = call(sandbox, "GET", f"/orders/{names[0]}").json()
    assert order["state"] == "issued"


def test_same_csr_twice_is_a_no_op(sandbox: Sandbox) -> None:
    cluster = unique_cluster()
    name = f"idem.{cluster}.example"
    assert create(sandbox, cluster, name).status_code == 201
    key, csr = make_csr([name])
    first = call(sandbox, "POST", f"/orders/{name}/csrs", json={"csr": csr})
    _, same_key_new_csr = make_csr([name], key)
    second = call(sandbox, "POST", f"/orders/{name}/csrs", json={"csr": csr})
    third = call(sandbox, "POST", f"/orders/{name}/csrs", json={"csr": same_key_new_csr})
    assert first.status_code == 201 and second.status_code == 200 and third.status_code == 200
    assert first.json() == second.json() == third.json()
    serials = {
        call(sandbox, "GET", f"/orders/{name}/certs/{first.json()['pubkey_hash']}").json()["serial"]
        for _ in range(3)
    }
    assert len(serials) == 1


def test_csr_refused(sandbox: Sandbox) -> None:
    cluster = unique_cluster()
    names = [f"a.{cluster}.example", f"b.{cluster}.example"]
    assert create(sandbox, cluster, *names).status_code == 201
    path = f"/orders/{names[0]}/csrs"

    def refused(csr: str) -> tuple[int, str]:
        answer = call(sandbox, "POST", path, json={"csr": csr})
        return answer.status_code, error_code(answer)

    assert refused(make_csr(names[:1])[1]) == (422, "csr_names_mismatch")
    assert refused(make_csr([*names, f"c.{cluster}.example"])[1]) == (422, "csr_names_mismatch")
    assert refused(make_csr(names, cn=f"other.{cluster}.example")[1]) == (422, "csr_names_mismatch")
    weak_rsa = rsa.generate_private_key(65537, 1024)
    assert refused(make_csr(names, weak_rsa)[1]) == (422, "weak_key")
    assert refused(make_csr(names, ec.generate_private_key(ec.SECP256K1()))[1]) == (422, "weak_key")
    assert refused(make_csr(names, ed25519.Ed25519PrivateKey.generate())[1]) == (
        422,
        "unsupported_key",
    )
    assert refused("not a csr") == (400, "invalid_csr")
    good = make_csr(names)[1]
    der = bytearray(x509.load_pem_x509_csr(good.encode()).public_bytes(serialization.Encoding.DER))
    der[-3] ^= 0x55  # inside the signature
    tampered = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM).decode()
    assert refused(tampered) == (400, "invalid_csr")
    no_csr = call(sandbox, "POST", path, json={"pem": good})
    assert no_csr.status_code == 400
    unknown = call(sandbox, "POST", f"/orders/nothing.{cluster}.example/csrs", json={"csr": good})
    assert unknown.status_code == 404 and error_code(unknown) == "not_found"
    no_hash = call(sandbox, "GET", f"/orders/{names[0]}/certs/{'0' * 64}")
    assert no_hash.status_code == 404 and error_code(no_hash) == "not_found"
    assert call(sandbox, "GET", f"/orders/{names[0]}").json()["state"] == "awaiting_csr"


def test_edit_needs_a_new_certificate(sandbox: Sandbox) -> None:
    cluster = unique_cluster()
    name = f"e.{cluster}.example"
    assert create(sandbox, cluster, name).status_code == 201
    key, csr = make_csr([name])
    old = issued(sandbox, name, csr)
    extra = f"f.{cluster}.example"
    ids = [{"type": "dns", "value": v, "approval": "dns"} for v in (name, extra)]
    assert (
        call(sandbox, "PATCH", f"/orders/{name}", json={"identifiers": ids}).json()["state"]
        == "awaiting_csr"
    )
    answer = call(sandbox, "POST", f"/orders/{name}/csrs", json={"csr": csr})
    assert answer.status_code == 422  # the old CSR no longer names the order
    new = issued(sandbox, name, make_csr([name, extra], key)[1])  # same key, new names
    assert new["serial"] != old["serial"]
    assert call(sandbox, "GET", f"/orders/{name}").json()["state"] == "issued"


def test_issue_delay_long_poll_and_lifetime(make_sandbox: Make) -> None:
    sb = make_sandbox(issue_delay=1.5, cert_lifetime="2h")
    cluster = unique_cluster()
    name = f"slow.{cluster}.example"
    assert create(sb, cluster, name).status_code == 201
    submitted = call(sb, "POST", f"/orders/{name}/csrs", json={"csr": make_csr([name])[1]})
    assert submitted.json()["state"] == "pending"
    started = time.monotonic()
    cert_path = f"/orders/{name}/certs/{submitted.json()['pubkey_hash']}"
    pending = call(sb, "GET", cert_path).json()
    assert pending["state"] == "pending" and pending["retry_after"] >= 1
    assert call(sb, "GET", f"/orders/{name}").json()["state"] == "pending"
    short = call(sb, "GET", cert_path + "?poll=0.3").json()
    assert short["state"] == "pending"
    polled = call(sb, "GET", cert_path + "?poll=30").json()
    waited = time.monotonic() - started
    assert polled["state"] == "issued"
    assert 1.0 <= waited < 5.0, waited
    leaf = x509.load_pem_x509_certificate(polled["crt"].encode())
    validity = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    assert validity == datetime.timedelta(hours=3)  # 2 h lifetime + 1 h backdating
    assert call(sb, "GET", cert_path + "?poll=-1").status_code == 400


def test_restart_keeps_orders_certs_and_ca(make_sandbox: Make, tmp_path: Path) -> None:
    sb = make_sandbox()
    cluster = unique_cluster()
    name = f"keep.{cluster}.example"
    assert create(sb, cluster, name).status_code == 201
    cert = issued(sb, name, make_csr([name])[1])
    order = call(sb, "GET", f"/orders/{name}").json()
    port, root = sb.port, sb.root_pem
    sb.stop()
    assert sb.exit_status == 0
    sb.start()
    assert (sb.port, sb.root_pem) == (port, root)
    assert call(sb, "GET", f"/orders/{name}").json() == order
    leaf = x509.load_pem_x509_certificate(cert["crt"].encode())
    spki = leaf.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    again = call(sb, "GET", f"/orders/{name}/certs/{hashlib.sha256(spki).hexdigest()}").json()
    assert again == cert
    assert openssl_verify(sb.root_pem, again, tmp_path).returncode == 0
    assert not list(sb.data_dir.rglob(".tmp-*"))


# -- names, latency, faults, seeding --------------------------------------------------------


def test_unsafe_names_only_when_asked(sandbox: Sandbox, make_sandbox: Make) -> None:
    hostile = {
        "cluster": "c",
        "name": "../../etc/passwd",
        "identifiers": [{"type": "dns", "value": "Bad_Name..example"}],
    }
    assert call(sandbox, "POST", "/orders", json=hostile).status_code == 400
    lax = make_sandbox(unsafe_names=True, latency=0.2)
    started = time.monotonic()
    made = call(lax, "POST", "/orders", json=hostile)
    assert time.monotonic() - started >= 0.2  # --latency
    assert made.status_code == 201
    got = call(lax, "GET", "/orders/" + quote("../../etc/passwd", safe=""))
    assert got.json()["identifiers"][0]["value"] == "Bad_Name..example"
    listed = call(lax, "GET", "/orders?cluster=c").json()["orders"]
    assert [o["name"] for o in listed] == ["../../etc/passwd"]


@pytest.mark.fault
def test_faults_cover_every_kind_and_never_apply_mutations(make_sandbox: Make) -> None:
    sb = make_sandbox(fault_rate=0.3, seed=4242)
    cluster = unique_cluster()
    kinds: dict[str, int] = {}
    created: set[str] = set()

    def classify(answer: requests.Response | None) -> str:
        if answer is None:
            return "dropped"
        if answer.status_code == 429:
            assert answer.headers["Retry-After"] == "1"
            return "429"
        if answer.status_code == 204:
            return "ok"
        try:
            answer.json()
        except ValueError:
            return "truncated"
        return "500" if answer.status_code == 500 else "ok"

    def attempt(method: str, path: str, **kwargs: Any) -> tuple[str, requests.Response | None]:
        try:
            answer: requests.Response | None = call(sb, method, path, **kwargs)
        except requests.ConnectionError:
            answer = None
        kind = classify(answer)
        kinds[kind] = kinds.get(kind, 0) + 1
        return kind, answer

    for index in range(40):
        name = f"f{index:02d}.{cluster}.example"
        kind, answer = attempt(
            "POST",
            "/orders",
            json={"cluster": cluster, "identifiers": [{"type": "dns", "value": name}]},
        )
        if kind == "ok":
            assert answer is not None and answer.status_code == 201
            created.add(name)
    for name in sorted(created)[:10]:
        kind, answer = attempt("DELETE", f"/orders/{name}")
        if kind == "ok":
            created.discard(name)
    for _ in range(20):
        attempt("GET", f"/orders?cluster={cluster}")

    assert set(kinds) == {"ok", "500", "429", "dropped", "truncated"}, kinds
    faults = sum(v for k, v in kinds.items() if k != "ok")
    assert 0.15 <= faults / sum(kinds.values()) <= 0.45, kinds
    listed = until_clean(lambda: call(sb, "GET", f"/orders?cluster={cluster}&limit=1000"))
    assert {o["name"] for o in listed.json()["orders"]} == created


def test_bulk_create_and_seed_orders(make_sandbox: Make, tmp_path: Path) -> None:
    data = tmp_path / "sandbox0"  # the directory make_sandbox gives its first sandbox
    started = time.monotonic()
    assert bulk_create(data, numbered_specs("bulk", 2000, names_per_order=2)) == 2000
    bulk_seconds = time.monotonic() - started
    seed_file = tmp_path / "seed.jsonl"
    seed_file.write_text(
        json.dumps({"cluster": "seeded", "dns_names": ["s1.example", "*.s1.example"]})
        + "\n"
        + json.dumps({"cluster": "seeded", "dns_names": ["s2.example"], "name": "two"})
        + "\n"
    )
    sb = make_sandbox(seed_orders=seed_file)
    page = call(sb, "GET", "/orders?cluster=bulk&limit=1000").json()
    assert len(page["orders"]) == 1000 and page["next"] is not None
    assert call(sb, "GET", "/orders/host1999.example.test").json()["identifiers"][1]["value"] == (
        "alt1.host1999.example.test"
    )
    seeded = call(sb, "GET", "/orders?cluster=seeded").json()["orders"]
    assert [o["name"] for o in seeded] == ["s1.example", "two"]
    assert bulk_seconds < 20, bulk_seconds
    sb.stop()
    sb.start()  # seeding again keeps what exists
    assert len(call(sb, "GET", "/orders?cluster=seeded").json()["orders"]) == 2


def test_sigint_stops_cleanly_and_removes_the_temporary_data() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "certfleet.sandbox", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None and process.stderr is not None
    line = process.stdout.readline()
    assert line.startswith("certfleet sandbox listening on http://127.0.0.1:")
    url = line.split()[4]
    assert (
        requests.get(
            url + "/orders", headers={"Authorization": "Bearer sandbox-key"}, timeout=10
        ).status_code
        == 200
    )
    process.send_signal(signal.SIGINT)
    assert process.wait(10) == 0
    log = process.stderr.read()
    assert "TEST DOUBLE" in log
    data_dir = re.search(r"data in (\S+)", log)
    assert data_dir is not None and not Path(data_dir.group(1)).exists()
    process.stdout.close()
    process.stderr.close()


# -- the help page's REST example -------------------------------------------------------------


def test_the_help_page_curl_orders_with_dns_names(make_sandbox: Make) -> None:
    sb = make_sandbox()
    status, body = curl_help_page(sb.api_key, sb.url)
    assert status == "201", body
    order = json.loads(body)
    assert order["dns_names"] == ["example.com", "www.example.com"]
    assert [(i["value"], i["approval"]) for i in order["identifiers"]] == [
        ("example.com", "http"),
        ("www.example.com", "http"),
    ]
    both = call(
        sb,
        "POST",
        "/orders",
        json={"cluster": "c", "dns_names": ["b.example"], "identifiers": [{"value": "b.example"}]},
    )
    assert (both.status_code, error_code(both)) == (400, "conflicting_fields")
    patched = call(
        sb, "PATCH", "/orders/example.com", json={"dns_names": ["example.com", "*.example.com"]}
    )
    assert patched.status_code == 200
    assert patched.json()["identifiers"][1] == {
        "type": "dns",
        "value": "*.example.com",
        "approval": "dns",
    }
