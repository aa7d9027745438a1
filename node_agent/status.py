"""``certfleet-agent --status``: what this node holds, read from its state directory only.

No network and no writes: the state (``state.json`` and the records under ``state.d/``:
installed orders, accepted heads, owed commands, backoffs), ``health.json`` (polls,
refusals, command results) and ``node-id``. It reads all of it (O(N) in the orders: about
4 s at 100,000), which is fine for a command run by hand. The config supplies the state
directory, the configured clusters and each order's on_update commands.

``build_status`` returns plain data (what ``--json`` prints); ``format_status`` the
human-readable tables.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Sequence
from typing import Any

from certfleet.config import AgentConfig
from certfleet.errors import printable
from node_agent.agentstate import AgentState, Backoff
from node_agent.health import HealthStore
from node_agent.identity import NODE_ID_FILE
from node_agent.schedule import deferral
from node_agent.statestore import StateStore


def _read_node_id(state_dir: str) -> str | None:
    try:
        with open(os.path.join(state_dir, NODE_ID_FILE), encoding="ascii") as f:
            return f.read().strip() or None
    except (OSError, ValueError):
        return None


def build_status(config: AgentConfig, *, now: int) -> dict[str, Any]:
    """The status of the node whose config is ``config``; raises StateError if unreadable."""
    state = StateStore(config.state_dir).load()
    health = HealthStore(config.state_dir).load()
    configured = [trust.name for trust in config.clusters]
    clusters = []
    for name in configured + sorted(set(state.clusters) - set(configured)):
        cluster_state = state.cluster(name)
        cluster_health = health.cluster(name)
        valid_until = cluster_state.valid_until
        clusters.append(
            {
                "cluster": name,
                "configured": name in configured,
                "generation": cluster_state.applied_generation,
                "accepted_generation": cluster_state.accepted_generation,
                "head_valid_until": valid_until or None,
                "head_expired": cluster_health.head_expired
                or (bool(valid_until) and now > valid_until),
                "last_poll": cluster_health.last_poll or None,
                "last_successful_poll": cluster_health.last_success or None,
                "last_error": cluster_health.last_error or None,
                "refused": dict(sorted(cluster_health.refused.items())),
            }
        )
    owed_by_order: dict[str, list[dict[str, Any]]] = {}
    for owed in state.owed:
        for safe in (*owed.updated, *owed.removed):
            owed_by_order.setdefault(safe, []).append(
                {"command": owed.command, "failures": owed.failures, "error": owed.last_error}
            )
    node = _read_node_id(config.state_dir)
    pending: dict[str, tuple[str, int, str, str]] = {}  # name -> (cluster, until, serial, why)
    for name in configured:
        for order_name, entry in state.cluster(name).entries().items():
            installed = state.orders.get(order_name)
            if installed is not None and installed.bundle_hash == entry.bundle_hash.hex():
                continue
            if order_name in pending:
                continue
            wait = deferral(
                config,
                node_id=node or "",
                order_name=order_name,
                install_after=entry.install_after,
                serving_not_after=installed.not_after if installed is not None else None,
                now=now,
            )
            if wait is not None:
                pending[order_name] = (name, wait.until, entry.serial, wait.reason)
    held = backing_off(state, configured)
    orders = []
    for order_name in sorted(set(state.orders) | set(pending) | set(held)):
        order = state.orders.get(order_name)
        waiting = pending.get(order_name)
        backoff = held.get(order_name)
        if backoff is not None:
            waiting = None  # failed, not deferred: backing off
        settings = config.settings_for(order_name)
        commands = []
        for command in settings.on_update:
            record = health.commands.get(command)
            commands.append(
                {
                    "command": command,
                    "ok": record.ok if record else None,
                    "at": record.at if record else None,
                    "detail": record.detail if record else "never run",
                }
            )
        cluster = order.cluster if order else waiting[0] if waiting else ""
        if not cluster and backoff is not None:
            cluster = backoff.cluster  # a first install that was removed
        orders.append(
            {
                "order": order_name,
                "cluster": cluster,
                "cluster_configured": cluster in configured,
                "names": list(order.dns_names) if order else [],
                "serial": order.serial if order else None,
                "key_type": order.key_type if order else None,
                "not_after": order.not_after if order else None,
                "installed_at": (order.installed_at or None) if order else None,
                "deferred_until": waiting[1] if waiting else None,
                "deferred_serial": waiting[2] if waiting else None,
                "deferred_reason": waiting[3] if waiting else None,
                "removed_upstream_at": order.removed_at if order else None,
                "retry_at": backoff.retry_at if backoff else None,
                "attempts": backoff.attempts if backoff else None,
                "failure": backoff.error if backoff else None,
                "on_update": commands,
                "owed": owed_by_order.get(order.safe_name, []) if order else [],
            }
        )
    return {
        "node_id": node,
        "state_dir": config.state_dir,
        "now": now,
        "clusters": clusters,
        "orders": orders,
        "hook_failures_total": health.hook_failures_total,
        "config_error": health.config_error or None,
    }


def backing_off(state: AgentState, configured: Sequence[str]) -> dict[str, Backoff]:
    """The backoffs that still hold a published version back, by order name: a backoff
    for a bundle its cluster no longer publishes ends at the next poll."""
    held = {}
    for name, backoff in state.backoff.items():
        if backoff.cluster not in configured:
            continue
        entry = state.cluster(backoff.cluster).entries().get(name)
        if entry is not None and entry.bundle_hash.hex() == backoff.bundle_hash:
            held[name] = backoff
    return held


def _when(seconds: int | None, now: int) -> str:
    if not seconds:
        return "-"
    moment = datetime.datetime.fromtimestamp(seconds, tz=datetime.timezone.utc)
    shown = moment.strftime("%Y-%m-%d %H:%M:%SZ")
    delta = seconds - now
    if abs(delta) < 86400 * 2:
        relative = f"in {_span(delta)}" if delta > 0 else f"{_span(-delta)} ago"
        return f"{shown} ({relative})"
    return shown


def _span(seconds: int) -> str:
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Aligned columns; every cell escaped (``printable``): order names, serials and errors
    come from the store or its server."""
    rows = [[printable(str(cell)) for cell in row] for row in rows]
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    return [
        "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip()
        for row in (header, *rows)
    ]


