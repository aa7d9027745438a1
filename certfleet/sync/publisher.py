"""Publication for one cluster run: secret re-wrapping, shards, the head, and garbage.

Shards are rebuilt from the state on every run but written only when their plaintext
differs from what the state records as published (or the shard count or the secrets
changed, or the audit found the shard missing or corrupted); the head is written when a
shard changed, when there is none, when half of its validity is gone, when its secret ids
are not the configured ones, when it does not verify with the configured signing key
(publisher key rotation, or a damaged head), or when it is not the head the state last
wrote (repair). Objects that stopped being referenced are recorded with the time; they
are deleted once ``gc_grace`` has passed.

The next generation is above the state's and, when the stored head verifies with the
configured key, above that head's too; a head the sync cannot verify does not raise it (a
forged head must not push generations to their limit).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence, Set
from dataclasses import replace

from certfleet.bundle import (
    FormatError,
    Head,
    Shard,
    ShardEntry,
    Tombstone,
    content_hash_hex,
    encode_head,
    encode_shard,
    generation_too_far,
    next_generation,
    seal_bundle,
    seal_shard,
    shard_count,
    shard_index,
)
from certfleet.bundle.head import MAX_VALIDITY_SECONDS
from certfleet.errors import CertfleetError
from certfleet.store import PreconditionFailed
from certfleet.sync.audit import referenced_objects
from certfleet.sync.budget import Budget
from certfleet.sync.context import RunContext
from certfleet.sync.errors import ConcurrentWriteError, StateError
from certfleet.sync.headseen import HeadSeen
from certfleet.sync.layout import (
    bundle_key,
    head_key,
    shard_key,
)
from certfleet.sync.state import ClusterState, HeadRecord, OrderRecord, ShardRecord
from certfleet.sync.summary import RunTally
from certfleet.sync.writer import RunWriter

log = logging.getLogger(__name__)

TOMBSTONE_RETENTION = 90 * 86400


class Publisher:
    """Publication for one cluster run (``ctx``) at its time ``now``: from ``state`` to
    bundles, shards and the head, written through ``writer``, counted into ``tally``, within
    the ``budget``; ``damaged`` holds the object keys the audit found missing or corrupted."""

    def __init__(
        self,
        ctx: RunContext,
        writer: RunWriter,
        state: ClusterState,
        now: int,
        *,
        budget: Budget,
        tally: RunTally,
        damaged: Set[str] = frozenset(),
    ) -> None:
        self.ctx = ctx
        self.writer = writer
        self.state = state
        self.now = now
        self.budget = budget
        self.tally = tally
        self.damaged = damaged
        self.cluster = ctx.cluster
        self.secret_ids = tuple(secret.id for secret in ctx.secrets)
        self.published = False

    # -- secret rotation ----------------------------------------------------------------

    def rewrap_bundles(self) -> None:
        """Re-seal bundles sealed for other secrets than configured (pending keys are sealed
        with the sync's own secret: a cluster secret rotation does not touch them)."""
        state = self.state
        wanted = sorted(self.secret_ids)
        for name, record in sorted(state.orders.items()):
            if sorted(record.secret_ids) == wanted:
                continue
            if self.budget.out_of_time():
                return
            try:
                self._rewrap_bundle(name, record)
            except FormatError as err:
                log.warning("cluster %s: cannot re-wrap %s, rekeying it", self.cluster, name)
                self.tally.error(name, err)
                state.rekey.add(name)
            except CertfleetError as err:
                self.tally.error(name, err)

    def _rewrap_bundle(self, name: str, record: OrderRecord) -> None:
        """Re-seal one order's bundle for the configured secrets."""
        writer = self.writer
        sealed = seal_bundle(
            writer.open_bundle(name, record), cluster=self.cluster, secrets=self.ctx.secrets
        )
        digest = content_hash_hex(sealed)
        writer.put_content(bundle_key(self.cluster, digest), sealed)
        writer.retire(bundle_key(self.cluster, record.bundle))
        self.state.orders[name] = replace(record, bundle=digest, secret_ids=self.secret_ids)
        writer.step("rewrapped")

    # -- shards and head ----------------------------------------------------------------

    def _shards(self) -> list[Shard]:
        state = self.state
        for name, removed_at in list(state.tombstones.items()):
            if name in state.orders or self.now - removed_at > TOMBSTONE_RETENTION:
                del state.tombstones[name]
        count = shard_count(len(state.orders) + len(state.tombstones))
        entries: list[list[ShardEntry]] = [[] for _ in range(count)]
        stones: list[list[Tombstone]] = [[] for _ in range(count)]
        for name, rec in state.orders.items():
            entry = ShardEntry(
                name, bytes.fromhex(rec.bundle), rec.serial, rec.not_after, rec.install_after
            )
            entries[shard_index(state.shard_key, name, count)].append(entry)
        for name, removed_at in state.tombstones.items():
            stones[shard_index(state.shard_key, name, count)].append(Tombstone(name, removed_at))
        return [Shard(tuple(e), tuple(t)) for e, t in zip(entries, stones)]

    def publish(self, seen: HeadSeen) -> None:
        """Write the shards that changed and, when needed, the head; record in the state
        what it now references and what stopped being referenced (the writer's retired
        objects and replaced shards)."""
        state, writer = self.state, self.writer
        shards = self._shards()
        same_layout = len(state.shards) == len(shards) and state.shard_secret_ids == self.secret_ids
        records: list[ShardRecord] = []
        changed = False
        for index, shard in enumerate(shards):
            digest = hashlib.sha256(encode_shard(shard)).hexdigest()
            if (
                same_layout
                and state.shards[index].digest == digest
                and shard_key(self.cluster, state.shards[index].object) not in self.damaged
            ):
                records.append(state.shards[index])
                continue
            sealed = seal_shard(shard, cluster=self.cluster, index=index, secrets=self.ctx.secrets)
            obj = content_hash_hex(sealed)
            writer.put_content(shard_key(self.cluster, obj), sealed)
            records.append(ShardRecord(digest, obj))
            changed = True
            writer.step("shard")
        hashes = tuple(bytes.fromhex(record.object) for record in records)
        head = seen.head
        recorded = state.head
        stale = (
            head is None
            or recorded is None
            or head.generation != recorded.generation
            or head.shard_hashes != hashes
            or head.secret_ids != self.secret_ids
            or not seen.signed
            or self.now >= (head.issued_at + head.valid_until) // 2
        )
        retired = writer.take_retired()
        if changed or stale:
            self._write_head(seen, hashes)
            retired.extend(
                shard_key(self.cluster, old.object)
                for old in state.shards
                if old.object not in {record.object for record in records}
            )
        elif recorded is not None:
            self.tally.generations[self.cluster] = recorded.generation
        state.shards = records
        state.shard_secret_ids = self.secret_ids
        for key in retired:
            state.unreferenced.setdefault(key, self.now)
        if changed or stale:
            writer.step("head")  # once the state records all the head references

    def _write_head(self, seen: HeadSeen, hashes: tuple[bytes, ...]) -> None:
        state, settings = self.state, self.ctx.settings
        previous = max(
            seen.head.generation if seen.head and seen.signed else 0,
            state.head.generation if state.head else 0,
        )
        validity = min(int(settings.head_validity), MAX_VALIDITY_SECONDS)
        now_ms = int(self.ctx.clock() * 1000)
        generation = next_generation(previous, now_ms)
        if generation_too_far(generation, now_ms):
            raise StateError(self.cluster, f"generation {previous} is more than a day ahead")
        head = Head(
            self.cluster,
            generation,
            self.now,
            self.now + validity,
            self.secret_ids,
            hashes,
        )
        data = encode_head(head, settings.signing_key)
        store = self.writer.store
        try:
            if seen.etag is None:
                store.put_if_absent(head_key(self.cluster), data)
            else:
                store.put_if_match(head_key(self.cluster), data, seen.etag)
        except PreconditionFailed as err:
            raise ConcurrentWriteError(self.cluster, "head was changed by another writer") from err
        state.head = HeadRecord(head.generation, head.issued_at, head.valid_until, head.secret_ids)
        self.tally.generations[self.cluster] = head.generation
        self.tally.count(heads_published=1)
        self.published = True

    # -- garbage ------------------------------------------------------------------------

    def collect_garbage(self, seen: HeadSeen, stored: Set[str] | None) -> None:
        """Delete objects unreferenced for ``gc_grace``; with ``stored`` (the audit's
        listing of the cluster's objects, made at the start of the run), first record the
        orphans among them."""
        state, writer = self.state, self.writer
        grace = self.ctx.settings.gc_grace
        consistent = self.published or (
            seen.head is not None
            and state.head is not None
            and seen.head.generation == state.head.generation
        )
        if consistent and stored is not None:
            self._sweep(stored)
        for key, since in sorted(state.unreferenced.items()):
            if self.now - since < grace:
                continue
            if self.budget.out_of_time():
                return
            writer.store.delete(key)
            del state.unreferenced[key]
            self.tally.count(objects_deleted=1)
            writer.step("deleted")

    def _sweep(self, stored: Set[str]) -> None:
        """Record listed objects no state entry references (left by a crashed run, or
        replaced by a repair) as unreferenced."""
        state = self.state
        referenced = referenced_objects(self.cluster, state)
        for key in sorted(key for key in stored if key not in referenced):
            state.unreferenced.setdefault(key, self.now)
        state.last_sweep = self.now


__all__: Sequence[str] = ("Publisher",)
