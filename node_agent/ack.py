"""Writing this node's encrypted ack: ``v1/clusters/<cluster>/acks/<node-id>``.

An ack tells the operator (``certfleet`` reads them with the cluster secret) what a node
applied: its node id, hostname (a label only), the generation of its applied head, each
order's state (installed, deferred, failed, removed) with its serial, and in ``detail`` why
an order is deferred or failed (a version backing off after a failed check_command or probe
is failed until it is tried again: "<the failure>; retry at T (attempt N failed)") or which
on_update command is still owed for it. Owed commands are also declared in the ack's
``owed`` list (``ack_owed``), which is what the sync's fleet check reads: the ``detail``
wording is for people and may change.

An ack is written only when its content changed since the last one this node wrote (the
time does not count): the digest of the last one is kept in the cluster's durable state
(``ClusterState.ack_digest``), so a new process, e.g. each ``--once`` run from cron, does
not upload the same ack again; an idle ``--once`` poll is one conditional GET of the head.
Acks go only to a store that takes writes (``s3://``, ``file://``).
Credentials without write access on ``acks/`` are normal (a node may be read-only): the
first ``StoreAccessDenied`` is logged at info and acks are then skipped until a restart or
a config reload. Any other store error is logged and the ack retried after the next poll.
"""

from __future__ import annotations

import hashlib
import json
import logging
import socket
from collections.abc import Collection, Mapping, Sequence

from certfleet.bundle import (
    Ack,
    AckOrder,
    ClusterSecret,
    FormatError,
    OwedUpdate,
    PublicKey,
    ShardEntry,
    iso_utc,
    seal_ack,
)
from certfleet.bundle.layout import ack_key
from certfleet.store import Store, StoreAccessDenied, StoreError
from node_agent.agentstate import AgentState, ClusterState, OwedCommand
from node_agent.result import PollResult, Problem
from node_agent.schedule import Deferral

log = logging.getLogger(__name__)

_MAX_HOSTNAME = 255
_MAX_DETAIL = 1000
# Up to this many orders in a cluster, an ack lists every order with its serial. Above it, an
# ack lists only the exceptions (deferred, failed, removed, a failing on_update): an order it
# does not list is installed with the serial the head of the ack's generation publishes. At
# 100,000 orders a full list would make every node write ~6.5 MB per change.
MAX_LISTED_ORDERS = 1000


def hostname_label() -> str:
    return socket.gethostname()[:_MAX_HOSTNAME]


class AckWriter:
    """Seals and writes one node's acks to one store, skipping unchanged ones."""

    def __init__(self, store: Store, node_id: str, hostname: str | None = None) -> None:
        self.store = store
        self.node_id = node_id
        self.hostname = hostname if hostname is not None else hostname_label()
        self.enabled = not store.readonly
        self._written: dict[str, tuple[int, tuple[AckOrder, ...], tuple[OwedUpdate, ...]]] = {}
        self.unsent: set[str] = set()  # clusters whose last ack could not be written
        if not self.enabled:
            log.debug("store %s is read-only: no acks", store.url)

    def last_orders(self, cluster: str) -> dict[str, AckOrder]:
        """The orders of the last ack written for ``cluster``, by name."""
        written = self._written.get(cluster)
        return {order.order_name: order for order in written[1]} if written else {}

    def digest(
        self, generation: int, orders: Sequence[AckOrder], owed: Sequence[OwedUpdate] = ()
    ) -> str:
        """What identifies an ack's content (not its time): SHA-256 of a canonical form
        (the same as before the ``owed`` list for an ack that owes nothing)."""
        content: list[object] = [self.node_id, self.hostname, generation]
        content += [[o.order_name, o.state, o.serial, o.detail] for o in orders]
        if owed:
            content.append({"owed": [[o.order_name, o.command] for o in owed]})
        return hashlib.sha256(json.dumps(content).encode("utf-8")).hexdigest()

    def report(
        self,
        cluster: str,
        secrets: Sequence[ClusterSecret],
        *,
        publishers: Sequence[PublicKey] = (),
        generation: int,
        orders: Sequence[AckOrder],
        now: int,
        state: ClusterState | None = None,
        owed: Sequence[OwedUpdate] = (),
    ) -> bool:
        """Write the ack if it changed; True when one was written.

        ``state`` (the cluster's durable state) remembers the digest of the last ack
        written, across processes; the caller saves it when this returns True."""
        if not self.enabled:
            return False
        content = (generation, tuple(orders), tuple(owed))
        digest = self.digest(generation, orders, owed)
        if self._written.get(cluster) == content or (
            state is not None and state.ack_digest == digest
        ):
            self._written[cluster] = content
            self.unsent.discard(cluster)
            return False
        try:
            ack = Ack(self.node_id, self.hostname, generation, now, tuple(orders), tuple(owed))
            data = seal_ack(ack, cluster=cluster, secrets=secrets, publishers=publishers[:4])
        except FormatError as err:
            log.warning("ack for cluster %s not written: %s", cluster, err)
            self.unsent.add(cluster)
            return False
        key = ack_key(cluster, self.node_id)
        try:
            self.store.put(key, data)
        except StoreAccessDenied as err:
            log.info("acks disabled until restart: the store refused the ack write (%s)", err)
            self.enabled = False
            return False
        except StoreError as err:
            log.warning("ack for cluster %s not written, retried after the next poll: %s",
                        cluster, err)  # fmt: skip
            self.unsent.add(cluster)
            return False
        self.unsent.discard(cluster)
        self._written[cluster] = content
        if state is not None:
            state.ack_digest = digest
        log.debug("ack for cluster %s written (generation %d)", cluster, generation)
        return True


