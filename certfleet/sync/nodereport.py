"""Reading what a cluster's nodes report (their acks) and judging each node against the head.

``read_nodes`` reads and assesses every ``acks/<node-id>`` against a published head (one
LIST, one GET per ack); the sync's fleet check (``certfleet.sync.fleetcheck``) calls it with
the head it just published, a deadline and what it kept of the acks it read before
(``KnownAck``, by the ETag the listing gives): then only the acks that changed are read.
``read_cluster`` reads one cluster for ``certfleet nodes``: the head (verified with the
sync's own key, by ``certfleet.sync.headseen.read_head``), the head's index shards (for each
order's published serial: an ack of a cluster over 1,000 orders lists only exceptions, and
an order it leaves out is installed with the serial the head of the ack's generation
publishes), and ``acks/``. Acks are written by nodes and are untrusted: the listing stops
at ``MAX_ACKS``, an object over ``MAX_ACK_BYTES`` is refused before it is read (the
store's size cap, so at most ``READERS`` acks of that size are in memory at once), and an
ack that does not open (tampered, wrapped for other secrets, garbage) is a ``NodeReport``
with an ``error``; it never stops the others.

A node is *current* when its ack's generation is the head's, *behind* when lower, *ahead*
when higher (the store's head is older than what the node applied: a restored store).
Agents write an ack only when what they report changes, so an ack's age says nothing of a
node's health; a node is *stale* when it is behind and the current head has been out for
longer than ``stale_after``: it had that long to apply it and did not report it.
"""

from __future__ import annotations

import ast
import hashlib
import re
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from typing import Optional

from certfleet.bundle import (
    Ack,
    AckOrder,
    ClusterSecret,
    FormatError,
    IntegrityError,
    NoUsableSecretError,
    PublicKey,
    ShardEntry,
    SigningKey,
    ack_label,
    open_ack,
    open_shard,
    validate_node_id,
)
from certfleet.bundle.ack import ORDER_STATES
from certfleet.store import ObjectNotFound, ObjectTooLarge, Store, StoreError
from certfleet.sync.headseen import read_head
from certfleet.sync.layout import ACK_MAX_BYTES, SHARD_MAX_BYTES, acks_prefix, shard_key
from certfleet.sync.state import read_bytes

MAX_ACKS = 100_000
MAX_ACK_BYTES = ACK_MAX_BYTES
READERS = 8
PROBLEMS = ("unreadable", "failing", "stale", "ahead")
# How agents from before the ack's declared ``owed`` list worded an owed on_update in an
# order's detail: "on_update 'CMD' why". Read only from an ack without that list.
_OWED = re.compile(r"(?:^|; )on_update ('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")")


@dataclass(frozen=True)
class Published:
    """The cluster's current head; ``index`` (order name -> entry) is None when the head's
    shards could not be read."""

    generation: int
    issued_at: int
    valid_until: int
    index: Optional[Mapping[str, ShardEntry]]


@dataclass(frozen=True)
class NodeReport:
    """One ``acks/<node-id>`` object: the ack, or why it could not be read (``error``,
    with ``error_kind`` one of integrity, secret, malformed, too-large, store)."""

    node_id: str
    ack: Optional[Ack] = None
    error: Optional[str] = None
    error_kind: Optional[str] = None
    # An unreadable ack's hostname label, opened with the sync's signing key (unauthenticated;
    # certfleet.bundle.acklabel), "" when there is none.
    label: str = ""
    applied: str = "unknown"  # current, behind, ahead, unknown
    behind_seconds: int = 0
    stale: bool = False
    counts: Mapping[str, int] = field(default_factory=dict)
    owed: tuple[str, ...] = ()
    failed: tuple[AckOrder, ...] = ()

    @property
    def hostname(self) -> str:
        """The hostname sealed in the ack; for an unreadable ack, its hostname label."""
        return self.ack.hostname if self.ack is not None else self.label

    @property
    def failing(self) -> bool:
        return bool(self.failed or self.owed)

    @property
    def problems(self) -> tuple[str, ...]:
        """What is wrong with this node, worst first (empty when nothing is)."""
        if self.error is not None:
            return ("unreadable",)
        flags = {
            "failing": self.failing,
            "stale": self.stale,
            "ahead": self.applied == "ahead",
        }
        return tuple(name for name in PROBLEMS if flags.get(name))

    @property
    def status(self) -> str:
        """``unreadable``, ``failing``, ``stale``, ``ahead`` (joined by ``,`` when several),
        else ``behind``, ``current`` or ``unknown`` (no verified head to compare with)."""
        return ",".join(self.problems) or self.applied

    def order(self, name: str, published: Published | None) -> tuple[str, str]:
        """(state, serial) of order ``name`` on this node; ``unlisted`` when the ack does
        not say (an ack of another generation than the head's, which leaves it out)."""
        ack = self.ack
        if ack is None:
            return "unreadable", ""
        for entry in ack.orders:
            if entry.order_name == name:
                return entry.state, entry.serial
        index = published.index if published is not None else None
        if self.applied == "current" and index is not None and name in index:
            return "installed", index[name].serial
        return "unlisted", ""