def _deferred(order: dict[str, Any], now: int) -> str:
    """When a waiting version is due, and why: "2026-... (in 20 min), stagger"."""
    if not order["deferred_until"]:
        return "-"
    return f"{_when(order['deferred_until'], now)}, {order['deferred_reason']}"


def _retry(order: dict[str, Any], now: int) -> str:
    """When a version that failed is tried again: "2026-... (in 4 min), attempt 3 failed"."""
    if order["retry_at"] is None:
        return "-"
    return f"{_when(order['retry_at'], now)}, attempt {order['attempts']} failed"


def _command_result(order: dict[str, Any]) -> str:
    if order["owed"]:
        owed = order["owed"][0]
        return f"OWED ({owed['failures']} failures): {owed['error'] or 'not run yet'}"
    results = [c for c in order["on_update"] if c["ok"] is not None]
    if not order["on_update"]:
        return "-"
    if not results:
        return "never run"
    return "ok" if all(c["ok"] for c in results) else "failed"


def format_status(status: dict[str, Any]) -> str:
    """The human-readable status: the node, a clusters table and an orders table."""
    now = status["now"]
    lines = [f"node {status['node_id'] or '(no node id yet)'}, state in {status['state_dir']}", ""]
    if status.get("config_error"):
        lines += [f"CONFIG ERROR: {status['config_error']}", ""]
    cluster_rows = []
    for c in status["clusters"]:
        head = "EXPIRED" if c["head_expired"] else _when(c["head_valid_until"], now)
        note = "" if c["configured"] else "not in the config"
        if c["last_error"]:
            note = (note + "; " if note else "") + c["last_error"]
        cluster_rows.append(
            [
                c["cluster"],
                str(c["generation"] or "-"),
                _when(c["last_successful_poll"], now),
                head,
                note,
            ]
        )
    lines += _table(["CLUSTER", "GENERATION", "LAST SUCCESSFUL POLL", "HEAD VALID UNTIL", ""],
                    cluster_rows)  # fmt: skip
    lines.append("")
    order_rows = []
    for o in status["orders"]:
        cluster = o["cluster"] + ("" if o["cluster_configured"] else " (not configured)")
        if o["removed_upstream_at"]:
            cluster += " (removed upstream)"
        order_rows.append(
            [
                o["order"],
                cluster,
                o["serial"] or "-",
                _when(o["not_after"], now),
                _when(o["installed_at"], now),
                _deferred(o, now),
                _retry(o, now),
                _command_result(o),
                " ".join(o["names"]),
            ]
        )
    if order_rows:
        lines += _table(
            ["ORDER", "CLUSTER", "SERIAL", "NOT AFTER", "INSTALLED", "DEFERRED UNTIL",
             "RETRY AT", "ON_UPDATE", "NAMES"],
            order_rows,
        )  # fmt: skip
    else:
        lines.append("no orders installed yet")
    failures = [o for o in status["orders"] if o["retry_at"] is not None]
    if failures:
        lines.append("")
        lines.append("backing off (a new version failed its check and was rolled back):")
        lines += [
            f"  {printable(o['failure'])}; retry at {_when(o['retry_at'], now)}" for o in failures
        ]
    lines.append("")
    lines.append(f"failed command runs (check_command, on_update): {status['hook_failures_total']}")
    return "\n".join(lines) + "\n"
