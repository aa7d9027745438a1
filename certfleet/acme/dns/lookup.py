"""Following a CNAME at ``_acme-challenge.<name>``: where a customer delegated the record.

The lookups go to the sync config's ``dns_resolvers`` ("IP:port" strings), or to the
system's resolvers when there are none. NXDOMAIN, or an answer without a CNAME, means no
delegation; a chain is followed up to :data:`MAX_CNAMES` links. Every lookup is bounded
in time (:data:`LOOKUP_TIMEOUT` per server, :data:`LOOKUP_LIFETIME` in all).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

import dns.exception
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver

from certfleet.acme.dns.block import normalize
from certfleet.acme.dns.errors import DnsError

MAX_CNAMES = 8
LOOKUP_TIMEOUT = 2.0
LOOKUP_LIFETIME = 6.0
DEFAULT_PORT = 53


def parse_address(text: str, default_port: int = DEFAULT_PORT) -> tuple[str, int]:
    """``"IP:port"``, ``"IP"``, ``"[IPv6]:port"`` or a bare IPv6 as (ip, port).

    Raises ValueError on anything else (a host name is not an address here).
    """
    text = text.strip()
    host, port = text, default_port
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise ValueError(f"{text!r}: missing ']'")
        host, rest = text[1:close], text[close + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"{text!r}: expected ':port' after ']'")
            port = _port(text, rest[1:])
    elif text.count(":") == 1:
        host, port_text = text.split(":")
        port = _port(text, port_text)
    ipaddress.ip_address(host)  # ValueError when not an address
    return host, port


def _port(text: str, port_text: str) -> int:
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"{text!r}: the port must be 1-65535")
    return int(port_text)


def make_resolver(resolvers: Sequence[str]) -> dns.resolver.Resolver:
    """A resolver asking ``resolvers`` ("IP:port"), or the system's when empty."""
    resolver = dns.resolver.Resolver(configure=not resolvers)
    if resolvers:
        servers: list[str | dns.nameserver.Nameserver] = []
        for entry in resolvers:
            host, port = parse_address(entry)
            servers.append(dns.nameserver.Do53Nameserver(host, port))
        resolver.nameservers = servers
    resolver.timeout = LOOKUP_TIMEOUT
    resolver.lifetime = LOOKUP_LIFETIME
    resolver.cache = None
    return resolver


def delegated_name(record: str, resolver: dns.resolver.Resolver) -> str:
    """``record`` after following the CNAMEs at it (itself when there are none).

    Raises :class:`DnsError` naming the record when a lookup fails, times out, or the
    chain loops or is longer than :data:`MAX_CNAMES`.
    """
    current = normalize(record)
    seen = [current]
    for _ in range(MAX_CNAMES + 1):
        target = _cname(current, record, resolver)
        if target is None:
            return current
        if target in seen:
            raise DnsError(record, "CNAME lookup", f"the CNAME chain loops: {' -> '.join(seen)}")
        seen.append(target)
        current = target
    raise DnsError(record, "CNAME lookup", f"more than {MAX_CNAMES} CNAMEs: {' -> '.join(seen)}")


def _cname(name: str, record: str, resolver: dns.resolver.Resolver) -> str | None:
    try:
        answer = resolver.resolve(
            dns.name.from_text(name), dns.rdatatype.CNAME, search=False, raise_on_no_answer=False
        )
    except dns.resolver.NXDOMAIN:
        return None
    except dns.exception.Timeout as err:
        raise DnsError(record, "CNAME lookup", f"no answer for {name} in time") from err
    except dns.resolver.NoNameservers as err:
        raise DnsError(record, "CNAME lookup", f"no resolver answered for {name}") from err
    except dns.exception.DNSException as err:
        raise DnsError(record, "CNAME lookup", f"{name}: {type(err).__name__}") from err
    if answer.rrset is None:
        return None
    for rdata in answer.rrset:
        return normalize(rdata.to_text())
    return None
