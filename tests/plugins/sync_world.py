"""A sync test world: the sandbox, a store prefix, a cluster, and a clock to move.

Plain helpers for the ``test_sync*``, ``test_fault*``, ``test_hostile*`` and other sync
tests (no fixtures; registered in conftest.py so that pytest rewrites its asserts).
``World.sync()`` runs ``certfleet.sync.run_sync`` against the real sandbox over HTTP and a
real store; ``World.published()`` reads what a node would see: the head (signature
checked), the shards and the bundles (opened with the cluster secret). Also: the same
world as a sync config file (:func:`sync_config_text`), one poll of a new agent
(:func:`fresh_agent_poll`) and an order posted straight to the sandbox, past the client's
checks (:func:`post_order`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import requests

from certfleet.apiv3 import ApiClient, Identifier, RetryPolicy
from certfleet.bundle import (
    Bundle,
    ClusterSecret,
    Head,
    PublicKey,
    ShardEntry,
    SigningKey,
    decode_head,
    open_bundle,
    open_shard,
)
from certfleet.config import parse_agent_config
from certfleet.config.sync import ClusterSyncConfig, SyncConfig
from certfleet.store import Store, open_store
from certfleet.sync import RunSummary, run_sync
from certfleet.sync.apiv3_provider import ApiV3Provider
from certfleet.sync.engine import Checkpoint
from certfleet.sync.layout import bundle_key, head_key, shard_key
from certfleet.sync.sealing import SyncKeys
from certfleet.sync.state import ClusterState, StateStore
from node_agent.agent import Agent
from node_agent.result import PollResult
from tests.plugins.faults import agent_config_text, cluster_stanza
from tests.plugins.sandbox import Sandbox, unique_cluster

# Two attempts, short back-off; 10 s per call leaves room for the engine's long polls
# (issue_wait 5 s here): the provider polls at most max_seconds - 2 s.
FAST_RETRY = RetryPolicy(max_attempts=2, max_seconds=10.0, base_delay=0.05, max_delay=0.2)


@dataclass(frozen=True)
class Published:
    """What a node sees: the head, every shard entry and tombstone, the bundles."""

    head: Head
    entries: dict[str, ShardEntry]
    tombstones: dict[str, int]
    bundles: dict[str, Bundle]


@dataclass
class World:
    sandbox: Sandbox
    store: Store
    cluster: str
    secrets: tuple[ClusterSecret, ...]
    signing_key: SigningKey
    key_type: str = "ecdsa"
    settings: dict[str, Any] = field(default_factory=dict)
    cluster_settings: dict[str, Any] = field(default_factory=dict)
    offset: float = 0.0

    # -- the sync ---------------------------------------------------------------------

    def now(self) -> float:
        return time.time() + self.offset

    def config(self) -> SyncConfig:
        cluster = ClusterSyncConfig(
            name=self.cluster, secrets=self.secrets, key_type=self.key_type,
            **self.cluster_settings,
        )  # fmt: skip
        values: dict[str, Any] = {
            "store": self.store.url,
            "signing_key": self.signing_key,
            "api_key": self.sandbox.api_key,
            "api_endpoint": self.sandbox.url,
            "issue_wait": 5.0,
            "lease_duration": 60.0,
            "clusters": (cluster,),
            **self.settings,
        }
        return SyncConfig(**values)

    def sync_keys(self) -> SyncKeys:
        """The keys that seal this world's sync-private objects (the sync secret first)."""
        return SyncKeys(self.signing_key.sync_secret("state"), (), self.secrets)

    def states(self) -> StateStore:
        """The cluster's sync state, as the sync loads and saves it."""
        return StateStore(self.store, self.cluster, self.sync_keys())

    def state(self) -> ClusterState:
        return self.states().load(now_ms=int(self.now() * 1000))

    def provider(self) -> ApiV3Provider:
        return ApiV3Provider(ApiClient(self.sandbox.url, self.sandbox.api_key, retry=FAST_RETRY))

    def sync(
        self,
        *,
        checkpoint: Checkpoint | None = None,
        deadline: float | None = None,
        verify_store: bool = False,
    ) -> RunSummary:
        provider = self.provider()
        try:
            return run_sync(
                self.config(),
                store=self.store,
                provider=provider,
                clock=self.now,
                checkpoint=checkpoint,
                deadline=deadline,
                verify_store=verify_store,
            )
        finally:
            provider.close()

    # -- the provider -----------------------------------------------------------------

    def client(self) -> ApiClient:
        return ApiClient(self.sandbox.url, self.sandbox.api_key, retry=FAST_RETRY)

    def host(self, label: str) -> str:
        """A DNS name (and order name) no other test uses: names are global at the provider."""
        return f"{label}.{self.cluster}.example.com"

    def add(self, *names: str, cluster: str | None = None) -> str:
        with self.client() as client:
            order = client.create_order(
                [Identifier(name, "dns") for name in names], cluster=cluster or self.cluster
            )
        return order.name

    def edit(self, order: str, *names: str) -> None:
        with self.client() as client:
            client.update_order(order, [Identifier(name, "dns") for name in names])

    def remove(self, order: str) -> None:
        with self.client() as client:
            client.delete_order(order)

    # -- what a node sees -------------------------------------------------------------

    def head_bytes(self) -> bytes:
        return self.store.get(head_key(self.cluster), max_bytes=1 << 24).data

    def published(self) -> Published:
        head = decode_head(
            self.head_bytes(),
            cluster=self.cluster,
            publishers=[self.signing_key.public_key()],
            now=int(self.now()),
        )
        entries: dict[str, ShardEntry] = {}
        tombstones: dict[str, int] = {}
        bundles: dict[str, Bundle] = {}
        for index, digest in enumerate(head.shard_hashes):
            data = self.store.get(shard_key(self.cluster, digest.hex()), max_bytes=1 << 24)
            shard = open_shard(data.data, cluster=self.cluster, index=index, secrets=self.secrets)
            for entry in shard.entries:
                entries[entry.order_name] = entry
                blob = self.store.get(
                    bundle_key(self.cluster, entry.bundle_hash.hex()), max_bytes=1 << 24
                )
                bundles[entry.order_name] = open_bundle(
                    blob.data,
                    cluster=self.cluster,
                    order_name=entry.order_name,
                    secrets=self.secrets,
                )
            for stone in shard.tombstones:
                tombstones[stone.order_name] = stone.removed_at
        return Published(head, entries, tombstones, bundles)

    def keys(self) -> list[str]:
        return list(self.store.list(""))


