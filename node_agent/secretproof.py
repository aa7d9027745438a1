"""Proving each configured cluster secret against the cluster's current head.

A mistyped secret is otherwise noticed only when something new is published, maybe weeks
after the config change. So on start and on every reload (SIGHUP) the daemon fetches each
cluster's head (verified as a poll verifies it) and its first shard, and tries to open that
shard with each configured secret alone. Every shard's data key is wrapped for every secret
id the head lists, so one shard proves a secret for all of them.

- A secret whose id the head lists but that does not open the shard is wrong (a typo, a
  value from another cluster): an error.
- A cluster none of whose secrets opens the shard cannot be installed: an error.
- A secret whose id the head does not list, next to one that opens the shard, is a rotation
  in progress (the new secret is added to the agents before the sync) or a retired one still
  configured: a notice, not an error.
- A cluster whose head cannot be read or verified (store down, nothing published yet, an
  expired head, a wrong publisher) or has no shard is not proven either way: a notice; the
  polls report the cause.

Errors name the cluster and the secret id, never the secret.

``certfleet-agent --once`` (cron) proves only the clusters whose secrets or publishers
changed since they were last proven (``trust_digest``, kept in the agent's state), so an
idle run stays one conditional GET of each head. (After such a change, a run against a
store that does not answer waits for the proof's head and then the poll's: twice the store
deadline, until a proof succeeds.)
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Callable

from certfleet.bundle import FormatError
from certfleet.config import AgentConfig, ClusterTrust
from certfleet.store import Store, StoreError
from node_agent.errors import RefusedError
from node_agent.source import ClusterSource

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SecretProof:
    """What proving the secrets found: ``errors`` make the config unusable."""

    errors: tuple[str, ...] = ()
    notices: tuple[str, ...] = ()
    proven: tuple[str, ...] = ()  # the clusters a configured secret was proven to open

    @property
    def ok(self) -> bool:
        return not self.errors


def trust_digest(trust: ClusterTrust) -> str:
    """A digest of what ``trust`` holds (secret ids and keys, publishers): it changes with
    the config, and shows nothing of a secret (SHA-256 of 32 random bytes and more)."""
    content = [trust.name, sorted(s.export() for s in trust.secrets)]
    content.append(sorted(p.export() for p in trust.publishers))
    return hashlib.sha256(json.dumps(content).encode("utf-8")).hexdigest()


def prove_secrets(
    config: AgentConfig,
    store: Store,
    clock: Callable[[], float] = time.time,
    *,
    clusters: Sequence[str] | None = None,
) -> SecretProof:
    """Prove the configured clusters' secrets (``clusters``: only those) against their
    current heads (see module doc)."""
    errors: list[str] = []
    notices: list[str] = []
    proven: list[str] = []
    for trust in config.clusters:
        if clusters is not None and trust.name not in clusters:
            continue
        found_errors, found_notices, opened = _prove_cluster(trust, store, int(clock()))
        errors += found_errors
        notices += found_notices
        if opened and not found_errors:
            proven.append(trust.name)
    return SecretProof(tuple(errors), tuple(notices), tuple(proven))


def _prove_cluster(
    trust: ClusterTrust, store: Store, now: int
) -> tuple[list[str], list[str], bool]:
    """(errors, notices, whether a configured secret opened the shard) of one cluster."""
    cluster = trust.name
    source = ClusterSource(store, cluster, secrets=trust.secrets, publishers=trust.publishers)
    try:
        stored = source.fetch_head()
        head = source.verify_head(stored.data, now=now, min_generation=0)
    except (StoreError, FormatError) as err:
        notice = f"cluster {cluster!r}: secrets not proven: cannot read its head: {err}"
        return [], [notice], False
    if not head.shard_hashes:
        return [], [f"cluster {cluster!r}: secrets not proven: its head has no shard"], False
    opened: list[str] = []
    failed: list[tuple[str, str]] = []
    for secret in trust.secrets:
        alone = ClusterSource(store, cluster, secrets=[secret], publishers=trust.publishers)
        try:
            alone.fetch_shard(0, head.shard_hashes[0])
        except RefusedError as err:
            if not err.permanent:  # the stored bytes did not match their hash: try later
                return [], [f"cluster {cluster!r}: secrets not proven: {err}"], False
            failed.append((secret.id, err.reason))
            continue
        except StoreError as err:
            return [], [f"cluster {cluster!r}: secrets not proven: {err}"], False
        opened.append(secret.id)
    errors, notices = _judge(cluster, head.secret_ids, opened, failed)
    return errors, notices, bool(opened)


def _judge(
    cluster: str,
    active: Sequence[str],
    opened: Sequence[str],
    failed: Sequence[tuple[str, str]],
) -> tuple[list[str], list[str]]:
    listed = ", ".join(repr(secret_id) for secret_id in active) or "none"
    errors: list[str] = []
    notices: list[str] = []
    for secret_id, _reason in failed:
        if secret_id in active:
            errors.append(
                f"cluster {cluster!r}: secret {secret_id!r} does not open the current head's "
                f"shards, which are encrypted for it: the secret is wrong (mistyped, or "
                f"another cluster's); copy it again from `certfleet clusters show {cluster}`"
            )
        elif opened:
            notices.append(
                f"cluster {cluster!r}: secret {secret_id!r} is not used by the current head "
                f"(its secrets: {listed}): fine while a rotation adds it; remove it once retired"
            )
    if not opened and not errors:
        errors.append(
            f"cluster {cluster!r}: no configured secret opens the current head's shards "
            f"(configured: {', '.join(repr(s) for s, _ in failed)}; the head's: {listed}): "
            f"copy the secret from `certfleet clusters show {cluster}`"
        )
    return errors, notices


def log_proof(proof: SecretProof) -> None:
    for notice in proof.notices:
        log.warning("notice: %s", notice)
    for error in proof.errors:
        log.error("config error: %s", error)
