"""The agent config: the sample of docs/config.md, settings merging, files templates and their
expansion, and a table of broken inputs with the exact messages they give."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from certfleet.bundle import ClusterSecret, SigningKey
from certfleet.config import (
    AgentConfig,
    ConfigError,
    OrderSettings,
    UnsafeFilesPathError,
    expand_files_path,
    load_agent_config,
    parse_agent_config,
)
from certfleet.config.window import UpdateWindow

SECRET_1 = ClusterSecret("k1", bytes(range(32))).export()
SECRET_2 = ClusterSecret("k2", bytes(range(1, 33))).export()
PUBLISHER = SigningKey(bytes(range(2, 34))).public_key().export()
PUBLISHER_2 = SigningKey(bytes(range(3, 35))).public_key().export()
CLUSTER = f'cluster "web" {{\n  secret = "{SECRET_1}"\n  publisher = "{PUBLISHER}"\n}}\n'
MINIMAL = 'store = "file:///srv/certfleet"\n' + CLUSTER  # the cluster block starts at line 2

DESIGN_SAMPLE = f"""
store = "s3://my-bucket/certfleet"        # also file:///path and https://host/path (plain GET)
store_endpoint = "http://127.0.0.1:8333"  # optional, for S3-compatible stores
state_dir = "/var/lib/certfleet"          # optional
poll_interval = "60s"                     # optional; "90s", "5m" or a number of seconds
cluster "webservers" {{
  secret    = "{SECRET_1}"   # or a list, during rotation
  publisher = "{PUBLISHER}"                              # or a list
}}
default {{
  on_update = ["systemctl reload nginx"]
  files {{ combined = "/etc/haproxy/certs/${{ORDER_NAME}}.pem" }}
}}
order "example.com" {{ on_update = ["systemctl reload postfix"] }}
"""

FULL = f"""
store          = "https://certs.example.net/certfleet"
state_dir      = "/srv/certfleet"
poll_interval  = 30
min_generation = 1700000000000
metrics_file   = "/var/lib/node_exporter/certfleet.prom"
hook_timeout   = "2m"
api_key        = "not-needed-here-123"
cluster "web" {{
  secret    = ["{SECRET_2}", "{SECRET_1}"]
  publisher = ["{PUBLISHER}", "{PUBLISHER_2}"]
}}
cluster "mail" {{
  secret    = "{SECRET_1}"
  publisher = "{PUBLISHER}"
}}
default {{
  on_update     = "systemctl reload nginx"
  check_command = "nginx -t"
  key_group     = "ssl-cert"
  key_perm      = "0640"
}}
default {{
  files {{
    key      = "/etc/ssl/private/${{ORDER_NAME}}.key"
    chained  = "/etc/ssl/certs/${{ORDER_NAME}}/fullchain.pem"
  }}
  remove       = "delete"
  remove_after = "1d"
}}
order "*.example.com" {{
  on_update    = ["systemctl reload haproxy", "systemctl reload nginx"]
  files        {{ p12 = "/etc/app/wildcard.p12" }}
  p12_password = "hunter2-p12"
  key_user     = "app"
  cert_perm    = "0600"
}}
"""


def test_design_sample() -> None:
    config = parse_agent_config(DESIGN_SAMPLE, "agent.conf")
    assert config.store == "s3://my-bucket/certfleet"
    assert config.store_endpoint == "http://127.0.0.1:8333"
    assert config.state_dir == "/var/lib/certfleet"
    assert config.poll_interval == 60
    assert [c.name for c in config.clusters] == ["webservers"]
    trust = config.cluster("webservers")
    assert [s.export() for s in trust.secrets] == [SECRET_1]
    assert [p.export() for p in trust.publishers] == [PUBLISHER]
    other = config.settings_for("www.example.org")
    assert other.on_update == ("systemctl reload nginx",)
    assert other.files == (("combined", "/etc/haproxy/certs/${ORDER_NAME}.pem"),)
    mine = config.settings_for("example.com")
    assert mine.on_update == ("systemctl reload postfix",)
    assert mine.files == other.files
    assert (mine.key_perm, mine.cert_perm, mine.remove, mine.remove_after) == (
        0o600,
        0o644,
        "keep",
        7 * 86400,
    )
    assert config.notices == ()


def test_full_example_and_merging() -> None:
    config = parse_agent_config(FULL, "agent.conf")
    assert (config.store, config.state_dir, config.poll_interval) == (
        "https://certs.example.net/certfleet",
        "/srv/certfleet",
        30,
    )
    assert (config.min_generation, config.hook_timeout) == (1700000000000, 120)
    assert config.metrics_file == "/var/lib/node_exporter/certfleet.prom"
    assert [len(c.secrets) for c in config.clusters] == [2, 1]
    assert [len(c.publishers) for c in config.clusters] == [2, 1]
    assert config.notices == (
        'agent.conf:8: option "api_key": ignored: nodes do not need the provider API key; '
        "remove it from this file",
    )
    default = config.settings_for("www.example.org")
    assert default == OrderSettings(
        on_update=("systemctl reload nginx",),
        check_command="nginx -t",
        files=(
            ("key", "/etc/ssl/private/${ORDER_NAME}.key"),
            ("chained", "/etc/ssl/certs/${ORDER_NAME}/fullchain.pem"),
        ),
        key_group="ssl-cert",
        key_perm=0o640,
        remove="delete",
        remove_after=86400,
    )
    assert default.expanded_files("www.example.org") == (
        ("key", "/etc/ssl/private/www.example.org.key"),
        ("chained", "/etc/ssl/certs/www.example.org/fullchain.pem"),
    )
    wildcard = config.settings_for("*.example.com")
    assert wildcard.on_update == ("systemctl reload haproxy", "systemctl reload nginx")
    assert wildcard.files == (("p12", "/etc/app/wildcard.p12"),)  # replaces the default's
    assert (wildcard.key_user, wildcard.key_group) == ("app", "ssl-cert")
    assert (wildcard.key_perm, wildcard.cert_perm) == (0o640, 0o600)
    assert wildcard.p12_password == "hunter2-p12"
    assert wildcard.check_command == "nginx -t"
    text = repr(config) + repr(wildcard)
    for secret in ("hunter2-p12", "not-needed-here-123", SECRET_1, SECRET_2):
        assert secret not in text


def test_load_from_file(tmp_path: Path) -> None:
    path = tmp_path / "certfleet-agent.conf"
    path.write_text(MINIMAL)
    assert isinstance(load_agent_config(path), AgentConfig)


def test_api_key_notice_never_shows_the_key() -> None:
    config = parse_agent_config(MINIMAL + 'api_key = "sk-very-secret"\n', "agent.conf")
    assert len(config.notices) == 1
    assert "sk-very-secret" not in config.notices[0]
    assert config.notices[0].startswith('agent.conf:6: option "api_key": ignored')


# SSLMate's minimal sslmate-agent.conf ("MINIMAL EXAMPLE" of its sslmate-agent.conf page), as
# it is, with an api_endpoint line as some configs have.
SSLMATE_AGENT_CONF = """\
# Replace with your own API key found at https://sslmate.com/account/api_credentials
api_key = "123_AKRCEYZdHUrjegJ19oyI"
api_endpoint = "https://sslmate.com/api/v3"

