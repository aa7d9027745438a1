"""A function's config: HCL text in a Secrets Manager secret named by an environment variable.

Both functions read theirs this way, once per cold start: the scheduled sync the sync config
(``CERTFLEET_CONFIG_SECRET``, ``chalicelib.runner``), the Function URL the order API's config
(``CERTFLEET_HTTP_CONFIG_SECRET``, ``chalicelib.httpapi``). The caller parses the text and
keeps the result; a read or a parse that failed is tried again at the next invocation (the
operator may have fixed the secret). One boto3 client per ``ConfigSecret``, made on first use.
Errors name the secret and never carry its value.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Callable

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from certfleet.errors import CertfleetError

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager import SecretsManagerClient


class ConfigSecretError(CertfleetError):
    """The config could not be read from Secrets Manager (never carries its value)."""

    def __init__(self, secret_id: str, reason: str) -> None:
        super().__init__(f"sync config secret {secret_id!r}: {reason}")
        self.secret_id = secret_id
        self.reason = reason


def secrets_manager_client() -> SecretsManagerClient:
    # boto3 honours AWS_ENDPOINT_URL_SECRETS_MANAGER, which is how the tests reach a stand-in.
    retries: Any = {"max_attempts": 3, "mode": "standard"}
    # An own session: boto3's default session is shared mutable state (and warns on 3.9).
    return boto3.session.Session().client(
        "secretsmanager",
        config=Config(connect_timeout=5, read_timeout=10, retries=retries),
    )


class ConfigSecret:
    """The secret named by ``environ[variable]`` (``os.environ`` at the time of the read when
    ``environ`` is None); ``not_found_hint`` follows the error of a secret that does not exist
    (or has no value yet)."""

    def __init__(
        self,
        variable: str,
        environ: Mapping[str, str] | None,
        client_factory: Callable[[], SecretsManagerClient],
        *,
        not_found_hint: str = "",
    ) -> None:
        self._variable = variable
        self._environ = environ
        self._client_factory = client_factory
        self._client: SecretsManagerClient | None = None
        self._not_found_hint = not_found_hint

    def read(self) -> tuple[str, str]:
        """The secret's name or ARN (as the variable gives it) and its text."""
        environ = os.environ if self._environ is None else self._environ
        secret_id = environ.get(self._variable, "")
        if not secret_id:
            raise ConfigSecretError("", f"{self._variable} is not set")
        if self._client is None:
            self._client = self._client_factory()
        try:
            answer = self._client.get_secret_value(SecretId=secret_id)
        except ClientError as err:
            code = err.response.get("Error", {}).get("Code", "unknown")
            hint = self._not_found_hint if code == "ResourceNotFoundException" else ""
            raise ConfigSecretError(secret_id, f"GetSecretValue failed: {code}{hint}") from err
        except BotoCoreError as err:
            raise ConfigSecretError(secret_id, f"GetSecretValue failed: {err}") from err
        text = answer.get("SecretString")
        if not text:
            raise ConfigSecretError(secret_id, "holds no SecretString (the config is HCL text)")
        return secret_id, text