@dataclass(frozen=True)
class ClusterReport:
    """One cluster: its head (None when there is none or it does not verify: ``problem``
    says why), and its nodes, problems first. ``error`` is set when the store failed."""

    cluster: str
    published: Optional[Published] = None
    problem: Optional[str] = None
    error: Optional[str] = None
    nodes: tuple[NodeReport, ...] = ()
    truncated: bool = False

    def summary(self) -> dict[str, int]:
        return count_nodes(self.nodes)

    @property
    def healthy(self) -> bool:
        """No store error, a verified unexpired head, no node with a problem."""
        return (
            self.error is None
            and self.problem is None
            and self.published is not None
            and not any(node.problems for node in self.nodes)
        )


@dataclass(frozen=True)
class KnownAck:
    """What the fleet check keeps of an ack that opened, under the ETag the listing gave
    it: enough to assess the node again without reading the ack. ``ack`` keeps only the
    orders that failed or owe an on_update (the problems a report names)."""

    etag: str
    ack: Ack


def known_ack(etag: str, ack: Ack) -> KnownAck:
    """What to keep of ``ack``: its orders that fail or owe an on_update, its owed list."""
    _, problems = _owed_and_failed(ack)
    kept = Ack(ack.node_id, ack.hostname, ack.generation, ack.reported_at, problems, ack.owed)
    return KnownAck(etag, kept)


@dataclass(frozen=True)
class NodeReports:
    """What ``read_nodes`` found: the nodes, problems first; ``truncated`` when the listing
    held more than ``MAX_ACKS``; ``unread`` counts acks left unread at the deadline;
    ``known`` what to keep of every ack that opened (by node id, when the listing gave
    ETags); ``reads`` how many acks were read."""

    nodes: tuple[NodeReport, ...]
    truncated: bool = False
    unread: int = 0
    known: Mapping[str, KnownAck] = field(default_factory=dict)
    reads: int = 0


def count_nodes(nodes: Sequence[NodeReport]) -> dict[str, int]:
    """How many nodes are current, behind, stale, ahead, failing, unreadable (a node may
    be counted under several: stale nodes are also behind, a failing one any of these)."""
    return {
        "nodes": len(nodes),
        "current": sum(1 for n in nodes if n.error is None and n.applied == "current"),
        "behind": sum(1 for n in nodes if n.error is None and n.applied == "behind"),
        "stale": sum(1 for n in nodes if n.stale),
        "ahead": sum(1 for n in nodes if n.error is None and n.applied == "ahead"),
        "failing": sum(1 for n in nodes if n.failing),
        "unreadable": sum(1 for n in nodes if n.error is not None),
    }


def read_cluster(
    store: Store,
    cluster: str,
    secrets: Sequence[ClusterSecret],
    publisher: PublicKey,
    *,
    now: int,
    stale_after: float,
    signing_key: SigningKey | None = None,
) -> ClusterReport:
    """Everything ``certfleet nodes`` shows of ``cluster``; store errors become ``error``.
    With ``signing_key``, an ack that does not open is named by its hostname label."""
    try:
        published, problem = _read_published(store, cluster, secrets, publisher, now)
        found = read_nodes(
            store, cluster, secrets, published, now=now, stale_after=stale_after,
            signing_key=signing_key,
        )  # fmt: skip
    except StoreError as err:
        return ClusterReport(cluster, error=str(err))
    return ClusterReport(cluster, published, problem, None, found.nodes, found.truncated)


