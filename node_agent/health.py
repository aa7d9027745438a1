"""How the agent's polls have gone: what ``--status`` and the metrics file report.

Kept in ``<state_dir>/health.json`` (mode 0644, replaced atomically after every poll), apart
from ``state.json`` so that an idle poll rewrites a few hundred bytes, not the whole shard
index. It holds no key material and no secret: per cluster the time of the last poll and
of the last successful one (the store answered and the head verified: new or 304), the
last error, refusal counters by object kind; the on_update/check_command failure counter
and each command's last result; the config error of a refused start or reload.

Losing the file only resets the counters (Prometheus counters may reset).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from typing import Any

from node_agent.diskfile import FileMode, write_atomic
from node_agent.result import REFUSED, PollResult

log = logging.getLogger(__name__)

HEALTH_FILE = "health.json"
OBJECT_KINDS = ("head", "shard", "bundle", "order")
_MODE = FileMode(0o644)
_MAX_DETAIL = 512


@dataclass
class ClusterHealth:
    last_poll: int = 0
    last_success: int = 0
    last_error: str = ""
    refused: dict[str, int] = field(default_factory=dict)
    head_expired: bool = False


@dataclass
class CommandRecord:
    """The last run of one check_command or on_update command."""

    ok: bool
    at: int
    detail: str


@dataclass
class Health:
    clusters: dict[str, ClusterHealth] = field(default_factory=dict)
    hook_failures_total: int = 0
    commands: dict[str, CommandRecord] = field(default_factory=dict)
    # A config refused on start or reload (a cluster secret that opens nothing), "" if none.
    config_error: str = ""

    def cluster(self, name: str) -> ClusterHealth:
        return self.clusters.setdefault(name, ClusterHealth())

    def record(self, result: PollResult, now: int) -> None:
        """Fold one poll's result in."""
        for outcome in result.clusters:
            cluster = self.cluster(outcome.cluster)
            cluster.last_poll = now
            if outcome.head in ("new", "unchanged"):
                cluster.last_success = now
            if outcome.head != "unreachable":
                cluster.head_expired = outcome.cluster in result.expired_heads
            errors = [p.message for p in result.problems if p.cluster == outcome.cluster]
            cluster.last_error = errors[0][:_MAX_DETAIL] if errors else ""
        for problem in result.problems:
            if problem.kind != REFUSED or problem.cluster is None:
                continue
            kind = refused_kind(problem.subject)
            refused = self.cluster(problem.cluster).refused
            refused[kind] = refused.get(kind, 0) + 1
        for run in result.commands:
            if not run.ok:
                self.hook_failures_total += 1
            self.commands[run.command] = CommandRecord(run.ok, now, run.detail[:_MAX_DETAIL])


def refused_kind(subject: str) -> str:
    """The kind of object a refusal names: head, shard, bundle, order (or other)."""
    first = subject.split(" ", 1)[0]
    return first if first in OBJECT_KINDS else "other"


class HealthStore:
    """Loads and saves ``Health`` in a state directory."""

    def __init__(self, state_dir: str) -> None:
        self.path = os.path.join(state_dir, HEALTH_FILE)

    def load(self) -> Health:
        """The recorded health; an unreadable file is logged and starts afresh."""
        try:
            with open(self.path, "rb") as f:
                raw = json.loads(f.read())
            return _from_json(raw)
        except FileNotFoundError:
            return Health()
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            log.warning("%s is unreadable (%s); its counters start again", self.path, err)
            return Health()

    def save(self, health: Health) -> None:
        data = json.dumps(asdict(health), sort_keys=True, separators=(",", ":")).encode()
        try:
            write_atomic(self.path, data, _MODE)
        except OSError as err:
            log.warning("cannot write %s: %s", self.path, err)


def _from_json(raw: dict[str, Any]) -> Health:
    return Health(
        clusters={
            name: ClusterHealth(
                int(c["last_poll"]),
                int(c["last_success"]),
                str(c["last_error"]),
                {str(k): int(v) for k, v in c["refused"].items()},
                bool(c.get("head_expired", False)),
            )
            for name, c in raw["clusters"].items()
        },
        hook_failures_total=int(raw["hook_failures_total"]),
        commands={
            command: CommandRecord(bool(r["ok"]), int(r["at"]), str(r["detail"]))
            for command, r in raw["commands"].items()
        },
        config_error=str(raw.get("config_error", "")),
    )
