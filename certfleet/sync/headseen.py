"""The head a reader finds in the store: ``read_head`` and what it returns, ``HeadSeen``.

A sync run reads its cluster's head with it at the start (``engine``), and so does
``certfleet nodes`` (``nodereport``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from certfleet.bundle import (
    FormatError,
    Head,
    PublicKey,
    generation_too_far,
    peek_head,
    verify_head,
)
from certfleet.store import ObjectNotFound, Store
from certfleet.sync.layout import HEAD_MAX_BYTES, head_key


@dataclass(frozen=True)
class HeadSeen:
    """The head found at the start of a run (``None`` fields when there is none).

    ``signed`` is True when it verifies with the configured signing key for this cluster:
    a head signed by another key (the publisher key was rotated, or someone else wrote
    it) or with a broken signature is re-signed by this run.
    """

    etag: Optional[str]
    head: Optional[Head]
    signed: bool = False
    problem: Optional[str] = None


def read_head(
    store: Store, cluster: str, publisher: PublicKey, *, now_ms: int | None = None
) -> HeadSeen:
    """The cluster's stored head and whether it verifies with ``publisher`` (the sync's own
    key); ``problem`` says why it is unreadable or does not verify. A run reads its head
    with it, and so does ``certfleet nodes``. Store errors propagate.

    With ``now_ms`` (Unix milliseconds), a head whose generation lies more than a day
    ahead is refused like an unreadable one (``head`` None): it must not raise the next
    generation, whoever signed it."""
    try:
        stored = store.get(head_key(cluster), max_bytes=HEAD_MAX_BYTES)
    except ObjectNotFound:
        return HeadSeen(None, None)
    try:
        head = peek_head(stored.data)
    except FormatError as err:
        return HeadSeen(stored.etag, None, problem=str(err))
    if now_ms is not None and generation_too_far(head.generation, now_ms):
        return HeadSeen(
            stored.etag, None, problem=f"generation {head.generation} is more than a day ahead"
        )
    try:
        verify_head(stored.data, cluster=cluster, publishers=[publisher])
    except FormatError as err:
        return HeadSeen(stored.etag, head, signed=False, problem=str(err))
    return HeadSeen(stored.etag, head, signed=True)
