"""A standard output whose reader went away (``certfleet list | head -1``): end quietly.

When the reader of a pipe closes it, the next write or flush of stdout raises
``BrokenPipeError``; left alone, that ends in a traceback, and even after it is caught the
interpreter's own final flush of stdout raises again ("Exception ignored ... BrokenPipeError").
``run_until_stdout_closes`` runs a command's main function, flushes stdout inside the same
guard, and on ``BrokenPipeError`` points the stdout file descriptor at ``/dev/null`` (the
recipe of Python's ``signal`` module documentation) and returns ``EXIT_BROKEN_PIPE``.

That exit status is 141 = 128 + SIGPIPE: what a shell reports for ``cat``, ``grep`` or
``git log`` killed by SIGPIPE in the same place, so a script with ``set -o pipefail`` sees
certfleet's commands exactly as it sees the system's. Nothing is printed: a reader that
stopped reading is not an error worth a message.

Both console scripts use it (``certfleet`` and ``certfleet-agent``), so it lives at the top of
the library, which the agent may import (not in ``certfleet.cli``, which it may not).
"""

from __future__ import annotations

import os
import sys
from typing import Callable

EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE (13), as the shell reports a process SIGPIPE killed


def run_until_stdout_closes(main: Callable[[], int]) -> int:
    """``main()``'s exit code, stdout flushed; ``EXIT_BROKEN_PIPE`` if stdout was closed."""
    try:
        code = main()
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        _discard_stdout()
        return EXIT_BROKEN_PIPE


def _discard_stdout() -> None:
    """Point the stdout file descriptor at /dev/null, so later flushes succeed silently."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return  # not a real file (a test's capture): nothing will flush it at exit
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)