def read_nodes(
    store: Store,
    cluster: str,
    secrets: Sequence[ClusterSecret],
    published: Published | None,
    *,
    now: int,
    stale_after: float,
    deadline: float | None = None,
    signing_key: SigningKey | None = None,
    known: Mapping[str, KnownAck] | None = None,
) -> NodeReports:
    """Every node's ack (one LIST, then one GET per ack, ``READERS`` at a time), assessed
    against ``published``. A read not started by ``deadline`` (a ``time.monotonic()``
    value) is skipped and counted in ``unread``. The listing's store errors propagate; an
    ack that cannot be read or opened is a ``NodeReport`` with an ``error``.

    With ``known`` (what an earlier call returned in ``NodeReports.known``) the listing
    gives each ack's ETag, and only the acks whose ETag differs from the known one are
    read: the others are assessed from what was kept of them (``KnownAck``: their reports
    count only the orders that failed or owe an on_update)."""
    prefix = acks_prefix(cluster)
    if known is None:
        listed: list[tuple[str, str]] = [
            (key, "") for key in islice(store.list(prefix), MAX_ACKS + 1)
        ]
    else:
        listed = list(islice(store.list_etags(prefix), MAX_ACKS + 1))
    truncated = len(listed) > MAX_ACKS
    kept: dict[str, KnownAck] = {}
    nodes: list[NodeReport] = []
    to_read: list[tuple[str, str]] = []
    for key, etag in listed[:MAX_ACKS]:
        cached = known.get(key[len(prefix) :]) if known is not None and etag else None
        if cached is not None and cached.etag == etag:
            kept[cached.ack.node_id] = cached
            nodes.append(NodeReport(cached.ack.node_id, cached.ack))
        else:
            to_read.append((key, etag))

    def read(item: tuple[str, str]) -> tuple[bool, NodeReport | None]:
        if deadline is not None and time.monotonic() >= deadline:
            return False, None
        return True, _read_ack(store, cluster, secrets, item[0], signing_key)

    with ThreadPoolExecutor(READERS) as pool:
        results = list(pool.map(read, to_read))
    unread = 0
    for (_, etag), (done, node) in zip(to_read, results):
        unread += not done
        if node is None:
            continue
        nodes.append(node)
        if node.ack is not None and etag:
            kept[node.node_id] = known_ack(etag, node.ack)
    assessed = [_assess(node, published, now, stale_after) for node in nodes]
    assessed.sort(key=_problems_first)
    return NodeReports(tuple(assessed), truncated, unread, kept, len(to_read) - unread)


def _problems_first(node: NodeReport) -> tuple[int, int, str, str]:
    problems = node.problems
    rank = PROBLEMS.index(problems[0]) if problems else len(PROBLEMS)
    applied = ("behind", "unknown", "current").index(node.applied) if not problems else 0
    return rank, applied, node.hostname, node.node_id


def _read_published(
    store: Store,
    cluster: str,
    secrets: Sequence[ClusterSecret],
    publisher: PublicKey,
    now: int,
) -> tuple[Published | None, str | None]:
    seen = read_head(store, cluster, publisher, now_ms=now * 1000)
    if seen.head is None:
        return None, seen.problem or "no head: the sync has not published this cluster yet"
    if not seen.signed:
        return None, f"the head does not verify with the sync's signing key: {seen.problem}"
    head = seen.head
    problem = None
    if head.valid_until < now:
        problem = f"the head expired {now - head.valid_until} s ago: is the sync running?"
    index: dict[str, ShardEntry] = {}
    for number, digest in enumerate(head.shard_hashes):
        try:
            data = read_bytes(store, shard_key(cluster, digest.hex()), max_bytes=SHARD_MAX_BYTES)
            if hashlib.sha256(data).digest() != digest:
                raise IntegrityError(f"shard {number} of cluster {cluster}", "hash mismatch")
            shard = open_shard(data, cluster=cluster, index=number, secrets=secrets)
        except (ObjectNotFound, FormatError) as err:
            problem = f"the head's index is unreadable ({err}); run certfleet sync --verify-store"
            return Published(head.generation, head.issued_at, head.valid_until, None), problem
        index.update((entry.order_name, entry) for entry in shard.entries)
    published = Published(head.generation, head.issued_at, head.valid_until, index)
    return published, problem


