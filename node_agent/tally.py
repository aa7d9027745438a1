"""The running record of one poll, turned into a frozen ``PollResult`` at its end.

Every problem is kept; the log groups them: the first problem of a kind, cluster and reason
is logged as it is recorded, those that differ only by the object they name (16 shards
refused for one retired secret) are counted, and one line at the end of the poll says how
many more there were.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence

from node_agent.agentstate import AgentState
from node_agent.result import REFUSED, ClusterOutcome, CommandRun, PollResult, Problem

log = logging.getLogger(__name__)


class PollTally:
    """What a poll has done so far; every problem is logged as it is recorded."""

    def __init__(self) -> None:
        self.heads: dict[str, str] = {}
        self.installed: list[str] = []
        self.deferred: list[str] = []
        self.removed: list[str] = []
        self.retired: list[str] = []
        self.rolled_back: list[str] = []
        self.not_served: list[str] = []
        self.commands: list[CommandRun] = []
        self.problems: list[Problem] = []
        self.expired_heads: list[str] = []
        self._grouped: Counter[tuple[str, str | None, str]] = Counter()

    def problem(self, kind: str, subject: str, message: str, cluster: str | None = None) -> None:
        self.problems.append(Problem(kind, subject, message, cluster))
        prefix = subject + ": "
        reason = message[len(prefix) :] if message.startswith(prefix) else message
        group = (kind, cluster, reason)
        self._grouped[group] += 1
        if self._grouped[group] == 1:
            log.log(_level(kind), "%s: %s", kind, message)

    def log_grouped(self) -> None:
        """One line per group of problems that differed only by the object they name."""
        for (kind, cluster, reason), count in self._grouped.items():
            if count > 1:
                where = f" in cluster {cluster}" if cluster else ""
                log.log(_level(kind), "%s: %d more%s, the same way: %s",
                        kind, count - 1, where, reason)  # fmt: skip

    def has_problem(self, cluster: str) -> bool:
        return any(problem.cluster == cluster for problem in self.problems)

    def result(self, state: AgentState, clusters: Sequence[str]) -> PollResult:
        self.log_grouped()
        outcomes = tuple(
            ClusterOutcome(
                name,
                self.heads.get(name, "unchanged"),
                state.cluster(name).accepted_generation,
                state.cluster(name).applied_generation,
            )
            for name in clusters
        )
        return PollResult(
            clusters=outcomes,
            installed=tuple(self.installed),
            deferred=tuple(self.deferred),
            removed=tuple(self.removed),
            retired=tuple(self.retired),
            rolled_back=tuple(self.rolled_back),
            not_served=tuple(self.not_served),
            commands=tuple(self.commands),
            problems=tuple(self.problems),
            expired_heads=tuple(self.expired_heads),
        )


def _level(kind: str) -> int:
    return logging.ERROR if kind == REFUSED else logging.WARNING
