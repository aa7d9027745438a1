"""The admin CLI ``certfleet`` over real HTTP against the sandbox: every command, its output
(human and ``--json``) and its exit code; mostly in-process through ``main(argv)``, a few
through ``python -m certfleet`` as a user would run it."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import hcl
import pytest

from certfleet.bundle import ClusterSecret
from certfleet.cli import main
from certfleet.config import parse_agent_config
from certfleet.config.sync import load_sync_config
from node_agent.agent import Agent
from tests.plugins.cli import CliRun
from tests.plugins.closedpipe import run_into_closed_pipe
from tests.plugins.sandbox import Sandbox, unique_cluster

STANZA = re.compile(
    r'cluster "(?P<name>[a-z0-9-]+)" \{\n'
    r'  secret    = "(?P<secret>[A-Za-z0-9_-]+:[A-Za-z0-9_-]{43})"\n'
    r'  publisher = "(?P<publisher>ed25519:[A-Za-z0-9_-]{43})"\n'
    r"\}\n"
)


@pytest.fixture(autouse=True)
def isolated(cli_home: Path) -> Path:
    """No ~/.certfleet or CERTFLEET_* of the developer's leaks into a test (``cli_home``)."""
    return cli_home


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Any:
    def run(*argv: str) -> CliRun:
        code = main(list(argv))
        captured = capsys.readouterr()
        assert "Traceback" not in captured.err
        return CliRun(code, captured.out, captured.err)

    return run


@pytest.fixture
def config(cli: Any, sandbox: Sandbox, tmp_path: Path) -> Path:
    path = tmp_path / "sync.hcl"
    result = cli(
        "init", "--config", str(path), "--store", "s3://bucket/certfleet",
        "--api-endpoint", sandbox.url, "--api-key", sandbox.api_key,
    )  # fmt: skip
    assert result.code == 0, result.err
    return path


@pytest.fixture
def cluster(cli: Any, config: Path) -> str:
    name = unique_cluster()
    assert cli("clusters", "add", name, "--config", str(config)).code == 0
    return name


