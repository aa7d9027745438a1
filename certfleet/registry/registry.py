"""``OrderRegistry``: the orders of ACME-mode clusters, one sealed object per cluster.

Each cluster's object is read whole (at most :data:`MAX_REGISTRY_BYTES`), changed in
memory and written back with ``put_if_absent`` (no object yet) or ``put_if_match`` (the
ETag read); a write that loses a race re-reads and re-applies the change, at most
:data:`MAX_ATTEMPTS` times. So of two concurrent creates of one name in one cluster one
wins and the other gets :class:`OrderExists`. Order names are one namespace across the
clusters: a create first looks for the name in the other clusters' objects (a race
between creates of one name in two different clusters within that instant is not
excluded; the agent refuses a name that two of its clusters share).

Everything read is checked again (names, approvals, fields): the store is untrusted, and
an object that does not open under the registry secret, or that does not parse, is a
:class:`RegistryError`, never an empty registry.

Each object carries a ``revision``, raised by one on every write (an object written before
revisions existed counts as revision 1, and gets 2 at its next write; no object is
revision 0), and a ``history``: the random ids of its last :data:`MAX_HISTORY` writes,
oldest first. A writer to the store cannot forge an object, but it can delete one or put
back an older sealed copy: the sync therefore holds (``hold``) each cluster at the revision
it acted on last and that write's id, and a read of a held cluster that finds an older
revision, no object, or one that does not descend from that write (an old copy written
over since, or one made anew after a delete, whatever its revision: ``descends``) raises
:class:`RegistryRolledBack` instead of answering with fewer orders. ``restore`` writes a
lost registry again, as the write after the one held.
"""

from __future__ import annotations

import builtins
import json
import random
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from certfleet.bundle import ClusterSecret, FormatError
from certfleet.bundle.errors import UnsafeNameError
from certfleet.bundle.names import validate_cluster_name, validate_dns_name, validate_order_name
from certfleet.orders import MAX_IDENTIFIERS, Identifier, OrderRequestError, check_approval
from certfleet.registry.errors import (
    OrderExists,
    RegistryContended,
    RegistryError,
    RegistryNotFound,
    RegistryRolledBack,
    UnknownCluster,
)
from certfleet.sealedobject import CURRENT, SealedObject, SealingKeys
from certfleet.store import ObjectTooLarge, PreconditionFailed, Store

KIND = "registry"
IDENTITY = "/orders"
VERSION = 1
MAX_REGISTRY_BYTES = 32 * 1024 * 1024
MAX_ATTEMPTS = 10
MAX_HISTORY = 256  # write ids kept: about 5 KB
_HEX_DIGITS = frozenset("0123456789abcdef")

_T = TypeVar("_T")


def registry_key(cluster: str) -> str:
    """The store key of ``cluster``'s registry object: ``v1/sync/orders/<cluster>``."""
    return f"v1/sync/orders/{validate_cluster_name(cluster)}"


@dataclass(frozen=True)
class RegistryOrder:
    """One order: its name, cluster, identifiers (in order) and times (Unix seconds)."""

    name: str
    cluster: str
    identifiers: tuple[Identifier, ...]
    created_at: int
    updated_at: int

    @property
    def dns_names(self) -> tuple[str, ...]:
        return tuple(ident.value for ident in self.identifiers)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "cluster": self.cluster,
            "identifiers": [{"value": i.value, "approval": i.approval} for i in self.identifiers],
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


@dataclass(frozen=True)
class RegistryRead:
    """A cluster's registry as read: its orders (sorted by name), revision (0: no object)
    and the ids of its last writes, oldest first (none: no object, or one written before
    write ids)."""

    orders: tuple[RegistryOrder, ...]
    revision: int
    history: tuple[str, ...] = ()

    @property
    def write_id(self) -> str:
        """The id of the write that made this revision ("" when unknown)."""
        return self.history[-1] if self.history else ""


def descends(found: RegistryRead, revision: int, write_id: str) -> bool:
    """True when ``found`` is the registry at ``revision`` made by ``write_id``, or a later
    one written over it; an unknown ``write_id`` (""), or one further back than the history
    kept, is taken on trust."""
    if found.revision < revision:
        return False
    back = found.revision - revision
    if not write_id or back >= len(found.history):
        return True
    return found.history[-1 - back] == write_id


