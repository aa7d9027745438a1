"""``certfleet nodes``: real agents write real acks to a real store (a directory, and SeaweedFS
S3), the publisher plugin plays the sync, and the command runs through ``certfleet.cli.main``."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from certfleet.bundle import Ack, ClusterSecret, seal_ack
from certfleet.cli import main
from certfleet.config import parse_agent_config
from node_agent.agent import Agent
from tests.plugins.cli import CliRun

if TYPE_CHECKING:  # registered in conftest.py, so that pytest rewrites its asserts
    from tests.plugins.publisher import Publisher

HOUR = 3600


class Fleet:
    """Two clusters of one store, a sync config naming both, and agents (one state dir each)."""

    def __init__(self, tmp: Path, web: Publisher, mail: Publisher, endpoint: str | None) -> None:
        self.tmp = tmp
        self.web = web
        self.mail = mail
        self.endpoint = endpoint
        self.config = tmp / "sync.conf"
        endpoint_line = f'store_endpoint = "{endpoint}"\n' if endpoint else ""
        self.config.write_text(
            f'store = "{web.store.url}"\n{endpoint_line}'
            f'signing_key = "{web.signing_key.export()}"\n'
            + "".join(
                f'cluster "{pub.cluster}" {{ secret = "{pub.secrets[0].export()}" }}\n'
                for pub in (web, mail)
            )
        )

    def agent(self, name: str, pub: Publisher | None = None, extra: str = "") -> Agent:
        pub = pub or self.web
        endpoint_line = f'store_endpoint = "{self.endpoint}"\n' if self.endpoint else ""
        text = (
            f'store = "{pub.store.url}"\n{endpoint_line}state_dir = "{self.tmp / name}"\n'
            f'hook_timeout = "10s"\n' + pub.cluster_stanza() + extra
        )
        agent = Agent(parse_agent_config(text, str(self.tmp / f"{name}.conf")))
        agent.acks.hostname = name
        return agent


def make_fleet(tmp: Path, url: str, endpoint: str | None, make: Callable[..., Publisher]) -> Fleet:
    web = make(url, "web")
    mail = make(url, "mail", secrets=[ClusterSecret.generate("m1")], signing_key=web.signing_key)
    mail.publish()  # an empty cluster; web is published by each test
    return Fleet(tmp, web, mail, endpoint)


@pytest.fixture
def fleet(tmp_path: Path, make_publisher: Callable[..., Publisher]) -> Fleet:
    (tmp_path / "store").mkdir()
    return make_fleet(tmp_path, f"file://{tmp_path}/store", None, make_publisher)


@pytest.fixture
def nodes(fleet: Fleet, capsys: pytest.CaptureFixture[str]) -> Callable[..., CliRun]:
    def run(*argv: str) -> CliRun:
        code = main(["nodes", *argv, "--config", str(fleet.config)])
        captured = capsys.readouterr()
        assert "Traceback" not in captured.err
        return CliRun(code, captured.out, captured.err)

    return run


def by_host(document: dict[str, Any], cluster: str = "web") -> dict[str, dict[str, Any]]:
    (found,) = [c for c in document["clusters"] if c["cluster"] == cluster]
    return {node["hostname"] or node["node_id"]: node for node in found["nodes"]}


def test_current_behind_and_stale_nodes(fleet: Fleet, nodes: Callable[..., CliRun]) -> None:
    first = fleet.web.issue("a.example")
    fleet.web.issue("b.example")
    fleet.web.publish()
    one, two = fleet.agent("web-1"), fleet.agent("web-2")
    assert one.poll_once().ok and two.poll_once().ok
    result = nodes("--check")
    assert result.code == 0, result.out + result.err
    assert "cluster web: 2 nodes, 2 current, 0 behind, 0 stale, 0 with failures" in result.out
    for line in result.out.splitlines():
        if one.node_id in line:
            assert line.split()[:2] == ["current", "web-1"]
            assert line.split()[-5:] == ["2", "0", "0", "0", "-"]  # inst defer fail rm owed

    # a renewal published two hours ago: web-1 applies it, web-2 does not poll
    renewed = fleet.web.issue("a.example")
    fleet.web.publish(now=int(time.time()) - 2 * HOUR)
    assert one.poll_once().ok
    result = nodes("--check")
    assert result.code == 1
    hosts = by_host(nodes("--json").json())
    assert hosts["web-1"]["status"] == "current"
    assert hosts["web-2"]["status"] == "stale" and hosts["web-2"]["applied"] == "behind"
    assert result.out.index("web-2") < result.out.index("web-1")  # problems first
    assert "cluster web: 2 nodes, 1 current, 1 behind, 1 stale, 0 with failures" in result.out

    # within --stale-after a node that is behind is only catching up
    relaxed = nodes("--stale-after", "3h", "--check", "--json")
    assert relaxed.code == 0
    assert by_host(relaxed.json())["web-2"]["status"] == "behind"
    # without --stale-after, the cluster's fleet_stale_after in the sync config rules
    text = fleet.config.read_text()
    fleet.config.write_text(
        text.replace('cluster "web" {', 'cluster "web" {\n  fleet_stale_after = "3h"\n')
    )
    configured = nodes("--check", "--json")
    assert configured.code == 0 and configured.json()["clusters"][0]["stale_after"] == 3 * HOUR
    assert by_host(configured.json())["web-2"]["status"] == "behind"
    fleet.config.write_text(text)

    # which servers still have the old certificate
    order = nodes("--order", "a.example")
    assert order.code == 0
    lines = order.out.splitlines()
    assert f"published serial {renewed.serial}" in lines[0]
    old = next(line for line in lines if "web-2" in line)
    assert old.split()[:3] == [first.serial, "(old)", "installed"]
    assert lines.index(old) < lines.index(next(line for line in lines if "web-1" in line))
    assert nodes("--order", "a.example", "--check", "--stale-after", "3h").code == 1
    assert two.poll_once().ok
    assert nodes("--order", "a.example", "--check").code == 0


def test_a_failing_node_is_reported_with_why(fleet: Fleet, nodes: Callable[..., CliRun]) -> None:
    fleet.web.issue("a.example")
    fleet.web.publish()
    broken = fleet.agent("web-bad", extra='default { on_update = ["echo no >&2; exit 3"] }\n')
    assert not broken.poll_once().ok
    assert fleet.agent("web-ok").poll_once().ok
    result = nodes()
    assert result.code == 0  # without --check: the command worked
    assert "1 with failures" in result.out
    lines = result.out.splitlines()
    row = next(line for line in lines if line.startswith("failing"))
    assert "web-bad" in row and "'echo no >&2; exit 3'" in row
    assert any("web-bad" in line and "a.example installed: on_update" in line for line in lines)
    assert nodes("--check").code == 1
    node = by_host(nodes("--json").json())["web-bad"]
    assert node["problems"] == ["failing"]
    assert node["on_update_owed"] == ["echo no >&2; exit 3"]
    assert node["failures"][0]["order"] == "a.example"


def test_a_failed_check_command_fails_the_order(fleet: Fleet, nodes: Callable[..., CliRun]) -> None:
    fleet.web.issue("a.example")
    fleet.web.publish()
    agent = fleet.agent("web-1", extra='default {\n  check_command = "exit 1"\n}\n')
    assert not agent.poll_once().ok
    node = by_host(nodes("--json").json())["web-1"]
    assert node["orders"]["failed"] == 1
    assert node["status"] == "failing"
    assert "check_command" in node["failures"][0]["detail"]


def test_a_tampered_ack_is_unreadable_and_the_others_shown(
    fleet: Fleet, nodes: Callable[..., CliRun]
) -> None:
    fleet.web.issue("a.example")
    fleet.web.publish()
    victim, other = fleet.agent("web-1"), fleet.agent("web-2")
    victim.poll_once()
    other.poll_once()
    key = f"v1/clusters/web/acks/{victim.node_id}"
    data = bytearray(fleet.web.store.get(key, max_bytes=1 << 24).data)
    data[-1] ^= 1
    fleet.web.store.put(key, bytes(data))
    fleet.web.store.put("v1/clusters/web/acks/garbage", b"\x1b[31m not an ack")
    fleet.web.store.put("v1/clusters/web/acks/bad.id", b"x")
    result = nodes("--json")
    assert result.code == 0
    hosts = by_host(result.json())
    assert hosts["web-2"]["status"] == "current"
    assert hosts[victim.node_id]["status"] == "unreadable"
    assert hosts[victim.node_id]["error_kind"] == "integrity"
    assert hosts["garbage"]["error_kind"] == "malformed"
    assert hosts["bad.id"]["error_kind"] == "malformed"
    secret = fleet.web.secrets[0].export().split(":")[1]
    text = nodes()
    assert secret not in text.out + text.err + result.out
    assert "unreadable" in text.out.splitlines()[2]  # first row after the header
    assert "3 unreadable" in text.out
    assert nodes("--check").code == 1


def test_hostnames_are_printed_escaped(fleet: Fleet, nodes: Callable[..., CliRun]) -> None:
    fleet.web.issue("a.example")
    fleet.web.publish()
    agent = fleet.agent("web-1")
    agent.acks.hostname = "evil\x1b]0;owned\x07\nhost"
    agent.poll_once()
    result = nodes()
    assert "\x1b" not in result.out and "\x07" not in result.out
    assert "evil\\x1b]0;owned\\x07\\nhost" in result.out
    assert by_host(nodes("--json").json())["evil\x1b]0;owned\x07\nhost"]["status"] == "current"


def test_cluster_filter_and_nodes_of_another_cluster(
    fleet: Fleet, nodes: Callable[..., CliRun]
) -> None:
    fleet.web.issue("a.example")
    fleet.web.publish()
    fleet.mail.issue("mail.example")
    fleet.mail.publish()
    web, mail = fleet.agent("web-1"), fleet.agent("mail-1", fleet.mail)
    assert web.poll_once().ok and mail.poll_once().ok
    only_web = nodes("--cluster", "web", "--json").json()
    assert [c["cluster"] for c in only_web["clusters"]] == ["web"]
    assert list(by_host(only_web)) == ["web-1"]
    both = nodes("--json").json()
    assert list(by_host(both, "mail")) == ["mail-1"]
    assert list(by_host(both, "web")) == ["web-1"]
    text = nodes("--cluster", "mail").out
    assert "mail-1" in text and "web-1" not in text
    unknown = nodes("--cluster", "db")
    assert unknown.code == 2 and "'db' is not in" in unknown.err


def test_json_document(fleet: Fleet, nodes: Callable[..., CliRun]) -> None:
    fleet.web.issue("a.example")
    fleet.web.issue("b.example", install_after=int(time.time()) + HOUR)
    fleet.web.publish()
    agent = fleet.agent("web-1")
    agent.poll_once()
    document = nodes("--json", "--cluster", "web", "--order", "b.example").json()
    assert set(document) == {"now", "clusters"}
    (cluster,) = document["clusters"]
    assert cluster["stale_after"] == 3600
    assert cluster["head"]["generation"] == fleet.web.generation
    assert cluster["head"]["orders"] == 2
    assert cluster["ok"] is True and cluster["error"] is None and cluster["problem"] is None
    assert cluster["summary"] == {
        "nodes": 1, "current": 1, "behind": 0, "stale": 0, "ahead": 0, "failing": 0,
        "unreadable": 0,
    }  # fmt: skip
    (node,) = cluster["nodes"]
    assert node["node_id"] == agent.node_id
    assert node["generation"] == fleet.web.generation
    assert node["orders"] == {"installed": 1, "deferred": 1, "failed": 0, "removed": 0}
    assert 0 <= node["age_seconds"] < 60
    assert cluster["order"] == {
        "name": "b.example",
        "published_serial": fleet.web.bundles["b.example"].serial,
        "nodes": [
            {"node_id": agent.node_id, "hostname": "web-1", "state": "deferred", "serial": ""}
        ],
    }


def test_compact_acks_count_implied_orders(
    fleet: Fleet, nodes: Callable[..., CliRun], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An ack of a large cluster leaves out installed orders: they count as installed with
    the serial the head publishes, when the ack is of the head's generation."""
    import node_agent.ack

    monkeypatch.setattr(node_agent.ack, "MAX_LISTED_ORDERS", 1)
    bundles = [fleet.web.issue(name) for name in ("a.example", "b.example", "c.example")]
    fleet.web.publish()
    fleet.agent("web-1").poll_once()
    document = nodes("--json", "--order", "b.example").json()
    (cluster,) = [c for c in document["clusters"] if c["cluster"] == "web"]
    assert cluster["nodes"][0]["orders"]["installed"] == 3
    assert cluster["order"]["nodes"][0]["serial"] == bundles[1].serial


