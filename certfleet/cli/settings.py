"""Where the CLI finds the provider API key and endpoint.

In order: the sync config named by ``--config`` (its ``api_key`` / ``api_endpoint``; a
sync config without ``api_key`` takes the key from the next places); else the
environment (``CERTFLEET_API_KEY`` / ``CERTFLEET_API_ENDPOINT``); else ``~/.certfleet``, a
file of ``NAME VALUE`` lines (``api_key KEY``, ``api_endpoint URL``; ``#`` starts a
comment); else ``~/.sslmate``, the SSLMate command line's own file of the same form, so a
user moving from ``sslmate`` needs no new file. An endpoint is taken from the first of the
environment, ``~/.certfleet`` and (when the key comes from it) ``~/.sslmate``; with no
endpoint anywhere, SSLMate's production APIv3.

``~/.certfleet`` refuses unknown options (a typo would otherwise go unnoticed);
``~/.sslmate`` may hold options of the ``sslmate`` tool (``key_type``, ``cert_directory``...),
which are skipped. An ``api_endpoint`` there that ends in ``/api/v2`` is SSLMate 1's API, not
APIv3, and is refused with the file and line named.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from certfleet.apiv3 import PRODUCTION_ENDPOINT
from certfleet.cli.errors import UsageError
from certfleet.config.errors import ConfigError
from certfleet.config.sync import load_sync_config

DOTFILE = ".certfleet"
SSLMATE_DOTFILE = ".sslmate"
DOTFILE_OPTIONS = ("api_key", "api_endpoint")


@dataclass(frozen=True)
class ApiSettings:
    """An endpoint and API key, with where the key came from (for error hints)."""

    endpoint: str
    api_key: str = field(repr=False)
    source: str

    def __repr__(self) -> str:
        return (
            f"ApiSettings(endpoint={self.endpoint!r}, api_key=<redacted>, source={self.source!r})"
        )


def resolve_api(config_path: str | None, environ: Mapping[str, str], home: Path) -> ApiSettings:
    """The API settings for this invocation (see the module doc for the order)."""
    dotfile = home / DOTFILE
    if config_path is not None:
        config = load_sync_config(config_path)
        if config.api_key:
            return ApiSettings(
                config.api_endpoint, config.api_key, f"the sync config {config_path}"
            )
    from_file = read_dotfile(dotfile) if dotfile.exists() else {}
    if config_path is not None:  # a sync config without api_key: the key from elsewhere
        endpoint = config.api_endpoint
    else:
        endpoint = (
            environ.get("CERTFLEET_API_ENDPOINT")
            or from_file.get("api_endpoint")
            or PRODUCTION_ENDPOINT
        )
    if environ.get("CERTFLEET_API_KEY"):
        return ApiSettings(endpoint, environ["CERTFLEET_API_KEY"], "CERTFLEET_API_KEY")
    if from_file.get("api_key"):
        return ApiSettings(endpoint, from_file["api_key"], str(dotfile))
    sslmate = home / SSLMATE_DOTFILE
    from_sslmate = read_dotfile(sslmate, strict=False) if sslmate.exists() else {}
    if from_sslmate.get("api_key"):
        if config_path is None and not (
            environ.get("CERTFLEET_API_ENDPOINT") or from_file.get("api_endpoint")
        ):
            endpoint = from_sslmate.get("api_endpoint") or PRODUCTION_ENDPOINT
        return ApiSettings(endpoint, from_sslmate["api_key"], str(sslmate))
    raise UsageError(
        "no API key: pass --config FILE (a sync config), set CERTFLEET_API_KEY, "
        f"or write 'api_key KEY' in {dotfile} (or {sslmate})"
    )


def read_dotfile(path: Path, *, strict: bool = True) -> dict[str, str]:
    """``NAME VALUE`` lines; ``#`` comments and blank lines skipped; unknown names refused,
    or skipped when not ``strict`` (``~/.sslmate``, which the ``sslmate`` tool shares)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(str(path), None, None, f"cannot read: {err}") from err
    found: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, _, value = line.replace("\t", " ").partition(" ")
        value = value.strip()
        if name not in DOTFILE_OPTIONS:
            if not strict:
                continue
            raise ConfigError(
                str(path), number, name, "unknown option", valid=", ".join(DOTFILE_OPTIONS)
            )
        if not value:
            raise ConfigError(str(path), number, name, "has no value", valid=f"{name} VALUE")
        if name == "api_endpoint" and value.rstrip("/").endswith("/api/v2"):
            raise ConfigError(
                str(path),
                number,
                name,
                "is SSLMate 1's API (APIv2); certfleet speaks APIv3",
                valid="https://sslmate.com/api/v3 or https://sandbox.sslmate.com/api/v3",
            )
        found[name] = value
    return found