def _read_ack(
    store: Store,
    cluster: str,
    secrets: Sequence[ClusterSecret],
    key: str,
    signing_key: SigningKey | None = None,
) -> NodeReport | None:
    """The node's ack, or a report of why it is unreadable; None when it vanished."""
    node_id = key[len(acks_prefix(cluster)) :]
    try:
        validate_node_id(node_id)
    except FormatError:
        return NodeReport(
            node_id, error="not a node id (1-64 of A-Z a-z 0-9 _ -)", error_kind="malformed"
        )
    try:
        data = read_bytes(store, key, max_bytes=MAX_ACK_BYTES)
    except ObjectNotFound:
        return None  # forgotten (or replaced) between the listing and the read
    except ObjectTooLarge as err:
        size = f"{err.size} bytes" if err.size is not None else "more"
        return NodeReport(node_id, error=f"{size}, over {MAX_ACK_BYTES}", error_kind="too-large")
    except StoreError as err:
        return NodeReport(node_id, error=str(err), error_kind="store")
    try:
        return NodeReport(
            node_id, open_ack(data, cluster=cluster, node_id=node_id, secrets=secrets)
        )
    except FormatError as err:
        label = None
        if signing_key is not None:
            label = ack_label(data, cluster=cluster, node_id=node_id, signing_key=signing_key)
        kind = (
            "secret" if isinstance(err, NoUsableSecretError)
            else "integrity" if isinstance(err, IntegrityError)
            else "malformed"
        )  # fmt: skip
        return NodeReport(node_id, error=err.reason, error_kind=kind, label=label or "")


def _assess(
    node: NodeReport, published: Published | None, now: int, stale_after: float
) -> NodeReport:
    ack = node.ack
    if ack is None:
        return node
    counts = Counter({state: 0 for state in ORDER_STATES})
    counts.update(order.state for order in ack.orders)
    owed, failed = _owed_and_failed(ack)
    applied, behind, stale = "unknown", 0, False
    if published is not None:
        if ack.generation == published.generation:
            applied = "current"
            if published.index is not None:
                listed = {order.order_name for order in ack.orders}
                counts["installed"] += sum(1 for name in published.index if name not in listed)
        elif ack.generation < published.generation:
            applied = "behind"
            behind = (published.generation - ack.generation) // 1000
            stale = now - published.issued_at > stale_after
        else:
            applied = "ahead"
    return NodeReport(
        node.node_id,
        ack,
        applied=applied,
        behind_seconds=behind,
        stale=stale,
        counts=dict(counts),
        owed=tuple(owed),
        failed=failed,
    )


def _owed_and_failed(ack: Ack) -> tuple[list[str], tuple[AckOrder, ...]]:
    """The on_update commands the node owes (sorted, distinct) and its failing orders (failed,
    or owing an on_update). From the ack's declared ``owed`` list; an ack without one (no
    command owed, or an agent from before the list) is read the old way, from the wording
    of each order's detail."""
    if ack.owed is not None:
        names = {owed.order_name for owed in ack.owed}
        owed = sorted({owed.command for owed in ack.owed})
        return owed, tuple(o for o in ack.orders if o.state == "failed" or o.order_name in names)
    owed = sorted({_command(m.group(1)) for o in ack.orders for m in _OWED.finditer(o.detail)})
    failed = tuple(o for o in ack.orders if o.state == "failed" or _OWED.search(o.detail))
    return owed, failed


def _command(quoted: str) -> str:
    """The command of an owed on_update, from an old agent's ``repr`` of it."""
    try:
        command = ast.literal_eval(quoted)
    except (ValueError, SyntaxError):
        return quoted
    return command if isinstance(command, str) else quoted