def ack_orders(
    state: AgentState,
    cluster: str,
    result: PollResult,
    last: Mapping[str, AckOrder] | None = None,
    deferrals: Mapping[str, Deferral] | None = None,
    only: Collection[str] | None = None,
) -> list[AckOrder]:
    """What an ack reports for each order of ``cluster`` after the poll that gave ``result``.

    ``last`` (the orders of the last ack, by name) are reused where nothing changed, which
    spares checking 100,000 order names again after a change of one. ``deferrals`` (the
    planner's waits, by name) say why a deferred order waits: ``install_after``, ``stagger``
    or ``update window``. ``only``: the names that may have changed since ``last`` (the
    caller knows nothing else did); with over ``MAX_LISTED_ORDERS`` published, only those
    are looked at and the rest of ``last`` is kept as it is."""
    entries = state.cluster(cluster).entries()
    owed = {safe: owed for owed in state.owed for safe in (*owed.updated, *owed.removed)}
    problems = [p for p in result.problems if p.cluster == cluster]
    known = last or {}
    look = _Look(state, cluster, entries, owed, problems, deferrals or {})
    if only is not None and len(entries) > MAX_LISTED_ORDERS:
        kept = {name: order for name, order in known.items() if name not in only}
        for name in only:
            found = look.order(name, known.get(name), compact=True)
            if found is not None:
                kept[name] = found
        return [kept[name] for name in sorted(kept)]
    names = set(entries).union(n for n, o in state.orders.items() if o.cluster == cluster)
    compact = len(names) > MAX_LISTED_ORDERS
    orders = (look.order(name, known.get(name), compact=compact) for name in sorted(names))
    return [order for order in orders if order is not None]


class _Look:
    """What ``ack_orders`` looks at to say one order's state."""

    def __init__(
        self,
        state: AgentState,
        cluster: str,
        entries: Mapping[str, ShardEntry],
        owed: Mapping[str, OwedCommand],
        problems: Sequence[Problem],
        deferrals: Mapping[str, Deferral],
    ) -> None:
        self.state, self.cluster, self.entries = state, cluster, entries
        self.owed, self.problems, self.deferrals = owed, problems, deferrals

    def order(self, name: str, last: AckOrder | None, *, compact: bool) -> AckOrder | None:
        """The order's line in the ack (``last`` again if unchanged); None if not listed."""
        installed = self.state.orders.get(name)
        mine = installed if installed is not None and installed.cluster == self.cluster else None
        serial = mine.serial if mine else ""
        entry = self.entries.get(name)
        failed = [p.message for p in self.problems if repr(name) in p.subject]
        if failed:
            order_state, detail = "failed", failed[0]
        elif mine is not None and mine.removed_at is not None:
            order_state, detail = (
                "removed",
                f"removed upstream at {iso_utc(mine.removed_at)}; files kept",
            )
        elif entry is not None and (mine is None or mine.bundle_hash != entry.bundle_hash.hex()):
            wait = self.deferrals.get(name)
            order_state = "deferred"
            detail = wait.detail() if wait else f"install_after {iso_utc(entry.install_after)}"
        elif mine is not None:
            order_state, detail = "installed", ""
        else:
            return None
        command = self.owed.get(mine.safe_name) if mine else None
        if command is not None and command.failures:
            detail = (f"{detail}; " if detail else "") + (
                f"on_update {command.command!r} {command.last_error}"
            )
        detail = _cut(detail) if detail else ""
        if compact and order_state == "installed" and not detail:
            return None  # implied by the generation (see MAX_LISTED_ORDERS)
        if last is not None and (last.state, last.serial, last.detail) == (
            order_state, serial, detail
        ):  # fmt: skip
            return last
        try:
            return AckOrder(name, order_state, serial, detail)
        except FormatError:
            return None


def ack_owed(state: AgentState, cluster: str, orders: Sequence[AckOrder]) -> tuple[OwedUpdate, ...]:
    """The on_update commands owed (failed at least once) for the acked ``orders`` of
    ``cluster``: the ack's declared ``owed`` list, one entry per order."""
    owed = {safe: owed for owed in state.owed for safe in (*owed.updated, *owed.removed)}
    found: list[OwedUpdate] = []
    for order in orders:
        mine = state.orders.get(order.order_name)
        if mine is None or mine.cluster != cluster:
            continue
        command = owed.get(mine.safe_name)
        if command is not None and command.failures:
            try:
                found.append(OwedUpdate(order.order_name, _cut(command.command)))
            except FormatError:
                continue
    return tuple(found)


def _cut(text: str) -> str:
    """``text`` cut to fit an ack's detail field (1024 bytes of UTF-8)."""
    data = text.encode("utf-8")
    if len(data) <= _MAX_DETAIL:
        return text
    return data[:_MAX_DETAIL].decode("utf-8", errors="ignore") + "…"
