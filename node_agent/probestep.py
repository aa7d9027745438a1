"""The last step of applying a plan (``node_agent.rollout``): the probe after on_update.

For each switched order with a ``probe`` whose on_update commands succeeded, a TLS handshake
with each address must show the leaf just installed (``node_agent.probe``); if one does not,
that order and the orders switched with it that share an on_update command go back to their
previous version, and their on_update commands run again. Only an order whose own probe
failed backs off (``node_agent.backoff``); the others are tried again at the next poll.

A first install has nothing to go back to, and its server block often does not exist yet (a
``probe`` set in ``default``): a probe that does not see it is "not served yet", logged and
listed in the poll's ``not_served``, neither a failed run (``hook_failures_total``) nor a
problem, and it rolls nothing back.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Collection, Sequence
from typing import Callable, Protocol

from certfleet.config import AgentConfig, OrderSettings
from node_agent.agentstate import AgentState, InstalledOrder
from node_agent.errors import InstallError
from node_agent.installer import Installer
from node_agent.material import file_name
from node_agent.probe import Prober, leaf_fingerprint, probe, server_name
from node_agent.result import FAILED, CommandRun
from node_agent.tally import PollTally

log = logging.getLogger(__name__)


class Undo(Protocol):
    """What the probe step needs of ``Rollout`` to undo an order whose probe failed."""

    def roll_back(self, state: AgentState, name: str, tally: PollTally) -> None: ...

    def back_off(
        self, state: AgentState, name: str, order: InstalledOrder, message: str, fraction: float
    ) -> str: ...

    def owe(self, state: AgentState, updated: Sequence[str], removed: Sequence[str]) -> None: ...

    def run_owed(
        self, state: AgentState, tally: PollTally, only: Collection[str] | None = None
    ) -> None: ...


class ProbeStep:
    """Probes the switched orders of a poll; undoes, through ``undo``, those that fail."""

    def __init__(
        self,
        config: AgentConfig,
        installer: Installer,
        undo: Undo,
        prober: Prober = probe,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.config = config
        self.installer = installer
        self.undo = undo
        self.prober = prober
        self.rng = rng  # the jitter of backoffs

    def run(self, state: AgentState, switched: Sequence[str], tally: PollTally) -> None:
        """Probe each switched order that has a ``probe`` and no on_update still owed; roll
        back those whose server does not serve the new leaf, and the orders switched with
        them that share an on_update command, and run those commands again."""
        owed = {safe for command in state.owed for safe in command.updated}
        failed: dict[str, str] = {}  # order -> what its probe saw
        for name in switched:
            order = state.orders.get(name)
            settings = self.config.settings_for(name)
            if order is None or name not in tally.installed or order.safe_name in owed:
                continue  # rolled back by check_command, or its on_update is retried later
            if not settings.probe:
                continue
            seen = self._probe_order(name, order, settings, tally)
            if seen and order.previous is None:
                tally.not_served.append(name)
                log.info(
                    "order %r: not served yet: %s; a first install, nothing to fall back to: "
                    "kept, not counted as a failure",
                    name, seen,
                )  # fmt: skip
            elif seen:
                failed[name] = seen
        if failed:
            self._undo_probed(state, switched, failed, tally)

    def _probe_order(
        self, name: str, order: InstalledOrder, settings: OrderSettings, tally: PollTally
    ) -> str:
        """Probe every address of one order; "" if all serve its leaf, else what one saw."""
        try:
            directory = self.installer.version_path(order.safe_name, order.version)
            with open(os.path.join(directory, file_name(order.key_type, "crt")), "rb") as f:
                expected = leaf_fingerprint(f.read())
        except (InstallError, OSError, ValueError) as err:
            return f"no probe: cannot read the installed certificate: {err}"
        sni = server_name(name, order.dns_names, settings.probe_sni)
        for address in settings.probe:
            result = self.prober(address, sni, expected, settings.probe_timeout)
            if result.ok or order.previous is not None:  # a first install: not a failed run
                tally.commands.append(CommandRun(f"probe {address}", result.ok, result.describe()))
            if not result.ok:
                return f"probe {result.describe()}"
        return ""

    def _undo_probed(
        self, state: AgentState, switched: Sequence[str], failed: dict[str, str], tally: PollTally
    ) -> None:
        """Roll back the orders whose probe ``failed`` and those switched with them that
        share an on_update command; run those orders' on_update commands again."""
        shared = {c for name in failed for c in self.config.settings_for(name).on_update}
        culprits = ", ".join(repr(name) for name in failed)
        fraction = self.rng()
        rolled: list[str] = []
        for name in switched:
            on_update = self.config.settings_for(name).on_update
            if name not in tally.installed or (name not in failed and not shared & set(on_update)):
                continue
            order = state.orders[name]
            why = failed.get(name) or (
                f"shares an on_update command with order {culprits}, whose probe failed"
            )
            if order.previous is None:  # nothing to go back to (never one whose probe failed)
                continue
            self.undo.roll_back(state, name, tally)
            if name in tally.rolled_back:
                rolled.append(name)
                message = f"order {name!r}: {why}; rolled back to the previous version"
                if name in failed:  # its own probe failed: back off (not the others)
                    message = self.undo.back_off(state, name, order, message, fraction)
                tally.problem(FAILED, f"order {name!r}", message, order.cluster)
        if rolled:
            self.undo.owe(state, rolled, [])
            again = {c for name in rolled for c in self.config.settings_for(name).on_update}
            self.undo.run_owed(state, tally, again)
