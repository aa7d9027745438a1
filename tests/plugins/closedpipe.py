"""Running a command whose stdout is a pipe the reader already closed (``... | head -1``).

The read end is closed before the child starts, so its first write or flush of stdout fails
with EPIPE every time, not only when ``head`` happens to exit first.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence


def run_into_closed_pipe(
    argv: Sequence[str], env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` with stdout a pipe nobody reads; stderr is captured."""
    read, write = os.pipe()
    os.close(read)
    try:
        return subprocess.run(
            list(argv), stdout=write, stderr=subprocess.PIPE, env=env, text=True,
            timeout=60, check=False,
        )  # fmt: skip
    finally:
        os.close(write)
