"""``certfleet clusters add NAME --secret ID:BASE64``: adopting an existing cluster secret
(the one ``sslmate clusters add`` printed), so that the nodes keep the secret they have."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Callable

import hcl
import pytest

from certfleet.bundle import ClusterSecret
from certfleet.config.sync import load_sync_config
from tests.plugins.cli import CliRun

Cli = Callable[..., CliRun]
# `sslmate clusters add webservers` as SSLMate's help page shows it.
SSLMATE_SECRET = "examplesecret:faC4ffCDuEaCv4SFn7mCHTLCqGGaEDrhBB7DI0PRCM8"
SECRET_BYTES = "faC4ffCDuEaCv4SFn7mCHTLCqGGaEDrhBB7DI0PRCM8"


@pytest.fixture
def config(certfleet_cli: Cli, tmp_path: Path) -> Path:
    path = tmp_path / "sync.hcl"
    made = certfleet_cli(
        "init", "--config", str(path), "--store", f"file://{tmp_path}/store",
        "--api-endpoint", "http://127.0.0.1:9/api/v3", "--api-key", "123_x",
    )  # fmt: skip
    assert made.code == 0, made.err
    return path


def stanza_secret(out: str, name: str) -> str:
    secret: str = hcl.loads(out)["cluster"][name]["secret"]
    return secret


def test_an_sslmate_secret_is_adopted_as_it_is(certfleet_cli: Cli, config: Path) -> None:
    added = certfleet_cli("clusters", "add", "webservers", "--secret", SSLMATE_SECRET,
                          "--config", str(config))  # fmt: skip
    assert added.code == 0, added.err
    assert stanza_secret(added.out, "webservers") == SSLMATE_SECRET
    publisher = hcl.loads(added.out)["cluster"]["webservers"]["publisher"]
    loaded = load_sync_config(config)
    assert publisher == loaded.signing_key.public_key().export()
    assert loaded.cluster("webservers").secrets == (ClusterSecret.parse(SSLMATE_SECRET),)
    assert "existing secret" in added.err and SECRET_BYTES not in added.err
    shown = certfleet_cli("clusters", "show", "webservers", "--config", str(config))
    assert shown.code == 0 and shown.out == added.out  # the same stanza, later


@pytest.mark.parametrize(
    ("given", "how"),
    [
        ("standard", "the standard base64 alphabet, padded"),
        ("quoted", 'pasted with the config file\'s quotes, "..."'),
        ("stdin", "'-' reads it from stdin"),
    ],
)
def test_the_secret_is_normalised_to_base64url(
    certfleet_cli: Cli, config: Path, given: str, how: str
) -> None:
    key = bytes(range(224, 256))  # base64 "+" "/", base64url "-" "_"
    canonical = ClusterSecret("k1", key).export()
    argument = {
        "standard": "k1:" + base64.b64encode(key).decode(),
        "quoted": f'"{canonical}"',
        "stdin": "-",
    }[given]
    added = certfleet_cli("clusters", "add", "web", "--secret", argument,
                          "--config", str(config), stdin=f"{canonical}\n")  # fmt: skip
    assert added.code == 0, f"{how}: {added.err}"
    assert stanza_secret(added.out, "web") == canonical
    assert load_sync_config(config).cluster("web").secrets[0].export() == canonical


@pytest.mark.parametrize(
    ("secret", "reason"),
    [
        (SECRET_BYTES, "must look like"),
        ("examplesecret:" + SECRET_BYTES[:-3], "32 bytes"),
        ("examplesecret:" + SECRET_BYTES[:-4] + "+C-8", "mixes"),
        ("bad id:" + SECRET_BYTES, "id must be"),
        ("examplesecret:" + SECRET_BYTES[:-1] + "9", "canonical"),
    ],
)
def test_a_bad_secret_is_refused_without_being_shown(
    certfleet_cli: Cli, config: Path, secret: str, reason: str
) -> None:
    before = config.read_text()
    refused = certfleet_cli("clusters", "add", "webservers", "--secret", secret,
                            "--config", str(config))  # fmt: skip
    assert refused.code == 2 and refused.out == ""
    assert "--secret" in refused.err and reason in refused.err
    assert SECRET_BYTES[:20] not in refused.err
    assert config.read_text() == before


def test_one_secret_is_not_adopted_by_two_clusters(certfleet_cli: Cli, config: Path) -> None:
    cfg = ["--config", str(config)]
    assert certfleet_cli("clusters", "add", "web", "--secret", SSLMATE_SECRET, *cfg).code == 0
    other_id = "other:" + SSLMATE_SECRET.split(":")[1]  # the same key under another id
    for secret in (SSLMATE_SECRET, other_id):
        again = certfleet_cli("clusters", "add", "mail", "--secret", secret, *cfg)
        assert again.code == 2 and "'web'" in again.err and SECRET_BYTES not in again.err
    assert load_sync_config(config).cluster_names == ("web",)


@pytest.mark.parametrize(
    "words",
    [
        ["clusters", "add", "web", "--config", "{config}"],
        ["clusters", "--config", "{config}", "add", "web"],
        ["--config", "{config}", "clusters", "add", "web"],
    ],
)
def test_config_is_accepted_after_any_word_of_the_command(
    certfleet_cli: Cli, config: Path, words: list[str]
) -> None:
    added = certfleet_cli(*(word.format(config=config) for word in words))
    assert added.code == 0, added.err
    assert (
        stanza_secret(added.out, "web")
        == load_sync_config(config).cluster("web").secrets[0].export()
    )
    listed = certfleet_cli("clusters", "--config", str(config), "list", "--json")
    assert listed.code == 0, listed.err
    assert [cluster["name"] for cluster in listed.json()["clusters"]] == ["web"]