def test_forget_deletes_one_ack(fleet: Fleet, nodes: Callable[..., CliRun]) -> None:
    fleet.web.issue("a.example")
    fleet.web.publish()
    gone, kept = fleet.agent("web-1"), fleet.agent("web-2")
    gone.poll_once()
    kept.poll_once()
    assert nodes("--forget", gone.node_id).code == 2  # which cluster?
    assert nodes("--forget", "../head", "--cluster", "web").code == 2
    result = nodes("--forget", gone.node_id, "--cluster", "web")
    assert result.code == 0, result.err
    assert list(by_host(nodes("--json").json())) == ["web-2"]
    again = nodes("--forget", gone.node_id, "--cluster", "web")
    assert again.code == 1 and "has no ack of node" in again.err


def test_usage_and_head_problems(fleet: Fleet, nodes: Callable[..., CliRun]) -> None:
    assert nodes("--stale-after", "soon").code == 2
    assert main(["nodes"]) == 2  # no --config
    result = nodes("--check")  # nothing published yet
    assert result.code == 1
    assert "no head" in result.out
    fleet.web.issue("a.example")
    fleet.web.publish(now=int(time.time()) - 4 * 86400)  # valid for 3 days: expired
    expired = nodes("--cluster", "web", "--json").json()["clusters"][0]
    assert "expired" in expired["problem"] and expired["ok"] is False