class OrderRegistry:
    """The registry objects of ``clusters`` in ``store``, sealed with ``secret``.

    ``previous`` (the registry secrets of a ``previous_signing_key``, during a rotation)
    also open objects; every write seals with ``secret`` alone.
    """

    def __init__(
        self,
        store: Store,
        secret: ClusterSecret,
        clusters: Sequence[str],
        *,
        previous: Sequence[ClusterSecret] = (),
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._store = store
        self._keys = SealingKeys(secret, tuple(previous))
        self._clusters = tuple(validate_cluster_name(c) for c in clusters)
        self._clock = clock
        self._sleep = sleep
        self._held: dict[str, tuple[int, str]] = {}  # revision, write id

    def __repr__(self) -> str:
        return f"OrderRegistry(store={self._store.url!r}, clusters={self._clusters!r})"

    @property
    def clusters(self) -> tuple[str, ...]:
        return self._clusters

    def list(self, cluster: str) -> tuple[RegistryOrder, ...]:
        """``cluster``'s orders, sorted by name (none when it has no registry object yet)."""
        return self._read(self._known(cluster)).orders

    def read(self, cluster: str) -> RegistryRead:
        """``cluster``'s orders and revision (0 and no orders when it has no object)."""
        return self._read(self._known(cluster))

    def hold(self, cluster: str, revision: int, write_id: str = "") -> None:
        """From now on, refuse (:class:`RegistryRolledBack`) a read of ``cluster``'s registry
        that does not descend from the write ``write_id`` at ``revision`` or from the last
        one read since (``descends``), or that is missing once a revision above 0 is held:
        what the sync acted on cannot silently go back."""
        cluster = self._known(cluster)
        self._held[cluster] = (revision, write_id)

    def revision(self, cluster: str) -> tuple[int, str]:
        """The revision and write id of ``cluster``'s registry held, or last read since
        ``hold`` ((0, "") when it is not held)."""
        return self._held.get(cluster, (0, ""))

    def get(self, name: str) -> RegistryOrder:
        """The order called ``name``, whichever cluster holds it; :class:`RegistryNotFound`."""
        for cluster in self._clusters:
            for order in self._read(cluster).orders:
                if order.name == name:
                    return order
        raise RegistryNotFound(name)

    def create(
        self, cluster: str, identifiers: Sequence[Identifier], name: str | None = None
    ) -> RegistryOrder:
        """A new order (name: the first DNS name unless given); :class:`OrderExists`.

        Names and approvals are checked as the order API checks them: a name that breaks
        the rules raises ``certfleet.bundle.UnsafeNameError``, a wildcard with ``http``
        approval ``certfleet.orders.OrderRequestError``, an empty or over-long list or a
        repeated name ``ValueError``; nothing is written then.
        """
        cluster = self._known(cluster)
        checked = _identifiers(identifiers)
        order_name = validate_order_name(checked[0].value if name is None else name)
        for other in self._clusters:
            if other != cluster and any(o.name == order_name for o in self._read(other).orders):
                raise OrderExists(order_name)
        now = int(self._clock())
        order = RegistryOrder(order_name, cluster, checked, now, now)

        def add(orders: list[RegistryOrder]) -> tuple[list[RegistryOrder] | None, RegistryOrder]:
            if any(o.name == order_name for o in orders):
                raise OrderExists(order_name)
            return sorted([*orders, order], key=lambda o: o.name), order

        return self._update(cluster, add)

    def set_identifiers(self, name: str, identifiers: Sequence[Identifier]) -> RegistryOrder:
        """Replace the order's identifiers (the full new set); unchanged → no write."""
        checked = _identifiers(identifiers)
        cluster = self.get(name).cluster

        def change(orders: list[RegistryOrder]) -> tuple[list[RegistryOrder] | None, RegistryOrder]:
            current = _find(orders, name)
            if current.identifiers == checked:
                return None, current
            updated = RegistryOrder(name, cluster, checked, current.created_at, int(self._clock()))
            return [updated if o.name == name else o for o in orders], updated

        return self._update(cluster, change)

    def delete(self, name: str) -> None:
        """Remove the order; :class:`RegistryNotFound` if there is none of that name."""
        cluster = self.get(name).cluster

        def remove(orders: list[RegistryOrder]) -> tuple[list[RegistryOrder] | None, None]:
            _find(orders, name)
            return [o for o in orders if o.name != name], None

        self._update(cluster, remove)

    def reseal(self, cluster: str) -> int:
        """Rewrite ``cluster``'s registry sealed with ``secret`` if it opens only with a
        ``previous`` one (after a signing key rotation); the number of orders it holds.

        An object that opens with ``secret`` is left as it is; none at all is 0.
        """
        sealed = self._object(self._known(cluster))
        for _ in range(MAX_ATTEMPTS):
            found = self._read(cluster, sealed)
            if sealed.sealing == CURRENT:  # also when there is none
                return len(found.orders)
            try:
                sealed.save(_encode(found.orders, found.revision + 1, _next(found.history)))
            except PreconditionFailed:
                continue
            return len(found.orders)
        raise RegistryContended(cluster, MAX_ATTEMPTS)

    def restore(
        self, cluster: str, orders: Sequence[RegistryOrder], *, after: int, write_id: str
    ) -> RegistryRead:
        """Write ``orders`` as ``cluster``'s registry, whatever it holds now (nothing, an
        older copy, one made anew), as the write after ``write_id`` at revision ``after``
        (what the sync acted on last; 0 and "": nothing known); conditional on what was
        read (:class:`RegistryContended`)."""
        cluster = self._known(cluster)
        checked = sorted(
            (
                RegistryOrder(
                    validate_order_name(o.name),
                    cluster,
                    _identifiers(o.identifiers),
                    o.created_at,
                    o.updated_at,
                )
                for o in orders
            ),
            key=lambda o: o.name,
        )
        names = [o.name for o in checked]
        if len(set(names)) != len(names):
            raise ValueError("an order name appears twice")
        sealed = self._object(cluster)
        for _ in range(MAX_ATTEMPTS):
            try:
                self._load(cluster, sealed)  # its ETag: the write below is conditional on it
                readable = True
            except RegistryError:
                readable = False  # forged, foreign or garbage: replaced all the same
            history = _next((write_id,) if write_id else ())
            plain = _encode(checked, after + 1, history)
            try:
                if not readable:
                    sealed.overwrite(plain)  # no writer could have read and changed it
                else:
                    sealed.save(plain)
            except PreconditionFailed:
                continue
            return RegistryRead(tuple(checked), after + 1, history)
        raise RegistryContended(cluster, MAX_ATTEMPTS)

    # -- inside -------------------------------------------------------------------------

    def _known(self, cluster: str) -> str:
        if cluster not in self._clusters:
            raise UnknownCluster(cluster, self._clusters)
        return cluster

    def _update(
        self,
        cluster: str,
        change: Callable[
            [builtins.list[RegistryOrder]], tuple[builtins.list[RegistryOrder] | None, _T]
        ],
    ) -> _T:
        """Read, apply ``change`` (None: nothing to write), write conditionally; retry."""
        sealed = self._object(cluster)
        for attempt in range(MAX_ATTEMPTS):
            found = self._read(cluster, sealed)
            new, result = change(list(found.orders))
            if new is None:
                return result
            try:
                sealed.save(_encode(new, found.revision + 1, _next(found.history)))
            except PreconditionFailed:
                self._sleep(random.uniform(0, 0.02 * (attempt + 1)))  # noqa: S311 - jitter
                continue
            return result
        raise RegistryContended(cluster, MAX_ATTEMPTS)

    def _object(self, cluster: str) -> SealedObject:
        return SealedObject(
            self._store,
            registry_key(cluster),
            self._keys,
            kind=KIND,
            cluster=cluster,
            identity=IDENTITY,
            max_bytes=MAX_REGISTRY_BYTES,
        )

    def _read(self, cluster: str, sealed: SealedObject | None = None) -> RegistryRead:
        """``_load``, checked against the revision held for ``cluster`` (if it is held)."""
        found = self._load(cluster, self._object(cluster) if sealed is None else sealed)
        held = self._held.get(cluster)
        if held is None:
            return found
        revision, write_id = held
        if not descends(found, revision, write_id):
            forked = found.revision >= revision
            raise RegistryRolledBack(
                cluster, registry_key(cluster), found.revision, revision, forked=forked
            )
        self._held[cluster] = (found.revision, found.write_id or write_id)
        return found

    def _load(self, cluster: str, sealed: SealedObject) -> RegistryRead:
        """The orders and revision of ``cluster`` (none, 0 without an object)."""
        where = f"the order registry of cluster {cluster!r} ({sealed.key} in {self._store.url})"

        def decode(plain: bytes) -> RegistryRead:
            try:
                return _decode(plain, cluster)
            except (ValueError, KeyError, TypeError, UnsafeNameError, OrderRequestError) as err:
                raise RegistryError(f"{where} is malformed: {_short(err)}") from err

        try:
            found = sealed.load(decode, accept_old=True)
        except ObjectTooLarge as err:
            raise RegistryError(f"{where} is larger than {MAX_REGISTRY_BYTES} bytes") from err
        except FormatError as err:
            raise RegistryError(f"{where} cannot be opened: {err}") from err
        return RegistryRead((), 0) if found is None else found


def _find(orders: Sequence[RegistryOrder], name: str) -> RegistryOrder:
    for order in orders:
        if order.name == name:
            return order
    raise RegistryNotFound(name)


def _identifiers(identifiers: Sequence[Identifier]) -> tuple[Identifier, ...]:
    """Checked identifiers: 1 to the cap, valid lowercase names, allowed approvals, unique."""
    if not identifiers:
        raise ValueError("an order needs at least one DNS name")
    if len(identifiers) > MAX_IDENTIFIERS:
        raise ValueError(f"an order has at most {MAX_IDENTIFIERS} DNS names")
    found: list[Identifier] = []
    for ident in identifiers:
        value = validate_dns_name(ident.value)
        approval = check_approval(value, ident.approval)
        if any(f.value == value for f in found):
            raise ValueError(f"DNS name {value!r} is listed twice")
        found.append(Identifier(value, approval))
    return tuple(found)


def _next(history: tuple[str, ...]) -> tuple[str, ...]:
    """``history`` with the id of a new write (16 random hex digits), the last ones kept."""
    return (*history, secrets.token_hex(8))[-MAX_HISTORY:]


def _encode(orders: Sequence[RegistryOrder], revision: int, history: tuple[str, ...]) -> bytes:
    document = {
        "version": VERSION,
        "revision": revision,
        "history": list(history),
        "orders": [o.to_json() for o in orders],
    }
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def _decode(plain: bytes, cluster: str) -> RegistryRead:
    document = json.loads(plain)
    if not isinstance(document, dict) or document.get("version") != VERSION:
        raise ValueError(f"not a version {VERSION} registry")
    revision = document.get("revision", 1)  # written before revisions: the first
    if not isinstance(revision, int) or isinstance(revision, bool) or revision < 1:
        raise TypeError("revision is not a positive integer")
    history = document.get("history", [])
    if not isinstance(history, list) or len(history) > MAX_HISTORY:
        raise TypeError(f"history is not a list of at most {MAX_HISTORY} write ids")
    for write_id in history:
        if not isinstance(write_id, str) or not 0 < len(write_id) <= 64:
            raise TypeError("a write id is not a short hex string")
        if set(write_id) - _HEX_DIGITS:
            raise TypeError("a write id is not a short hex string")
    raw_orders = document["orders"]
    if not isinstance(raw_orders, list):
        raise TypeError("orders is not a list")
    orders: list[RegistryOrder] = []
    for raw in raw_orders:
        if not isinstance(raw, dict) or raw.get("cluster") != cluster:
            raise ValueError("an order is not an object of this cluster")
        idents = raw["identifiers"]
        if not isinstance(idents, list):
            raise TypeError("identifiers is not a list")
        created, updated = raw["created_at"], raw["updated_at"]
        if not all(isinstance(t, int) and not isinstance(t, bool) for t in (created, updated)):
            raise TypeError("created_at / updated_at are not integers")
        orders.append(
            RegistryOrder(
                name=validate_order_name(raw["name"]),
                cluster=cluster,
                identifiers=_identifiers(
                    [Identifier(str(i["value"]), str(i["approval"])) for i in idents]
                ),
                created_at=created,
                updated_at=updated,
            )
        )
    names = [o.name for o in orders]
    if len(set(names)) != len(names):
        raise ValueError("an order name appears twice")
    return RegistryRead(tuple(sorted(orders, key=lambda o: o.name)), revision, tuple(history))


def _short(err: Exception) -> str:
    text = err.message if isinstance(err, OrderRequestError) else str(err)
    return text[:200]
