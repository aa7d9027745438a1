"""Running the admin CLI in-process, as a user with an empty home directory would.

Fixtures:

- ``cli_home`` (function): a fresh ``$HOME`` (so no ``~/.certfleet`` or ``~/.sslmate`` of
  the developer's is read) and no ``CERTFLEET_*`` variable of theirs; the path of that home;
- ``certfleet_cli`` (function): ``certfleet_cli(*argv, stdin="")`` runs ``certfleet`` through
  ``certfleet.cli.main`` in that home and returns a :class:`CliRun`.

And a plain helper for fixtures and tests that need no home of their own: :func:`run_cli`.
"""

from __future__ import annotations

import io
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest

from certfleet.cli import main


@dataclass(frozen=True)
class CliRun:
    """One command's exit code and what it wrote."""

    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def run_cli(*argv: str) -> tuple[int, str, str]:
    """``certfleet ARGV`` in process, its stdout and stderr caught: exit code, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = out, err
    try:
        code = main(list(argv))
    finally:
        sys.stdout, sys.stderr = saved
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def cli_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in list(os.environ):
        if name.startswith("CERTFLEET_") and name != "CERTFLEET_REQUIRE_BINARIES":
            monkeypatch.delenv(name)
    return home


@pytest.fixture
def certfleet_cli(
    cli_home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Callable[..., CliRun]:
    def run(*argv: str, stdin: str = "") -> CliRun:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        code = main(list(argv))
        captured = capsys.readouterr()
        assert "Traceback" not in captured.err
        return CliRun(code, captured.out, captured.err)

    return run
