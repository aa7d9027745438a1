"""The agent's state in memory: what it accepted from each cluster, installed, and still owes.

No key material: order names, hashes, serials, version names, the shard entries of each
cluster's last accepted head, the on_update commands still owed, and the versions that
failed their check_command or probe and are not tried again before a time (``Backoff``).
``node_agent.statestore`` keeps an ``AgentState`` on disk, in the JSON form of
``node_agent.statecodec``.
"""

from __future__ import annotations

from collections.abc import ItemsView, Iterable, Iterator, KeysView, MutableMapping, ValuesView
from dataclasses import dataclass, field

from certfleet.bundle import ShardEntry, Tombstone, iso_utc


@dataclass
class ShardRecord:
    """A shard of the accepted head that was fetched and opened, by its stored hash."""

    hash: str
    entries: tuple[ShardEntry, ...] = ()
    tombstones: tuple[Tombstone, ...] = ()


def _hash(record: ShardRecord | None) -> str | None:
    return None if record is None else record.hash


@dataclass
class ClusterState:
    """What the agent accepted from one cluster.

    ``accepted_generation`` is the newest verified head whose shards were read (the rollback
    floor); ``applied_generation``/``applied_etag`` that of the last head whose every order
    was installed or deferred (its ETag is what the conditional GET sends). ``shards`` is
    replaced as a whole when a new head is read (``entries()`` is cached until then).
    ``ack_digest`` is the digest of the last ack this node wrote for the cluster
    (``node_agent.ack``): kept on disk, so a new process (``--once`` from cron) does not
    write the same ack again. ``proven`` is the digest of the secrets and publishers last
    proven against the store (``node_agent.secretproof.trust_digest``): ``--once`` proves
    them again only when the config changed them.
    """

    applied_etag: str | None = None
    applied_generation: int = 0
    accepted_generation: int = 0
    valid_until: int = 0
    shard_count: int = 0
    ack_digest: str | None = None
    proven: str | None = None
    shards: dict[int, ShardRecord] = field(default_factory=dict)
    _cache: tuple[object, dict[str, ShardEntry], dict[str, Tombstone]] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def _indexes(self) -> tuple[dict[str, ShardEntry], dict[str, Tombstone]]:
        cache = self._cache
        if cache is None or cache[0] is not self.shards:
            cache = self._cache = self._indexed(cache)
        return cache[1], cache[2]

    def _indexed(
        self, cache: tuple[object, dict[str, ShardEntry], dict[str, Tombstone]] | None
    ) -> tuple[object, dict[str, ShardEntry], dict[str, Tombstone]]:
        """The indexes of ``shards``: those of the shards before, patched in place, when few
        shards changed (a new head of one renewal changes one), else built anew."""
        shards = self.shards
        old = cache[0] if cache is not None else None
        if cache is not None and isinstance(old, dict):
            moved = [i for i in set(old).union(shards) if _hash(old.get(i)) != _hash(shards.get(i))]
            if len(moved) <= len(shards) // 4:
                entries, stones = cache[1], cache[2]
                for index in moved:
                    before = old.get(index)
                    if before is not None:
                        for entry in before.entries:
                            if entries.get(entry.order_name) == entry:
                                del entries[entry.order_name]
                        for stone in before.tombstones:
                            if stones.get(stone.order_name) == stone:
                                del stones[stone.order_name]
                for index in sorted(i for i in moved if i in shards):
                    entries.update((e.order_name, e) for e in shards[index].entries)
                    stones.update((t.order_name, t) for t in shards[index].tombstones)
                return shards, entries, stones
        entries = {e.order_name: e for record in shards.values() for e in record.entries}
        stones = {t.order_name: t for record in shards.values() for t in record.tombstones}
        return shards, entries, stones

    def entries(self) -> dict[str, ShardEntry]:
        """Every entry of the accepted head by order name (do not modify: it is cached, and
        patched in place when ``shards`` is replaced: do not keep it across a new head)."""
        return self._indexes()[0]

    def tombstones(self) -> dict[str, Tombstone]:
        return self._indexes()[1]

    def complete(self) -> bool:
        """True when every shard of the accepted head was read."""
        return self.shard_count > 0 and len(self.shards) == self.shard_count


@dataclass(frozen=True)
class InstalledOrder:
    """An order present in ``orders/``: its current version and the one before it.

    Frozen: a change is a new record stored in ``AgentState.orders``, which is how the state
    file knows what to write."""

    cluster: str
    safe_name: str
    bundle_hash: str
    serial: str
    key_type: str
    not_after: int
    version: str
    previous: InstalledOrder | None = None
    copies: dict[str, str] = field(default_factory=dict)
    copies_version: str | None = None
    removed_at: int | None = None
    installed_at: int = 0
    dns_names: list[str] = field(default_factory=list)


class OrderTable(MutableMapping[str, InstalledOrder]):
    """Installed orders by name; remembers the names set or deleted since the last save.

    ``changed`` is what the state file rewrites; ``revision`` counts every change (the
    metrics file's per-order lines are rendered again only when it moved)."""

    def __init__(self, orders: Iterable[tuple[str, InstalledOrder]] = ()) -> None:
        self._orders: dict[str, InstalledOrder] = dict(orders)
        self.changed: set[str] = set(self._orders)
        self.revision = 0

    def __getitem__(self, name: str) -> InstalledOrder:
        return self._orders[name]

    def __setitem__(self, name: str, order: InstalledOrder) -> None:
        self._orders[name] = order
        self.changed.add(name)
        self.revision += 1

    def __delitem__(self, name: str) -> None:
        del self._orders[name]
        self.changed.add(name)
        self.revision += 1

    def __iter__(self) -> Iterator[str]:
        return iter(self._orders)

    def __len__(self) -> int:
        return len(self._orders)

    def __contains__(self, name: object) -> bool:
        return name in self._orders

    def get(self, name: str, default: InstalledOrder | None = None) -> InstalledOrder | None:  # type: ignore[override]
        return self._orders.get(name, default)

    def keys(self) -> KeysView[str]:
        return self._orders.keys()

    def values(self) -> ValuesView[InstalledOrder]:
        return self._orders.values()

    def items(self) -> ItemsView[str, InstalledOrder]:
        return self._orders.items()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, OrderTable):
            return self._orders == other._orders
        return NotImplemented

    def __repr__(self) -> str:
        return f"OrderTable({len(self._orders)} orders)"


@dataclass
class OwedCommand:
    """An on_update command not yet run successfully, with the orders it is owed for."""

    command: str
    updated: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    generation: int = 0
    failures: int = 0
    last_error: str = ""


@dataclass(frozen=True)
class Backoff:
    """The version (bundle hash) of an order that failed its check_command or probe and was
    rolled back: not tried again before ``retry_at`` (Unix seconds). ``attempts`` counts
    the failed attempts in a row with this bundle; ``error`` is the last failure."""

    cluster: str
    bundle_hash: str
    attempts: int
    retry_at: int
    error: str

    def detail(self) -> str:
        """As a problem, an ack and ``--status`` say it: the failure, then when it is retried."""
        return f"{self.error}; retry at {iso_utc(self.retry_at)} (attempt {self.attempts} failed)"


@dataclass
class AgentState:
    clusters: dict[str, ClusterState] = field(default_factory=dict)
    orders: OrderTable = field(default_factory=OrderTable)
    owed: list[OwedCommand] = field(default_factory=list)
    backoff: dict[str, Backoff] = field(default_factory=dict)  # by order name

    def cluster(self, name: str) -> ClusterState:
        return self.clusters.setdefault(name, ClusterState())
