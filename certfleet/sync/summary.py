"""The run's counters (declared once), the summary every sync run returns, and the tally."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

from certfleet.errors import CertfleetError
from certfleet.sync.errors import printable

# The figures of one cluster's fleet check, in the order they are printed.
FLEET_FIGURES = (
    "nodes", "current", "behind", "stale", "failing", "unreadable", "ahead", "problem_nodes",
)  # fmt: skip


@dataclass(frozen=True)
class RunCounts:
    """The counters of one run, each declared here and nowhere else: what the run did
    (counted by its parts into the ``RunTally``) and what it cost (``store_reads``,
    ``store_writes`` and ``store_requests`` from the store's own counters, ``provider_calls``
    counted where the parts call the provider). ``objects_repaired`` counts published
    objects found missing or corrupted (rewritten, or their order marked for a new key);
    ``objects_verified`` counts objects read and hash-checked by a ``verify_store`` run."""

    orders_seen: int = 0
    keys_generated: int = 0
    csrs_submitted: int = 0
    certificates_published: int = 0
    tombstones: int = 0
    objects_deleted: int = 0
    objects_repaired: int = 0
    objects_verified: int = 0
    heads_published: int = 0
    store_reads: int = 0
    store_writes: int = 0
    store_requests: int = 0
    provider_calls: int = 0

    def counters(self) -> dict[str, int]:
        """The counters by name (of a ``RunSummary`` too: only the fields declared here)."""
        return {counter.name: getattr(self, counter.name) for counter in fields(RunCounts)}


@dataclass(frozen=True)
class RunSummary(RunCounts):
    """What one run did: its counters (``RunCounts``) and the following. ``errors`` maps an
    order name (or ``cluster:<name>`` for a whole cluster) to the error message; the
    message is printable (no raw control character), while the order name is kept exactly
    as the provider listed it, so a caller printing it for people must escape it.
    ``skipped`` names the clusters whose lease another run held (this run backed off: not
    an error); ``generations`` is the head generation each cluster ends the run with
    (published or unchanged); ``complete`` is False when the time budget or a lease held
    elsewhere left work for the next run. ``fleet`` holds, for each cluster whose nodes'
    acks this run checked (``certfleet.sync.fleetcheck``), its figures (``FLEET_FIGURES``);
    an error key ``fleet:<cluster>`` means the check could not list or read the cluster's
    acks."""

    clusters: tuple[str, ...] = ()
    errors: Mapping[str, str] = field(default_factory=dict)
    generations: Mapping[str, int] = field(default_factory=dict)
    skipped: tuple[str, ...] = ()
    complete: bool = True
    duration: float = 0.0
    fleet: Mapping[str, Mapping[str, int]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def generation(self) -> int:
        """The highest generation among the clusters (0 when none has a head)."""
        return max(self.generations.values(), default=0)

    @property
    def fleet_problem_nodes(self) -> int | None:
        """Nodes found stale, failing, unreadable or ahead by this run's fleet checks (each
        node once); None when no cluster was checked in this run."""
        if not self.fleet:
            return None
        return sum(figures["problem_nodes"] for figures in self.fleet.values())

    def as_dict(self) -> dict[str, Any]:
        """The summary as JSON data (``certfleet sync --json``, the Lambda's log line)."""
        return {
            "clusters": list(self.clusters),
            **self.counters(),
            "errors": dict(self.errors),
            "generation": self.generation,
            "generations": dict(self.generations),
            "skipped": list(self.skipped),
            "complete": self.complete,
            "duration": round(self.duration, 3),
            "fleet": {cluster: dict(figures) for cluster, figures in self.fleet.items()},
            "fleet_problem_nodes": self.fleet_problem_nodes,
        }


@dataclass
class RunTally:
    """What a run has done so far, filled in by its parts and turned into a ``RunSummary``
    at the end (``summary``): ``count`` adds to the counters."""

    counts: RunCounts = field(default_factory=RunCounts)
    complete: bool = True
    errors: dict[str, str] = field(default_factory=dict)
    generations: dict[str, int] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    fleet: dict[str, dict[str, int]] = field(default_factory=dict)

    def count(self, **increments: int) -> None:
        """Add to counters by name: ``tally.count(keys_generated=1)``."""
        counts = self.counts
        added = {name: getattr(counts, name) + value for name, value in increments.items()}
        self.counts = replace(counts, **added)

    def summary(self, clusters: Sequence[str], *, duration: float) -> RunSummary:
        """The run's frozen summary, once every part has counted into this tally."""
        return RunSummary(
            **self.counts.counters(),
            clusters=tuple(clusters),
            errors=dict(self.errors),
            generations=dict(self.generations),
            skipped=tuple(self.skipped),
            complete=self.complete,
            duration=duration,
            fleet=dict(self.fleet),
        )

    def error(self, subject: str, err: BaseException | str) -> None:
        """Record a failure of ``subject`` (an order name as the provider spelt it, or
        ``cluster:<name>``); the message is repr-escaped and cut (``printable``). An
        unexpected exception (not a ``CertfleetError`` nor a ``ValueError``: a MemoryError,
        a RecursionError, a library's KeyError...) is shown with its type:
        ``unexpected MemoryError``."""
        if isinstance(err, BaseException) and not isinstance(err, (CertfleetError, ValueError)):
            detail = str(err)
            err = f"unexpected {type(err).__name__}" + (f": {detail}" if detail else "")
        self.errors[subject] = printable(str(err))