def make_world(sandbox: Sandbox, store_url: str, endpoint: str, **kwargs: Any) -> World:
    world = World(
        sandbox=sandbox,
        store=open_store(store_url, endpoint=endpoint or None),
        cluster=unique_cluster("s"),
        secrets=(ClusterSecret.generate("k1"),),
        signing_key=SigningKey.generate(),
    )
    return replace(world, **kwargs)


def sync_config_text(world: World) -> str:
    secrets = ", ".join(f'"{secret.export()}"' for secret in world.secrets)
    return (
        f'api_key = "{world.sandbox.api_key}"\n'
        f'api_endpoint = "{world.sandbox.url}"\n'
        f'store = "{world.store.url}"\n'
        f'signing_key = "{world.signing_key.export()}"\n'
        'issue_wait = "5s"\nlease_duration = "60s"\n'
        f'cluster "{world.cluster}" {{\n  secret = [{secrets}]\n  key_type = "ecdsa"\n}}\n'
    )


def fresh_agent_poll(
    world: World, state_dir: Path, endpoint: str, publishers: Sequence[PublicKey]
) -> PollResult:
    """One poll of a new agent that trusts the world's secrets and only ``publishers``."""
    stanza = cluster_stanza(world.cluster, world.secrets, publishers)
    text = agent_config_text(world.store.url, state_dir, stanza, endpoint=endpoint)
    return Agent(parse_agent_config(text, str(state_dir.parent / "agent.conf"))).poll_once()


def post_order(sandbox: Sandbox, cluster: str, name: str, dns_names: Sequence[str]) -> None:
    body = {
        "name": name,
        "cluster": cluster,
        "identifiers": [{"type": "dns", "value": n, "approval": "dns"} for n in dns_names],
    }
    answer = requests.post(f"{sandbox.url}/orders", json=body, headers=sandbox.headers, timeout=30)
    assert answer.status_code == 201, (name, answer.status_code, answer.text[:200])
