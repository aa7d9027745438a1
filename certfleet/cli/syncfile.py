"""Writing the sync config (HCL) for ``init`` and ``clusters add``.

The file holds the API key, the signing key and cluster secrets, so it is only ever
created with mode 0600 (never chmod-ed after the fact) and replaced atomically: a temp file
in the same directory, fsync, then ``os.link`` (no overwrite) or ``os.replace``, then an
fsync of the directory. ``clusters add`` appends a block to the existing text, so the
operator's comments and layout survive.
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

from certfleet.cli.errors import UsageError

MODE = 0o600
_UNWRITABLE = re.compile(r'["\\\x00-\x1f\x7f]|\$\{|%\{')


def hcl_string(value: str, option: str, *, secret: bool = False) -> str:
    """``value`` as an HCL string literal; refuse what would need escaping.

    The refusal names the option and never echoes a secret value.
    """
    if _UNWRITABLE.search(value):
        shown = "" if secret else f" {value!r}"
        raise UsageError(
            f"{option}{shown} contains a quote, backslash, control character or "
            "'${'/'%{', which the config file cannot hold"
        )
    return f'"{value}"'


def render_sync_config(
    *,
    api_key: str,
    api_endpoint: str,
    store: str,
    store_endpoint: str | None,
    signing_key: str,
) -> str:
    """The text of a new sync config, without clusters."""
    lines = [
        "# certfleet sync configuration, written by `certfleet init`.",
        "# It holds the provider API key and the publisher signing key: keep it mode 0600.",
        "# Add clusters with `certfleet clusters add NAME --config THIS_FILE`.",
        f"api_key        = {hcl_string(api_key, '--api-key', secret=True)}",
        f"api_endpoint   = {hcl_string(api_endpoint, '--api-endpoint')}",
        f"store          = {hcl_string(store, '--store')}",
    ]
    if store_endpoint:
        lines.append(f"store_endpoint = {hcl_string(store_endpoint, '--store-endpoint')}")
    lines.append(f"signing_key    = {hcl_string(signing_key, 'signing key', secret=True)}")
    return "\n".join(lines) + "\n"


def render_acme_config(
    *,
    store: str,
    store_endpoint: str | None,
    signing_key: str,
    directory: str,
    email: str,
    account_key: str,
    ca_bundle: str | None,
) -> str:
    """The text of a new ACME-mode sync config, without clusters.

    ``account_key`` is the one-line PEM of ``certfleet.config.accountkey`` (base64 and
    ``\\n`` only), written as is.
    """
    if not re.fullmatch(r"[-A-Za-z0-9+/= \\n]+", account_key):
        raise UsageError("the new account key is not in its one-line PEM form")
    lines = [
        "# certfleet sync configuration, written by `certfleet init --provider acme`.",
        "# It holds the ACME account key and the publisher signing key: keep it mode 0600.",
        "# Add clusters with `certfleet clusters add NAME --config THIS_FILE`.",
        'provider       = "acme"',
        f"store          = {hcl_string(store, '--store')}",
    ]
    if store_endpoint:
        lines.append(f"store_endpoint = {hcl_string(store_endpoint, '--store-endpoint')}")
    lines.append(f"signing_key    = {hcl_string(signing_key, 'signing key', secret=True)}")
    lines.append("acme {")
    lines.append(f"  directory   = {hcl_string(directory, '--acme-directory')}")
    lines.append(f"  email       = {hcl_string(email, '--acme-email')}")
    lines.append(f'  account_key = "{account_key}"')
    if ca_bundle:
        lines.append(f"  ca_bundle   = {hcl_string(ca_bundle, '--acme-ca-bundle')}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def cluster_block(name: str, secret: str) -> str:
    """The sync config's block for one cluster (its secret; the sync signs for all)."""
    return f'cluster "{name}" {{\n  secret = {hcl_string(secret, "secret", secret=True)}\n}}\n'


def with_cluster(text: str, name: str, secret: str) -> str:
    """``text`` with a cluster block appended after one blank line."""
    body = text.rstrip("\n")
    return (body + "\n\n" if body else "") + cluster_block(name, secret)


def new_secret_id() -> str:
    """A fresh random cluster-secret id (12 hex digits, fits ``[A-Za-z0-9_-]{1,32}``)."""
    return secrets.token_hex(6)


def write_private(path: Path, text: str, *, overwrite: bool) -> None:
    """Write ``text`` to ``path`` atomically with mode 0600.

    Without ``overwrite`` an existing file is never replaced (``FileExistsError``), even
    if it appears between the check and the write.
    """
    directory = path.parent
    temp = directory / f".{path.name}.{secrets.token_hex(4)}.tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, MODE)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        if overwrite:
            os.replace(temp, path)
        else:
            os.link(temp, path)
            temp.unlink()
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    _fsync_directory(directory)


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
