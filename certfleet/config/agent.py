"""The node agent's config: the sslmate-agent.conf syntax plus the store settings.

HCL, for example::

    store = "s3://my-bucket/certfleet"
    cluster "webservers" {
      secret    = "k1:..."                  # or a list, during rotation
      publisher = "ed25519:..."             # or a list
    }
    default {
      on_update = ["systemctl reload nginx"]
      probe     = "127.0.0.1:443"           # after on_update: is the new certificate served?
      files { combined = "/etc/haproxy/certs/${ORDER_NAME}.pem" }
    }
    order "example.com" { on_update = ["systemctl reload postfix"] }

``parse_agent_config`` checks syntax, types and values only: it touches neither the disk
nor the network, so ``certfleet-agent --check-config`` is exactly this function.
docs/config.md describes every option.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from certfleet.bundle import (
    ClusterSecret,
    PublicKey,
    UnsafeNameError,
    validate_cluster_name,
    validate_order_name,
)
from certfleet.config.address import HostPort, check_server_name, parse_host_port
from certfleet.config.cluster import check_label, cluster_secrets
from certfleet.config.errors import UnknownClusterError
from certfleet.config.hcl import load_hcl, read_config_text
from certfleet.config.path_template import FILE_TYPES, check_template, expand_files_path
from certfleet.config.section import Section, shown
from certfleet.config.url import store_endpoint_option, store_option
from certfleet.config.window import (
    DAYS,
    DAYS_FORM,
    WINDOW_FORM,
    UpdateWindow,
    parse_day,
    parse_window,
)

STORE_SCHEMES = ("s3", "file", "https", "http")
REMOVE_POLICIES = ("keep", "delete")
DEFAULT_STATE_DIR = "/var/lib/certfleet"
# Java's keytool lists no entry in a PKCS#12 without a password, so the default is not empty;
# it is the one SSLMate 1 gives its .p12 and .jks files (docs/config.md "p12_password").
DEFAULT_P12_PASSWORD = "sslmate"  # noqa: S105 (a documented default, not a secret)
DAY = 86400.0

_TOP_OPTIONS = (
    "store", "store_endpoint", "state_dir", "poll_interval", "min_generation",
    "metrics_file", "hook_timeout", "hook_env", "api_key", "api_endpoint", "stagger",
    "update_window", "update_days", "urgent_before",
)  # fmt: skip
_ORDER_OPTIONS = (
    "on_update", "check_command", "key_user", "key_group", "key_perm", "cert_perm",
    "p12_password", "remove", "remove_after", "probe", "probe_timeout", "probe_sni",
)  # fmt: skip
_PERM = re.compile(r"0?[0-7]{3}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
_ACCOUNT = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?|[0-9]{1,10}")
_PUBLISHER_FORM = '"ed25519:<base64url of 32 bytes>", or a list of them'
_CLUSTER_STANZA = 'cluster "NAME" { secret = "...", publisher = "..." } (certfleet clusters add)'
_PROBE_FORM = '"HOST:PORT" ("127.0.0.1:443", "[::1]:443"), or a list of them'
_PROBE_TIMEOUT = (1.0, 600.0)
_MAX_STAGGER = 7 * DAY
_MAX_URGENT_BEFORE = 90 * DAY


@dataclass(frozen=True)
class OrderSettings:
    """How the agent installs one order; the defaults apply when neither block says."""

    on_update: tuple[str, ...] = ()
    check_command: str | None = None
    files: tuple[tuple[str, str], ...] = ()
    key_user: str | None = None
    key_group: str | None = None
    key_perm: int = 0o600
    cert_perm: int = 0o644
    p12_password: str = field(default=DEFAULT_P12_PASSWORD, repr=False)
    remove: str = "keep"
    remove_after: float = 7 * DAY
    probe: tuple[HostPort, ...] = ()
    probe_timeout: float = 10.0
    probe_sni: str | None = None

    def expanded_files(self, safe_name: str) -> tuple[tuple[str, str], ...]:
        """(file type, path) of every ``files`` copy for the order whose safe name is given.

        Raises UnsafeFilesPathError when a path would leave its template's directory.
        """
        return tuple((kind, expand_files_path(path, safe_name)) for kind, path in self.files)


@dataclass(frozen=True, repr=False)
class OrderOverride:
    """The options one ``order "NAME" { ... }`` block sets, as (option, value) pairs."""

    name: str
    options: tuple[tuple[str, Any], ...]

    def __repr__(self) -> str:  # values may include p12_password
        names = ", ".join(option for option, _ in self.options)
        return f"OrderOverride(name={self.name!r}, options=<{names}>)"


@dataclass(frozen=True)
class ClusterTrust:
    """What a node trusts for one cluster: the secrets that open it, the keys that sign it."""

    name: str
    secrets: tuple[ClusterSecret, ...]
    publishers: tuple[PublicKey, ...]


@dataclass(frozen=True)
class AgentConfig:
    """The whole agent config. Durations are in seconds."""

    store: str
    clusters: tuple[ClusterTrust, ...]
    store_endpoint: str | None = None
    state_dir: str = DEFAULT_STATE_DIR
    poll_interval: float = 60.0
    min_generation: int = 0
    metrics_file: str | None = None
    hook_timeout: float = 300.0
    # Names of the agent's environment variables passed on to check_command and on_update
    # (besides PATH, LANG, LC_ALL and the CERTFLEET_* ones the agent sets).
    hook_env: tuple[str, ...] = ()
    # When a replacement (not a first install, not a removal) may cut over: see
    # node_agent.schedule. 0 / None: off.
    stagger: float = 0.0
    update_window: UpdateWindow | None = None
    urgent_before: float = 7 * DAY
    defaults: OrderSettings = OrderSettings()
    orders: tuple[OrderOverride, ...] = ()
    notices: tuple[str, ...] = ()
    source: str = ""

    def settings_for(self, order_name: str) -> OrderSettings:
        """The ``default`` block merged with the order's own block: the order wins, option
        by option (``files`` is one option: an order's ``files`` block replaces the default's)."""
        for order in self.orders:
            if order.name == order_name:
                return replace(self.defaults, **dict(order.options))
        return self.defaults

    def cluster(self, name: str) -> ClusterTrust:
        for cluster in self.clusters:
            if cluster.name == name:
                return cluster
        raise UnknownClusterError(self.source, name, [c.name for c in self.clusters])


def load_agent_config(path: str | Path) -> AgentConfig:
    """Read and check the agent config at ``path``; ConfigError (or ConfigErrors) if bad."""
    return parse_agent_config(read_config_text(path), str(path))


def parse_agent_config(text: str, source: str) -> AgentConfig:
    """Check the agent config ``text`` (read from ``source``); no disk, no network."""
    root = load_hcl(text, source)
    root.allow(_TOP_OPTIONS, ("cluster", "default", "order"))
    # An sslmate-agent.conf is read as it is: its provider settings are not a node's business.
    if root.has("api_key"):
        root.notice(
            "api_key",
            "ignored: nodes do not need the provider API key; remove it from this file",
        )
    if root.has("api_endpoint"):
        root.notice("api_endpoint", "ignored: nodes never call the provider's API")
    store = store_option(
        root,
        STORE_SCHEMES,
        "s3://BUCKET/PREFIX, file:///PATH, https://HOST/PATH or http://LOOPBACK/PATH",
        missing="s3://BUCKET/PREFIX, file:///PATH or https://HOST/PATH",
    )
    store_endpoint = store_endpoint_option(root, store)
    state_dir = root.string("state_dir", DEFAULT_STATE_DIR)
    _check_absolute(root, "state_dir", state_dir)
    metrics_file = root.optional_string("metrics_file")
    if metrics_file is not None:
        _check_absolute(root, "metrics_file", metrics_file)
    clusters = tuple(_cluster(label, section) for label, _, section in root.blocks("cluster"))
    if not root.has("cluster"):
        root.error("cluster", "no cluster block: a node needs at least one", valid=_CLUSTER_STANZA)
    default = root.block("default")
    defaults = OrderSettings()
    if default is not None:
        defaults = replace(defaults, **_order_options(default, in_default=True))
    orders = tuple(
        OrderOverride(
            check_label(section, validate_order_name, label),
            tuple(_order_options(section, in_default=False).items()),
        )
        for label, _, section in root.blocks("order")
    )
    config = AgentConfig(
        store=store,
        clusters=clusters,
        store_endpoint=store_endpoint,
        state_dir=state_dir,
        poll_interval=root.duration("poll_interval", 60.0, minimum=1.0),
        min_generation=root.integer("min_generation", 0, minimum=0),
        metrics_file=metrics_file,
        hook_timeout=root.duration("hook_timeout", 300.0, minimum=1.0),
        hook_env=_hook_env(root),
        stagger=root.duration("stagger", 0.0, maximum=_MAX_STAGGER),
        update_window=_update_window(root),
        urgent_before=root.duration("urgent_before", 7 * DAY, maximum=_MAX_URGENT_BEFORE),
        defaults=defaults,
        orders=orders,
        notices=tuple(root.problems.notices),
        source=source,
    )
    root.finish()
    return config


def _hook_env(root: Section) -> tuple[str, ...]:
    """``hook_env``: environment variable names, each once."""
    names = root.strings("hook_env")
    for name in names:
        if not _ENV_NAME.fullmatch(name):
            root.error(
                "hook_env",
                f"{shown(name)} is not an environment variable name",
                valid='a list of names of [A-Za-z_][A-Za-z0-9_]*, e.g. ["HTTPS_PROXY", "TZ"]',
            )
            return ()
    return tuple(dict.fromkeys(names))


def _check_absolute(section: Section, name: str, path: str) -> None:
    if not path.startswith("/") or "\0" in path:
        section.error(
            name, f"{shown(path)} is not an absolute path", valid="a path starting with /"
        )


def _update_window(root: Section) -> UpdateWindow | None:
    """``update_window`` and ``update_days``; None when neither is set (no window)."""
    window = UpdateWindow()
    found = root.parsed("update_window", parse_window, valid=WINDOW_FORM)
    if found:
        window = UpdateWindow(*found[0])
    if root.has("update_days"):
        days = root.parsed("update_days", parse_day, valid=DAYS_FORM, many=True)
        repeated = sorted({DAYS[d] for d in days if days.count(d) > 1}, key=DAYS.index)
        if repeated:
            root.error("update_days", f"lists {', '.join(repeated)} twice", valid=DAYS_FORM)
        elif days:
            window = UpdateWindow(window.start, window.end, tuple(sorted(days)))
    if not root.has("update_window") and not root.has("update_days"):
        return None
    return window


def _cluster(label: str, section: Section) -> ClusterTrust:
    section.allow(("secret", "publisher"))
    name = check_label(section, validate_cluster_name, label)
    secrets = cluster_secrets(section)
    if not section.has("publisher"):
        shown_name = name if _is_cluster_name(name) else "NAME"
        section.error(
            "publisher",
            "is required: the sync's public key, which `certfleet clusters show "
            f"{shown_name} --config SYNC_CONFIG` prints in this cluster's stanza",
            valid=_PUBLISHER_FORM,
        )
    publishers = section.parsed("publisher", PublicKey.parse, valid=_PUBLISHER_FORM, many=True)
    return ClusterTrust(name, secrets, publishers)


def _is_cluster_name(name: str) -> bool:
    try:
        validate_cluster_name(name)
    except UnsafeNameError:
        return False
    return True


def _order_options(section: Section, *, in_default: bool) -> dict[str, Any]:
    """The order settings ``section`` sets (and only those), checked."""
    section.allow(_ORDER_OPTIONS, ("files",))
    found: dict[str, Any] = {}
    if section.has("on_update"):
        commands = section.strings("on_update")
        if any(not command.strip() for command in commands):
            section.error("on_update", "has an empty command", valid="shell commands")
        found["on_update"] = commands
    check_command = section.optional_string("check_command")
    if check_command is not None:
        if not check_command.strip():
            section.error("check_command", "is empty", valid="a shell command, e.g. nginx -t")
        found["check_command"] = check_command
    for name in ("key_user", "key_group"):
        account = section.optional_string(name)
        if account is not None:
            if not _ACCOUNT.fullmatch(account):
                section.error(name, f"{shown(account)} is not a user or group name", valid=_USER)
            found[name] = account
    for name, is_key in (("key_perm", True), ("cert_perm", False)):
        if section.has(name):
            found[name] = _permission(section, name, is_key=is_key)
    p12_password = section.optional_string("p12_password", secret=True)
    if p12_password is not None:
        found["p12_password"] = p12_password
    remove = section.optional_choice("remove", REMOVE_POLICIES)
    if remove is not None:
        found["remove"] = remove
    remove_after = section.optional_duration("remove_after")
    if remove_after is not None:
        found["remove_after"] = remove_after
    files = section.block("files")
    if files is not None:
        found["files"] = _files(files, in_default=in_default)
    found.update(_probe_options(section))
    return found


def _probe_options(section: Section) -> dict[str, Any]:
    """``probe``, ``probe_timeout`` and ``probe_sni``, as far as ``section`` sets them.

    ``probe = []`` turns off a probe the ``default`` block sets."""
    found: dict[str, Any] = {}
    if section.has("probe"):
        addresses: tuple[HostPort, ...] = ()
        if section.strings("probe"):  # an empty list is (); a wrong type is already an error
            addresses = section.parsed("probe", parse_host_port, valid=_PROBE_FORM, many=True)
        repeated = sorted({str(a) for a in addresses if addresses.count(a) > 1})
        if repeated:
            section.error("probe", f"lists {', '.join(repeated)} twice", valid=_PROBE_FORM)
        found["probe"] = addresses
    timeout = section.optional_duration(
        "probe_timeout", minimum=_PROBE_TIMEOUT[0], maximum=_PROBE_TIMEOUT[1]
    )
    if timeout is not None:
        found["probe_timeout"] = timeout
    sni = section.parsed(
        "probe_sni",
        check_server_name,
        valid="a host name the certificate covers, e.g. www.example.com",
    )
    if sni:
        found["probe_sni"] = sni[0]
    return found


_USER = "a name like www-data, or a numeric id"


def _permission(section: Section, name: str, *, is_key: bool) -> int:
    default = 0o600 if is_key else 0o644
    valid = 'a quoted octal mode like "0640" (a bare 0640 would be read as decimal 640)'
    present = section.optional_string(name, valid=valid)
    if present is None:
        return default
    if not _PERM.fullmatch(present):
        section.error(name, f"{shown(present)} is not an octal mode", valid=valid)
        return default
    mode = int(present, 8)
    if is_key and mode & 0o007:
        section.error(
            name,
            f"{present} lets every user read or change private keys",
            valid='a mode without "other" bits, like "0600" or "0640"',
        )
        return default
    return mode


def _files(section: Section, *, in_default: bool) -> tuple[tuple[str, str], ...]:
    section.allow(FILE_TYPES)
    found: list[tuple[str, str]] = []
    for file_type in FILE_TYPES:
        template = section.optional_string(file_type)
        if template is None:
            continue
        try:
            check_template(template, needs_variable=in_default)
        except ValueError as err:
            section.error(
                file_type,
                f"{shown(template)} {err}",
                valid='an absolute path, e.g. "/etc/ssl/${ORDER_NAME}.pem"',
            )
            continue
        if any(template == earlier for _, earlier in found):
            section.error(file_type, f"{shown(template)} is also used by another file type")
            continue
        found.append((file_type, template))
    return tuple(found)
