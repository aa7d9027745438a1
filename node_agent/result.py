"""What one poll did: the frozen summary ``Agent.poll_once`` returns.

``ok`` is False when anything was refused or failed; ``certfleet-agent --once`` turns that
into exit status 1 (after everything else was installed).
"""

from __future__ import annotations

from dataclasses import dataclass

REFUSED = "refused"  # something from the store failed a check: integrity, names, certificates
FAILED = "failed"  # the store, the disk or a command failed; retried on the next poll


@dataclass(frozen=True)
class Problem:
    """One thing that went wrong, naming the object, order, path or command concerned."""

    kind: str
    subject: str
    message: str
    cluster: str | None = None

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class ClusterOutcome:
    """A cluster's head after this poll.

    ``head`` is "unchanged" (304), "new" (fetched and verified), "refused" or "unreachable";
    ``generation`` is the newest accepted generation, ``applied_generation`` the newest head
    whose every order is installed or deferred.
    """

    cluster: str
    head: str
    generation: int
    applied_generation: int


@dataclass(frozen=True)
class CommandRun:
    """One check_command or on_update run."""

    command: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class PollResult:
    clusters: tuple[ClusterOutcome, ...] = ()
    installed: tuple[str, ...] = ()
    deferred: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    retired: tuple[str, ...] = ()
    rolled_back: tuple[str, ...] = ()
    not_served: tuple[str, ...] = ()  # first installs the probe did not see served yet
    commands: tuple[CommandRun, ...] = ()
    problems: tuple[Problem, ...] = ()
    expired_heads: tuple[str, ...] = ()  # clusters whose newest head is past valid_until

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        parts = [
            f"{len(self.installed)} installed",
            f"{len(self.deferred)} deferred",
            f"{len(self.removed)} removed",
        ]
        if self.retired:
            parts.append(f"{len(self.retired)} removed upstream (files kept)")
        if self.rolled_back:
            parts.append(f"{len(self.rolled_back)} rolled back")
        if self.not_served:
            parts.append(f"{len(self.not_served)} not served yet")
        parts.append(f"{len(self.problems)} problems")
        return ", ".join(parts)
