"""The sync config: a full example, the defaults, and a table of broken inputs with the
exact messages they give (file, line, option, what would be valid)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from certfleet.bundle import ClusterSecret, SigningKey
from certfleet.config import (
    ConfigError,
    SyncConfig,
    UnknownClusterError,
    load_sync_config,
    parse_sync_config,
)

SECRET_1 = ClusterSecret("k1", bytes(range(32))).export()
SECRET_2 = ClusterSecret("k2", bytes(range(1, 33))).export()
SIGNING = SigningKey(bytes(range(2, 34))).export()
API_KEY = "apikey-1234567890abcdef"

FULL = f"""
api_key        = "{API_KEY}"
api_endpoint   = "http://127.0.0.1:8080/api/v3"
store          = "s3://my-bucket/certfleet"
store_endpoint = "http://127.0.0.1:8333"
signing_key    = "{SIGNING}"
skew_margin    = "30m"
head_validity  = "3d"
gc_grace       = "2d"
lease_duration = "10m"
issue_wait     = 45
fleet_check_interval = "30m"
fleet_stale_after    = "2h"
cluster "webservers" {{
  secret     = ["{SECRET_2}", "{SECRET_1}"]
  key_type   = "ecdsa"
  renew_days = 30
  reuse_key  = true
  fleet_check_interval = "0"
  fleet_stale_after    = "6h"
  order "legacy.example.com" {{
    key_type  = "rsa"
    reuse_key = false
  }}
}}
cluster "mail" {{
  secret = "{SECRET_1}"
}}
"""

MINIMAL = f'store = "file:///srv/certfleet"\nsigning_key = "{SIGNING}"\n'


def test_full_example() -> None:
    config = parse_sync_config(FULL, "sync.conf")
    assert config.api_key == API_KEY
    assert config.api_endpoint == "http://127.0.0.1:8080/api/v3"
    assert config.store == "s3://my-bucket/certfleet"
    assert config.store_endpoint == "http://127.0.0.1:8333"
    assert config.signing_key.export() == SIGNING
    assert (config.skew_margin, config.head_validity, config.gc_grace) == (1800, 259200, 172800)
    assert (config.lease_duration, config.issue_wait) == (600, 45)
    assert (config.fleet_check_interval, config.fleet_stale_after) == (1800, 7200)
    assert config.cluster_names == ("webservers", "mail")
    web = config.cluster("webservers")
    assert [s.export() for s in web.secrets] == [SECRET_2, SECRET_1]
    assert web.newest_secret.id == "k2"
    assert (web.key_type, web.renew_days, web.reuse_key) == ("ecdsa", 30, True)
    assert web.key_type_for("legacy.example.com") == "rsa"
    assert web.key_type_for("www.example.com") == "ecdsa"
    assert web.reuse_key_for("legacy.example.com") is False
    assert web.reuse_key_for("www.example.com") is True
    assert (web.fleet_check_interval, web.fleet_stale_after) == (0, 21600)  # 0: no check
    mail = config.cluster("mail")
    assert (mail.key_type, mail.renew_days, mail.reuse_key, mail.orders) == ("rsa", None, False, ())
    assert (mail.fleet_check_interval, mail.fleet_stale_after) == (None, None)  # the top's


def test_defaults_and_no_cluster() -> None:
    config = parse_sync_config(MINIMAL, "sync.conf")
    assert config.api_key is None
    assert config.api_endpoint == "https://sslmate.com/api/v3"
    assert config.store_endpoint is None
    assert config.skew_margin == 3600
    assert config.head_validity == 7 * 86400
    assert config.gc_grace == 7 * 86400
    assert config.lease_duration == 900
    assert config.issue_wait == 60
    assert (config.fleet_check_interval, config.fleet_stale_after) == (3600, 3600)
    assert config.clusters == ()
    assert config.previous_signing_key is None
    with pytest.raises(UnknownClusterError, match="no cluster 'web' in this config"):
        config.cluster("web")


def test_previous_signing_key_is_read_and_never_shown() -> None:
    previous = SigningKey.generate()
    config = parse_sync_config(
        MINIMAL + f'previous_signing_key = "{previous.export()}"\n', "sync.conf"
    )
    assert config.previous_signing_key is not None
    assert config.previous_signing_key.public_key() == previous.public_key()
    assert previous.export() not in repr(config)
    with pytest.raises(ConfigError) as caught:
        parse_sync_config(MINIMAL + 'previous_signing_key = "ed25519-private:nope"\n', "s.conf")
    assert "previous_signing_key" in str(caught.value) and "nope" not in str(caught.value)


def test_repr_shows_no_key_material() -> None:
    config = parse_sync_config(FULL, "sync.conf")
    text = repr(config) + str(config)
    for secret in (API_KEY, SIGNING, SECRET_1, SECRET_2, SECRET_1.split(":")[1]):
        assert secret not in text
    assert "webservers" in text


def test_load_from_file(tmp_path: Path) -> None:
    path = tmp_path / "sync.conf"
    path.write_text(FULL)
    assert isinstance(load_sync_config(path), SyncConfig)
    with pytest.raises(ConfigError) as caught:
        load_sync_config(tmp_path / "missing.conf")
    assert str(caught.value) == f"{tmp_path}/missing.conf: cannot read: No such file or directory"
    path.write_bytes(b'store = "\xff"')
    with pytest.raises(ConfigError, match=r"sync.conf: is not UTF-8 text \(byte 9\)"):
        load_sync_config(path)


BAD_SECRET = "k9:" + "A" * 40  # 30 bytes: the right shape, the wrong length

BROKEN = [
    (
        "",
        'sync.conf: option "store": is required (valid: s3://BUCKET/PREFIX or file:///PATH)\n'
        'sync.conf: option "signing_key": is required '
        '(valid: "ed25519-private:..." (certfleet init makes one))',
    ),
    (
        'store = "file:///x"',
        'sync.conf: option "signing_key": is required '
        '(valid: "ed25519-private:..." (certfleet init makes one))',
    ),
    (
        MINIMAL + 'stor = "x"',
        'sync.conf:3: option "stor": unknown option; did you mean "store"? (valid: acme, '
        "api_endpoint, api_key, cluster, dns, dns_resolvers, fleet_check_interval, "
        "fleet_stale_after, gc_grace, head_validity, issue_wait, lease_duration, "
        "order_api_key, previous_signing_key, provider, signing_key, skew_margin, store, "
        "store_endpoint)",
    ),
    (
        MINIMAL + 'store = "file:///y"',
        'sync.conf:3: option "store": set twice (first at line 1)',
    ),
    (
        MINIMAL.replace("file:///srv/certfleet", "https://host/x"),
        "sync.conf:1: option \"store\": 'https://host/x': unsupported scheme "
        "(valid: s3://BUCKET/PREFIX or file:///PATH)",
    ),
    (
        MINIMAL.replace("file:///srv/certfleet", "file://srv/certfleet"),
        "sync.conf:1: option \"store\": 'file://srv/certfleet': must name an absolute path: "
        "file:///PATH (three slashes) (valid: s3://BUCKET/PREFIX or file:///PATH)",
    ),
    (
        MINIMAL + 'api_endpoint = "sslmate.com"',
        "sync.conf:3: option \"api_endpoint\": 'sslmate.com': must be an http:// or https:// "
        "URL with a host (valid: https://HOST/PATH)",
    ),
    (
        MINIMAL + "api_key = 1234567",
        'sync.conf:3: option "api_key": expected a quoted string, got a value of another type',
    ),
    (
        MINIMAL + 'skew_margin = "1x"',
        "sync.conf:3: option \"skew_margin\": bad duration '1x': use a number of seconds or "
        'units d, h, m, s, like "1h30m" (valid: "90s", "5m", "1h30m", "7d" or a number of '
        "seconds; at most 1d)",
    ),
    (
        MINIMAL + 'head_validity = "8d"',
        'sync.conf:3: option "head_validity": \'8d\' is out of range (valid: "90s", "5m", '
        '"1h30m", "7d" or a number of seconds; from 1h to 7d)',
    ),
    (
        MINIMAL + "lease_duration = true",
        'sync.conf:3: option "lease_duration": bad duration True: expected a duration, not '
        'true/false (valid: "90s", "5m", "1h30m", "7d" or a number of seconds; from 1m to 1d)',
    ),
    (
        MINIMAL + 'fleet_check_interval = "-1h"',
        "sync.conf:3: option \"fleet_check_interval\": bad duration '-1h': use a number of "
        'seconds or units d, h, m, s, like "1h30m" (valid: "90s", "5m", "1h30m", "7d" or a '
        "number of seconds; at most 30d)",
    ),
    (
        MINIMAL + f'cluster "w" {{\n secret = "{SECRET_1}"\n fleet_stale_after = "31d"\n}}',
        'sync.conf:5: option "fleet_stale_after" in cluster "w": \'31d\' is out of range '
        '(valid: "90s", "5m", "1h30m", "7d" or a number of seconds; at most 30d)',
    ),
    (
        'store = "file:///x"\nsigning_key = "ed25519:AAAA"',
        'sync.conf:2: option "signing_key": publisher signing key: must look like '
        "'ed25519-private:<base64url>' (valid: \"ed25519-private:<base64url>\")",
    ),
    (
        MINIMAL + 'cluster "web" { }',
        'sync.conf:3: option "secret" in cluster "web": is required '
        '(valid: "<id>:<base64url of 32 bytes>", or a list of them (the newest first))',
    ),
    (
        MINIMAL + f'cluster "web" {{\n  secret = ["{SECRET_1}", "{BAD_SECRET}"]\n}}',
        'sync.conf:4: option "secret" in cluster "web": entry 2: cluster secret k9: must '
        'encode 32 bytes, not 30 (valid: "<id>:<base64url of 32 bytes>", or a list of them '
        "(the newest first))",
    ),
    (
        MINIMAL + f'cluster "web" {{ secret = ["{SECRET_1}", "{SECRET_1}"] }}',
        'sync.conf:3: option "secret" in cluster "web": secret id k1 is listed twice '
        "(valid: each secret with its own id)",
    ),
    (
        MINIMAL + 'cluster "web" { secret = [] }',
        'sync.conf:3: option "secret" in cluster "web": is an empty list '
        '(valid: "<id>:<base64url of 32 bytes>", or a list of them (the newest first))',
    ),
    (
        MINIMAL + 'store_endpoint = "http://127.0.0.1:8333"',
        'sync.conf:3: option "store_endpoint": applies to s3:// stores only (valid: leave it '
        "out, or use an s3:// store)",
    ),
    (
        MINIMAL + f'cluster "Web_1" {{ secret = "{SECRET_1}" }}',
        "sync.conf:3: option \"cluster\": cluster name 'Web_1' is not 1-40 characters of "
        "a-z 0-9 - starting with a letter or digit",
    ),
    (
        MINIMAL + f'cluster "w" {{ secret = "{SECRET_1}" }}\ncluster "w" {{ secret = "x" }}',
        'sync.conf:4: option "cluster": "w" is defined twice (first at line 3)',
    ),
    (
        MINIMAL + f'cluster "w" {{\n secret = "{SECRET_1}"\n key_type = "dsa"\n}}',
        'sync.conf:5: option "key_type" in cluster "w": \'dsa\' is not a valid choice '
        "(valid: rsa, ecdsa)",
    ),
    (
        MINIMAL + f'cluster "w" {{\n secret = "{SECRET_1}"\n renew_days = 0\n}}',
        'sync.conf:5: option "renew_days" in cluster "w": 0 is out of range (valid: from 1 to 365)',
    ),
    (
        MINIMAL + f'cluster "w" {{\n secret = "{SECRET_1}"\n reuse_key = "yes"\n}}',
        'sync.conf:5: option "reuse_key" in cluster "w": expected true or false, got \'yes\' '
        "(valid: true, false)",
    ),
    (
        MINIMAL + f'cluster "w" {{\n secret = "{SECRET_1}"\n order "../x" {{ }}\n}}',
        'sync.conf:5: option "order" in cluster "w": order name \'../x\' may only contain '
        "A-Z a-z 0-9 * . _ -",
    ),
    (
        MINIMAL + f'cluster "w" {{\n secret = "{SECRET_1}"\n order "a" {{ key_typ = "rsa" }}\n}}',
        'sync.conf:5: option "key_typ" in cluster "w" > order "a": unknown option; did you '
        'mean "key_type"? (valid: key_type, reuse_key)',
    ),
]


@pytest.mark.parametrize(("text", "message"), BROKEN)
def test_broken(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_sync_config(text, "sync.conf")
    assert str(caught.value) == message


def test_secret_values_never_reach_messages() -> None:
    secrets = [API_KEY, "k1:" + "s" * 43, "k2:" + "t" * 20 + "=", "ed25519-private:" + "u" * 43]
    text = (
        f'store = "file:///x"\napi_key = ["{API_KEY}"]\nsigning_key = "{secrets[3]}"\n'
        f'cluster "w" {{ secret = ["{secrets[1]}", "{secrets[2]}", "{SECRET_1}"] }}\n'
    )
    with pytest.raises(ConfigError) as caught:
        parse_sync_config(text, "sync.conf")
    message = str(caught.value)
    assert len(message.splitlines()) == 4
    for secret in [*secrets, SECRET_1]:
        assert secret not in message
        assert secret.split(":")[-1] not in message


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                MINIMAL,
                'store = "s3://b"\n',
                f'signing_key = "{SIGNING}"\n',
                f'cluster "w" {{ secret = "{SECRET_1}" }}\n',
                'cluster "w" {\n',
                "}\n",
                'key_type = "ecdsa"\n',
                'order "o" { reuse_key = true }\n',
                "renew_days = 10\n",
                'issue_wait = "5m"\n',
                '"',
                "=",
                "[",
            ]
        ),
        max_size=8,
    )
)
def test_random_pieces_give_a_config_or_a_config_error(pieces: list[str]) -> None:
    try:
        parse_sync_config("".join(pieces), "sync.conf")
    except ConfigError as err:
        assert str(err).startswith("sync.conf")
