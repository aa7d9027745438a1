"""Counting what the reliability suite throws at certfleet, and what it lost.

Fixture ``faults`` (a :class:`Ledger` shared by the whole session): tests call
``faults.injected(n)`` for every fault they inject (a store outage, a SIGKILL, a tampered
object, a full disk...), ``faults.tried(n)`` for every hostile or malformed input they
feed in, and ``faults.lost(what)`` when they find a lost key, order or publication (the
test then fails). At the end of the session one line sums it up::

    faults injected: N, bad inputs tried: M, losses: 0

It also holds the checks the reliability tests share: ``agent_config_text`` (an agent
config for a store and clusters) and ``installed_orders`` (what a state directory serves,
every key checked against its certificate).

Registered in ``tests/conftest.py`` (``pytest_plugins``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_private_key,
)

from certfleet.bundle import ClusterSecret, PublicKey


@dataclass
class Ledger:
    """The session's counts; ``losses`` names each loss found."""

    faults: int = 0
    bad_inputs: int = 0
    losses: list[str] = field(default_factory=list)
    used: bool = False

    def injected(self, count: int = 1) -> None:
        self.used = True
        self.faults += count

    def tried(self, count: int = 1) -> None:
        self.used = True
        self.bad_inputs += count

    def lost(self, what: str) -> None:
        """Record a loss and fail the calling test."""
        self.used = True
        self.losses.append(what)
        pytest.fail(f"LOSS: {what}")

    def line(self) -> str:
        return (
            f"faults injected: {self.faults}, bad inputs tried: {self.bad_inputs}, "
            f"losses: {len(self.losses)}"
        )


LEDGER = Ledger()


@pytest.fixture
def faults() -> Ledger:
    """The session's :class:`Ledger`."""
    return LEDGER


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not LEDGER.used:
        return
    terminalreporter.write_sep("-", "reliability suite")
    terminalreporter.write_line(LEDGER.line())
    for loss in LEDGER.losses:
        terminalreporter.write_line(f"  lost: {loss}")


# -- what the reliability tests share ------------------------------------------------------


def cluster_stanza(
    cluster: str, secrets: Sequence[ClusterSecret], publishers: Sequence[PublicKey]
) -> str:
    secret_list = ", ".join(f'"{secret.export()}"' for secret in secrets)
    publisher_list = ", ".join(f'"{key.export()}"' for key in publishers)
    return (
        f'cluster "{cluster}" {{\n  secret = [{secret_list}]\n'
        f"  publisher = [{publisher_list}]\n}}\n"
    )


def agent_config_text(
    store_url: str, state_dir: Path, stanzas: str, *, endpoint: str = "", extra: str = ""
) -> str:
    endpoint_line = f'store_endpoint = "{endpoint}"\n' if endpoint else ""
    return (
        f'store = "{store_url}"\n{endpoint_line}state_dir = "{state_dir}"\n'
        f'hook_timeout = "10s"\n{stanzas}{extra}'
    )


@dataclass(frozen=True)
class Served:
    """One installed order: its serial, SANs, and the key file's bytes."""

    serial: str
    dns_names: frozenset[str]
    key_pem: bytes


def _spki(obj: object) -> bytes:
    return obj.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)  # type: ignore[attr-defined]


def installed_orders(state_dir: Path) -> dict[str, Served]:
    """Every order served under ``state_dir/orders``, by safe name.

    Fails the test when a key does not match its certificate, or a set is incomplete:
    that would be a wrong install.
    """
    served: dict[str, Served] = {}
    orders = state_dir / "orders"
    if not orders.is_dir():
        return served
    for entry in sorted(orders.iterdir()):
        found = [t for t in ("rsa", "ecdsa") if (entry / f"{t}.crt.pem").exists()]
        assert len(found) == 1, f"{entry}: no (or two) certificate sets: {os.listdir(entry)}"
        key_pem = (entry / f"{found[0]}.key.pem").read_bytes()
        leaf = x509.load_pem_x509_certificate((entry / f"{found[0]}.crt.pem").read_bytes())
        assert _spki(load_pem_private_key(key_pem, None)) == _spki(leaf), (
            f"{entry}: the key does not match the certificate"
        )
        sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        served[entry.name] = Served(
            format(leaf.serial_number, "x"),
            frozenset(sans.get_values_for_type(x509.DNSName)),
            key_pem,
        )
    return served
