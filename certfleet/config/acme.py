"""The sync config's ACME settings: ``provider``, the ``acme {}`` block, ``dns "KIND" {}``
blocks and ``dns_resolvers``. docs/config.md and docs/acme.md describe them.

Parsing only, no network: the account key is checked to be a usable key, URLs to be
URLs. The account key, the EAB HMAC key and TSIG secrets never appear in a repr or a
message.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field

from certfleet.config.accountkey import AccountKeyError, load_account_key
from certfleet.config.address import parse_host_port
from certfleet.config.section import Section
from certfleet.config.url import check_http_url

PROVIDERS = ("sslmate", "acme")
DNS_KINDS = ("rfc2136", "route53")
TSIG_ALGORITHMS = ("hmac-sha256", "hmac-sha384", "hmac-sha512", "hmac-sha224", "hmac-sha1")
ACME_OPTIONS = (
    "directory", "email", "account_key", "ca_bundle", "eab_kid", "eab_hmac_key", "profile",
)  # fmt: skip
_RFC2136_OPTIONS = ("zones", "server", "tsig_key_name", "tsig_algorithm", "tsig_secret")
_ROUTE53_OPTIONS = ("zones", "hosted_zone_id")


@dataclass(frozen=True)
class AcmeConfig:
    """The ``acme {}`` block."""

    directory: str
    email: str | None
    account_key: str = field(repr=False)
    ca_bundle: str | None = None
    eab_kid: str | None = None
    eab_hmac_key: str | None = field(default=None, repr=False)
    profile: str | None = None


@dataclass(frozen=True)
class DnsProviderConfig:
    """One ``dns "KIND" {}`` block; ``zones`` lowercase without a trailing dot, () for the
    default block."""

    kind: str
    zones: tuple[str, ...]
    server: str | None = None
    tsig_key_name: str | None = None
    tsig_algorithm: str | None = None
    tsig_secret: str | None = field(default=None, repr=False)
    hosted_zone_id: str | None = None


def parse_provider(section: Section, default: str | None) -> str | None:
    """The ``provider`` option of the top level (default "sslmate") or of a cluster (None)."""
    value = section.optional_choice("provider", PROVIDERS)
    return default if value is None else value


def parse_acme(root: Section) -> AcmeConfig | None:
    """The ``acme {}`` block, or None when the config has none."""
    block = root.block("acme")
    if block is None:
        return None
    block.allow(ACME_OPTIONS)
    directory = block.required_string("directory", "the CA's directory URL, https://...")
    if directory:
        parsed = block.parsed("directory", check_http_url, valid="https://HOST/PATH")
        directory = parsed[0] if parsed else ""
    email = block.optional_string("email")
    if email is not None and ("@" not in email or any(c.isspace() for c in email)):
        block.error("email", "is not an e-mail address", valid="ops@example.com")
    account_key = block.required_string("account_key", "the key certfleet init writes", secret=True)
    if account_key:
        try:
            load_account_key(account_key)
        except AccountKeyError as err:
            block.error(
                "account_key", str(err), valid="a PEM or JWK private key (certfleet init makes one)"
            )
    eab_kid = block.optional_string("eab_kid")
    eab_hmac_key = block.optional_string("eab_hmac_key", secret=True)
    if (eab_kid is None) != (eab_hmac_key is None):
        missing = "eab_hmac_key" if eab_hmac_key is None else "eab_kid"
        block.error(missing, "is required with the other eab_ option", valid="both or neither")
    if eab_hmac_key is not None and not _is_b64url(eab_hmac_key):
        block.error("eab_hmac_key", "is not base64url", valid="the HMAC key the CA gave you")
    return AcmeConfig(
        directory=directory,
        email=email,
        account_key=account_key,
        ca_bundle=block.optional_string("ca_bundle"),
        eab_kid=eab_kid,
        eab_hmac_key=eab_hmac_key,
        profile=block.optional_string("profile"),
    )


def parse_dns_blocks(root: Section) -> tuple[DnsProviderConfig, ...]:
    """Every ``dns "KIND" {}`` block, in file order; at most one without ``zones``."""
    blocks: list[DnsProviderConfig] = []
    for kind, _, section in root.blocks("dns"):
        if kind not in DNS_KINDS:
            section.block_error(f"unknown DNS provider {kind!r}", valid=", ".join(DNS_KINDS))
            continue
        blocks.append(_rfc2136(section) if kind == "rfc2136" else _route53(section))
    defaults = [block for block in blocks if not block.zones]
    if len(defaults) > 1:
        root.error("dns", "more than one block has no zones", valid="one default block at most")
    zones = [zone for block in blocks for zone in block.zones]
    for zone in sorted({zone for zone in zones if zones.count(zone) > 1}):
        root.error(
            "dns", f"zone {zone!r} is in more than one block", valid="each zone in one block"
        )
    return tuple(blocks)


def parse_resolvers(root: Section) -> tuple[str, ...]:
    """``dns_resolvers``: "IP:port" strings (empty: the system's resolvers)."""
    parsed = root.parsed("dns_resolvers", _resolver, valid='["127.0.0.1:53", ...]', many=True)
    return tuple(parsed)


def _resolver(text: str) -> str:
    address = parse_host_port(text)
    return str(address)


def _zones(section: Section) -> tuple[str, ...]:
    zones: list[str] = []
    for zone in section.strings("zones"):
        name = zone.strip().lower().rstrip(".")
        labels = name.split(".")
        if not name or any(not label or len(label) > 63 for label in labels):
            section.error("zones", f"{zone!r} is not a DNS zone name", valid='["example.com"]')
            continue
        zones.append(name)
    return tuple(zones)


def _rfc2136(section: Section) -> DnsProviderConfig:
    section.allow(_RFC2136_OPTIONS)
    server = section.required_string("server", '"HOST:PORT" of the primary name server')
    if server:
        parsed = section.parsed("server", lambda t: str(parse_host_port(t)), valid='"HOST:PORT"')
        server = parsed[0] if parsed else ""
    name = section.required_string("tsig_key_name", '"acme-update."')
    secret = section.required_string("tsig_secret", "the key's base64 secret", secret=True)
    if secret and not _is_b64(secret):
        section.error("tsig_secret", "is not base64", valid="the secret of tsig-keygen's output")
    return DnsProviderConfig(
        kind="rfc2136",
        zones=_zones(section),
        server=server,
        tsig_key_name=name,
        tsig_algorithm=section.choice("tsig_algorithm", TSIG_ALGORITHMS, "hmac-sha256"),
        tsig_secret=secret,
    )


def _route53(section: Section) -> DnsProviderConfig:
    section.allow(_ROUTE53_OPTIONS)
    return DnsProviderConfig(
        kind="route53",
        zones=_zones(section),
        hosted_zone_id=section.optional_string("hosted_zone_id"),
    )


def _is_b64(text: str) -> bool:
    try:
        base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return False
    return bool(text)


def _is_b64url(text: str) -> bool:
    try:
        base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return False
    return bool(text) and all(c.isalnum() or c in "-_=" for c in text)
