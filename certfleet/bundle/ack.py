"""Acks: a node's encrypted report of what it installed, at ``acks/<node-id>``.

The identity bound into the associated data is the node id, so one node's ack cannot be
passed off as another's. Times are Unix seconds.

An ack object is a clear *label* (magic ``CFAL``, version, the node's hostname) followed by
the sealed ack, so a reader that cannot open the ack (a wrong or retired secret, a damaged
object) can still say which host wrote it. The label is not authenticated by itself (whoever
can write ``acks/`` can change it); when the ack opens, the label must equal the hostname
sealed inside, else the ack is refused. Objects written before the label existed are the
sealed ack alone (they start with the envelope's ``CFSE``) and are still read.
docs/format.md "Ack" is the byte-level description.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

from certfleet.bundle.codec import Reader, Writer
from certfleet.bundle.envelope import Rng, object_name, open_sealed, seal
from certfleet.bundle.errors import MalformedError
from certfleet.bundle.keys import ClusterSecret
from certfleet.bundle.names import validate_order_name
from certfleet.bundle.shard import check_time, validate_serial

KIND = "ack"
LABEL_MAGIC = b"CFAL"
LABEL_VERSION = 1
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
class Ack:
    """A node's report: the generation it applied and the state of each order."""

    node_id: str
    hostname: str
    generation: int
    reported_at: int
    orders: tuple[AckOrder, ...] = ()

    def __post_init__(self) -> None:
        validate_node_id(self.node_id)
        where = f"ack of node {self.node_id}"
        _check_text(self.hostname, "hostname", where)
        check_time(self.generation, "generation", where)
        check_time(self.reported_at, "reported_at", where)
        object.__setattr__(self, "orders", tuple(self.orders))


def encode_ack(ack: Ack) -> bytes:
    writer = Writer().text(ack.node_id).text(ack.hostname).u64(ack.generation)
    writer.u64(ack.reported_at).u32(len(ack.orders))
    for order in ack.orders:
        writer.text(order.order_name).text(order.state).text(order.serial).text(order.detail)
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
    reader.end()
    return Ack(node_id, hostname, generation, reported_at, tuple(orders))


def seal_ack(
    ack: Ack, *, cluster: str, secrets: Sequence[ClusterSecret], rng: Rng = os.urandom
) -> bytes:
    """The ack object: the clear hostname label, then the sealed ack."""
    label = Writer().raw(LABEL_MAGIC).u8(LABEL_VERSION).text(ack.hostname).getvalue()
    return label + seal(KIND, cluster, ack.node_id, encode_ack(ack), secrets, rng=rng)


def split_ack(data: bytes, name: str = "ack") -> tuple[str | None, bytes]:
    """(the clear hostname label, or None for an object written without one; the sealed
    ack). The label is unauthenticated: display it escaped, and only as a hint."""
    if not data.startswith(LABEL_MAGIC):
        return None, data
    reader = Reader(data, name)
    reader.raw(len(LABEL_MAGIC))
    if reader.u8() != LABEL_VERSION:
        raise MalformedError(name, f"unknown ack label version (this reader: {LABEL_VERSION})")
    hostname = reader.text(MAX_TEXT)
    return hostname, data[reader.position :]


def ack_label(data: bytes) -> str | None:
    """The clear hostname of an ack object without opening it; None when there is none or
    it is malformed. Unauthenticated."""
    try:
        return split_ack(data)[0]
    except MalformedError:
        return None


def open_ack(data: bytes, *, cluster: str, node_id: str, secrets: Sequence[ClusterSecret]) -> Ack:
    validate_node_id(node_id)
    name = object_name(KIND, cluster, node_id)
    label, sealed = split_ack(data, name)
    ack = decode_ack(open_sealed(KIND, cluster, node_id, sealed, secrets), name)
    if ack.node_id != node_id:
        raise MalformedError(name, "holds another node's ack")
    if label is not None and label != ack.hostname:
        raise MalformedError(name, "its clear hostname label differs from the sealed hostname")
    return ack
