"""Running the admin CLI in-process, as a user with an empty home directory would.

Fixtures:

- ``cli_home`` (function): a fresh ``$HOME`` (so no ``~/.certfleet`` or ``~/.sslmate`` of
  the developer's is read) and no ``CERTFLEET_*`` variable of theirs; the path of that home;
- ``certfleet_cli`` (function): ``certfleet_cli(*argv, stdin="")`` runs ``certfleet`` through
  ``certfleet.cli.main`` in that home and returns a :class:`CliRun`.
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
