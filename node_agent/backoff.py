"""When a version that failed its check_command or probe is tried again: the backoff rule.

After a failed ``check_command`` or ``probe`` rolls order X back from the version of bundle
hash B, the agent does not fetch, switch or check B again for X before ``retry_at``. The
delay doubles with each failed attempt in a row: 1 min, 2, 4, ... capped at 1 h, each
± 10 % (``JITTER``) so that a fleet that failed together does not retry in step (the
project's one retry rule, ``certfleet.retry``). Orders
that fail in the same poll share one draw, so they are retried together (one check_command
run for all of them).

What ends a backoff:

- the cluster publishes another bundle for X (a fix, a renewal): tried at once;
- the version gets installed (a retry that passes);
- X is no longer published;
- a config reload (SIGHUP: the operator may have fixed a command or the server).

A restart keeps it: the backoffs are in the durable state (``AgentState.backoff``), and so
does ``--once`` (cron runs it every minute, which must not become a retry storm).
"""

from __future__ import annotations

from certfleet.retry import exponential, spread
from node_agent.agentstate import AgentState, Backoff

FIRST_DELAY = 60
MAX_DELAY = 3600
JITTER = 0.1
_MAX_ERROR = 512


def retry_delay(attempts: int, fraction: float) -> int:
    """Seconds to wait after the ``attempts``-th failure in a row (``attempts`` >= 1);
    ``fraction`` in [0, 1) sets the jitter: 0.5 is none."""
    base = exponential(max(attempts, 1), first=FIRST_DELAY, cap=MAX_DELAY)
    return max(1, round(spread(base, JITTER, fraction)))


def hold(
    state: AgentState,
    name: str,
    *,
    cluster: str,
    bundle_hash: str,
    error: str,
    now: int,
    fraction: float,
) -> Backoff:
    """Record a failed attempt to install ``bundle_hash`` for ``name``; the new backoff.

    The attempts count on from a backoff for the same bundle; another bundle starts at 1."""
    last = state.backoff.get(name)
    attempts = 1
    if last is not None and (last.cluster, last.bundle_hash) == (cluster, bundle_hash):
        attempts = last.attempts + 1
    held = Backoff(
        cluster=cluster,
        bundle_hash=bundle_hash,
        attempts=attempts,
        retry_at=now + retry_delay(attempts, fraction),
        error=error[:_MAX_ERROR],
    )
    state.backoff[name] = held
    return held


def holding(
    state: AgentState, name: str, cluster: str, bundle_hash: str, now: int
) -> Backoff | None:
    """The backoff that keeps ``bundle_hash`` of ``name`` from being tried at ``now``, if any.

    A backoff for another bundle (or cluster) is stale: it is dropped."""
    held = state.backoff.get(name)
    if held is None:
        return None
    if (held.cluster, held.bundle_hash) != (cluster, bundle_hash):
        del state.backoff[name]
        return None
    return held if now < held.retry_at else None
