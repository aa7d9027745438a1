"""What a command runs with: the environment and streams ``main`` captured, read once."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO


@dataclass(frozen=True)
class Context:
    """The process's surroundings, captured by ``certfleet.cli.main`` and passed to commands.

    Commands never read ``os.environ`` or ``sys.std*`` themselves: ``environ`` is the one
    copy of the environment (only ``CERTFLEET_*`` variables are used), ``home`` is where
    ``~/.certfleet`` is looked up.
    """

    environ: Mapping[str, str]
    home: Path
    stdin: TextIO
    stdout: TextIO
    stderr: TextIO

    def say(self, text: str) -> None:
        """A result line, on stdout."""
        print(text, file=self.stdout)

    def note(self, text: str) -> None:
        """Anything that is not the result (progress, hints), on stderr."""
        print(text, file=self.stderr)
