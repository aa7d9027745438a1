"""Proving the configured cluster secrets against the current head (``node_agent.secretproof``):
the rules on a file store, then the real daemon refusing to start, and refusing a reload,
with a mistyped secret.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from certfleet.bundle import ClusterSecret
from certfleet.config import parse_agent_config
from node_agent.secretproof import SecretProof, prove_secrets
from tests.plugins.agent_process import AGENT, Daemon, agent_status, wait_for

if TYPE_CHECKING:
    from tests.plugins.publisher import Publisher


@pytest.fixture
def pub(tmp_path: Path, make_publisher: Callable[..., Publisher]) -> Publisher:
    (tmp_path / "store").mkdir()
    publisher = make_publisher(f"file://{tmp_path}/store")
    publisher.issue("a.example")
    publisher.publish()
    return publisher


def stanza(pub: Publisher, *secrets: ClusterSecret) -> str:
    listed = ", ".join(f'"{secret.export()}"' for secret in secrets)
    publisher = pub.signing_key.public_key().export()
    return f'cluster "web" {{\n  secret = [{listed}]\n  publisher = "{publisher}"\n}}\n'


def prove(pub: Publisher, *secrets: ClusterSecret) -> SecretProof:
    text = f'store = "{pub.store.url}"\nstate_dir = "/nonexistent"\n' + stanza(pub, *secrets)
    return prove_secrets(parse_agent_config(text, "agent.conf"), pub.store)


def test_the_right_secret_is_proven(pub: Publisher) -> None:
    assert prove(pub, *pub.secrets) == SecretProof(proven=("web",))


def test_a_mistyped_secret_is_an_error_naming_the_cluster_and_the_secret_id(
    pub: Publisher,
) -> None:
    wrong = ClusterSecret.generate("k1")  # the id the head lists, another value
    proof = prove(pub, wrong)
    assert not proof.ok and len(proof.errors) == 1
    assert proof.errors[0].startswith(
        "cluster 'web': secret 'k1' does not open the current head's shards"
    )
    assert wrong.export().split(":")[1] not in proof.errors[0]  # never the secret itself


def test_a_secret_the_head_does_not_use_is_a_notice_beside_one_that_opens(
    pub: Publisher,
) -> None:
    proof = prove(pub, pub.secrets[0], ClusterSecret.generate("k2"))  # a rotation adds k2
    assert proof.ok
    assert proof.notices == (
        "cluster 'web': secret 'k2' is not used by the current head (its secrets: 'k1'): "
        "fine while a rotation adds it; remove it once retired",
    )


def test_no_secret_that_opens_anything_is_an_error(pub: Publisher) -> None:
    proof = prove(pub, ClusterSecret.generate("k9"))
    assert proof.errors == (
        "cluster 'web': no configured secret opens the current head's shards (configured: "
        "'k9'; the head's: 'k1'): copy the secret from `certfleet clusters show web`",
    )


def test_a_cluster_with_nothing_published_is_not_proven_either_way(
    tmp_path: Path, make_publisher: Callable[..., Publisher]
) -> None:
    (tmp_path / "empty").mkdir()
    empty = make_publisher(f"file://{tmp_path}/empty")
    proof = prove(empty, ClusterSecret.generate("k1"))
    assert proof.ok and len(proof.notices) == 1
    assert proof.notices[0].startswith("cluster 'web': secrets not proven: cannot read its head")


# -- the daemon, as a real process --------------------------------------------------------------


def write_config(tmp: Path, pub: Publisher, stanza_text: str) -> Path:
    path = tmp / "agent.conf"
    path.write_text(
        f'store = "{pub.store.url}"\nstate_dir = "{tmp / "state"}"\npoll_interval = "1h"\n'
        + stanza_text
    )
    return path


def test_the_daemon_does_not_start_with_a_mistyped_secret(tmp_path: Path, pub: Publisher) -> None:
    config = write_config(tmp_path, pub, stanza(pub, ClusterSecret.generate("k1")))
    done = subprocess.run(
        [*AGENT, "--config", str(config)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2, done.stderr  # a config error: the unit does not restart it
    assert "config error: cluster 'web': secret 'k1' does not open" in done.stderr
    assert agent_status(config)["config_error"].startswith(
        "not started: cluster 'web': secret 'k1'"
    )
    assert not (tmp_path / "state" / "orders" / "a.example").exists()


def test_a_reload_with_a_mistyped_secret_is_refused_and_the_running_config_kept(
    tmp_path: Path, pub: Publisher, daemons: list[Daemon]
) -> None:
    config = write_config(tmp_path, pub, pub.cluster_stanza())
    good = config.read_text()
    daemon = Daemon(config)
    daemons.append(daemon)
    installed = tmp_path / "state" / "orders" / "a.example"
    wait_for(installed.exists, what="the first poll")
    wait_for(lambda: "poll done" in daemon.stderr(), what="the first poll's end")
    assert agent_status(config)["config_error"] is None
    config.write_text(good.replace(pub.cluster_stanza(), stanza(pub, ClusterSecret.generate("k1"))))
    daemon.signal(signal.SIGHUP)
    wait_for(lambda: "config reload refused" in daemon.stderr(), what="the refused reload")
    assert "keeping the running config: cluster 'web': secret 'k1'" in daemon.stderr()
    wait_for(lambda: agent_status(config)["config_error"] is not None, what="the status")
    assert agent_status(config)["config_error"].startswith("reload refused, running config kept: ")
    # The running config (the right secret) still installs what is published next.
    pub.issue("b.example")
    pub.publish()
    daemon.signal(signal.SIGHUP)  # refused again, and a poll at once
    wait_for(lambda: (tmp_path / "state" / "orders" / "b.example").exists(), what="b.example")
    config.write_text(good)
    daemon.signal(signal.SIGHUP)
    wait_for(lambda: "config reloaded from" in daemon.stderr(), what="the good reload")
    wait_for(lambda: agent_status(config)["config_error"] is None, what="the error cleared")
    assert daemon.stop() == 0


def test_once_with_a_mistyped_secret_is_a_config_error_even_when_the_head_is_applied(
    tmp_path: Path, pub: Publisher
) -> None:
    """An applied head is answered 304: the poll alone would open nothing and say nothing."""
    good = write_config(tmp_path, pub, pub.cluster_stanza())
    once = [*AGENT, "--once", "--config", str(good)]
    assert subprocess.run(once, capture_output=True, timeout=60, check=False).returncode == 0
    good.write_text(
        good.read_text().replace(pub.cluster_stanza(), stanza(pub, ClusterSecret.generate("k1")))
    )
    done = subprocess.run(once, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2, done.stderr
    assert "certfleet-agent: config error: cluster 'web': secret 'k1' does not open" in done.stderr