# Replace with your own cluster details generated by running `sslmate clusters add webservers`
cluster "webservers" {
        secret = "examplesecret:faC4ffCDuEaCv4SFn7mCHTLCqGGaEDrhBB7DI0PRCM8"
}

default {
        # Replace with a list of commands to restart the services which use your certificates
        on_update = [
                "service nginx restart",
                "service postfix restart",
        ]
}
"""


def test_an_sslmate_agent_conf_needs_only_store_and_publisher() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_agent_config('store = "file:///srv/certfleet"\n' + SSLMATE_AGENT_CONF, "a.conf")
    assert str(caught.value) == (
        'a.conf:7: option "publisher" in cluster "webservers": is required: the sync\'s public '
        "key, which `certfleet clusters show webservers --config SYNC_CONFIG` prints in this "
        'cluster\'s stanza (valid: "ed25519:<base64url of 32 bytes>", or a list of them)'
    )
    text = 'store = "file:///srv/certfleet"\n' + SSLMATE_AGENT_CONF.replace(
        'DI0PRCM8"\n', f'DI0PRCM8"\n        publisher = "{PUBLISHER}"\n'
    )
    config = parse_agent_config(text, "a.conf")
    assert [c.name for c in config.clusters] == ["webservers"]
    assert config.cluster("webservers").secrets[0].export() == (
        "examplesecret:faC4ffCDuEaCv4SFn7mCHTLCqGGaEDrhBB7DI0PRCM8"
    )
    assert config.defaults.on_update == ("service nginx restart", "service postfix restart")
    assert config.notices == (
        'a.conf:3: option "api_key": ignored: nodes do not need the provider API key; '
        "remove it from this file",
        'a.conf:4: option "api_endpoint": ignored: nodes never call the provider\'s API',
    )
    assert all("AKRCEYZ" not in notice for notice in config.notices)


VALID_FILES = 'an absolute path, e.g. "/etc/ssl/${ORDER_NAME}.pem"'
VALID_PROBE = '"HOST:PORT" ("127.0.0.1:443", "[::1]:443"), or a list of them'
VALID_SNI = "a host name the certificate covers, e.g. www.example.com"
VALID_WINDOW = '"HH:MM-HH:MM" in UTC, e.g. "03:00-05:00" or "22:00-02:00" (crosses midnight)'
VALID_DAYS = 'a list of days: "mon", "tue", "wed", "thu", "fri", "sat", "sun"'

BROKEN = [
    (
        'store = "file:///x"\n',
        'agent.conf: option "cluster": no cluster block: a node needs at least one (valid: '
        'cluster "NAME" { secret = "...", publisher = "..." } (certfleet clusters add))',
    ),
    (
        CLUSTER,
        'agent.conf: option "store": is required '
        "(valid: s3://BUCKET/PREFIX, file:///PATH or https://HOST/PATH)",
    ),
    (
        MINIMAL + 'pol_interval = "5s"',
        'agent.conf:6: option "pol_interval": unknown option; did you mean "poll_interval"? '
        "(valid: api_endpoint, api_key, cluster, default, hook_env, hook_timeout, metrics_file, "
        "min_generation, order, poll_interval, stagger, state_dir, store, store_endpoint, "
        "update_days, update_window, urgent_before)",
    ),
    (
        MINIMAL + 'poll_interval = "0.5s"',
        'agent.conf:6: option "poll_interval": \'0.5s\' is out of range (valid: "90s", '
        '"5m", "1h30m", "7d" or a number of seconds; at least 1s)',
    ),
    (
        MINIMAL + "min_generation = -1",
        'agent.conf:6: option "min_generation": -1 is out of range (valid: at least 0)',
    ),
    (
        MINIMAL + 'state_dir = "var/lib/x"',
        "agent.conf:6: option \"state_dir\": 'var/lib/x' is not an absolute path "
        "(valid: a path starting with /)",
    ),
    (
        MINIMAL + 'store_endpoint = "127.0.0.1:8333"',
        "agent.conf:6: option \"store_endpoint\": '127.0.0.1:8333': must be an http:// or "
        "https:// URL with a host (valid: http(s)://HOST:PORT of an S3-compatible store)",
    ),
    (
        MINIMAL + 'store_endpoint = "http://127.0.0.1:8333"',
        'agent.conf:6: option "store_endpoint": applies to s3:// stores only (valid: leave it '
        "out, or use an s3:// store)",
    ),
    (
        MINIMAL.replace('"file:///srv/certfleet"', '"s3://"'),
        "agent.conf:1: option \"store\": 's3://': must name a bucket: s3://BUCKET or "
        "s3://BUCKET/PREFIX (valid: s3://BUCKET/PREFIX, file:///PATH, https://HOST/PATH or "
        "http://LOOPBACK/PATH)",
    ),
    (
        MINIMAL.replace('"file:///srv/certfleet"', '"http://certs.example.net/x"'),
        "agent.conf:1: option \"store\": 'http://certs.example.net/x': plain http:// is accepted "
        "for loopback hosts only: use https:// (valid: s3://BUCKET/PREFIX, file:///PATH, "
        "https://HOST/PATH or http://LOOPBACK/PATH)",
    ),
    (
        MINIMAL.replace(f'"{PUBLISHER}"', '"ed25519:abc"'),
        'agent.conf:4: option "publisher" in cluster "web": \'ed25519:abc\': publisher key: '
        'must encode 32 bytes, not 2 (valid: "ed25519:<base64url of 32 bytes>", or a list of '
        "them)",
    ),
    (
        MINIMAL.replace(f'  publisher = "{PUBLISHER}"\n', ""),
        'agent.conf:2: option "publisher" in cluster "web": is required: the sync\'s public '
        "key, which `certfleet clusters show web --config SYNC_CONFIG` prints in this "
        'cluster\'s stanza (valid: "ed25519:<base64url of 32 bytes>", or a list of them)',
    ),
    (
        MINIMAL.replace(SECRET_1, "k1:" + "Q" * 44),
        'agent.conf:3: option "secret" in cluster "web": cluster secret k1: must encode 32 '
        'bytes, not 33 (valid: "<id>:<base64url of 32 bytes>", or a list of them '
        "(the newest first))",
    ),
    (
        MINIMAL.replace('cluster "web"', 'cluster "-web"'),
        "agent.conf:2: option \"cluster\": cluster name '-web' is not 1-40 characters of a-z "
        "0-9 - starting with a letter or digit",
    ),
    (
        MINIMAL + CLUSTER,
        'agent.conf:6: option "cluster": "web" is defined twice (first at line 2)',
    ),
    (
        MINIMAL + 'default { files { pem = "/x/${ORDER_NAME}" } }',
        'agent.conf:6: option "pem" in default > files: unknown option '
        "(valid: chain, chained, combined, crt, key, p12)",
    ),
    (
        MINIMAL + 'order "a" {\n files { key = "certs/a.key" }\n}',
        'agent.conf:7: option "key" in order "a" > files: \'certs/a.key\' must be an '
        f"absolute path (starting with /) (valid: {VALID_FILES})",
    ),
    (
        MINIMAL + 'default {\n files { crt = "/etc/ssl/cert.pem" }\n}',
        "agent.conf:7: option \"crt\" in default > files: '/etc/ssl/cert.pem' must contain "
        "${ORDER_NAME} here, or every order would write the same file "
        f"(valid: {VALID_FILES})",
    ),
    (
        MINIMAL + 'default {\n files { crt = "/etc/${HOST}/${ORDER_NAME}" }\n}',
        "agent.conf:7: option \"crt\" in default > files: '/etc/${HOST}/${ORDER_NAME}' "
        "${ORDER_NAME} is the only variable (write $ only as part of it) "
        f"(valid: {VALID_FILES})",
    ),
    (
        MINIMAL + 'default {\n files { crt = "/etc/../${ORDER_NAME}" }\n}',
        "agent.conf:7: option \"crt\" in default > files: '/etc/../${ORDER_NAME}' must not "
        f"contain empty, '.' or '..' components (valid: {VALID_FILES})",
    ),
    (
        MINIMAL
        + 'default {\n files {\n  crt = "/c/${ORDER_NAME}"\n  key = "/c/${ORDER_NAME}"\n }\n}',
        "agent.conf:8: option \"crt\" in default > files: '/c/${ORDER_NAME}' is also used by "
        "another file type",
    ),
    (
        MINIMAL + 'default { key_perm = "0644" }',
        'agent.conf:6: option "key_perm" in default: 0644 lets every user read or change '
        'private keys (valid: a mode without "other" bits, like "0600" or "0640")',
    ),
    (
        MINIMAL + "default { key_perm = 0640 }",
        'agent.conf:6: option "key_perm" in default: expected a quoted string, got 640 '
        '(valid: a quoted octal mode like "0640" (a bare 0640 would be read as decimal 640))',
    ),
    (
        MINIMAL + 'order "a" { cert_perm = "0894" }',
        'agent.conf:6: option "cert_perm" in order "a": \'0894\' is not an octal mode '
        '(valid: a quoted octal mode like "0640" (a bare 0640 would be read as decimal 640))',
    ),
    (
        MINIMAL + 'order "a" { key_user = "root; rm" }',
        'agent.conf:6: option "key_user" in order "a": \'root; rm\' is not a user or group '
        "name (valid: a name like www-data, or a numeric id)",
    ),
    (
        MINIMAL + 'order "a" { remove = "purge" }',
        'agent.conf:6: option "remove" in order "a": \'purge\' is not a valid choice '
        "(valid: keep, delete)",
    ),
    (
        MINIMAL + 'order "a" { on_update = ["ok", ""] }',
        'agent.conf:6: option "on_update" in order "a": has an empty command '
        "(valid: shell commands)",
    ),
    (
        MINIMAL + 'order "a" { p12_password = 123456 }',
        'agent.conf:6: option "p12_password" in order "a": expected a quoted string, '
        "got a value of another type",
    ),
    (
        MINIMAL + 'order "a/b" { }',
        "agent.conf:6: option \"order\": order name 'a/b' may only contain A-Z a-z 0-9 * . _ -",
    ),
    (
        MINIMAL + 'order "a" { }\norder "a" { }',
        'agent.conf:7: option "order": "a" is defined twice (first at line 6)',
    ),
    (
        MINIMAL + 'default "x" { }',
        'agent.conf:6: option "default": takes no name (valid: default { ... })',
    ),
    (
        MINIMAL + "order { }",
        'agent.conf:6: option "order": needs exactly one name (valid: order "NAME" { ... })',
    ),
    (
        MINIMAL + 'order "a" { remove_after = "forever" }',
        'agent.conf:6: option "remove_after" in order "a": bad duration \'forever\': use a '
        'number of seconds or units d, h, m, s, like "1h30m" (valid: "90s", "5m", "1h30m", '
        '"7d" or a number of seconds)',
    ),
    (
        MINIMAL + 'default { probe = "::1:443" }',
        "agent.conf:6: option \"probe\" in default: '::1:443': an IPv6 address is written in "
        f"brackets, like [::1]:443 (valid: {VALID_PROBE})",
    ),
    (
        MINIMAL + 'default { probe = "[::1]443" }',
        "agent.conf:6: option \"probe\" in default: '[::1]443': an IPv6 address is written "
        f"[ADDRESS]:PORT (valid: {VALID_PROBE})",
    ),
    (
        MINIMAL + 'order "a" { probe = ["127.0.0.1:443", "localhost"] }',
        'agent.conf:6: option "probe" in order "a": entry 2: \'localhost\': needs a host and '
        f"a port (valid: {VALID_PROBE})",
    ),
    (
        MINIMAL + 'order "a" { probe = "127.0.0.1:0" }',
        "agent.conf:6: option \"probe\" in order \"a\": '127.0.0.1:0': port '0' is not a "
        f"number from 1 to 65535 (valid: {VALID_PROBE})",
    ),
    (
        MINIMAL + 'order "a" { probe = "127.0.0.1:65536" }',
        "agent.conf:6: option \"probe\" in order \"a\": '127.0.0.1:65536': port '65536' is "
        f"not a number from 1 to 65535 (valid: {VALID_PROBE})",
    ),
    (
        MINIMAL + 'order "a" { probe = "127.0.0.300:443" }',
        "agent.conf:6: option \"probe\" in order \"a\": '127.0.0.300:443': '127.0.0.300' is "
        f"not an IPv4 address (valid: {VALID_PROBE})",
    ),
    (
        MINIMAL + 'order "a" { probe = "[fe80::zz]:443" }',
        "agent.conf:6: option \"probe\" in order \"a\": '[fe80::zz]:443': 'fe80::zz' is not "
        f"an IPv6 address (valid: {VALID_PROBE})",
    ),
    (
        MINIMAL + 'order "a" { probe = "web_1:443" }',
        "agent.conf:6: option \"probe\" in order \"a\": 'web_1:443': host name 'web_1' has an "
        "empty label or one that is not letters, digits and inner hyphens "
        f"(valid: {VALID_PROBE})",
    ),
    (
        MINIMAL + 'default { probe = ["127.0.0.1:443", "127.0.0.1:443"] }',
        'agent.conf:6: option "probe" in default: lists 127.0.0.1:443 twice '
        f"(valid: {VALID_PROBE})",
    ),
    (
        MINIMAL + "default { probe = 443 }",
        'agent.conf:6: option "probe" in default: expected a quoted string or a list of '
        "quoted strings",
    ),
    (
        MINIMAL + 'default { probe_timeout = "0.5s" }',
        "agent.conf:6: option \"probe_timeout\" in default: '0.5s' is out of range (valid: "
        '"90s", "5m", "1h30m", "7d" or a number of seconds; from 1s to 10m)',
    ),
    (
        MINIMAL + 'order "a" { probe_timeout = "soon" }',
        'agent.conf:6: option "probe_timeout" in order "a": bad duration \'soon\': use a '
        'number of seconds or units d, h, m, s, like "1h30m" (valid: "90s", "5m", "1h30m", '
        '"7d" or a number of seconds; from 1s to 10m)',
    ),
    (
        MINIMAL + 'order "a" { probe_sni = "*.example.com" }',
        'agent.conf:6: option "probe_sni" in order "a": \'*.example.com\': is a wildcard: '
        f"name one host it covers (valid: {VALID_SNI})",
    ),
    (
        MINIMAL + 'order "a" { probe_sni = "127.0.0.1" }',
        'agent.conf:6: option "probe_sni" in order "a": \'127.0.0.1\': is an address: SNI '
        f"carries host names only (valid: {VALID_SNI})",
    ),
    (
        MINIMAL + 'order "a" { probe_sni = ["a.example.com"] }',
        'agent.conf:6: option "probe_sni" in order "a": expected a quoted string, got '
        "['a.example.com']",
    ),
    (
        MINIMAL + 'stagger = "8d"',
        'agent.conf:6: option "stagger": \'8d\' is out of range (valid: "90s", "5m", "1h30m", '
        '"7d" or a number of seconds; at most 7d)',
    ),
    (
        MINIMAL + "stagger = -5",
        'agent.conf:6: option "stagger": bad duration -5: must be a finite, non-negative '
        'duration (valid: "90s", "5m", "1h30m", "7d" or a number of seconds; at most 7d)',
    ),
    (
        MINIMAL + 'urgent_before = "1y"',
        "agent.conf:6: option \"urgent_before\": bad duration '1y': use a number of seconds "
        'or units d, h, m, s, like "1h30m" (valid: "90s", "5m", "1h30m", "7d" or a number of '
        "seconds; at most 90d)",
    ),
    (
        MINIMAL + 'update_window = "3am-5am"',
        "agent.conf:6: option \"update_window\": '3am-5am': is not a window HH:MM-HH:MM "
        f"(valid: {VALID_WINDOW})",
    ),
    (
        MINIMAL + 'update_window = "03:00-24:00"',
        "agent.conf:6: option \"update_window\": '03:00-24:00': is not a window HH:MM-HH:MM "
        f"(valid: {VALID_WINDOW})",
    ),
    (
        MINIMAL + 'update_window = "03:00-03:00"',
        "agent.conf:6: option \"update_window\": '03:00-03:00': opens and closes at the same "
        f"time (valid: {VALID_WINDOW})",
    ),
    (
        MINIMAL + 'update_window = "03:00-05:00 CET"',
        "agent.conf:6: option \"update_window\": '03:00-05:00 CET': is not a window "
        f"HH:MM-HH:MM (valid: {VALID_WINDOW})",
    ),
    (
        MINIMAL + 'update_days = ["sat", "caturday"]',
        "agent.conf:6: option \"update_days\": entry 2: 'caturday': is not a day of the week "
        f"(valid: {VALID_DAYS})",
    ),
    (
        MINIMAL + 'update_days = ["sat", "Saturday"]',
        f'agent.conf:6: option "update_days": lists sat twice (valid: {VALID_DAYS})',
    ),
    (
        MINIMAL + "update_days = []",
        f'agent.conf:6: option "update_days": is an empty list (valid: {VALID_DAYS})',
    ),
    (
        MINIMAL + 'default { stagger = "1h" }',
        'agent.conf:6: option "stagger" in default: unknown option (valid: cert_perm, '
        "check_command, files, key_group, key_perm, key_user, on_update, p12_password, probe, "
        "probe_sni, probe_timeout, remove, remove_after)",
    ),
    (
        "store = \n",
        "agent.conf: at end of file: syntax error: unexpected end of file (valid: true or "
        'false, a quoted string, a name, "{", "[", a number)',
    ),
]


def test_hook_env_names_variables_each_once() -> None:
    config = parse_agent_config(MINIMAL + 'hook_env = ["HTTPS_PROXY", "TZ", "TZ"]\n', "a.conf")
    assert config.hook_env == ("HTTPS_PROXY", "TZ")
    assert parse_agent_config(MINIMAL, "a.conf").hook_env == ()
    with pytest.raises(ConfigError) as caught:
        parse_agent_config(MINIMAL + 'hook_env = ["A=B"]\n', "a.conf")
    assert "hook_env" in str(caught.value) and "not an environment variable name" in str(
        caught.value
    )


@pytest.mark.parametrize(("text", "message"), BROKEN)
def test_broken(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_agent_config(text, "agent.conf")
    assert str(caught.value) == message


PROBES = [
    ("", "x", (), 10.0, None),
    ('default { probe = "127.0.0.1:443" }', "x", ("127.0.0.1:443",), 10.0, None),
    (
        'default {\n probe = ["127.0.0.1:443", "[::1]:8443", "LocalHost:443"]\n'
        ' probe_timeout = "30s"\n}',
        "x",
        ("127.0.0.1:443", "[::1]:8443", "localhost:443"),
        30.0,
        None,
    ),
    ('default { probe = "[0:0::1]:443" }', "x", ("[::1]:443",), 10.0, None),
    (
        'default { probe_timeout = 5 }\norder "a" { probe = "127.0.0.1:443" }',
        "a",
        ("127.0.0.1:443",),
        5.0,
        None,
    ),
    ('default { probe = "127.0.0.1:443" }\norder "a" { probe = [] }', "a", (), 10.0, None),
    (
        'order "a" {\n probe = "127.0.0.1:443"\n probe_sni = "Shop.Example.com"\n}',
        "a",
        ("127.0.0.1:443",),
        10.0,
        "shop.example.com",
    ),
    ('order "a" { probe = "127.0.0.1:443" }', "x", (), 10.0, None),
]


@pytest.mark.parametrize(("text", "order", "addresses", "timeout", "sni"), PROBES)
def test_probe_settings(
    text: str, order: str, addresses: tuple[str, ...], timeout: float, sni: str | None
) -> None:
    settings_ = parse_agent_config(MINIMAL + text, "agent.conf").settings_for(order)
    assert tuple(str(address) for address in settings_.probe) == addresses
    assert (settings_.probe_timeout, settings_.probe_sni) == (timeout, sni)


SCHEDULES = [
    ("", 0.0, None, 7 * 86400),
    ('stagger = "30m"\nurgent_before = "3d"', 1800.0, None, 3 * 86400),
    ('update_window = "03:00-05:00"', 0.0, UpdateWindow(180, 300), 7 * 86400),
    ('update_window = "3:30-5:00"', 0.0, UpdateWindow(210, 300), 7 * 86400),
    ('update_window = " 22:00-02:00 "', 0.0, UpdateWindow(1320, 120), 7 * 86400),
    (
        'update_window = "22:00-02:00"\nupdate_days = ["Sunday", "sat"]\nurgent_before = 0',
        0.0,
        UpdateWindow(1320, 120, (5, 6)),
        0.0,
    ),
    ('update_days = "mon"', 0.0, UpdateWindow(0, 0, (0,)), 7 * 86400),  # all of Monday
]


@pytest.mark.parametrize(("text", "stagger", "window", "urgent_before"), SCHEDULES)
def test_cutover_schedule(
    text: str, stagger: float, window: UpdateWindow | None, urgent_before: float
) -> None:
    config = parse_agent_config(MINIMAL + text, "agent.conf")
    assert (config.stagger, config.update_window, config.urgent_before) == (
        stagger,
        window,
        urgent_before,
    )


def test_repeated_default_blocks_are_one_block() -> None:
    text = MINIMAL + 'default { on_update = "a" }\ndefault { check_command = "b" }\n'
    settings_ = parse_agent_config(text, "agent.conf").settings_for("x")
    assert (settings_.on_update, settings_.check_command) == (("a",), "b")


def test_secrets_and_passwords_never_reach_messages() -> None:
    text = (
        'store = "file:///x"\n'
        'cluster "web" {\n'
        f'  secret = ["k1:{"s" * 40}", "{SECRET_1}", "not a secret at all"]\n'
        '  publisher = "ed25519:pppp"\n'
        "}\n"
        'order "a" { p12_password = ["p12-secret"] }\n'
    )
    with pytest.raises(ConfigError) as caught:
        parse_agent_config(text, "agent.conf")
    message = str(caught.value)
    assert len(message.splitlines()) == 4
    for secret in ("s" * 40, SECRET_1.split(":")[1], "not a secret at all", "p12-secret"):
        assert secret not in message


@pytest.mark.parametrize(
    ("template", "name", "expected"),
    [
        ("/etc/certs/${ORDER_NAME}.pem", "example.com", "/etc/certs/example.com.pem"),
        ("/etc/certs/${ORDER_NAME}.pem", "_.example.com", "/etc/certs/_.example.com.pem"),
        ("/etc/certs/${ORDER_NAME}/key.pem", "a", "/etc/certs/a/key.pem"),
        ("/etc/certs/${ORDER_NAME}.pem", "...", "/etc/certs/....pem"),
        ("/${ORDER_NAME}", "a", "/a"),
        ("/etc/fixed.pem", "a", "/etc/fixed.pem"),
        ("/c/${ORDER_NAME}-${ORDER_NAME}.pem", "a", "/c/a-a.pem"),
    ],
)
def test_expand_files_path(template: str, name: str, expected: str) -> None:
    assert expand_files_path(template, name) == expected


@pytest.mark.parametrize(
    ("template", "name"),
    [
        ("/etc/certs/${ORDER_NAME}.pem", "../../etc/passwd"),
        ("/etc/certs/${ORDER_NAME}.pem", "a/b"),
        ("/etc/certs/${ORDER_NAME}/key.pem", ".."),
        ("/etc/certs/${ORDER_NAME}/key.pem", "."),
        ("/etc/certs/${ORDER_NAME}", ""),
        ("/etc/certs/${ORDER_NAME}", "a\0b"),
        ("/etc/certs/${ORDER_NAME}", "*.example.com"),
        ("/etc/certs/${ORDER_NAME}", "é"),
        ("/etc/certs/${ORDER_NAME}", "a" * 300),
        ("certs/${ORDER_NAME}", "a"),
        ("/etc/certs/..${ORDER_NAME}/x", "/"),
    ],
)
def test_expand_files_path_refuses_escapes(template: str, name: str) -> None:
    with pytest.raises(UnsafeFilesPathError) as caught:
        expand_files_path(template, name)
    assert len(str(caught.value)) < 300


@given(st.text(max_size=40))
def test_expansion_never_leaves_the_directory(name: str) -> None:
    try:
        path = expand_files_path("/etc/certs/${ORDER_NAME}/fullchain.pem", name)
    except UnsafeFilesPathError:
        return
    assert path.startswith("/etc/certs/")
    assert path.count("/") == 4
    assert "/../" not in path and "/./" not in path


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                MINIMAL,
                CLUSTER,
                'store = "https://h/x"\n',
                "default {\n",
                'order "a.example" {\n',
                "files {\n",
                "}\n",
                'key = "/k/${ORDER_NAME}"\n',
                'key_perm = "0600"\n',
                'on_update = ["x"]\n',
                "on_update = 1\n",
                'remove = "delete"\n',
                '"',
                "#",
                "= [",
            ]
        ),
        max_size=10,
    )
)
def test_random_pieces_give_a_config_or_a_config_error(pieces: list[str]) -> None:
    try:
        parse_agent_config("".join(pieces), "agent.conf")
    except ConfigError as err:
        assert str(err).startswith("agent.conf")


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=120))
def test_random_text_raises_only_config_errors(text: str) -> None:
    try:
        parse_agent_config(text, "agent.conf")
    except ConfigError as err:
        assert str(err).startswith("agent.conf")
