"""The agent's durable state: what it accepted from each cluster, what it installed, what is due.

Kept in ``<state_dir>/state.json`` (mode 0600, replaced atomically) and ``<state_dir>/node-id``
(made once). It holds no key material: order names, hashes, serials, version names,
the shard index of each cluster's last accepted head, and the on_update commands that are
still owed (so a failed or interrupted command is retried after a restart).

Losing the file is safe: the agent fetches everything again and reinstalls (a new version
of each order, the same content). Only rollback protection then falls back to
``min_generation``.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import asdict, dataclass, field
from typing import Any

from certfleet.bundle import FormatError, ShardEntry, Tombstone
from node_agent.diskfile import FileMode, fsync_dir, write_atomic, write_new
from node_agent.errors import StateError

STATE_FILE = "state.json"
NODE_ID_FILE = "node-id"
_SCHEMA = 1
_STATE_MODE = FileMode(0o600)


@dataclass
class ShardRecord:
    """A shard of the accepted head that was fetched and opened, by its stored hash."""

    hash: str
    entries: tuple[ShardEntry, ...] = ()
    tombstones: tuple[Tombstone, ...] = ()


@dataclass
class ClusterState:
    """What the agent accepted from one cluster.

    ``accepted_generation`` is the newest verified head whose shards were read (the rollback
    floor); ``applied_generation``/``applied_etag`` that of the last head whose every order
    was installed or deferred (its ETag is what the conditional GET sends).
    """

    applied_etag: str | None = None
    applied_generation: int = 0
    accepted_generation: int = 0
    valid_until: int = 0
    shard_count: int = 0
    shards: dict[int, ShardRecord] = field(default_factory=dict)

    def entries(self) -> dict[str, ShardEntry]:
        return {e.order_name: e for record in self.shards.values() for e in record.entries}

    def tombstones(self) -> dict[str, Tombstone]:
        return {t.order_name: t for record in self.shards.values() for t in record.tombstones}

    def complete(self) -> bool:
        """True when every shard of the accepted head was read."""
        return self.shard_count > 0 and len(self.shards) == self.shard_count


@dataclass
class InstalledOrder:
    """An order present in ``orders/``: its current version and the one before it."""

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


@dataclass
class OwedCommand:
    """An on_update command not yet run successfully, with the orders it is owed for."""

    command: str
    updated: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    generation: int = 0
    failures: int = 0
    last_error: str = ""


@dataclass
class AgentState:
    clusters: dict[str, ClusterState] = field(default_factory=dict)
    orders: dict[str, InstalledOrder] = field(default_factory=dict)
    owed: list[OwedCommand] = field(default_factory=list)

    def cluster(self, name: str) -> ClusterState:
        return self.clusters.setdefault(name, ClusterState())


def _entry(raw: dict[str, Any]) -> ShardEntry:
    return ShardEntry(
        raw["order_name"],
        bytes.fromhex(raw["bundle_hash"]),
        raw["serial"],
        int(raw["not_after"]),
        int(raw["install_after"]),
    )


def _entry_json(entry: ShardEntry) -> dict[str, Any]:
    return {
        "order_name": entry.order_name,
        "bundle_hash": entry.bundle_hash.hex(),
        "serial": entry.serial,
        "not_after": entry.not_after,
        "install_after": entry.install_after,
    }


def _order_json(order: InstalledOrder) -> dict[str, Any]:
    raw = dict(vars(order))  # flat but for ``previous`` (asdict is slow on large states)
    raw["copies"] = dict(order.copies)
    raw["dns_names"] = list(order.dns_names)
    raw["previous"] = _order_json(order.previous) if order.previous else None
    return raw


def _order(raw: dict[str, Any]) -> InstalledOrder:
    previous = raw.pop("previous", None)
    order = InstalledOrder(**raw)
    order.previous = _order(previous) if previous else None
    return order


def _from_json(raw: dict[str, Any]) -> AgentState:
    state = AgentState()
    for name, cluster in raw.get("clusters", {}).items():
        shards = {
            int(index): ShardRecord(
                record["hash"],
                tuple(_entry(e) for e in record["entries"]),
                tuple(
                    Tombstone(t["order_name"], int(t["removed_at"])) for t in record["tombstones"]
                ),
            )
            for index, record in cluster.pop("shards", {}).items()
        }
        state.clusters[name] = ClusterState(**cluster, shards=shards)
    state.orders = {name: _order(order) for name, order in raw.get("orders", {}).items()}
    state.owed = [OwedCommand(**owed) for owed in raw.get("owed", [])]
    return state


def _to_json(state: AgentState) -> dict[str, Any]:
    clusters = {}
    for name, cluster in state.clusters.items():
        raw = {key: value for key, value in vars(cluster).items() if key != "shards"}
        raw["shards"] = {
            str(index): {
                "hash": record.hash,
                "entries": [_entry_json(e) for e in record.entries],
                "tombstones": [
                    {"order_name": t.order_name, "removed_at": t.removed_at}
                    for t in record.tombstones
                ],
            }
            for index, record in cluster.shards.items()
        }
        clusters[name] = raw
    return {
        "schema": _SCHEMA,
        "clusters": clusters,
        "orders": {name: _order_json(order) for name, order in state.orders.items()},
        "owed": [asdict(owed) for owed in state.owed],
    }


class StateStore:
    """Loads and saves ``AgentState`` in a state directory."""

    def __init__(self, state_dir: str) -> None:
        self.state_dir = state_dir
        self.path = os.path.join(state_dir, STATE_FILE)

    def load(self) -> AgentState:
        try:
            with open(self.path, "rb") as f:
                raw = json.loads(f.read())
        except FileNotFoundError:
            return AgentState()
        except (OSError, ValueError) as err:
            raise StateError(self.path, f"unreadable: {err}") from err
        if not isinstance(raw, dict) or raw.get("schema") != _SCHEMA:
            raise StateError(self.path, f"not a schema {_SCHEMA} agent state file")
        try:
            return _from_json(raw)
        except (KeyError, TypeError, ValueError, AttributeError, FormatError) as err:
            raise StateError(self.path, f"malformed: {err}") from err

    def save(self, state: AgentState) -> None:
        data = json.dumps(_to_json(state), sort_keys=True, separators=(",", ":")).encode()
        try:
            os.makedirs(self.state_dir, mode=0o755, exist_ok=True)
            write_atomic(self.path, data, _STATE_MODE)
        except OSError as err:
            raise StateError(self.path, f"cannot be written: {err}") from err


def node_id(state_dir: str) -> str:
    """This node's random id, made once and kept in ``<state_dir>/node-id``."""
    path = os.path.join(state_dir, NODE_ID_FILE)
    try:
        with open(path, encoding="ascii") as f:
            existing = f.read().strip()
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as err:
        raise StateError(path, f"unreadable: {err}") from err
    else:
        if not existing:
            raise StateError(path, "is empty; remove it to make a new node id")
        return existing
    new_id = secrets.token_hex(16)
    try:
        os.makedirs(state_dir, mode=0o755, exist_ok=True)
        write_new(path, f"{new_id}\n".encode(), FileMode(0o644))
        fsync_dir(state_dir)
    except FileExistsError:
        return node_id(state_dir)
    except OSError as err:
        raise StateError(path, f"cannot be written: {err}") from err
    return new_id