class Recorder:
    """An HTTP server that counts the requests it gets (and answers 500 to each)."""

    def __init__(self) -> None:
        self.count = 0
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                recorder.count += 1
                self.send_response(500)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_POST = do_PATCH = do_DELETE = do_GET

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api/v3"


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    server = Recorder()
    thread = threading.Thread(target=server.server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.server.shutdown()
    server.server.server_close()


# -- init ----------------------------------------------------------------------------------


def test_init_writes_a_private_config_and_keeps_an_existing_one(
    cli: Any, sandbox: Sandbox, tmp_path: Path
) -> None:
    path = tmp_path / "sync.hcl"
    args = [
        "init", "--config", str(path), "--store", "s3://bucket/prefix",
        "--store-endpoint", "http://127.0.0.1:8333", "--api-endpoint", sandbox.url,
        "--api-key", sandbox.api_key,
    ]  # fmt: skip
    first = cli(*args, "--json")
    assert first.code == 0, first.err
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = load_sync_config(path)
    assert loaded.api_key == sandbox.api_key and loaded.api_endpoint == sandbox.url
    assert loaded.store == "s3://bucket/prefix"
    assert loaded.store_endpoint == "http://127.0.0.1:8333"
    assert first.json()["publisher"] == loaded.signing_key.public_key().export()
    before = path.read_text()

    again = cli(*args)
    assert again.code == 2 and "--force" in again.err and str(path) in again.err
    assert path.read_text() == before

    forced = cli(*args, "--force")
    assert forced.code == 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_sync_config(path).signing_key.export() != loaded.signing_key.export()
    assert "ed25519-private" not in forced.out + forced.err


def test_init_refuses_bad_arguments(cli: Any, tmp_path: Path) -> None:
    path = tmp_path / "sync.hcl"
    bad_store = cli(
        "init", "--config", str(path), "--store", "ftp://x/y",
        "--api-endpoint", "http://127.0.0.1:1/api/v3", "--api-key", "k",
    )  # fmt: skip
    assert bad_store.code == 2 and "--store" in bad_store.err
    quoted_key = cli(
        "init", "--config", str(path), "--store", "s3://b/p",
        "--api-endpoint", "http://127.0.0.1:1/api/v3", "--api-key", 'sec"retkey',
    )  # fmt: skip
    assert quoted_key.code == 2 and "--api-key" in quoted_key.err
    assert "retkey" not in quoted_key.err
    no_config = cli("init", "--store", "s3://b/p", "--api-endpoint", "http://h/", "--api-key", "k")
    assert no_config.code == 2 and "--config" in no_config.err
    missing = cli("init", "--config", str(path))
    assert missing.code == 2 and "--store" in missing.err
    endpoint_of_a_file_store = cli(
        "init", "--config", str(path), "--store", f"file://{tmp_path}/store",
        "--store-endpoint", "http://127.0.0.1:8333",
        "--api-endpoint", "http://127.0.0.1:1/api/v3", "--api-key", "k",
    )  # fmt: skip
    assert endpoint_of_a_file_store.code == 2
    assert "--store-endpoint applies to s3:// stores only" in endpoint_of_a_file_store.err
    assert not path.exists()


# -- clusters ------------------------------------------------------------------------------


def test_clusters_add_prints_only_the_stanza(cli: Any, config: Path) -> None:
    name = unique_cluster()
    result = cli("clusters", "add", name, "--config", str(config))
    assert result.code == 0, result.err
    match = STANZA.fullmatch(result.out)
    assert match, result.out
    parsed = hcl.loads(result.out)
    entry = parsed["cluster"][name]
    secret = ClusterSecret.parse(entry["secret"])
    assert secret.export() == match["secret"]
    loaded = load_sync_config(config)
    assert entry["publisher"] == loaded.signing_key.public_key().export()
    assert loaded.cluster(name).secrets == (secret,)
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert name in result.err and match["secret"] not in result.err

    again = cli("clusters", "add", name, "--config", str(config))
    assert again.code == 2 and name in again.err and again.out == ""
    second = STANZA.fullmatch(cli("clusters", "add", unique_cluster(), "--config", str(config)).out)
    assert second and ClusterSecret.parse(second["secret"]).id != secret.id
    assert len(load_sync_config(config).clusters) == 2
    bad = cli("clusters", "add", "Web_1", "--config", str(config))
    assert bad.code == 2 and "'Web_1'" in bad.err
    assert cli("clusters", "add", "x").code == 2


def test_clusters_list(cli: Any, config: Path, cluster: str) -> None:
    human = cli("clusters", "list", "--config", str(config))
    assert human.code == 0 and cluster in human.out
    as_json = cli("--config", str(config), "clusters", "list", "--json").json()
    secret_id = load_sync_config(config).cluster(cluster).secrets[0].id
    assert as_json["clusters"] == [{"name": cluster, "secret_ids": [secret_id], "key_type": "rsa"}]
    assert as_json["publisher"].startswith("ed25519:")


@dataclass(frozen=True)
class Published:
    """A sync config with a file:// store, one cluster with one order, synced once."""

    config: Path
    store: str
    cluster: str
    order: str


@pytest.fixture
def published(cli: Any, sandbox: Sandbox, tmp_path: Path) -> Published:
    store = f"file://{tmp_path}/store"
    (tmp_path / "store").mkdir()
    path = tmp_path / "sync.hcl"
    result = cli(
        "init", "--config", str(path), "--store", store,
        "--api-endpoint", sandbox.url, "--api-key", sandbox.api_key,
    )  # fmt: skip
    assert result.code == 0, result.err
    cluster = unique_cluster()
    assert cli("clusters", "add", cluster, "--config", str(path)).code == 0
    order = f"show.{cluster}.example.com"  # order names are global at the provider
    assert cli("add", "--cluster", cluster, order, "--config", str(path)).code == 0
    synced = cli("sync", "--once", "--config", str(path))
    assert synced.code == 0 and "1 certificates published" in synced.out, synced.err
    return Published(path, store, cluster, order)


def install_with_stanza(published: Published, stanza: str, state_dir: Path) -> Path:
    """Run one poll of an agent whose cluster block is ``stanza``; the order's leaf."""
    config = parse_agent_config(
        f'store = "{published.store}"\nstate_dir = "{state_dir}"\n' + stanza, "agent.conf"
    )
    assert [c.name for c in config.clusters] == [published.cluster]
    result = Agent(config).poll_once()
    assert result.ok, result.problems
    leaf = state_dir / "orders" / published.order / "rsa.crt.pem"
    assert leaf.read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
    return leaf


def test_clusters_show_prints_the_stanza_an_agent_installs_with(
    cli: Any, published: Published, tmp_path: Path
) -> None:
    cfg = ["--config", str(published.config)]
    shown = cli("clusters", "show", published.cluster, *cfg)
    assert shown.code == 0, shown.err
    match = STANZA.fullmatch(shown.out)
    assert match, shown.out
    sync_config = load_sync_config(published.config)
    secret = sync_config.cluster(published.cluster).secrets[0]
    assert match["secret"] == secret.export() and match["secret"] not in shown.err
    assert hcl.loads(shown.out)["cluster"][published.cluster]["publisher"] == (
        sync_config.signing_key.public_key().export()
    )
    install_with_stanza(published, shown.out, tmp_path / "node1")
    as_json = cli("clusters", "show", published.cluster, "--json", *cfg).json()
    assert as_json["secrets"] == [secret.export()] and as_json["cluster"] == published.cluster

    # during a rotation (new secret listed first in the sync config) the stanza lists both
    new = ClusterSecret.generate("rotated")
    text = published.config.read_text()
    published.config.write_text(
        text.replace(f'secret = "{secret.export()}"', f'secret = ["{new.export()}", '
                     f'"{secret.export()}"]')
    )  # fmt: skip
    assert cli("sync", "--once", *cfg).code == 0  # re-wraps everything for both secrets
    rotating = cli("clusters", "show", published.cluster, *cfg)
    assert rotating.code == 0 and "rotation" in rotating.err
    entry = hcl.loads(rotating.out)["cluster"][published.cluster]
    assert entry["secret"] == [new.export(), secret.export()]
    install_with_stanza(published, rotating.out, tmp_path / "node2")

    unknown = cli("clusters", "show", "nosuch", *cfg)
    assert unknown.code == 2 and unknown.out == "" and "'nosuch'" in unknown.err
    assert published.cluster in unknown.err
    assert cli("clusters", "show", published.cluster).code == 2  # no --config


def test_rekey_refuses_an_order_the_cluster_does_not_have(cli: Any, published: Published) -> None:
    cfg = ["--config", str(published.config), "--cluster", published.cluster]
    wrong = cli("rekey", *cfg, published.order, "nosuch")
    assert wrong.code == 2 and wrong.out == ""
    assert f"order 'nosuch' is not in cluster '{published.cluster}'" in wrong.err
    synced = cli("sync", "--once", "--json", "--config", str(published.config)).json()
    assert synced["keys_generated"] == 0  # nothing was marked, not even the real order
    right = cli("rekey", *cfg, "--json", published.order)
    assert right.code == 0 and right.json()["marked"] == [published.order]
    synced = cli("sync", "--once", "--json", "--config", str(published.config)).json()
    assert synced["keys_generated"] == 1


# -- orders --------------------------------------------------------------------------------


def test_order_lifecycle(cli: Any, config: Path, cluster: str) -> None:
    cfg = ["--config", str(config)]
    added = cli("add", "--cluster", cluster, "WWW.Example.com", "example.com", *cfg, "--json")
    assert added.code == 0, added.err
    order = added.json()
    assert order["name"] == "www.example.com" and order["cluster"] == cluster
    assert order["identifiers"] == [
        {"type": "dns", "value": "www.example.com", "approval": "http"},
        {"type": "dns", "value": "example.com", "approval": "http"},
    ]
    taken = cli("add", "--cluster", cluster, "www.example.com", *cfg)
    assert taken.code == 1 and "order_exists" in taken.err

    shown = cli("show", "www.example.com", *cfg)
    assert shown.code == 0 and "www.example.com (http)" in shown.out and cluster in shown.out
    assert cli("show", "www.example.com", *cfg, "--json").json() == order

    edited = cli(
        "edit", "--add-dnsname", "shop.example.com", "--rm-dnsname", "example.com",
        "--approval", "dns", "www.example.com", *cfg, "--json",
    )  # fmt: skip
    assert edited.code == 0, edited.err
    assert edited.json()["identifiers"] == [
        {"type": "dns", "value": "www.example.com", "approval": "dns"},
        {"type": "dns", "value": "shop.example.com", "approval": "dns"},
    ]
    listed = cli("list", "--cluster", cluster, *cfg, "--json").json()
    assert [o["name"] for o in listed] == ["www.example.com"]
    table = cli("list", "--cluster", cluster, *cfg)
    assert table.out.splitlines()[0].split() == ["NAME", "CLUSTER", "STATE", "DNS", "NAMES"]
    assert "shop.example.com" in table.out

    removed = cli("rm", "www.example.com", *cfg, "--json")
    assert removed.code == 0 and removed.json() == {"removed": "www.example.com"}
    gone = cli("show", "www.example.com", *cfg)
    assert gone.code == 1 and "no order named 'www.example.com'" in gone.err
    assert cli("list", "--cluster", cluster, *cfg, "--json").json() == []


def test_wildcard_orders_default_to_dns_approval(cli: Any, config: Path, cluster: str) -> None:
    cfg = ["--config", str(config)]
    order = cli("add", "--cluster", cluster, "*.shop.test", "shop.test", *cfg, "--json").json()
    assert order["name"] == "*.shop.test"
    assert [(i["value"], i["approval"]) for i in order["identifiers"]] == [
        ("*.shop.test", "dns"),
        ("shop.test", "http"),
    ]
    refused = cli("add", "--cluster", cluster, "--approval", "http", "*.other.test", *cfg)
    assert refused.code == 2 and "'*.other.test'" in refused.err and "dns" in refused.err
    wide = cli("edit", "--add-dnsname", "*.api.shop.test", "*.shop.test", *cfg, "--json")
    assert ("*.api.shop.test", "dns") in [
        (i["value"], i["approval"]) for i in wide.json()["identifiers"]
    ]
    assert cli("show", "*.shop.test", *cfg).code == 0
    assert cli("rm", "*.shop.test", *cfg).code == 0


def test_add_takes_the_configs_only_cluster(cli: Any, config: Path, cluster: str) -> None:
    order = cli("add", "only.example.net", "--config", str(config), "--json").json()
    assert order["cluster"] == cluster
    named = cli("add", "--name", "legacy", "a.example.net", "--config", str(config), "--json")
    assert named.json()["name"] == "legacy" and named.json()["cluster"] == cluster
    cli("clusters", "add", unique_cluster(), "--config", str(config))
    ambiguous = cli("add", "two.example.net", "--config", str(config))
    assert ambiguous.code == 2 and "--cluster" in ambiguous.err


def test_edit_refusals(cli: Any, config: Path, cluster: str) -> None:
    cfg = ["--config", str(config)]
    assert cli("add", "--cluster", cluster, "edit.example.org", *cfg).code == 0
    nothing = cli("edit", "edit.example.org", *cfg)
    assert nothing.code == 2 and "nothing to change" in nothing.err
    absent = cli("edit", "--rm-dnsname", "nope.example.org", "edit.example.org", *cfg)
    assert absent.code == 2 and "'nope.example.org'" in absent.err
    empty = cli("edit", "--rm-dnsname", "edit.example.org", "edit.example.org", *cfg)
    assert empty.code == 2 and "no DNS names left" in empty.err
    unknown = cli("edit", "--add-dnsname", "x.example.org", "missing.example.org", *cfg)
    assert unknown.code == 1 and "'missing.example.org'" in unknown.err
    assert cli("rm", "missing.example.org", *cfg).code == 1
    same = cli("edit", "--approval", "http", "edit.example.org", *cfg, "--json")
    assert same.code == 0 and "nothing sent" in same.err


BAD_NAMES = [
    ("a b.example.com", "letters, digits"),
    ("a..example.com", "empty label"),
    ("a" * 64 + ".example.com", "longer than 63"),
    (".".join(["a" * 60] * 5), "1-253"),
    ("a.*.example.com", "'*' only as its whole first label"),
    ("", "1-253"),
]


@pytest.mark.parametrize(("name", "rule"), BAD_NAMES)
def test_bad_dns_names_are_refused_before_any_request(
    cli: Any, recorder: Recorder, monkeypatch: pytest.MonkeyPatch, name: str, rule: str
) -> None:
    monkeypatch.setenv("CERTFLEET_API_ENDPOINT", recorder.url)
    monkeypatch.setenv("CERTFLEET_API_KEY", "k")
    added = cli("add", "--cluster", "web", "ok.example.com", name)
    assert added.code == 2
    assert repr(name)[:40] in added.err and rule in added.err
    edited = cli("edit", "--add-dnsname", name, "ok.example.com")
    assert edited.code == 2 and rule in edited.err
    assert cli("add", "--cluster", "web", "--name", "bad name", "ok.example.com").code == 2
    assert cli("add", "--cluster", "Bad", "ok.example.com").code == 2
    assert recorder.count == 0


def test_bad_api_key_is_named_but_never_shown(
    cli: Any, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CERTFLEET_API_ENDPOINT", sandbox.url)
    monkeypatch.setenv("CERTFLEET_API_KEY", "123_wrongsecretvalue")
    result = cli("list", "-vv")
    assert result.code == 1
    assert "API key" in result.err and "CERTFLEET_API_KEY" in result.err
    assert "wrongsecretvalue" not in result.err + result.out


def test_api_key_from_dotfile_and_environment(
    cli: Any, sandbox: Sandbox, isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert cli("list").code == 2  # no key anywhere
    (isolated / ".certfleet").write_text(
        f"# my account\napi_key {sandbox.api_key}\napi_endpoint {sandbox.url}  # sandbox\n"
    )
    assert cli("list", "--json").code == 0
    monkeypatch.setenv("CERTFLEET_API_KEY", "wrong")  # the environment beats the file
    assert cli("list").code == 1
    (isolated / ".certfleet").write_text("api_key\n")
    broken = cli("list")
    assert broken.code == 2 and ".certfleet:1" in broken.err and "api_key" in broken.err


def test_usage_errors(cli: Any, tmp_path: Path) -> None:
    assert cli().code == 2
    assert cli("frobnicate").code == 2
    assert cli("list", "--bogus").code == 2
    assert cli("--help").code == 0
    assert cli("add", "--help").code == 0
    missing = cli("list", "--config", str(tmp_path / "absent.hcl"))
    assert missing.code == 2 and "absent.hcl" in missing.err
    sync = cli("sync", "--once")  # no sync config anywhere: a usage error, naming what is missing
    assert sync.code == 2 and "--config" in sync.err


# -- as a user runs it ---------------------------------------------------------------------


def run_module(
    *argv: str, env: dict[str, str], stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "certfleet", *argv],
        env=env, input=stdin, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_python_dash_m_certfleet(sandbox: Sandbox, tmp_path: Path, isolated: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CERTFLEET_")}
    env["HOME"] = str(isolated)
    path = tmp_path / "sync.hcl"
    init = run_module(
        "init", "--config", str(path), "--store", "file:///var/lib/store",
        "--api-endpoint", sandbox.url, "--api-key", "-", env=env, stdin=sandbox.api_key + "\n",
    )  # fmt: skip
    assert init.returncode == 0, init.stderr
    assert load_sync_config(path).api_key == sandbox.api_key
    name = unique_cluster()
    stanza = run_module("clusters", "add", name, "--config", str(path), env=env)
    assert stanza.returncode == 0 and STANZA.fullmatch(stanza.stdout)
    added = run_module("add", "cli.example.com", "--json", "--config", str(path), env=env)
    assert added.returncode == 0 and json.loads(added.stdout)["cluster"] == name
    bad = run_module("add", "bad_name.example.com", "--config", str(path), env=env)
    assert bad.returncode == 2 and "bad_name.example.com" in bad.stderr
    assert "Traceback" not in bad.stderr and bad.stdout == ""
    unknown = run_module("show", "nope.example.com", "--config", str(path), env=env)
    assert unknown.returncode == 1 and "'nope.example.com'" in unknown.stderr
    helped = run_module("sandbox", "--help", env=env)
    assert helped.returncode == 0 and "TEST DOUBLE" in helped.stdout


def test_output_into_a_closed_pipe_ends_quietly(
    sandbox: Sandbox, tmp_path: Path, isolated: Path
) -> None:
    """``certfleet list | head -1`` and the like: exit 141 (128 + SIGPIPE), stderr empty."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CERTFLEET_")}
    env["HOME"] = str(isolated)
    (tmp_path / "store").mkdir()
    path = tmp_path / "sync.hcl"
    init = run_module(
        "init", "--config", str(path), "--store", f"file://{tmp_path}/store",
        "--api-endpoint", sandbox.url, "--api-key", sandbox.api_key, env=env,
    )  # fmt: skip
    assert init.returncode == 0, init.stderr
    added = run_module("clusters", "add", unique_cluster(), "--config", str(path), env=env)
    assert added.returncode == 0, added.stderr
    assert run_module("add", "pipe.example.com", "--config", str(path), env=env).returncode == 0
    for command in (["list"], ["list", "--json"], ["clusters", "list"], ["nodes"]):
        done = run_into_closed_pipe(
            [sys.executable, "-m", "certfleet", *command, "--config", str(path)], env=env
        )
        assert (done.returncode, done.stderr) == (141, ""), command
    failed = run_into_closed_pipe(
        [sys.executable, "-m", "certfleet", "list", "--config", str(tmp_path / "absent")], env=env
    )
    assert failed.returncode == 2 and "absent" in failed.stderr  # errors still go to stderr
