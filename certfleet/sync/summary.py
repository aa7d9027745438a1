"""The run summary every sync run returns, and the tally that builds it during a run."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from certfleet.errors import CertfleetError
from certfleet.sync.errors import printable

# The figures of one cluster's fleet check, in the order they are printed.
FLEET_FIGURES = (
    "nodes", "current", "behind", "stale", "failing", "unreadable", "ahead", "problem_nodes",
)  # fmt: skip


@dataclass(frozen=True)
class RunSummary:
    """What one run did. ``errors`` maps an order name (or ``cluster:<name>`` for a whole
    cluster) to the error message; the message is printable (no raw control character),
    while the order name is kept exactly as the provider listed it, so a caller printing
    it for people must escape it. ``skipped`` names the clusters whose lease another run
    held (this run backed off: not an error); ``generations`` is the head generation each
    cluster ends the run with (published or unchanged); ``complete`` is False when the time
    budget or a lease held elsewhere left work for the next run. ``objects_repaired``
    counts published objects found missing or corrupted (rewritten, or their order marked
    for a new key); ``objects_verified`` counts objects read and hash-checked by a
    ``verify_store`` run. ``fleet`` holds, for each cluster whose nodes' acks this run
    checked (``certfleet.sync.fleetcheck``), its figures (``FLEET_FIGURES``); an error key
    ``fleet:<cluster>`` means the check could not list or read the cluster's acks."""

    clusters: tuple[str, ...]
    orders_seen: int
    keys_generated: int
    csrs_submitted: int
    certificates_published: int
    tombstones: int
    objects_deleted: int
    objects_repaired: int
    objects_verified: int
    errors: Mapping[str, str]
    store_reads: int
    store_writes: int
    store_requests: int
    provider_calls: int
    generations: Mapping[str, int]
    skipped: tuple[str, ...]
    heads_published: int
    complete: bool
    duration: float
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
        return {
            "clusters": list(self.clusters),
            "orders_seen": self.orders_seen,
            "keys_generated": self.keys_generated,
            "csrs_submitted": self.csrs_submitted,
            "certificates_published": self.certificates_published,
            "tombstones": self.tombstones,
            "objects_deleted": self.objects_deleted,
            "objects_repaired": self.objects_repaired,
            "objects_verified": self.objects_verified,
            "errors": dict(self.errors),
            "store_reads": self.store_reads,
            "store_writes": self.store_writes,
            "store_requests": self.store_requests,
            "provider_calls": self.provider_calls,
            "generation": self.generation,
            "generations": dict(self.generations),
            "skipped": list(self.skipped),
            "heads_published": self.heads_published,
            "complete": self.complete,
            "duration": round(self.duration, 3),
            "fleet": {cluster: dict(figures) for cluster, figures in self.fleet.items()},
            "fleet_problem_nodes": self.fleet_problem_nodes,
        }


@dataclass
class RunTally:
    """Mutable counters filled in during a run, frozen into a ``RunSummary`` at the end."""

    orders_seen: int = 0
    keys_generated: int = 0
    csrs_submitted: int = 0
    certificates_published: int = 0
    tombstones: int = 0
    objects_deleted: int = 0
    objects_repaired: int = 0
    objects_verified: int = 0
    heads_published: int = 0
    complete: bool = True
    errors: dict[str, str] = field(default_factory=dict)
    generations: dict[str, int] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    fleet: dict[str, dict[str, int]] = field(default_factory=dict)

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
