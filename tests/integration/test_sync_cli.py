"""``certfleet sync`` and ``certfleet rekey`` as an operator runs them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from certfleet.cli import main
from certfleet.config import parse_agent_config
from certfleet.store import open_store
from node_agent.agent import Agent
from tests.plugins.faults import agent_config_text
from tests.plugins.sandbox import Sandbox, unique_cluster
from tests.plugins.seaweedfs import SeaweedFS


def cli(*argv: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def config(
    tmp_path: Path, sandbox: Sandbox, s3_url: str, seaweedfs: SeaweedFS,
    capsys: pytest.CaptureFixture[str],
) -> tuple[Path, str]:  # fmt: skip
    path = tmp_path / "sync.conf"
    code, _, err = cli(
        "init", "--config", str(path), "--store", s3_url,
        "--store-endpoint", seaweedfs.endpoint, "--api-endpoint", sandbox.url,
        "--api-key", sandbox.api_key, capsys=capsys,
    )  # fmt: skip
    assert code == 0, err
    cluster = unique_cluster("cli")
    code, stanza, err = cli("clusters", "add", cluster, "--config", str(path), capsys=capsys)
    assert code == 0 and "publisher" in stanza, err
    path.write_text(path.read_text().replace("secret =", 'key_type = "ecdsa"\n  secret ='))
    return path, cluster


def test_sync_once_settles_and_then_leaves_the_head_unchanged(
    config: tuple[Path, str], s3_url: str, seaweedfs: SeaweedFS,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    path, cluster = config
    # order names are global at the provider: keep them apart from other tests' orders
    for name in (f"cli.{cluster}.example.com", f"*.wild.{cluster}.example.com"):
        code, _, err = cli("add", "--cluster", cluster, name, "--config", str(path), capsys=capsys)
        assert code == 0, err
    code, out, err = cli("sync", "--once", "--json", "--config", str(path), capsys=capsys)
    assert code == 0, err
    first: dict[str, Any] = json.loads(out)
    assert first["certificates_published"] == 2 and first["errors"] == {}
    store = open_store(s3_url, endpoint=seaweedfs.endpoint)
    head_key = f"v1/clusters/{cluster}/head"
    head = store.get(head_key, max_bytes=1 << 24)
    code, out, err = cli("sync", "--once", "--config", str(path), capsys=capsys)
    assert code == 0 and "0 certificates published" in out, err
    again = store.get(head_key, max_bytes=1 << 24)
    assert again.data == head.data and again.etag == head.etag
    keys = list(store.list(""))
    assert keys and not any("example" in key or "wild" in key or "cli." in key for key in keys), (
        keys
    )


def test_sync_once_prints_the_fleet_check(
    config: tuple[Path, str], s3_url: str, seaweedfs: SeaweedFS, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    path, cluster = config
    text = path.read_text()
    path.write_text(text.replace("signing_key", 'fleet_check_interval = "1s"\nsigning_key', 1))
    name = f"fleet.{cluster}.example.com"
    code, _, err = cli("add", "--cluster", cluster, name, "--config", str(path), capsys=capsys)
    assert code == 0, err
    code, out, err = cli("sync", "--once", "--json", "--config", str(path), capsys=capsys)
    assert code == 0, err
    first = json.loads(out)
    assert first["certificates_published"] == 1
    assert first["fleet"][cluster]["nodes"] == 0 and first["fleet_problem_nodes"] == 0
    code, stanza, err = cli("clusters", "show", cluster, "--config", str(path), capsys=capsys)
    assert code == 0, err
    for node, extra in (("web-1", ""), ("web-2", 'default { on_update = ["exit 3"] }\n')):
        agent_text = agent_config_text(
            s3_url, tmp_path / node, stanza, endpoint=seaweedfs.endpoint, extra=extra
        )
        Agent(parse_agent_config(agent_text, str(tmp_path / f"{node}.conf"))).poll_once()
    time.sleep(1.1)  # the interval
    code, out, err = cli("sync", "--once", "--config", str(path), capsys=capsys)
    assert code == 0, err  # a failing node is no sync error
    assert (
        f"fleet {cluster}: 2 nodes, 2 current, 0 behind, 0 stale, 1 failing, 0 unreadable, "
        f"0 ahead; 1 with problems (certfleet nodes --cluster {cluster})"
    ) in out.splitlines()


def test_sync_verify_store_repairs_a_deleted_shard(
    config: tuple[Path, str], s3_url: str, seaweedfs: SeaweedFS,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    path, cluster = config
    name = f"verify.{cluster}.example.com"
    code, _, err = cli("add", "--cluster", cluster, name, "--config", str(path), capsys=capsys)
    assert code == 0, err
    code, _, err = cli("sync", "--once", "--config", str(path), capsys=capsys)
    assert code == 0, err
    store = open_store(s3_url, endpoint=seaweedfs.endpoint)
    shards = list(store.list(f"v1/clusters/{cluster}/shards/"))
    store.delete(shards[0])
    code, out, err = cli("sync", "--once", "--verify-store", "--config", str(path), capsys=capsys)
    assert code == 0, err
    assert "1 missing or corrupted" in err and "objects verified" in err
    assert "1 certificates published" not in out, "a shard is rebuilt, no new certificate"
    code, out, err = cli(
        "sync", "--once", "--verify-store", "--json", "--config", str(path), capsys=capsys
    )
    clean: dict[str, Any] = json.loads(out)
    assert code == 0 and clean["objects_repaired"] == 0 and clean["objects_verified"] == 17
    assert shards[0] not in list(store.list(f"v1/clusters/{cluster}/shards/"))


def test_rekey_marks_orders_for_the_next_sync(
    config: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    path, cluster = config
    order = f"rk.{cluster}.example.com"
    cli("add", "--cluster", cluster, order, "--config", str(path), capsys=capsys)
    assert cli("sync", "--once", "--config", str(path), capsys=capsys)[0] == 0
    code, out, _ = cli(
        "rekey", "--cluster", cluster, "--json", "--config", str(path), capsys=capsys
    )
    assert code == 0 and json.loads(out) == {"cluster": cluster, "marked": [order]}
    code, out, _ = cli("sync", "--once", "--json", "--config", str(path), capsys=capsys)
    assert code == 0 and json.loads(out)["keys_generated"] == 1


def test_usage_and_config_errors_exit_2(
    config: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = config
    assert cli("sync", "--once", capsys=capsys)[0] == 2
    assert cli("sync", "--interval", "soon", "--config", str(path), capsys=capsys)[0] == 2
    code, _, err = cli("rekey", "--cluster", "nope", "--config", str(path), capsys=capsys)
    assert code == 2 and "nope" in err


def test_interval_loop_stops_promptly_on_sigterm(
    config: tuple[Path, str], seaweedfs: SeaweedFS
) -> None:
    path, _ = config
    program = "from certfleet.cli import main; raise SystemExit(main())"
    process = subprocess.Popen(
        [sys.executable, "-c", program, "sync", "--interval", "30s", "--json",
         "--config", str(path)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env={**os.environ, **seaweedfs.env},
    )  # fmt: skip
    try:
        assert process.stdout is not None
        assert json.loads(process.stdout.readline())["errors"] == {}
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
        assert time.monotonic() - started < 5
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
