"""Running ``check_command`` and ``on_update`` commands: ``/bin/sh -c``, a timeout, output logged.

A command runs in its own session, so a timeout kills it and everything it started. Its
environment is clean: ``PATH``, ``LANG`` and ``LC_ALL`` (when the agent has them), the
variables named in the config's ``hook_env``, and the ``CERTFLEET_*`` variables the caller
passes, nothing else: the agent's own environment may hold store credentials
(``AWS_SECRET_ACCESS_KEY``...) that a reload command has no business seeing. Output (stdout
and stderr together) is logged line by line, cut at 64 KiB.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger(__name__)

_SHELL = "/bin/sh"
# Always passed when set; PATH has a default, as /bin/sh would need one.
KEPT = ("PATH", "LANG", "LC_ALL")
_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_MAX_OUTPUT = 64 * 1024


@dataclass(frozen=True)
class CommandOutcome:
    """How one command run ended; ``returncode`` is None when it timed out or did not start."""

    command: str
    returncode: int | None
    output: str
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def describe(self) -> str:
        if self.ok:
            return "succeeded"
        return self.reason or f"exited with status {self.returncode}"


class CommandRunner(Protocol):
    """Runs one shell command; the seam tests and other front ends can replace."""

    def run(self, command: str, env: Mapping[str, str], timeout: float) -> CommandOutcome: ...


def hook_environment(source: Mapping[str, str], passed: Sequence[str] = ()) -> dict[str, str]:
    """The environment a command starts with: ``KEPT`` and the ``passed`` names found in
    ``source`` (the agent's environment), and a default ``PATH`` when it has none."""
    env = {name: source[name] for name in (*KEPT, *passed) if name in source}
    env.setdefault("PATH", _DEFAULT_PATH)
    return env


class ShellRunner:
    """Runs commands through ``/bin/sh -c`` in a clean environment (``hook_environment``
    of ``base_env``, the agent's environment by default) plus the caller's ``env``."""

    def __init__(
        self, base_env: Mapping[str, str] | None = None, *, passed: Sequence[str] = ()
    ) -> None:
        self._base_env = hook_environment(os.environ if base_env is None else base_env, passed)

    def run(self, command: str, env: Mapping[str, str], timeout: float) -> CommandOutcome:
        full_env = {**self._base_env, **env}
        log.info("running %r", command)
        try:
            process = subprocess.Popen(
                [_SHELL, "-c", command],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=full_env,
                start_new_session=True,
            )
        except OSError as err:
            log.error("command %r could not start: %s", command, err)
            return CommandOutcome(command, None, "", f"could not start: {err}")
        try:
            raw, _ = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(process)
            raw, _ = process.communicate()
            outcome = CommandOutcome(
                command, None, _text(raw), f"timed out after {timeout:g} s and was killed"
            )
        else:
            outcome = CommandOutcome(command, process.returncode, _text(raw))
        _log_outcome(outcome)
        return outcome


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _text(raw: bytes | None) -> str:
    data = raw or b""
    cut = len(data) > _MAX_OUTPUT
    text = data[:_MAX_OUTPUT].decode("utf-8", errors="replace")
    return text + ("\n[output cut at 64 KiB]" if cut else "")


def _log_outcome(outcome: CommandOutcome) -> None:
    level = logging.INFO if outcome.ok else logging.WARNING
    for line in outcome.output.splitlines():
        log.log(level, "%r: %s", outcome.command, line)
    log.log(level, "command %r %s", outcome.command, outcome.describe())
