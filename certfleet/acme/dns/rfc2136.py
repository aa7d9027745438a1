"""DNS-01 records by RFC 2136 dynamic update, signed with TSIG (bind, Knot, PowerDNS...).

Each value is *added* to the TXT set (an apex and its wildcard share one name, and both
values must be served), confirmed by asking the block's ``server`` itself, and removed by
deleting exactly that value. Updates go over TCP, checks over UDP (TCP when truncated);
every exchange is bounded by :data:`QUERY_TIMEOUT`. The TSIG secret never reaches a log
line or a message.
"""

from __future__ import annotations

import binascii
import socket
from collections.abc import Callable

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.tsig
import dns.update

from certfleet.acme.dns.backend import TTL, Backend
from certfleet.acme.dns.block import DnsProviderConfig, normalize
from certfleet.acme.dns.errors import DnsError
from certfleet.acme.dns.lookup import parse_address

QUERY_TIMEOUT = 3.0
DEFAULT_ALGORITHM = "hmac-sha256"
_HINTS = {
    "NOTAUTH": "the server refused the TSIG key or is not authoritative for the zone "
    "(check tsig_key_name, tsig_algorithm, tsig_secret and zones)",
    "REFUSED": "the server's update policy refused it (it must grant this key TXT updates "
    "in the zone)",
    "NOTZONE": "the record is not in the zone named in the update",
}


def txt_rdata(value: str) -> dns.rdata.Rdata:
    """The TXT rdata holding ``value`` (base64url text needs no escaping)."""
    return dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.TXT, f'"{value}"')


def txt_values(message: dns.message.Message, name: dns.name.Name) -> set[str]:
    """The TXT strings at ``name`` in the answer section of ``message``."""
    found: set[str] = set()
    for rrset in message.answer:
        if rrset.name == name and rrset.rdtype == dns.rdatatype.TXT:
            for rdata in rrset:
                found.add(b"".join(rdata.strings).decode("ascii", "replace"))
    return found


class Rfc2136(Backend):
    """A ``dns "rfc2136"`` block: TSIG-signed updates sent to, and checked at, ``server``."""

    poll_interval = 0.5

    def __init__(
        self,
        block: DnsProviderConfig,
        clock: Callable[[], float],
        sleep: Callable[[float], None],
    ) -> None:
        super().__init__(block, clock, sleep)
        self._host, self._port = self._address()
        self._key = self._tsig_key()
        self._last_problem = ""

    def _address(self) -> tuple[str, int]:
        server = self.block.server
        if not server:
            raise DnsError("", self.label, 'no "server" ("host:port" of the primary)')
        try:
            return parse_address(server)
        except ValueError:
            pass
        host, _, port_text = server.rpartition(":")
        if not host or not port_text.isdigit():
            host, port_text = server, "53"
        try:
            infos = socket.getaddrinfo(host, int(port_text), type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as err:
            raise DnsError("", self.label, f"server {server!r} cannot be resolved") from err
        return str(infos[0][4][0]), int(port_text)

    def _tsig_key(self) -> dns.tsig.Key | None:
        name, secret = self.block.tsig_key_name, self.block.tsig_secret
        if name is None and secret is None:
            return None
        if name is None or secret is None:
            raise DnsError("", self.label, "tsig_key_name and tsig_secret go together")
        try:
            return dns.tsig.Key(name, secret, self.block.tsig_algorithm or DEFAULT_ALGORITHM)
        except (binascii.Error, ValueError, dns.exception.DNSException) as err:
            raise DnsError(
                "", self.label, "tsig_secret is not base64 or tsig_algorithm is unknown"
            ) from err

    @property
    def _server(self) -> str:
        return f"server {self._host}:{self._port}"

    def _exchange(
        self, record: str, message: dns.message.Message, *, tcp: bool
    ) -> dns.message.Message:
        what = "update" if isinstance(message, dns.update.UpdateMessage) else "query"
        try:
            if tcp:
                return dns.query.tcp(message, self._host, timeout=QUERY_TIMEOUT, port=self._port)
            response, _used_tcp = dns.query.udp_with_fallback(
                message, self._host, timeout=QUERY_TIMEOUT, port=self._port
            )
            return response
        except dns.exception.Timeout as err:
            raise DnsError(
                record, self.label, f"no answer to the {what} from {self._server} in time"
            ) from err
        except dns.tsig.PeerError as err:
            raise DnsError(
                record, self.label, f"{self._server} rejected the TSIG key ({type(err).__name__})"
            ) from err
        except (OSError, EOFError, dns.exception.DNSException) as err:
            raise DnsError(
                record, self.label, f"{what} to {self._server} failed: {type(err).__name__}"
            ) from err

    def _update(
        self, zone: str, record: str, build: Callable[[dns.update.UpdateMessage], None]
    ) -> None:
        update = dns.update.UpdateMessage(zone, keyring=self._key)
        build(update)
        response = self._exchange(record, update, tcp=True)
        rcode = dns.rcode.to_text(response.rcode())
        if rcode != "NOERROR":
            hint = _HINTS.get(rcode, "")
            reason = f"{self._server} answered {rcode} to the update of zone {zone}"
            raise DnsError(record, self.label, reason + (f": {hint}" if hint else ""))

    def find_zone(self, record: str) -> str:
        """The zone of ``record`` by the server's own SOA (answer or authority section)."""
        query = dns.message.make_query(record, dns.rdatatype.SOA)
        query.flags &= ~dns.flags.RD
        response = self._exchange(record, query, tcp=False)
        for section in (response.answer, response.authority):
            for rrset in section:
                if rrset.rdtype == dns.rdatatype.SOA:
                    return normalize(rrset.name.to_text())
        rcode = dns.rcode.to_text(response.rcode())
        raise DnsError(
            record, self.label, f"{self._server} names no zone for it (answered {rcode}, no SOA)"
        )

    def publish(self, zone: str, record: str, value: str, values: tuple[str, ...]) -> None:
        name = dns.name.from_text(record)
        self._update(zone, record, lambda update: update.add(name, TTL, txt_rdata(value)))

    def served(self, zone: str, record: str, values: tuple[str, ...]) -> bool:
        name = dns.name.from_text(record)
        query = dns.message.make_query(name, dns.rdatatype.TXT)
        query.flags &= ~dns.flags.RD
        try:
            response = self._exchange(record, query, tcp=False)
        except DnsError as err:
            self._last_problem = err.reason
            return False
        missing = set(values) - txt_values(response, name)
        if missing:
            self._last_problem = (
                f"{self._server} served {len(values) - len(missing)} of {len(values)} values"
            )
        return not missing

    def withdraw(self, zone: str, record: str, values: tuple[str, ...]) -> None:
        if not values:
            return  # an update deleting no rdata would delete every record at the name
        name = dns.name.from_text(record)
        rdatas = [txt_rdata(value) for value in values]
        self._update(zone, record, lambda update: update.delete(name, *rdatas))

    def not_served_reason(self) -> str:
        return f"the TXT values were not served before the deadline ({self._last_problem})"
