"""``HOST:PORT`` addresses and server names a config gives the agent's TLS probe, without I/O.

A host is an IPv4 address, an IPv6 address in brackets (``[::1]:443``) or a hostname; a
name is never resolved here, so ``certfleet-agent --check-config`` stays off the network.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from certfleet.bundle import UnsafeNameError, validate_dns_name

_PORT = re.compile(r"[0-9]{1,5}")
_DOTTED = re.compile(r"[0-9.]+")


@dataclass(frozen=True)
class HostPort:
    """Where a TCP server listens; ``str()`` gives it back in config form."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_host_port(text: str) -> HostPort:
    """``text`` as HOST:PORT (``127.0.0.1:443``, ``[::1]:443``, ``localhost:8443``).

    Raises ValueError naming what is wrong.
    """
    if text.startswith("["):
        inside, bracket, rest = text[1:].partition("]")
        if not bracket or not rest.startswith(":"):
            raise ValueError("an IPv6 address is written [ADDRESS]:PORT")
        host, port = _ipv6(inside), rest[1:]
    else:
        host, colon, port = text.rpartition(":")
        if not colon or not host:
            raise ValueError("needs a host and a port")
        if ":" in host:
            raise ValueError("an IPv6 address is written in brackets, like [::1]:443")
        host = _host(host)
    if not _PORT.fullmatch(port) or not 1 <= int(port) <= 65535:
        raise ValueError(f"port {port!r} is not a number from 1 to 65535")
    return HostPort(host, int(port))


def check_server_name(text: str) -> str:
    """``text`` in lowercase if it can be sent as TLS SNI: a hostname, not an address or a
    wildcard; ValueError if not."""
    if text.startswith("*."):
        raise ValueError("is a wildcard: name one host it covers")
    if _DOTTED.fullmatch(text) or ":" in text:
        raise ValueError("is an address: SNI carries host names only")
    return _name(text)


def _ipv6(text: str) -> str:
    try:
        return str(ipaddress.IPv6Address(text))
    except ValueError as err:
        raise ValueError(f"{text!r} is not an IPv6 address") from err


def _host(text: str) -> str:
    if _DOTTED.fullmatch(text):
        try:
            return str(ipaddress.IPv4Address(text))
        except ValueError as err:
            raise ValueError(f"{text!r} is not an IPv4 address") from err
    if text.startswith("*."):
        raise ValueError(f"host {text!r} is a wildcard")
    return _name(text)


def _name(text: str) -> str:
    try:
        return validate_dns_name(text)
    except UnsafeNameError as err:
        raise ValueError(f"host name {text!r} {err.reason}") from err
