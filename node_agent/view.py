"""Bringing a cluster's view (its accepted head and opened shards) up to date: one poll's read.

One conditional GET of the head. Unchanged (304): nothing else is fetched, but a cached head
past its ``valid_until`` is reported. New: it is verified against the pinned publishers, the
cluster, the rollback floor (the newest accepted generation, or ``min_generation``) and its
expiry; then only the shards whose hashes differ from the cached ones are fetched, checked
and opened. A shard that fails is left out of the view (its orders keep what is installed)
and the view is then incomplete, so nothing is removed on its account.

``changed_names`` says which order names a new head may have changed (those of the shards
whose hash moved), so that a poll after a clean one looks only at those.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from certfleet.bundle import ExpiredHeadError, FormatError, iso_utc
from certfleet.store import ObjectTooLarge, StoreError
from node_agent.agentstate import ClusterState, ShardRecord
from node_agent.errors import RefusedError
from node_agent.result import FAILED, REFUSED
from node_agent.source import ClusterSource, head_key
from node_agent.tally import PollTally

log = logging.getLogger(__name__)


def refresh_view(
    source: ClusterSource,
    state: ClusterState,
    *,
    now: int,
    min_generation: int,
    tally: PollTally,
) -> tuple[str, int] | None:
    """Update ``state`` from the store; return (etag, generation) of a newly read head."""
    cluster = source.cluster
    subject = f"head of cluster {cluster}"
    try:
        stored = source.fetch_head_if_changed(state.applied_etag)
    except ObjectTooLarge as err:  # the store answered, with something no head can be
        tally.heads[cluster] = "refused"
        tally.problem(REFUSED, subject, f"{subject}: {err}", cluster)
        return None
    except StoreError as err:
        tally.heads[cluster] = "unreachable"
        tally.problem(FAILED, subject, f"{subject}: {err}", cluster)
        return None
    if stored is None:
        tally.heads[cluster] = "unchanged"
        if state.valid_until and now > state.valid_until:
            _expired(tally, subject, cluster, state.valid_until, now)
        return None
    try:
        head = source.verify_head(
            stored.data, now=now, min_generation=max(min_generation, state.accepted_generation)
        )
    except ExpiredHeadError as err:
        tally.heads[cluster] = "refused"
        _expired(tally, err.object_name, cluster, err.valid_until, now)
        return None
    except FormatError as err:
        tally.heads[cluster] = "refused"
        tally.problem(REFUSED, err.object_name, str(err), cluster)
        return None
    tally.heads[cluster] = "new"
    count = len(head.shard_hashes)
    cached = state.shards if state.shard_count == count else {}
    shards: dict[int, ShardRecord] = {}
    for index, digest in enumerate(head.shard_hashes):
        record = cached.get(index)
        if record is not None and record.hash == digest.hex():
            shards[index] = record
            continue
        try:
            shard = source.fetch_shard(index, digest)
        except RefusedError as err:
            tally.problem(REFUSED, err.object_name, str(err), cluster)
            continue
        except StoreError as err:
            name = f"shard {index} of cluster {cluster}"
            tally.problem(FAILED, name, f"{name}: {err}", cluster)
            continue
        shards[index] = ShardRecord(digest.hex(), shard.entries, shard.tombstones)
    state.shards = shards
    state.shard_count = count
    state.accepted_generation = head.generation
    state.valid_until = head.valid_until
    log.debug("cluster %s: head generation %d read", cluster, head.generation)
    return stored.etag, head.generation


def changed_names(
    before: Mapping[int, ShardRecord], before_count: int, state: ClusterState
) -> set[str] | None:
    """The order names a newly read head may have changed: every name (entry or
    tombstone) of each shard whose hash differs from ``before``'s, old and new. None when
    the shard count changed or a shard of the new head is unread: then any may have."""
    if state.shard_count != before_count or not state.complete():
        return None
    names: set[str] = set()
    for index, record in state.shards.items():
        old = before.get(index)
        if old is not None and old.hash == record.hash:
            continue
        for shard in (old, record):
            if shard is not None:
                names.update(entry.order_name for entry in shard.entries)
                names.update(stone.order_name for stone in shard.tombstones)
    return names


def _expired(tally: PollTally, subject: str, cluster: str, valid_until: int, now: int) -> None:
    tally.expired_heads.append(cluster)
    tally.problem(
        REFUSED,
        subject,
        f"{subject}: EXPIRED {now - valid_until} s ago (valid until {iso_utc(valid_until)}); "
        "the sync may be down or the store frozen; keeping the installed files",
        cluster,
    )


__all__ = ["changed_names", "head_key", "refresh_view"]
