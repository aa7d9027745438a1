"""What one scheduled invocation does: load the sync config, run the engine within the budget.

This module does not import Chalice: ``app.py`` wires it to the schedule. The sync config
(the same HCL text as ``certfleet sync --config``: API key, signing key, cluster secrets)
lives in a Secrets Manager secret whose name or ARN is in ``CERTFLEET_CONFIG_SECRET``. It
is read (``chalicelib.configsecret``) and parsed once per cold start, through one boto3
client; a new config therefore
takes effect at the next cold start (``infra/sam/README.md`` says how to force one).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Callable

from certfleet.config.sync import SyncConfig, parse_sync_config
from certfleet.sync import run_sync
from chalicelib.configsecret import ConfigSecret, secrets_manager_client

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager import SecretsManagerClient

logger = logging.getLogger(__name__)

CONFIG_SECRET_ENV = "CERTFLEET_CONFIG_SECRET"  # noqa: S105 (the name of a variable)

# Time kept back from the Lambda's remaining time, so the engine finishes its current step,
# releases its lease and returns the summary before the Lambda is killed.
SAFETY_MARGIN_SECONDS = 30.0
# With little time left the margin shrinks to this share of it (tests, short timeouts).
SAFETY_MARGIN_SHARE = 0.2


def budget_seconds(remaining_ms: float) -> float:
    """The engine's time budget: the Lambda's remaining time less a safety margin."""
    remaining = max(remaining_ms, 0.0) / 1000.0
    return remaining - min(SAFETY_MARGIN_SECONDS, remaining * SAFETY_MARGIN_SHARE)


class ScheduledSync:
    """The handler's logic; one instance lives as long as the Lambda's execution environment."""

    def __init__(
        self,
        environ: Mapping[str, str] | None = None,
        client_factory: Callable[[], SecretsManagerClient] = secrets_manager_client,
    ) -> None:
        self._secret = ConfigSecret(
            CONFIG_SECRET_ENV,
            environ,
            client_factory,
            not_found_hint=" (a new stack's secret is empty: put the sync config in with"
            " `aws secretsmanager put-secret-value`)",
        )
        self._config: SyncConfig | None = None

    def run(self, remaining_ms: float) -> dict[str, Any]:
        """Run the sync once within ``remaining_ms`` (less a margin) and return its summary."""
        deadline = time.monotonic() + budget_seconds(remaining_ms)
        summary = run_sync(self.config(), deadline=deadline).as_dict()
        # One line per run; the template's metric filters read its error_count and, from a
        # run that checked a fleet, its fleet_problem_nodes (absent from other runs).
        errors = len(summary.get("errors", ()))
        extra: dict[str, Any] = {"summary": summary, "error_count": errors}
        problems = summary.get("fleet_problem_nodes")
        if problems is not None:
            extra["fleet_problem_nodes"] = problems
        level = logging.WARNING if errors or problems else logging.INFO
        logger.log(level, "sync run finished", extra=extra)
        return summary

    def config(self) -> SyncConfig:
        """The parsed sync config, read from Secrets Manager on the first call only."""
        if self._config is None:
            secret_id, text = self._secret.read()
            self._config = parse_sync_config(text, f"secretsmanager:{secret_id}")
            logger.info("sync config loaded", extra={"secret": secret_id})
        return self._config
