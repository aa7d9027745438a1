"""Finding the external programs the tests drive (weed, nginx, openssl, python3.9).

A missing program is a skip with a clear reason on a developer's machine, and a failure
in CI: ``.ci/run`` sets ``CERTFLEET_REQUIRE_BINARIES=1``.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

REQUIRED = os.environ.get("CERTFLEET_REQUIRE_BINARIES", "") not in ("", "0")


def missing(reason: str) -> None:
    """Skip the calling test, or fail it when binaries are required (CI)."""
    if REQUIRED:
        pytest.fail(f"{reason} (CERTFLEET_REQUIRE_BINARIES is set, so this is a failure)")
    pytest.skip(reason)


def require_binary(name: str) -> str:
    """The absolute path of ``name``: next to this Python first (the venv), then on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if not found:
        missing(f"{name} is not installed")
        raise AssertionError("unreachable")
    return found
