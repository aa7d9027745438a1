"""The sync config: the file ``certfleet init`` writes and ``certfleet sync`` reads.

HCL, for example::

    api_key     = "..."                                  # or CERTFLEET_API_KEY
    store       = "s3://my-bucket/certfleet"
    signing_key = "ed25519-private:..."
    cluster "webservers" {
      secret   = ["k2:...", "k1:..."]                    # all active; the first is the newest
      key_type = "ecdsa"
      order "legacy.example.com" { key_type = "rsa" }
    }

docs/config.md describes every option. The file holds the provider API key and the
publisher's signing key: neither appears in a repr or an error message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from certfleet.bundle import (
    ClusterSecret,
    SigningKey,
    validate_cluster_name,
    validate_order_name,
)
from certfleet.config.acme import (
    AcmeConfig,
    DnsProviderConfig,
    parse_acme,
    parse_dns_blocks,
    parse_provider,
    parse_resolvers,
)
from certfleet.config.cluster import check_label, cluster_secrets
from certfleet.config.errors import ConfigError, ConfigErrors, UnknownClusterError
from certfleet.config.hcl import load_hcl, read_config_text
from certfleet.config.section import Section
from certfleet.config.serve import API_KEY_BLOCK, ApiKeyEntry, api_key_entries
from certfleet.config.url import check_http_url, store_endpoint_option, store_option

DEFAULT_API_ENDPOINT = "https://sslmate.com/api/v3"
KEY_TYPES = ("rsa", "ecdsa")
STORE_SCHEMES = ("s3", "file")
MINUTE, HOUR, DAY = 60.0, 3600.0, 86400.0
MAX_HEAD_VALIDITY = 7 * DAY
MAX_FLEET_DURATION = 30 * DAY

# Top level (the default) and per cluster: how often the sync reads the cluster's acks
# ("0" turns the check off), and when a node behind the head counts as stale.
_FLEET_OPTIONS = ("fleet_check_interval", "fleet_stale_after")
_TOP_OPTIONS = (
    "api_key", "api_endpoint", "store", "store_endpoint", "signing_key",
    "previous_signing_key", "skew_margin",
    "head_validity", "gc_grace", "lease_duration", "issue_wait", *_FLEET_OPTIONS,
    "provider", "dns_resolvers",
)  # fmt: skip


@dataclass(frozen=True)
class OrderSyncConfig:
    """Per-order settings inside a cluster block; None means "as the cluster says"."""

    name: str
    key_type: str | None = None
    reuse_key: bool | None = None


@dataclass(frozen=True)
class ClusterSyncConfig:
    """One ``cluster "NAME" { ... }`` block of the sync config."""

    name: str
    secrets: tuple[ClusterSecret, ...]
    key_type: str = "rsa"
    renew_days: int | None = None
    reuse_key: bool = False
    orders: tuple[OrderSyncConfig, ...] = ()
    # None: as the top level says
    fleet_check_interval: float | None = None
    fleet_stale_after: float | None = None
    provider: str | None = None

    @property
    def newest_secret(self) -> ClusterSecret:
        """The first secret listed: the one a rotation has just added."""
        return self.secrets[0]

    def order(self, order_name: str) -> OrderSyncConfig | None:
        """The ``order`` block for ``order_name``, if the config has one."""
        for order in self.orders:
            if order.name == order_name:
                return order
        return None

    def key_type_for(self, order_name: str) -> str:
        """ "rsa" or "ecdsa": the order's own setting, else the cluster's."""
        order = self.order(order_name)
        if order is not None and order.key_type is not None:
            return order.key_type
        return self.key_type

    def reuse_key_for(self, order_name: str) -> bool:
        """Whether a renewal keeps the current key: the order's setting, else the cluster's."""
        order = self.order(order_name)
        if order is not None and order.reuse_key is not None:
            return order.reuse_key
        return self.reuse_key


@dataclass(frozen=True)
class SyncConfig:
    """The whole sync config. Durations are in seconds."""

    store: str
    signing_key: SigningKey = field(repr=False)
    previous_signing_key: SigningKey | None = field(default=None, repr=False)
    api_key: str | None = field(default=None, repr=False)
    api_endpoint: str = DEFAULT_API_ENDPOINT
    store_endpoint: str | None = None
    skew_margin: float = HOUR
    head_validity: float = MAX_HEAD_VALIDITY
    gc_grace: float = 7 * DAY
    lease_duration: float = 15 * MINUTE
    issue_wait: float = 60.0
    fleet_check_interval: float = HOUR
    fleet_stale_after: float = HOUR
    clusters: tuple[ClusterSyncConfig, ...] = ()
    source: str = ""
    provider: str = "sslmate"
    acme: AcmeConfig | None = None
    dns: tuple[DnsProviderConfig, ...] = ()
    dns_resolvers: tuple[str, ...] = ()
    api_keys: tuple[ApiKeyEntry, ...] = ()  # the order API's keys (order_api_key blocks)

    def cluster(self, name: str) -> ClusterSyncConfig:
        """The cluster called ``name``; UnknownClusterError if the config has none."""
        for cluster in self.clusters:
            if cluster.name == name:
                return cluster
        raise UnknownClusterError(self.source, name, [c.name for c in self.clusters])

    @property
    def cluster_names(self) -> tuple[str, ...]:
        return tuple(cluster.name for cluster in self.clusters)

    def provider_for(self, cluster: str) -> str:
        """ "sslmate" or "acme": the cluster's own choice, else the top level's."""
        for block in self.clusters:
            if block.name == cluster and block.provider is not None:
                return block.provider
        return self.provider


def load_sync_config(path: str | Path) -> SyncConfig:
    """Read and check the sync config at ``path``; ConfigError (or ConfigErrors) if bad."""
    return parse_sync_config(read_config_text(path), str(path))


def parse_sync_config(text: str, source: str) -> SyncConfig:
    """Check the sync config ``text`` (read from ``source``); no disk, no network."""
    root = load_hcl(text, source, repeatable=("dns",))  # dns "rfc2136" twice: two servers
    root.allow(_TOP_OPTIONS, ("cluster", "acme", "dns", API_KEY_BLOCK))
    api_key = root.optional_string("api_key", secret=True)
    if api_key is not None and not api_key.strip():
        root.error(
            "api_key", "is empty", valid="the key from your SSLMate account, or leave it out"
        )
    api_endpoint = root.parsed("api_endpoint", check_http_url, valid="https://HOST/PATH")
    store = store_option(root, STORE_SCHEMES)
    store_endpoint = store_endpoint_option(root, store)
    signing_keys = root.parsed(
        "signing_key", SigningKey.parse, valid='"ed25519-private:<base64url>"', secret=True
    )
    if not root.has("signing_key"):
        root.error(
            "signing_key", "is required", valid='"ed25519-private:..." (certfleet init makes one)'
        )
    previous_signing_keys = root.parsed(
        "previous_signing_key",
        SigningKey.parse,
        valid='"ed25519-private:<base64url>" (the signing key being replaced)',
        secret=True,
    )
    skew_margin = root.duration("skew_margin", HOUR, maximum=DAY)
    head_validity = root.duration(
        "head_validity", MAX_HEAD_VALIDITY, minimum=HOUR, maximum=MAX_HEAD_VALIDITY
    )
    gc_grace = root.duration("gc_grace", 7 * DAY, minimum=HOUR)
    lease_duration = root.duration("lease_duration", 15 * MINUTE, minimum=MINUTE, maximum=DAY)
    issue_wait = root.duration("issue_wait", 60.0, maximum=15 * MINUTE)
    fleet_check_interval = root.duration("fleet_check_interval", HOUR, maximum=MAX_FLEET_DURATION)
    fleet_stale_after = root.duration("fleet_stale_after", HOUR, maximum=MAX_FLEET_DURATION)
    clusters = tuple(_cluster(label, section) for label, _, section in root.blocks("cluster"))
    provider = parse_provider(root, "sslmate") or "sslmate"
    acme = parse_acme(root)
    if acme is None and "acme" in {provider, *(c.provider for c in clusters)}:
        root.error(
            "provider",
            '"acme" needs an acme { } block',
            valid="certfleet init --provider acme writes one",
        )
    dns = parse_dns_blocks(root)
    dns_resolvers = parse_resolvers(root)
    api_keys = api_key_entries(root)
    root.finish()
    if not signing_keys:  # unreachable after finish(); keeps the types honest
        raise ConfigErrors([ConfigError(source, None, "signing_key", "is required")])
    return SyncConfig(
        store=store,
        signing_key=signing_keys[0],
        previous_signing_key=previous_signing_keys[0] if previous_signing_keys else None,
        api_key=api_key,
        api_endpoint=api_endpoint[0] if api_endpoint else DEFAULT_API_ENDPOINT,
        store_endpoint=store_endpoint,
        skew_margin=skew_margin,
        head_validity=head_validity,
        gc_grace=gc_grace,
        lease_duration=lease_duration,
        issue_wait=issue_wait,
        fleet_check_interval=fleet_check_interval,
        fleet_stale_after=fleet_stale_after,
        clusters=clusters,
        source=source,
        provider=provider,
        acme=acme,
        dns=dns,
        dns_resolvers=dns_resolvers,
        api_keys=api_keys,
    )


def _cluster(label: str, section: Section) -> ClusterSyncConfig:
    section.allow(
        ("secret", "key_type", "renew_days", "reuse_key", "provider", *_FLEET_OPTIONS), ("order",)
    )
    name = check_label(section, validate_cluster_name, label)
    secrets = cluster_secrets(section)
    orders = tuple(_order(order_label, sub) for order_label, _, sub in section.blocks("order"))
    return ClusterSyncConfig(
        name=name,
        secrets=secrets,
        key_type=section.choice("key_type", KEY_TYPES, "rsa"),
        renew_days=section.optional_integer("renew_days", minimum=1, maximum=365),
        reuse_key=section.boolean("reuse_key", False),
        orders=orders,
        fleet_check_interval=section.optional_duration(
            "fleet_check_interval", maximum=MAX_FLEET_DURATION
        ),
        fleet_stale_after=section.optional_duration(
            "fleet_stale_after", maximum=MAX_FLEET_DURATION
        ),
        provider=parse_provider(section, None),
    )


def _order(label: str, section: Section) -> OrderSyncConfig:
    section.allow(("key_type", "reuse_key"))
    return OrderSyncConfig(
        name=check_label(section, validate_order_name, label),
        key_type=section.optional_choice("key_type", KEY_TYPES),
        reuse_key=section.optional_boolean("reuse_key"),
    )
