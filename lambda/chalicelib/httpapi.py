"""What one Function URL invocation does: the order API and the HTTP-01 route.

This module does not import Chalice: ``app.py`` wires it to the ``http`` function. Its
config is the order API's own (``certfleet http-config`` prints it: the store, the
registry secret, the ACME thumbprint, the clusters and the API key hashes; never the
signing key nor a cluster secret), in a Secrets Manager secret whose name or ARN is in
``CERTFLEET_HTTP_CONFIG_SECRET``. It is read once per cold start, like the sync's
(``chalicelib.configsecret``).
Requests are answered by ``certfleet.serve`` (the same code as ``certfleet serve``); with
``CERTFLEET_SYNC_FUNCTION`` set, an order change starts the sync at once
(``chalicelib.synctrigger``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Callable

import boto3
from botocore.config import Config

from certfleet.errors import CertfleetError
from certfleet.serve import HttpApi, Response, build_api, parse_settings
from certfleet.serve.event import handle_event, response_to_result
from chalicelib.configsecret import ConfigSecret, secrets_manager_client
from chalicelib.synctrigger import SYNC_FUNCTION_ENV, SyncTrigger

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager import SecretsManagerClient

logger = logging.getLogger(__name__)

HTTP_CONFIG_SECRET_ENV = "CERTFLEET_HTTP_CONFIG_SECRET"  # noqa: S105 (the name of a variable)


def _lambda_client() -> Any:
    retries: Any = {"max_attempts": 2, "mode": "standard"}
    return boto3.session.Session().client(
        "lambda", config=Config(connect_timeout=3, read_timeout=5, retries=retries)
    )


class HttpFunction:
    """The HTTP function's logic; one instance per Lambda execution environment."""

    def __init__(
        self,
        environ: Mapping[str, str] | None = None,
        client_factory: Callable[[], SecretsManagerClient] = secrets_manager_client,
        lambda_factory: Callable[[], Any] = _lambda_client,
    ) -> None:
        self._environ = environ
        self._secret = ConfigSecret(HTTP_CONFIG_SECRET_ENV, environ, client_factory)
        self._lambda_factory = lambda_factory
        self._api: HttpApi | None = None

    def handle(self, event: Mapping[str, Any]) -> dict[str, Any]:
        """The Function URL result for one event; 500 while the config cannot be loaded."""
        try:
            api = self.api()
        except CertfleetError as err:
            logger.error("order API config: %s", err)
            return response_to_result(
                Response.error(500, "internal_error", "the order API is not configured")
            )
        return handle_event(api, event)

    def api(self) -> HttpApi:
        """The routes, built from the config secret on the first call only."""
        if self._api is None:
            secret_id, text = self._secret.read()
            api = build_api(parse_settings(text, f"secretsmanager:{secret_id}"))
            environ = os.environ if self._environ is None else self._environ
            sync_function = environ.get(SYNC_FUNCTION_ENV, "")
            if sync_function:
                api.set_on_change(SyncTrigger(sync_function, self._lambda_factory).changed)
            self._api = api
            logger.info("order API config loaded", extra={"secret": secret_id})
        return self._api
