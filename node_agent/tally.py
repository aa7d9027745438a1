"""The running record of one poll, turned into a frozen ``PollResult`` at its end."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from node_agent.result import REFUSED, ClusterOutcome, CommandRun, PollResult, Problem
from node_agent.state import AgentState

log = logging.getLogger(__name__)


class Tally:
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

    def problem(self, kind: str, subject: str, message: str, cluster: str | None = None) -> None:
        self.problems.append(Problem(kind, subject, message, cluster))
        log.log(logging.ERROR if kind == REFUSED else logging.WARNING, "%s: %s", kind, message)

    def has_problem(self, cluster: str) -> bool:
        return any(problem.cluster == cluster for problem in self.problems)

    def result(self, state: AgentState, clusters: Sequence[str]) -> PollResult:
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
