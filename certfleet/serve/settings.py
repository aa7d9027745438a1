"""What ``certfleet serve`` and the Lambda's HTTP function run with, from one config file.

Either the sync config (the registry secret derived from ``signing_key``, the thumbprint
from the ACME account key, the clusters in ACME mode) or the HTTP-side config that
``certfleet http-config`` prints (``certfleet.config.serve``), which holds nothing that
can sign, decrypt a node's key or order a certificate.
"""

from __future__ import annotations

from pathlib import Path

from certfleet.config.accountkey import load_account_key, thumbprint
from certfleet.config.hcl import read_config_text
from certfleet.config.serve import ServeConfig, is_sync_config, parse_serve_config
from certfleet.config.sync import SyncConfig, parse_sync_config
from certfleet.registry import OrderRegistry
from certfleet.registry.mode import acme_clusters, previous_registry_secrets, registry_secret
from certfleet.serve.api import HttpApi
from certfleet.serve.ratelimit import RateLimiter
from certfleet.store import Store, open_store


def account_key(config: SyncConfig) -> str | None:
    """The ACME account key of the sync config's ``acme {}`` block, if it has one."""
    acme = getattr(config, "acme", None)
    key = getattr(acme, "account_key", None)
    return key if isinstance(key, str) and key else None


def serve_view(config: SyncConfig) -> ServeConfig:
    """The part of the sync config the order API needs (no signing key in it)."""
    key = account_key(config)
    return ServeConfig(
        store=config.store,
        registry_secret=registry_secret(config),
        previous_registry_secrets=previous_registry_secrets(config),
        clusters=acme_clusters(config),
        store_endpoint=config.store_endpoint,
        acme_thumbprint=None if key is None else thumbprint(load_account_key(key)),
        api_keys=config.api_keys,
        source=config.source,
    )


def parse_settings(text: str, source: str) -> ServeConfig:
    """The order API's settings from a sync config or an HTTP-side config's text."""
    if is_sync_config(text, source):
        return serve_view(parse_sync_config(text, source))
    return parse_serve_config(text, source)


def load_settings(path: str | Path) -> ServeConfig:
    return parse_settings(read_config_text(path), str(path))


def build_api(
    config: ServeConfig, *, store: Store | None = None, limiter: RateLimiter | None = None
) -> HttpApi:
    """The routes for ``config`` (the store opened here unless given)."""
    registry = None
    if config.clusters:
        opened = store or open_store(config.store, endpoint=config.store_endpoint)
        registry = OrderRegistry(
            opened,
            config.registry_secret,
            config.clusters,
            previous=config.previous_registry_secrets,
        )
    return HttpApi(
        registry=registry,
        keys=config.api_keys,
        thumbprint=config.acme_thumbprint,
        limiter=limiter,
    )


def http_config_text(config: ServeConfig) -> str:
    """The HTTP-side config for ``config``: what the order API needs and nothing more."""
    lines = [
        "# certfleet order API config (certfleet serve, the Lambda's HTTP function).",
        "# It holds the registry secret (it opens and seals the order registry): keep it 0600.",
        f'store           = "{config.store}"',
    ]
    if config.store_endpoint:
        lines.append(f'store_endpoint  = "{config.store_endpoint}"')
    lines.append(f'registry_secret = "{config.registry_secret.export()}"')
    if config.acme_thumbprint:
        lines.append(f'acme_thumbprint = "{config.acme_thumbprint}"')
    if config.clusters:
        lines.append("clusters        = [" + ", ".join(f'"{c}"' for c in config.clusters) + "]")
    else:
        lines.append("# clusters = [...]: no cluster is in ACME mode, so no orders are served")
    text = "\n".join(lines) + "\n"
    for entry in config.api_keys:
        text += "\n" + api_key_block(entry.name, entry.id, entry.sha256, entry.clusters)
    return text


def api_key_block(name: str, key_id: str, digest: str, clusters: tuple[str, ...]) -> str:
    """The ``order_api_key`` block of one key (only its hash; names already checked)."""
    lines = [
        f'order_api_key "{name}" {{',
        f'  id       = "{key_id}"',
        f'  sha256   = "{digest}"',
    ]
    if clusters:
        lines.append("  clusters = [" + ", ".join(f'"{c}"' for c in clusters) + "]")
    return "\n".join(lines) + "\n}\n"
