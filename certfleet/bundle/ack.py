"""Acks: a node's encrypted report of what it installed, at ``acks/<node-id>``.

The identity bound into the associated data is the node id, so one node's ack cannot be
passed off as another's. Times are Unix seconds.

An ack object may start with a *hostname label*: the node's hostname encrypted for the
publisher (``certfleet.bundle.acklabel``), so that ``certfleet nodes`` can name the host of
an ack it cannot open (a wrong or retired secret) while the store still sees ciphertext
only. The sealed ack follows. Objects without a label (agents before it) start with the
envelope's ``CFSE`` and are read the same. docs/format.md "Ack" is the byte-level
description.

An ack declares the on_update commands its node still owes (``owed``: a command that failed
and is retried, with the order it is for) in a list after the orders. The list is written
only when it is not empty, so an ack that owes nothing is the same bytes as before the list
existed; ``owed`` is None for an ack without the list (nothing owed, or an agent from before
it, which only said so in an order's ``detail``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

from certfleet.bundle.acklabel import open_label, seal_label, split_label
from certfleet.bundle.codec import Reader, Writer
from certfleet.bundle.envelope import Rng, object_name, open_sealed, seal
from certfleet.bundle.errors import MalformedError
from certfleet.bundle.keys import ClusterSecret, PublicKey, SigningKey
from certfleet.bundle.names import validate_order_name
from certfleet.bundle.shard import check_time, validate_serial

KIND = "ack"
ORDER_STATES = ("installed", "deferred", "failed", "removed")
_NODE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
MAX_TEXT = 1024
MAX_ORDERS = 1 << 20


def validate_node_id(node_id: str, where: str = "ack") -> str:
    """A node id: 1-64 characters of A-Z a-z 0-9 _ - (it is part of an object key)."""
    if not isinstance(node_id, str) or not _NODE_ID.fullmatch(node_id):
        raise MalformedError(where, "node id must be 1-64 characters of A-Z a-z 0-9 _ -")
    return node_id


def _check_text(value: str, field: str, where: str) -> None:
    if not isinstance(value, str) or len(value.encode("utf-8")) > MAX_TEXT:
        raise MalformedError(where, f"{field} must be text of at most {MAX_TEXT} bytes")


@dataclass(frozen=True)
class AckOrder:
    """One order as the node sees it; ``serial`` is empty when nothing is installed."""

    order_name: str
    state: str
    serial: str = ""
    detail: str = ""

    def __post_init__(self) -> None:
        validate_order_name(self.order_name, where="ack")
        where = f"ack entry for {self.order_name}"
        if self.state not in ORDER_STATES:
            raise MalformedError(where, f"state must be one of {', '.join(ORDER_STATES)}")
        if self.serial:
            validate_serial(self.serial, where)
        _check_text(self.detail, "detail", where)


@dataclass(frozen=True)
class OwedUpdate:
    """An on_update command the node still owes for an order: it failed and is retried."""

    order_name: str
    command: str

    def __post_init__(self) -> None:
        validate_order_name(self.order_name, where="ack")
        _check_text(self.command, "command", f"owed on_update for {self.order_name}")


@dataclass(frozen=True)
class Ack:
    """A node's report: the generation it applied, the state of each order and the
    on_update commands it owes (None: the ack has no such list)."""

    node_id: str
    hostname: str
    generation: int
    reported_at: int
    orders: tuple[AckOrder, ...] = ()
    owed: Optional[tuple[OwedUpdate, ...]] = None

    def __post_init__(self) -> None:
        validate_node_id(self.node_id)
        where = f"ack of node {self.node_id}"
        _check_text(self.hostname, "hostname", where)
        check_time(self.generation, "generation", where)
        check_time(self.reported_at, "reported_at", where)
        object.__setattr__(self, "orders", tuple(self.orders))
        if self.owed is not None:
            object.__setattr__(self, "owed", tuple(self.owed) or None)


def encode_ack(ack: Ack) -> bytes:
    writer = Writer().text(ack.node_id).text(ack.hostname).u64(ack.generation)
    writer.u64(ack.reported_at).u32(len(ack.orders))
    for order in ack.orders:
        writer.text(order.order_name).text(order.state).text(order.serial).text(order.detail)
    if ack.owed:
        writer.u32(len(ack.owed))
        for owed in ack.owed:
            writer.text(owed.order_name).text(owed.command)
    return writer.getvalue()


def decode_ack(payload: bytes, name: str = "ack") -> Ack:
    reader = Reader(payload, name)
    node_id = validate_node_id(reader.text(64), name)
    hostname = reader.text(MAX_TEXT)
    generation = reader.u64()
    reported_at = reader.u64()
    orders = []
    for _ in range(reader.count(16, MAX_ORDERS)):
        order_name = validate_order_name(reader.text(253), where=name)
        state, serial, detail = reader.text(16), reader.text(128), reader.text(MAX_TEXT)
        try:
            orders.append(AckOrder(order_name, state, serial, detail))
        except MalformedError as err:
            raise MalformedError(name, err.reason) from err
    owed: list[OwedUpdate] | None = None
    if reader.position < len(payload):
        owed = []
        for _ in range(reader.count(8, MAX_ORDERS)):
            order_name = validate_order_name(reader.text(253), where=name)
            try:
                owed.append(OwedUpdate(order_name, reader.text(MAX_TEXT)))
            except MalformedError as err:
                raise MalformedError(name, err.reason) from err
        if not owed:
            raise reader.fail("an empty owed list is written as no list")
    reader.end()
    return Ack(
        node_id, hostname, generation, reported_at, tuple(orders),
        None if owed is None else tuple(owed),
    )  # fmt: skip


def seal_ack(
    ack: Ack,
    *,
    cluster: str,
    secrets: Sequence[ClusterSecret],
    publishers: Sequence[PublicKey] = (),
    rng: Rng = os.urandom,
) -> bytes:
    """The ack object: with ``publishers``, the hostname label encrypted for them
    (``certfleet.bundle.acklabel``), then the sealed ack; without, the sealed ack alone."""
    sealed = seal(KIND, cluster, ack.node_id, encode_ack(ack), secrets, rng=rng)
    if not publishers:
        return sealed
    label = seal_label(
        ack.hostname, cluster=cluster, node_id=ack.node_id, publishers=publishers, rng=rng
    )
    return label + sealed


def ack_label(data: bytes, *, cluster: str, node_id: str, signing_key: SigningKey) -> str | None:
    """The hostname label of an ack object, opened with the sync's signing key, without
    opening the ack; None when there is none for that key or it is malformed.
    Unauthenticated: a hint to display escaped."""
    try:
        entries, _ = split_label(data, object_name(KIND, cluster, node_id))
    except MalformedError:
        return None
    return open_label(entries, cluster=cluster, node_id=node_id, signing_key=signing_key)


def open_ack(data: bytes, *, cluster: str, node_id: str, secrets: Sequence[ClusterSecret]) -> Ack:
    """The ack of an ack object (its hostname label, if any, is skipped)."""
    validate_node_id(node_id)
    name = object_name(KIND, cluster, node_id)
    _, sealed = split_label(data, name)
    ack = decode_ack(open_sealed(KIND, cluster, node_id, sealed, secrets), name)
    if ack.node_id != node_id:
        raise MalformedError(name, "holds another node's ack")
    return ack