def test_s3_store(
    tmp_path: Path,
    s3_url: str,
    seaweedfs: Any,
    make_publisher: Callable[..., Publisher],
    capsys: pytest.CaptureFixture[str],
) -> None:
    fleet = make_fleet(tmp_path, s3_url, seaweedfs.endpoint, make_publisher)
    fleet.web.issue("a.example")
    fleet.web.publish()
    one, two = fleet.agent("web-1"), fleet.agent("web-2")
    assert one.poll_once().ok and two.poll_once().ok
    fleet.web.issue("a.example")
    fleet.web.publish(now=int(time.time()) - 2 * HOUR)
    assert one.poll_once().ok
    code = main(["nodes", "--cluster", "web", "--json", "--config", str(fleet.config)])
    hosts = by_host(json.loads(capsys.readouterr().out))
    assert code == 0
    assert (hosts["web-1"]["status"], hosts["web-2"]["status"]) == ("current", "stale")
    assert main(["nodes", "--check", "--config", str(fleet.config)]) == 1


def test_an_unreadable_ack_is_named_by_its_clear_hostname_label_marked_unverified(
    fleet: Fleet, nodes: Callable[..., CliRun]
) -> None:
    fleet.web.issue("a.example")
    fleet.web.publish()
    agent = fleet.agent("web-1")
    agent.acks.hostname = "web-\u202e1\x1b[2J"  # untrusted: bidi override and an escape
    agent.poll_once()
    key = f"v1/clusters/web/acks/{agent.node_id}"
    data = bytearray(fleet.web.store.get(key, max_bytes=1 << 24).data)
    assert b"web-" not in data  # the store sees no hostname: the label is encrypted
    data[-1] ^= 1  # the sealed part no longer opens; the label still does
    fleet.web.store.put(key, bytes(data))
    result = nodes()
    (row,) = [line for line in result.out.splitlines() if agent.node_id in line]
    assert row.split()[:3] == ["unreadable", "web-\\u202e1\\x1b[2J", "(unverified)"]
    assert "\u202e" not in result.out and "\x1b" not in result.out
    node = by_host(nodes("--json").json())[agent.node_id]
    assert node["hostname"] is None and node["hostname_label"] == "web-\u202e1\x1b[2J"


def test_a_node_that_never_applied_a_head_says_never_applied(
    fleet: Fleet, nodes: Callable[..., CliRun]
) -> None:
    fleet.web.issue("a.example")
    fleet.web.publish()
    ack = Ack("n-new", "web-9", 0, int(time.time()), ())
    sealed = seal_ack(ack, cluster="web", secrets=fleet.web.secrets)
    fleet.web.store.put("v1/clusters/web/acks/n-new", sealed)
    result = nodes()
    (row,) = [line for line in result.out.splitlines() if "n-new" in line]
    assert row.split()[3:5] == ["never", "applied"]  # not "behind 20791d14h"
    assert not re.search(r"behind \d", row)
    node = by_host(nodes("--json").json())["web-9"]
    assert node["never_applied"] is True and node["behind_seconds"] is None
