"""Where the CLI finds the API key and endpoint: ``--config``, the environment,
``~/.certfleet`` and, last, ``~/.sslmate`` (the ``sslmate`` tool's own file), with ``$HOME``
pointed at a temporary directory."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest

from certfleet.apiv3 import PRODUCTION_ENDPOINT
from certfleet.cli.errors import UsageError
from certfleet.cli.settings import resolve_api
from certfleet.config.errors import ConfigError
from tests.plugins.cli import CliRun
from tests.plugins.sandbox import Sandbox

# ~/.sslmate as SSLMate's agent help page shows it.
SSLMATE_KEY = "123_AKRCEYZdHUrjegJ19oyI"
SANDBOX = "https://sandbox.sslmate.com/api/v3"


def test_the_sslmate_file_of_the_help_page_gives_the_key(cli_home: Path) -> None:
    (cli_home / ".sslmate").write_text(f"api_key {SSLMATE_KEY}\n")
    found = resolve_api(None, {}, cli_home)
    assert (found.api_key, found.endpoint) == (SSLMATE_KEY, PRODUCTION_ENDPOINT)
    assert found.source == str(cli_home / ".sslmate")
    assert SSLMATE_KEY not in repr(found)


def test_the_sslmate_file_may_hold_the_sslmate_tools_other_options(cli_home: Path) -> None:
    (cli_home / ".sslmate").write_text(
        "# written by sslmate\nkey_type ecdsa\ncert_directory /etc/sslmate\n"
        f"api_key\t{SSLMATE_KEY}   # tab-separated\napi_endpoint {SANDBOX}\n"
    )
    found = resolve_api(None, {}, cli_home)
    assert (found.api_key, found.endpoint) == (SSLMATE_KEY, SANDBOX)


def test_every_other_place_comes_before_the_sslmate_file(cli_home: Path, tmp_path: Path) -> None:
    (cli_home / ".sslmate").write_text(f"api_key {SSLMATE_KEY}\napi_endpoint {SANDBOX}\n")
    (cli_home / ".certfleet").write_text("api_endpoint http://127.0.0.1:9/api/v3\n")
    # ~/.certfleet without a key: the key from ~/.sslmate, the endpoint from ~/.certfleet
    found = resolve_api(None, {}, cli_home)
    assert (found.api_key, found.endpoint) == (SSLMATE_KEY, "http://127.0.0.1:9/api/v3")
    environ = {"CERTFLEET_API_ENDPOINT": "http://127.0.0.1:10/api/v3"}
    assert resolve_api(None, environ, cli_home).endpoint == "http://127.0.0.1:10/api/v3"
    assert resolve_api(None, {"CERTFLEET_API_KEY": "env"}, cli_home).api_key == "env"
    (cli_home / ".certfleet").write_text("api_key from-certfleet\n")
    found = resolve_api(None, {}, cli_home)
    assert (found.api_key, found.endpoint) == ("from-certfleet", PRODUCTION_ENDPOINT)
    sync = tmp_path / "sync.hcl"
    sync.write_text(
        'api_key = "from-config"\napi_endpoint = "http://127.0.0.1:11/api/v3"\n'
        'store = "file:///srv/x"\nsigning_key = "ed25519-private:' + "A" * 43 + '"\n'
    )
    assert resolve_api(str(sync), {}, cli_home).api_key == "from-config"


def test_an_sslmate_1_endpoint_is_refused_with_its_line(cli_home: Path) -> None:
    (cli_home / ".sslmate").write_text(
        f"api_key {SSLMATE_KEY}\napi_endpoint https://sslmate.com/api/v2\n"
    )
    with pytest.raises(ConfigError) as caught:
        resolve_api(None, {}, cli_home)
    assert ".sslmate:2" in str(caught.value) and "APIv2" in str(caught.value)
    assert SSLMATE_KEY not in str(caught.value)


def test_no_key_anywhere_names_both_files(cli_home: Path) -> None:
    (cli_home / ".sslmate").write_text("key_type rsa\n")
    with pytest.raises(UsageError) as caught:
        resolve_api(None, {}, cli_home)
    assert ".certfleet" in str(caught.value) and ".sslmate" in str(caught.value)


def test_certfleet_list_with_only_an_sslmate_file(
    certfleet_cli: Callable[..., CliRun], cli_home: Path, sandbox: Sandbox
) -> None:
    assert certfleet_cli("list").code == 2
    (cli_home / ".sslmate").write_text(f"api_key {sandbox.api_key}\napi_endpoint {sandbox.url}\n")
    listed = certfleet_cli("list", "--json")
    assert listed.code == 0, listed.err
    assert isinstance(listed.json(), (list, dict))
    (cli_home / ".sslmate").write_text(f"api_key 123_wrong\napi_endpoint {sandbox.url}\n")
    wrong = certfleet_cli("list")
    assert wrong.code == 1 and "123_wrong" not in wrong.err
    assert f"the API key from {cli_home / '.sslmate'} was refused" in wrong.err
