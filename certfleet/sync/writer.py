"""The writes of one cluster run that every part shares: objects, retirements, the state.

``RunWriter`` is what the parts of a run (``issuer``, ``publisher``) write through:

- ``put_content`` writes a content-addressed object (its key is its hash): one that exists
  already holds the same bytes, so losing the create is success;
- ``retire`` notes an object the next head (or state) no longer references; the publisher
  ``take_retired`` them into the state's ``unreferenced`` list when it publishes;
- ``step`` marks a durable step: it calls the run's checkpoint (where tests inject a crash)
  and keeps the lease fresh; a writer built without a lease only calls the checkpoint;
- ``save_state`` saves the cluster's state (``StateStore``), ``open_bundle`` reads back a
  published bundle with the cluster's secrets.
"""

from __future__ import annotations

from typing import Callable

from certfleet.bundle import Bundle, open_bundle
from certfleet.store import PreconditionFailed, Store
from certfleet.sync.context import RunContext
from certfleet.sync.layout import BUNDLE_MAX_BYTES, bundle_key
from certfleet.sync.state import ClusterState, OrderRecord, StateStore, read_bytes

Checkpoint = Callable[[str], None]


def _no_checkpoint(name: str) -> None:
    del name


class RunWriter:
    """Writes to the store for one cluster run (``ctx``), under its lease when given one."""

    def __init__(
        self,
        store: Store,
        ctx: RunContext,
        *,
        states: StateStore | None = None,
        checkpoint: Checkpoint = _no_checkpoint,
        refresh: Callable[[], None] | None = None,
    ) -> None:
        self.store = store
        self.ctx = ctx
        self.states = states if states is not None else StateStore(store, ctx.cluster, ctx.keys)
        self._checkpoint = checkpoint
        self._refresh = refresh
        self._retired: list[str] = []

    def step(self, name: str) -> None:
        """A point where a crash may be injected; also keeps the lease fresh."""
        self._checkpoint(name)
        if self._refresh is not None:
            self._refresh()

    def put_content(self, key: str, sealed: bytes) -> None:
        """Write a content-addressed object; one already there holds the same bytes."""
        try:
            self.store.put_if_absent(key, sealed)
        except PreconditionFailed:
            pass

    def retire(self, key: str) -> None:
        """Note an object that the next head (or state) no longer references."""
        self._retired.append(key)

    def take_retired(self) -> list[str]:
        """The objects retired since the last call (the list is emptied)."""
        retired, self._retired = self._retired, []
        return retired

    def save_state(self, state: ClusterState) -> bool:
        """Save the cluster's state; False when it had not changed (nothing written)."""
        return self.states.save(state)

    def open_bundle(self, name: str, record: OrderRecord) -> Bundle:
        """The published bundle of an order, opened with the cluster's secrets."""
        ctx = self.ctx
        data = read_bytes(
            self.store, bundle_key(ctx.cluster, record.bundle), max_bytes=BUNDLE_MAX_BYTES
        )
        return open_bundle(data, cluster=ctx.cluster, order_name=name, secrets=ctx.secrets)
