"""The order API's config (``certfleet serve``, the Lambda's HTTP function).

``certfleet serve --config F`` takes either the sync config itself (the registry secret
is derived from its ``signing_key``, the thumbprint from its ACME account key, the
clusters are those in ACME mode), or a config made for the HTTP side alone, which holds
nothing that can sign, decrypt a private key or order a certificate::

    store           = "s3://my-bucket/certfleet"
    store_endpoint  = "http://127.0.0.1:8333"          # optional
    registry_secret = "sync-registry:<base64url>"      # certfleet http-config prints it
    acme_thumbprint = "<base64url>"                    # optional: the challenge route
    clusters        = ["webservers"]                   # the clusters whose orders it serves
    order_api_key "deploy-bot" {                       # certfleet api-keys add
      id       = "k1a2b3c4d5"
      sha256   = "<64 hex digits: SHA-256 of the whole key>"
      clusters = ["webservers"]                        # optional; none = every cluster
    }

``order_api_key`` blocks are read from either form; docs/config.md describes them all.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from certfleet.bundle import ClusterSecret, UnsafeNameError, validate_cluster_name
from certfleet.config.cluster import check_label
from certfleet.config.errors import ConfigError, ConfigErrors
from certfleet.config.hcl import load_hcl
from certfleet.config.section import Section
from certfleet.config.url import check_http_url, store_option

API_KEY_BLOCK = "order_api_key"
KEY_ID = re.compile(r"[a-z0-9]{4,32}")
KEY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_THUMBPRINT = re.compile(r"[A-Za-z0-9_-]{43}")
_STORE_SCHEMES = ("s3", "file")
_SERVE_OPTIONS = (
    "store", "store_endpoint", "registry_secret", "acme_thumbprint", "clusters",
)  # fmt: skip


@dataclass(frozen=True)
class ApiKeyEntry:
    """One API key of the order API: its name, public id, the SHA-256 (hex) of the whole
    key ``<id>_<secret>``, and the clusters it may touch (empty: all)."""

    name: str
    id: str
    sha256: str
    clusters: tuple[str, ...] = ()

    def allows(self, cluster: str) -> bool:
        return not self.clusters or cluster in self.clusters


@dataclass(frozen=True)
class ServeConfig:
    """What the order API needs: the store, the registry secret, the keys; no signing key."""

    store: str
    registry_secret: ClusterSecret = field(repr=False)
    clusters: tuple[str, ...] = ()
    store_endpoint: str | None = None
    acme_thumbprint: str | None = None
    api_keys: tuple[ApiKeyEntry, ...] = ()
    source: str = ""
    # from a sync config with previous_signing_key: they open the registry too (rotation)
    previous_registry_secrets: tuple[ClusterSecret, ...] = field(default=(), repr=False)


KEY_NAME_RULE = "is not 1-64 characters of A-Z a-z 0-9 . _ - starting with a letter or digit"


def validate_key_name(name: str) -> str:
    """``name`` if it can name an API key, else ``ValueError``."""
    if not isinstance(name, str) or not KEY_NAME.fullmatch(name):
        raise ValueError(f"API key name {name!r:.80} {KEY_NAME_RULE}")
    return name


def api_key_entries(root: Section) -> tuple[ApiKeyEntry, ...]:
    """The file's ``order_api_key "NAME" { id, sha256, clusters }`` blocks."""
    entries: list[ApiKeyEntry] = []
    for label, _, section in root.blocks(API_KEY_BLOCK):
        section.allow(("id", "sha256", "clusters"))
        check_label(section, _key_name, label)
        key_id = section.required_string("id", "4-32 characters of a-z 0-9")
        if key_id and not KEY_ID.fullmatch(key_id):
            section.error("id", "is not 4-32 characters of a-z 0-9", valid='"k1a2b3c4d5"')
        digest = section.required_string("sha256", "64 lowercase hex digits")
        if digest and not _SHA256.fullmatch(digest):
            section.error("sha256", "is not 64 lowercase hex digits", valid="a SHA-256 in hex")
        clusters = section.parsed(
            "clusters", validate_cluster_name, valid="a list of cluster names", many=True
        )
        if any(e.id == key_id for e in entries):
            section.error("id", "is used by another order_api_key", valid="a unique id")
        if any(e.name == label for e in entries):
            section.block_error("an order_api_key of this name comes earlier in the file")
        entries.append(ApiKeyEntry(label, key_id, digest, tuple(clusters)))
    return tuple(entries)


def is_sync_config(text: str, source: str) -> bool:
    """True when ``text`` is a sync config (it has ``signing_key``), not an HTTP-side one."""
    return load_hcl(text, source).has("signing_key")


def parse_serve_config(text: str, source: str) -> ServeConfig:
    """Check the HTTP-side config ``text``; no disk, no network."""
    root = load_hcl(text, source)
    root.allow(_SERVE_OPTIONS, (API_KEY_BLOCK,))
    store = store_option(root, _STORE_SCHEMES)
    endpoint = root.parsed("store_endpoint", check_http_url, valid="http(s)://HOST:PORT")
    secrets = root.parsed(
        "registry_secret",
        ClusterSecret.parse,
        valid='"sync-registry:<base64url>" (certfleet http-config prints it)',
        secret=True,
    )
    if not root.has("registry_secret"):
        root.error(
            "registry_secret",
            "is required",
            valid='"sync-registry:<base64url>" (certfleet http-config prints it)',
        )
    thumbprint = root.optional_string("acme_thumbprint")
    if thumbprint is not None and not _THUMBPRINT.fullmatch(thumbprint):
        root.error(
            "acme_thumbprint",
            "is not an RFC 7638 thumbprint (43 characters of base64url)",
            valid="what certfleet acme thumbprint prints",
        )
    clusters = root.parsed(
        "clusters", validate_cluster_name, valid="a list of cluster names", many=True
    )
    keys = api_key_entries(root)
    root.finish()
    if not secrets:  # unreachable after finish(); keeps the types honest
        raise ConfigErrors([ConfigError(source, None, "registry_secret", "is required")])
    return ServeConfig(
        store=store,
        registry_secret=secrets[0],
        clusters=tuple(clusters),
        store_endpoint=endpoint[0] if endpoint else None,
        acme_thumbprint=thumbprint,
        api_keys=keys,
        source=source,
    )


def _key_name(value: str) -> str:
    """:func:`validate_key_name` raising what ``check_label`` reports."""
    if not KEY_NAME.fullmatch(value):
        raise UnsafeNameError(f"API key name {value!r:.80}", KEY_NAME_RULE, value)
    return value
