"""The agent's PKCS#12 files as other readers see them: Java's ``keytool`` and
``openssl pkcs12``, not the ``cryptography`` library that wrote them.

The default password (``sslmate``) exists because Java lists no entry in a PKCS#12 file
without one; the tests show both sides of that.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_private_key,
)

from certfleet.config import parse_agent_config
from certfleet.config.agent import DEFAULT_P12_PASSWORD
from node_agent.agent import Agent
from tests.plugins.binaries import require_binary

if TYPE_CHECKING:
    from tests.plugins.publisher import Publisher

ORDERS = {"rsa.example.com": "rsa", "ecdsa.example.com": "ecdsa"}


def install(tmp_path: Path, publisher: Publisher, store: str, extra: str = "") -> Path:
    """One poll of an agent over the publication; its ``orders`` directory."""
    state_dir = tmp_path / "state"
    text = f'store = "{store}"\nstate_dir = "{state_dir}"\n' + publisher.cluster_stanza() + extra
    result = Agent(parse_agent_config(text, "agent.conf")).poll_once()
    assert result.ok, result.problems
    return state_dir / "orders"


@pytest.fixture
def orders(tmp_path: Path, make_publisher: Callable[..., Publisher]) -> Callable[[str], Path]:
    """``orders(extra_config)``: the orders directory of a node that installed an RSA and an
    ECDSA order (each with its intermediate) under that extra config."""
    (tmp_path / "store").mkdir()
    store = f"file://{tmp_path}/store"
    publisher = make_publisher(store)
    for name, key_type in ORDERS.items():
        publisher.issue(name, [name], key_type=key_type)
    publisher.publish()
    return lambda extra: install(tmp_path, publisher, store, extra)


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


def keytool_list(path: Path, password: str) -> subprocess.CompletedProcess[str]:
    keytool = require_binary("keytool")
    return run(keytool, "-list", "-v", "-storetype", "PKCS12", "-keystore", str(path),
               "-storepass", password)  # fmt: skip


def spki_of_pem_key(pem: bytes) -> bytes:
    key = load_pem_private_key(pem, None)
    return key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def test_the_default_password_gives_files_java_keytool_lists(
    orders: Callable[[str], Path],
) -> None:
    assert DEFAULT_P12_PASSWORD == "sslmate"  # what docs/config.md and docs/agent.md say
    directory = orders("")
    for name, key_type in ORDERS.items():
        p12 = directory / name / f"{key_type}.p12"
        listed = keytool_list(p12, DEFAULT_P12_PASSWORD)
        assert listed.returncode == 0, listed.stdout + listed.stderr
        assert "Your keystore contains 1 entry" in listed.stdout
        assert "PrivateKeyEntry" in listed.stdout
        assert "Certificate chain length: 2" in listed.stdout  # leaf + intermediate
        assert f"Alias name: {name}" in listed.stdout
        leaf_pem = (directory / name / f"{key_type}.crt.pem").read_bytes()
        leaf = x509.load_pem_x509_certificate(leaf_pem)
        fingerprint = leaf.fingerprint(leaf.signature_hash_algorithm).hex().upper()  # type: ignore[arg-type]
        shown = re.search(r"SHA256: ([0-9A-F:]+)", listed.stdout)
        assert shown and shown.group(1).replace(":", "") == fingerprint
        wrong = keytool_list(p12, "not-the-password")
        assert wrong.returncode != 0 and "password was incorrect" in wrong.stdout + wrong.stderr


def test_openssl_reads_the_key_and_chain_with_pbes2_aes_and_a_sha256_mac(
    orders: Callable[[str], Path],
) -> None:
    openssl = require_binary("openssl")
    directory = orders('default { p12_password = "another pass 42" }\n')
    for name, key_type in ORDERS.items():
        p12 = directory / name / f"{key_type}.p12"
        info = run(openssl, "pkcs12", "-info", "-in", str(p12), "-passin",
                   "pass:another pass 42", "-nodes")  # fmt: skip
        assert info.returncode == 0, info.stderr
        details = info.stdout + info.stderr
        assert "MAC: sha256" in details
        assert "PBES2, PBKDF2, AES-256-CBC" in details and "Shrouded Keybag" in details
        certificates = x509.load_pem_x509_certificates(info.stdout.encode())
        leaf = (directory / name / f"{key_type}.crt.pem").read_bytes()
        chain = (directory / name / f"{key_type}.chain.pem").read_bytes()
        assert len(certificates) == 2
        assert {c.public_bytes(Encoding.PEM) for c in certificates} == {
            c.public_bytes(Encoding.PEM) for c in x509.load_pem_x509_certificates(leaf + chain)
        }
        key = re.search(r"-----BEGIN PRIVATE KEY-----.*?-----END PRIVATE KEY-----\n",
                        info.stdout, re.S)  # fmt: skip
        assert key is not None
        installed_key = (directory / name / f"{key_type}.key.pem").read_bytes()
        assert spki_of_pem_key(key.group(0).encode()) == spki_of_pem_key(installed_key)
        assert keytool_list(p12, "another pass 42").returncode == 0
        refused = run(openssl, "pkcs12", "-info", "-in", str(p12), "-passin", "pass:sslmate",
                      "-nodes")  # fmt: skip
        assert refused.returncode != 0


def test_an_empty_password_is_readable_by_openssl_but_java_lists_nothing(
    orders: Callable[[str], Path],
) -> None:
    """Why the default is not empty: the case docs/config.md warns about."""
    openssl = require_binary("openssl")
    directory = orders('default { p12_password = "" }\n')
    p12 = directory / "rsa.example.com" / "rsa.p12"
    info = run(openssl, "pkcs12", "-info", "-in", str(p12), "-passin", "pass:", "-nodes")
    assert info.returncode == 0 and "BEGIN PRIVATE KEY" in info.stdout, info.stderr
    listed = keytool_list(p12, "")
    assert "Your keystore contains 0 entries" in listed.stdout
