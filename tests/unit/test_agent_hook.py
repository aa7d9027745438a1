"""The command runner of check_command and on_update: /bin/sh -c, environment, timeout."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from node_agent.hook import ShellRunner


def test_environment_output_and_status() -> None:
    agent_env = {"PATH": "/usr/bin:/bin", "KEPT": "yes", "AWS_SECRET_ACCESS_KEY": "s3cret"}
    runner = ShellRunner(agent_env, passed=["KEPT"])
    outcome = runner.run(
        'echo "$CERTFLEET_UPDATED_ORDERS/$KEPT$AWS_SECRET_ACCESS_KEY"; echo oops >&2; exit 3',
        {"CERTFLEET_UPDATED_ORDERS": "a.example _.b.example"},
        timeout=10,
    )
    assert not outcome.ok and outcome.returncode == 3
    assert outcome.output.splitlines() == ["a.example _.b.example/yes", "oops"]
    assert outcome.describe() == "exited with status 3"
    assert ShellRunner().run("true", {}, timeout=10).ok


def test_timeout_kills_the_command_and_its_children(tmp_path: Path) -> None:
    marker = tmp_path / "late"
    started = time.monotonic()
    outcome = ShellRunner().run(f"(sleep 1; touch {marker}) & sleep 30", {}, timeout=0.3)
    assert time.monotonic() - started < 3
    assert not outcome.ok and "timed out" in outcome.describe()
    time.sleep(1.3)
    assert not marker.exists()  # the whole process group was killed


@pytest.mark.parametrize("command", ["exit 1", "/nonexistent/program"])
def test_failures_are_reported_not_raised(command: str) -> None:
    outcome = ShellRunner().run(command, {}, timeout=10)
    assert not outcome.ok and outcome.describe().startswith("exited with status")
