"""The Prometheus textfile-collector file (``metrics_file``), rewritten after every poll.

node_exporter's textfile collector reads every ``*.prom`` file of its directory; the file is
replaced atomically (temp file + rename in the same directory), so it never reads half of
one. Metrics (times are Unix seconds):

- ``certfleet_agent_last_successful_poll_timestamp_seconds{cluster}`` — the store answered
  and the head verified (new or unchanged);
- ``certfleet_agent_generation{cluster}`` — the generation of the last applied head;
- ``certfleet_agent_head_expired{cluster}`` — 1 while the newest head is past valid_until;
- ``certfleet_agent_certificate_not_after_timestamp_seconds{order}`` and
  ``certfleet_agent_certificate_installed_timestamp_seconds{order}`` per installed order;
- ``certfleet_agent_hook_failures_total`` — failed check_command, on_update and probe runs;
- ``certfleet_agent_refused_objects_total{cluster,kind}`` — refusals by object kind
  (head, shard, bundle, order), counted on every poll while a refusal lasts.

Order names do appear as label values: the file stays on the node. The per-order lines are
most of the file (about 195 bytes per order); ``OrderMetrics`` keeps them between polls, so a
poll that changed no order renders none and a change renders the changed orders' lines.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from itertools import chain
from operator import itemgetter

from certfleet.store.nofollow import open_directory
from node_agent.agentstate import AgentState, InstalledOrder, OrderTable
from node_agent.diskfile import FileMode, write_atomic_in
from node_agent.health import OBJECT_KINDS, Health

_MODE = FileMode(0o644)
_PREFIX = "certfleet_agent_"


def escape_label(value: str) -> str:
    """A label value in the text exposition format: backslash, quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(pairs: Sequence[tuple[str, str]]) -> str:
    if not pairs:
        return ""
    return "{" + ",".join(f'{name}="{escape_label(value)}"' for name, value in pairs) + "}"


class _Family:
    def __init__(self, name: str, kind: str, help_text: str) -> None:
        self.name = _PREFIX + name
        self.lines = [f"# HELP {self.name} {help_text}", f"# TYPE {self.name} {kind}"]

    def sample(self, value: float, *labels: tuple[str, str]) -> None:
        shown = str(int(value)) if float(value).is_integer() else repr(float(value))
        self.lines.append(f"{self.name}{_labels(labels)} {shown}")


_NOT_AFTER = (
    "certificate_not_after_timestamp_seconds",
    "gauge",
    "Expiry of the installed certificate of each order.",
)
_INSTALLED = (
    "certificate_installed_timestamp_seconds",
    "gauge",
    "When the installed certificate of each order was switched in.",
)


def _order_samples(name: str, order: InstalledOrder) -> tuple[str, str]:
    """The not_after and installed sample lines of one order."""
    not_after, installed = _Family(*_NOT_AFTER), _Family(*_INSTALLED)
    not_after.sample(order.not_after, ("order", name))
    installed.sample(order.installed_at, ("order", name))
    return not_after.lines[-1], installed.lines[-1]


def _order_text(samples: Mapping[str, tuple[str, str]], names: Sequence[str] | None = None) -> str:
    """Both per-order families, in the order of ``names`` (default: name order)."""
    lines = [samples[name] for name in (sorted(samples) if names is None else names)]
    not_after, installed = _Family(*_NOT_AFTER).lines, _Family(*_INSTALLED).lines
    return "\n".join(
        chain(not_after, map(itemgetter(0), lines), installed, map(itemgetter(1), lines))
    )


def render_order_metrics(orders: Mapping[str, InstalledOrder]) -> str:
    """The per-order part of the metrics file (both per-order families, in name order)."""
    return _order_text({name: _order_samples(name, order) for name, order in orders.items()})


class OrderMetrics:
    """The per-order part of the metrics file, kept between polls.

    ``text(orders)`` returns the last text while the table's ``revision`` has not moved;
    otherwise it renders the lines of the orders whose record changed (a new
    ``InstalledOrder`` object) and joins them again in name order (the names are sorted
    again only when an order came or went)."""

    def __init__(self) -> None:
        self._orders: dict[str, InstalledOrder] = {}
        self._samples: dict[str, tuple[str, str]] = {}
        self._names: list[str] = []  # sorted
        self._seen: tuple[int, int] | None = None  # (id of the table, its revision)
        self._text = ""

    def text(self, orders: OrderTable) -> str:
        seen = (id(orders), orders.revision)
        if seen == self._seen:
            return self._text
        known, samples = self._orders, self._samples
        came = False
        for name, order in orders.items():
            before = known.get(name)
            if before is order:
                continue
            came = came or before is None
            known[name], samples[name] = order, _order_samples(name, order)
        if came or len(known) != len(orders):
            for name in [name for name in known if name not in orders]:
                del known[name], samples[name]
            self._names = sorted(known)
        self._seen = seen
        self._text = _order_text(samples, self._names)
        return self._text


def render_metrics(
    clusters: Iterable[str],
    state: AgentState,
    health: Health,
    *,
    now: int,
    order_text: str | None = None,
) -> str:
    """The metrics file's text for the configured ``clusters``.

    ``order_text``, when given, is ``render_order_metrics(state.orders)`` rendered before."""
    last_poll = _Family(
        "last_successful_poll_timestamp_seconds",
        "gauge",
        "When the store last answered and the cluster's head verified.",
    )
    generation = _Family("generation", "gauge", "Generation of the last applied head.")
    expired = _Family("head_expired", "gauge", "1 while the newest head is past its valid_until.")
    refused = _Family(
        "refused_objects_total", "counter", "Objects from the store refused by a check."
    )
    names = list(clusters)
    for cluster in names:
        cluster_state = state.cluster(cluster)
        cluster_health = health.cluster(cluster)
        label = ("cluster", cluster)
        last_poll.sample(cluster_health.last_success, label)
        generation.sample(cluster_state.applied_generation, label)
        is_expired = cluster_health.head_expired or (
            bool(cluster_state.valid_until) and now > cluster_state.valid_until
        )
        expired.sample(1 if is_expired else 0, label)
        counts = cluster_health.refused
        for kind in sorted(set(OBJECT_KINDS) | set(counts)):
            refused.sample(counts.get(kind, 0), label, ("kind", kind))
    if order_text is None:
        order_text = render_order_metrics(state.orders)
    hooks = _Family(
        "hook_failures_total", "counter", "Failed check_command, on_update and probe runs."
    )
    hooks.sample(health.hook_failures_total)
    head = "\n".join(line for family in (last_poll, generation, expired, refused)
                     for line in family.lines)  # fmt: skip
    return "\n".join((head, order_text, *hooks.lines)) + "\n"


def write_metrics(path: str, text: str) -> None:
    """Replace the metrics file atomically; OSError if not. Its directory is reached from
    ``/`` without following a symlink (made if missing), like the ``files`` copies."""
    dir_fd = open_directory(os.path.dirname(path), create=True)
    try:
        write_atomic_in(dir_fd, os.path.basename(path), text.encode("utf-8"), _MODE)
    finally:
        os.close(dir_fd)
