"""Is the local server serving the certificate just installed? A TLS handshake tells.

After ``on_update`` reloaded the server, the agent connects to each ``probe`` address of a
switched order, sends the order's name as SNI (:func:`server_name`), and compares the
leaf certificate the server presents with the one it installed, by the SHA-256 of its DER.
The handshake does not verify the chain or the name: the address is the node's own server,
and nothing but that comparison is taken from the answer.

Reloads are asynchronous (nginx's old workers keep serving the old certificate for a
moment), so :func:`probe` tries again, with a short backoff, until it sees the new leaf or
its time is spent. Every socket operation has a short timeout and no attempt starts after
the deadline. Clock and sleep are parameters, so tests drive time.
"""

from __future__ import annotations

import hashlib
import logging
import socket
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Callable, Protocol

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from certfleet.config.address import HostPort

log = logging.getLogger(__name__)

MATCHED = "matched"
OTHER_CERTIFICATE = "other certificate"
UNREACHABLE = "unreachable"  # refused, timed out, or no TLS handshake

# A wildcard-only order is probed as this host under the wildcard's domain.
WILDCARD_LABEL = "certfleet-probe"
ATTEMPT_TIMEOUT = 2.0  # seconds, for each connect and each read of the handshake
_FIRST_BACKOFF = 0.1
_MAX_BACKOFF = 1.0


@dataclass(frozen=True)
class ProbeResult:
    """What the last attempt of one probe saw.

    ``served_serial`` (lowercase hex) is set when a handshake completed; ``reason`` says why
    the last attempt did not complete one."""

    address: str
    server_name: str | None
    outcome: str
    attempts: int
    seconds: float
    served_serial: str | None = None
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome == MATCHED

    def describe(self) -> str:
        sent = f" (SNI {self.server_name})" if self.server_name else " (no SNI)"
        where = f"{self.address}{sent}"
        if self.outcome == MATCHED:
            return f"{where} serves the new certificate (serial {self.served_serial})"
        tried = f"{self.attempts} attempts in {self.seconds:.1f} s"
        if self.outcome == OTHER_CERTIFICATE:
            return (
                f"{where} still serves another certificate (serial {self.served_serial}) "
                f"after {tried}"
            )
        return f"{where}: {self.reason} ({tried})"


class Prober(Protocol):
    """The seam the agent probes through (:func:`probe`, or a stand-in in tests)."""

    def __call__(
        self, address: HostPort, name: str | None, expected: bytes, timeout: float
    ) -> ProbeResult: ...


def leaf_fingerprint(certificate_pem: bytes) -> bytes:
    """SHA-256 of the DER of the first certificate in ``certificate_pem``."""
    leaf = x509.load_pem_x509_certificate(certificate_pem)
    return hashlib.sha256(leaf.public_bytes(Encoding.DER)).digest()


def server_name(
    order_name: str, dns_names: Sequence[str], override: str | None = None
) -> str | None:
    """The SNI a probe sends for an order: ``override`` (``probe_sni``) if set, else the
    order's name when it is one of its DNS names (by default an order is named after the
    first DNS name as ordered; the sync stores the names sorted, so their order is not the
    one the user gave), else the first DNS name that is not a wildcard; a wildcard name is
    sent with ``*`` written ``certfleet-probe``; None (no SNI) for an order without names."""
    if override:
        return override
    lowered = order_name.lower()
    if lowered in dns_names:
        chosen = lowered
    else:
        plain = [name for name in dns_names if not name.startswith("*.")]
        chosen = plain[0] if plain else (dns_names[0] if dns_names else "")
    if chosen.startswith("*."):
        return WILDCARD_LABEL + chosen[1:]
    return chosen or None


def probe(
    address: HostPort,
    name: str | None,
    expected: bytes,
    timeout: float,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    attempt_timeout: float = ATTEMPT_TIMEOUT,
) -> ProbeResult:
    """Handshake with ``address`` (SNI ``name``) until it serves the leaf whose SHA-256
    fingerprint is ``expected``, or ``timeout`` seconds have passed; the last attempt's
    result."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    start = clock()
    deadline = start + timeout
    backoff = _FIRST_BACKOFF
    attempts = 0
    while True:
        attempts += 1
        limit = max(0.05, min(attempt_timeout, deadline - clock()))
        served, reason = _attempt(context, address, name, limit)
        if served is not None and hashlib.sha256(served).digest() == expected:
            return ProbeResult(
                str(address), name, MATCHED, attempts, clock() - start, _serial(served)
            )
        now = clock()
        if now + backoff > deadline:
            outcome = UNREACHABLE if served is None else OTHER_CERTIFICATE
            serial = None if served is None else _serial(served)
            return ProbeResult(str(address), name, outcome, attempts, now - start, serial, reason)
        log.debug("probe %s attempt %d: %s", address, attempts, reason or "another certificate")
        sleep(backoff)
        backoff = min(backoff * 2, _MAX_BACKOFF)


def _attempt(
    context: ssl.SSLContext, address: HostPort, name: str | None, limit: float
) -> tuple[bytes | None, str]:
    """One handshake: (the served leaf's DER, "") or (None, why there is none)."""
    try:
        with socket.create_connection((address.host, address.port), timeout=limit) as raw:
            with context.wrap_socket(raw, server_hostname=name) as tls:
                leaf = tls.getpeercert(binary_form=True)
    except ConnectionRefusedError:
        return None, "connection refused"
    except socket.timeout:
        return None, f"timed out after {limit:g} s"
    except ssl.SSLError as err:
        return None, f"TLS handshake failed: {err.reason or err}"
    except OSError as err:
        return None, f"cannot connect: {err.strerror or err}"
    if not leaf:
        return None, "the server sent no certificate"
    return leaf, ""


def _serial(der: bytes) -> str:
    try:
        return format(x509.load_der_x509_certificate(der).serial_number, "x")
    except ValueError:
        return "unreadable"
