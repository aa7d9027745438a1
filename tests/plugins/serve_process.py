"""``certfleet serve`` as a real process (``python -m certfleet serve --port 0 -v``), as an
operator runs it, on a free loopback port.

:func:`start_serve` returns a :class:`Served` once the server has logged the URL it listens
on: its ``url``, the ``process``, and ``stderr``, every line it has logged so far (a thread
reads them as they come). ``stop()`` sends SIGTERM and returns the exit status.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Served:
    url: str
    process: subprocess.Popen[str]
    stderr: list[str]
    reader: threading.Thread

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(15)
        self.reader.join(5)
        if self.process.stderr is not None:
            self.process.stderr.close()
        return code


def start_serve(config: Path) -> Served:
    process = subprocess.Popen(
        [sys.executable, "-m", "certfleet", "serve", "--config", str(config), "--port", "0", "-v"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    first = process.stderr.readline()
    assert "listening on http://127.0.0.1:" in first, first
    lines = [first]
    reader = threading.Thread(target=lambda: lines.extend(process.stderr or ()), daemon=True)
    reader.start()
    return Served(first.split("listening on ")[1].split()[0], process, lines, reader)
