"""What the agent's messages say: refusals that differ only by object are logged once with a
count, and times are ISO 8601 UTC, never Unix seconds."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from certfleet.bundle import ClusterSecret, iso_utc
from certfleet.config import parse_agent_config
from node_agent.agent import Agent

if TYPE_CHECKING:
    from tests.plugins.publisher import Publisher


def agent_for(tmp: Path, pub: Publisher, stanza: str) -> Agent:
    text = f'store = "{pub.store.url}"\nstate_dir = "{tmp / "state"}"\n' + stanza
    return Agent(parse_agent_config(text, str(tmp / "agent.conf")))


def test_refusals_for_one_retired_secret_are_one_line_and_a_count(
    tmp_path: Path, make_publisher: Callable[..., Publisher], caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "store").mkdir()
    pub = make_publisher(f"file://{tmp_path}/store", secrets=[ClusterSecret.generate("k2")])
    pub.issue("a.example")
    pub.publish()
    retired = ClusterSecret.generate("k1")  # the node still holds only the retired k1
    stanza = pub.cluster_stanza().replace(pub.secrets[0].export(), retired.export())
    with caplog.at_level("INFO"):
        result = agent_for(tmp_path, pub, stanza).poll_once()
    shards = [p for p in result.problems if p.subject.startswith("shard ")]
    assert len(shards) == 16  # every problem is still kept (health, acks, --once)
    refusals = [r.getMessage() for r in caplog.records if r.getMessage().startswith("refused:")]
    assert len(refusals) == 2, refusals
    assert refusals[0].startswith("refused: shard ") and "this reader holds k1" in refusals[0]
    assert refusals[1] == (
        "refused: 15 more in cluster web, the same way: " + shards[0].message.split(": ", 1)[1]
    )


def test_times_in_messages_and_ack_details_are_iso_8601_utc(
    tmp_path: Path, make_publisher: Callable[..., Publisher], caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "store").mkdir()
    pub = make_publisher(f"file://{tmp_path}/store")
    later = int(time.time()) + 7200
    pub.issue("a.example", install_after=later)
    pub.publish()
    with caplog.at_level("INFO"):
        result = agent_for(tmp_path, pub, pub.cluster_stanza()).poll_once()
    assert result.deferred == ("a.example",)
    stamp = iso_utc(later)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", stamp)
    assert f"order 'a.example' deferred until {stamp} (install_after)" in caplog.text
    assert str(later) not in caplog.text


def test_an_expired_head_names_its_time_in_iso_8601(
    tmp_path: Path, make_publisher: Callable[..., Publisher]
) -> None:
    (tmp_path / "store").mkdir()
    pub = make_publisher(f"file://{tmp_path}/store")
    pub.issue("a.example")
    issued = int(time.time()) - 4 * 86400
    pub.publish(now=issued, valid_for=86400)
    result = agent_for(tmp_path, pub, pub.cluster_stanza()).poll_once()
    (message,) = [p.message for p in result.problems]
    assert f"(valid until {iso_utc(issued + 86400)})" in message, message
    assert str(issued + 86400) not in message
