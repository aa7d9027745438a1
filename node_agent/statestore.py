"""Loading and saving the agent's state on disk: a small index and content-addressed files.

```
<state_dir>/state.json                     0600, the index, replaced atomically: each
                                           cluster's accepted head (ETags, generations, the
                                           hash of each shard read), the owed on_update
                                           commands, the backoffs of versions that failed
                                           their check_command or probe, the digest of
                                           the last ack written and of the secrets last
                                           proven per cluster, and the record file of
                                           each order bucket
<state_dir>/state.d/shards/<shard hash>    0600, the entries and tombstones of one shard, named
                                           by the hash of the stored shard (written once)
<state_dir>/state.d/orders/<digest>        0600, the installed orders of one bucket (order
                                           names spread over 1,024 buckets by BLAKE2b), named
                                           by the BLAKE2b digest of its content
<state_dir>/node-id                        this node's random id (made once)
```

A save writes only the record files that do not exist yet — the shards of a new head that
were fetched, the buckets of the orders that changed (``OrderTable.changed``) — fsyncs them,
then replaces the index, then removes the record files the old index named and the new one
does not. A crash at any instant leaves either the old index or the new one, and every file
it names complete (files are renamed into place after an fsync; the one a crash interrupts
is a temporary name, or an unreferenced record removed at the next save). One order changed
among 100,000 writes the index (~80 KB), one bucket (~40 KB) and one shard file.

No key material: order names, hashes, serials, version names, owed commands. Losing the
state is safe: the agent fetches everything again and reinstalls (a new version of each
order, the same content). Only rollback protection then falls back to ``min_generation``.
A schema 1 ``state.json`` (everything in one file) is still read; the next save replaces it.

The JSON form of each part is ``node_agent.statecodec``'s, the node id
``node_agent.identity``'s; the state's data types are ``node_agent.agentstate``'s.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from typing import Any

from certfleet.bundle import FormatError
from node_agent.agentstate import (
    AgentState,
    ClusterState,
    InstalledOrder,
    OrderTable,
    OwedCommand,
)
from node_agent.diskfile import FileMode, fsync_dir, temp_name, write_atomic, write_new
from node_agent.errors import StateError
from node_agent.statecodec import (
    OLD_SCHEMA,
    SCHEMA,
    backoff_json,
    backoffs,
    bucket_of,
    cluster_json,
    content_digest,
    dumps,
    from_schema_1,
    installed_order,
    order_json,
    shard_json,
    shard_record,
)

STATE_FILE = "state.json"
RECORDS_DIR = "state.d"
_STATE_MODE = FileMode(0o600)
_DIR_MODE = 0o700
_RECORD_NAME = re.compile(r"[0-9a-f]{32,128}")
_LOAD_TRIES = 3  # a save may remove records between reading the index and reading them

__all__ = ["RECORDS_DIR", "STATE_FILE", "StateStore"]


class StateStore:
    """Loads and saves one ``AgentState`` in a state directory, writing only what changed.

    The store remembers what the last ``load`` or ``save`` put on disk; saving another
    ``AgentState`` object than that one writes every bucket again."""

    def __init__(self, state_dir: str) -> None:
        self.state_dir = state_dir
        self.path = os.path.join(state_dir, STATE_FILE)
        self.records_dir = os.path.join(state_dir, RECORDS_DIR)
        self._shards_dir = os.path.join(self.records_dir, "shards")
        self._orders_dir = os.path.join(self.records_dir, "orders")
        self._tracked: AgentState | None = None
        self._buckets: dict[int, str] = {}  # bucket -> record file named in the index
        self._members: dict[int, set[str]] = {}  # bucket -> order names in it
        self._shard_files: set[str] = set()  # shard records named in the index
        self._swept = False

    # -- loading --------------------------------------------------------------------------

    def load(self) -> AgentState:
        """The saved state (an empty one if there is none); StateError if unreadable."""
        for attempt in range(_LOAD_TRIES):
            try:
                return self._load()
            except FileNotFoundError as err:  # a save replaced the index meanwhile
                if attempt == _LOAD_TRIES - 1:
                    raise StateError(self.path, f"a record it names is missing: {err}") from err
        raise AssertionError("unreachable")

    def _load(self) -> AgentState:
        try:
            with open(self.path, "rb") as f:
                raw = json.loads(f.read())
        except FileNotFoundError:
            state = AgentState()
            self._track(state, {}, {}, set())
            return state
        except (OSError, ValueError) as err:
            raise StateError(self.path, f"unreadable: {err}") from err
        if not isinstance(raw, dict) or raw.get("schema") not in (SCHEMA, OLD_SCHEMA):
            raise StateError(self.path, f"not a schema {SCHEMA} agent state file")
        try:
            if raw["schema"] == OLD_SCHEMA:
                state = from_schema_1(raw)
                self._track(None, {}, {}, set())  # the next save writes the new layout
                return state
            return self._from_index(raw)
        except FileNotFoundError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError, FormatError, OSError) as err:
            raise StateError(self.path, f"malformed: {err}") from err

    def _read_record(self, directory: str, name: Any) -> Any:
        if not isinstance(name, str) or not _RECORD_NAME.fullmatch(name):
            raise ValueError(f"{name!r} is not a record name")
        with open(os.path.join(directory, name), "rb") as f:
            data = f.read()
        if directory == self._orders_dir and content_digest(data) != name:
            raise ValueError(f"record {name} does not match its name")
        return json.loads(data)

    def _from_index(self, raw: dict[str, Any]) -> AgentState:
        state = AgentState()
        for name, cluster in raw["clusters"].items():
            shards = {}
            for index, digest in cluster["shards"].items():
                shards[int(index)] = shard_record(
                    digest, self._read_record(self._shards_dir, digest)
                )
            fields = {key: value for key, value in cluster.items() if key != "shards"}
            state.clusters[name] = ClusterState(**fields, shards=shards)
        buckets: dict[int, str] = {}
        members: dict[int, set[str]] = {}
        orders: list[tuple[str, InstalledOrder]] = []
        for bucket, record_name in raw["orders"].items():
            number = int(bucket)
            content = self._read_record(self._orders_dir, record_name)
            buckets[number] = record_name
            members[number] = set(content)
            if any(bucket_of(name) != number for name in content):
                raise ValueError(f"record {record_name} holds orders of another bucket")
            orders.extend((name, installed_order(order)) for name, order in content.items())
        state.orders = OrderTable(orders)
        state.owed = [OwedCommand(**owed) for owed in raw["owed"]]
        state.backoff = backoffs(raw)
        for name, digest in raw.get("acks", {}).items():  # absent in an older index
            if name in state.clusters and isinstance(digest, str):
                state.clusters[name].ack_digest = digest
        for name, digest in raw.get("proven", {}).items():  # likewise
            if name in state.clusters and isinstance(digest, str):
                state.clusters[name].proven = digest
        shard_files = {r.hash for c in state.clusters.values() for r in c.shards.values()}
        self._track(state, buckets, members, shard_files)
        return state

    def _track(
        self,
        state: AgentState | None,
        buckets: dict[int, str],
        members: dict[int, set[str]],
        shard_files: set[str],
    ) -> None:
        """Remember what is on disk for ``state`` (None: nothing in the new layout)."""
        if state is not None:
            state.orders.changed.clear()
        self._tracked, self._buckets, self._members = state, buckets, members
        self._shard_files = shard_files

    # -- saving ---------------------------------------------------------------------------

    def save(self, state: AgentState) -> None:
        """Write what changed since the last load or save; StateError if it cannot."""
        try:
            self._save(state)
        except OSError as err:
            raise StateError(self.path, f"cannot be written: {err}") from err

    def _save(self, state: AgentState) -> None:
        tracked = state is self._tracked
        if tracked:
            changed: dict[int, set[str]] = {}
            for name in state.orders.changed:
                changed.setdefault(bucket_of(name), set()).add(name)
            members = {b: set(self._members.get(b, ())) for b in changed}
            for bucket, names in changed.items():
                members[bucket].update(n for n in names if n in state.orders)
                members[bucket].difference_update(n for n in names if n not in state.orders)
            buckets = dict(self._buckets)
        else:
            members = {}
            for name in state.orders:
                members.setdefault(bucket_of(name), set()).add(name)
            buckets = {}
        records: list[tuple[str, bytes]] = []
        for bucket in sorted(members):
            names = members[bucket]
            if not names:
                buckets.pop(bucket, None)
                continue
            data = dumps({name: order_json(state.orders[name]) for name in sorted(names)})
            record_name = buckets[bucket] = content_digest(data)
            records.append((os.path.join(self._orders_dir, record_name), data))
        shards = {r.hash: r for c in state.clusters.values() for r in c.shards.values()}
        for digest, record in shards.items():
            if not _RECORD_NAME.fullmatch(digest):
                raise OSError(f"shard hash {digest!r} is not a record name")
            path = os.path.join(self._shards_dir, digest)
            if digest not in self._shard_files if tracked else not os.path.exists(path):
                records.append((path, shard_json(record)))
        os.makedirs(self.state_dir, mode=0o755, exist_ok=True)
        self._write_records(records)
        index = {
            "schema": SCHEMA,
            "clusters": {name: cluster_json(c) for name, c in state.clusters.items()},
            "orders": {str(bucket): name for bucket, name in sorted(buckets.items())},
            "owed": [vars(owed) for owed in state.owed],
        }
        if state.backoff:  # absent when empty, as in an index written before backoffs
            index["backoff"] = backoff_json(state.backoff)
        acks = {name: c.ack_digest for name, c in sorted(state.clusters.items()) if c.ack_digest}
        if acks:  # a key of its own: an older agent (a downgrade) ignores it
            index["acks"] = acks
        proven = {name: c.proven for name, c in sorted(state.clusters.items()) if c.proven}
        if proven:
            index["proven"] = proven
        write_atomic(self.path, dumps(index), _STATE_MODE)
        # The new index is in place: forget the old one and remove what only it named.
        old_orders, old_shards = set(self._buckets.values()), self._shard_files
        state.orders.changed.clear()
        if not tracked:
            self._members = {}
        for bucket, names in members.items():
            if names:
                self._members[bucket] = names
            else:
                self._members.pop(bucket, None)
        self._tracked, self._buckets, self._shard_files = state, buckets, set(shards)
        self._remove(self._orders_dir, old_orders - set(buckets.values()))
        self._remove(self._shards_dir, old_shards - self._shard_files)
        if not self._swept:
            self._swept = True
            self._sweep(set(buckets.values()), self._shard_files)

    def _write_records(self, records: Iterable[tuple[str, bytes]]) -> None:
        """Write each record under a temporary name, fsync, rename; then fsync the dirs."""
        touched: set[str] = set()
        for path, data in records:
            directory = os.path.dirname(path)
            if directory not in touched:
                os.makedirs(directory, mode=_DIR_MODE, exist_ok=True)
                touched.add(directory)
            temp = temp_name(directory)
            write_new(temp, data, _STATE_MODE)
            try:
                os.replace(temp, path)
            except BaseException:
                os.unlink(temp)
                raise
        for directory in sorted(touched):
            fsync_dir(directory)

    @staticmethod
    def _remove(directory: str, names: Iterable[str]) -> None:
        for name in names:
            try:
                os.unlink(os.path.join(directory, name))
            except FileNotFoundError:
                continue
            except OSError:
                continue  # an unreferenced record is removed at a later save

    def _sweep(self, orders: set[str], shards: set[str]) -> None:
        """Remove records no index names (left by a crash between writing and removing)."""
        for directory, keep in ((self._orders_dir, orders), (self._shards_dir, shards)):
            try:
                names = os.listdir(directory)
            except FileNotFoundError:
                continue
            self._remove(directory, [name for name in names if name not in keep])
