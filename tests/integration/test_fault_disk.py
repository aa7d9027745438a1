"""A full disk under the agent's state directory.

The state directory lives on a small tmpfs mounted for the test (``mount -t tmpfs -o
size=...``, which needs root, as in CI's container). Where mounting is refused (not root,
no CAP_SYS_ADMIN) the test is skipped locally and fails in CI, rather than faking ENOSPC.
The disk is then filled to the last byte: a poll that must write a new version fails with
"No space left on device" naming the order, the installed files and the agent's state stay
intact and readable, and once space is freed the next poll installs everything.
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from certfleet.config import parse_agent_config
from certfleet.sync import mark_rekey
from node_agent.agent import Agent
from node_agent.errors import AgentError
from node_agent.statestore import StateStore
from tests.plugins.binaries import missing
from tests.plugins.faults import Ledger, agent_config_text, cluster_stanza, installed_orders
from tests.plugins.sandbox import Sandbox
from tests.plugins.sync_world import make_world

DISK_SIZE = "1m"
ORDERS = 3


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_SIZE},mode=0755", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        missing(f"cannot mount a small tmpfs for the full-disk test: {done.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(directory: Path) -> Path:
    """Fill the file system of ``directory`` to the last byte; return the filler file."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (65536, 4096, 512, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError as err:
                assert err.errno == errno.ENOSPC, err
    finally:
        os.close(fd)
    return filler


@pytest.mark.fault
def test_a_full_disk_fails_the_poll_keeps_files_and_state_then_recovers(
    sandbox: Sandbox, tmp_path: Path, small_disk: Path, faults: Ledger
) -> None:
    world = make_world(sandbox, (tmp_path / "store").as_uri(), "")
    names = [world.add(f"d{i}.{world.cluster}.example") for i in range(ORDERS)]
    assert world.sync().errors == {}
    stanza = cluster_stanza(world.cluster, world.secrets, [world.signing_key.public_key()])
    text = agent_config_text(world.store.url, small_disk / "state", stanza)
    config = parse_agent_config(text, str(tmp_path / "agent.conf"))
    assert Agent(config).poll_once().ok
    before = installed_orders(small_disk / "state")
    assert len(before) == ORDERS

    mark_rekey(world.config(), world.cluster, None, store=world.store)
    assert world.sync().errors == {}
    filler = fill(small_disk)
    faults.injected()
    try:
        result = Agent(config).poll_once()
    except AgentError as err:  # today the poll stops at saving state.json, naming it
        assert "No space left on device" in str(err) and "state.json" in str(err), err
    else:
        assert not result.ok
        text = " / ".join(problem.message for problem in result.problems)
        assert "No space left on device" in text, text
    assert installed_orders(small_disk / "state") == before, "files changed on a full disk"
    StateStore(str(small_disk / "state")).load()  # still readable
    leftovers = [p for p in (small_disk / "state").rglob(".certfleet-*")]
    assert len(leftovers) <= 1, leftovers  # no pile of temporary files

    os.unlink(filler)
    result = Agent(config).poll_once()
    assert result.ok, result.problems
    after = installed_orders(small_disk / "state")
    published = world.published().bundles
    assert {n: s.key_pem for n, s in after.items()} == {
        n: published[n].private_key_pem for n in names
    }
    assert all(after[n].key_pem != before[n].key_pem for n in names)
