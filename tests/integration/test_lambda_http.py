"""The Lambda's HTTP function (lambda/app.py ``http``) driven through chalice.test.Client with
Function URL events (payload format 2.0): the help page's order, keys, the HTTP-01 route,
over the registry on SeaweedFS, with its config read from a Secrets Manager stand-in."""

from __future__ import annotations

import base64
import json
from types import ModuleType
from typing import Any

import pytest
from chalice.app import CloudWatchEvent
from chalice.test import Client

from certfleet.bundle import SigningKey
from certfleet.registry import OrderRegistry
from certfleet.sandbox.devstack import SecretsManager
from certfleet.serve.apikey import generate_key
from certfleet.serve.settings import api_key_block
from certfleet.store import open_store
from tests.plugins.lambda_app import LAMBDA_DIR
from tests.plugins.seaweedfs import SeaweedFS

SECRET_NAME = "certfleet-http-config"
THUMBPRINT = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def event(
    method: str, path: str, *, key: str | None = None, body: str | None = None, b64: bool = False
) -> dict[str, Any]:
    headers = {"host": "abc.lambda-url.us-east-1.on.aws", "content-type": "application/json"}
    if key is not None:
        headers["authorization"] = "Basic " + base64.b64encode(f"{key}:".encode()).decode()
    raw_path, _, query = path.partition("?")
    return {
        "version": "2.0",
        "rawPath": raw_path,
        "rawQueryString": query,
        "headers": headers,
        "requestContext": {"http": {"method": method, "path": raw_path}},
        "body": base64.b64encode(body.encode()).decode() if b64 and body else body,
        "isBase64Encoded": b64,
    }


def test_the_function_url_serves_the_order_api_and_the_challenge(
    seaweedfs: SeaweedFS,
    s3_url: str,
    monkeypatch: pytest.MonkeyPatch,
    lambda_app: ModuleType,
) -> None:
    secret = SigningKey.generate().sync_secret("registry")
    made = generate_key("ops", ("webservers",))
    config = (
        f'store = "{s3_url}"\nstore_endpoint = "{seaweedfs.endpoint}"\n'
        f'registry_secret = "{secret.export()}"\nacme_thumbprint = "{THUMBPRINT}"\n'
        'clusters = ["webservers"]\n\n'
        + api_key_block("ops", made.entry.id, made.entry.sha256, ("webservers",))
    )
    with SecretsManager({SECRET_NAME: config}) as stand_in:
        monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", stand_in.endpoint)
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        monkeypatch.setenv("CERTFLEET_HTTP_CONFIG_SECRET", SECRET_NAME)
        monkeypatch.setenv("CERTFLEET_SYNC_FUNCTION", "certfleet-Sync")
        lambda_calls: list[dict[str, Any]] = []

        class FakeLambda:
            def invoke(self, **kwargs: Any) -> dict[str, Any]:
                lambda_calls.append(kwargs)
                return {"StatusCode": 202}

        monkeypatch.setattr(lambda_app.http_function, "_lambda_factory", FakeLambda)
        with Client(lambda_app.app, project_dir=str(LAMBDA_DIR), stage_name="prod") as client:

            def call(**kwargs: Any) -> dict[str, Any]:
                payload: dict[str, Any] = client.lambda_.invoke("http", event(**kwargs)).payload
                return payload

            help_page = '{"cluster": "webservers", "dns_names": ["example.com", "www.example.com"]}'
            created = call(method="POST", path="/api/v3/orders", key=made.key, body=help_page)
            assert created["statusCode"] == 201, created
            assert json.loads(created["body"])["dns_names"] == ["example.com", "www.example.com"]
            again = call(
                method="POST", path="/api/v3/orders", key=made.key, body=help_page, b64=True
            )
            assert again["statusCode"] == 409
            wrong = call(method="GET", path="/api/v3/orders", key="0000000000_nope")
            assert wrong["statusCode"] == 401
            listed = call(method="GET", path="/api/v3/orders?cluster=webservers", key=made.key)
            assert [o["name"] for o in json.loads(listed["body"])["orders"]] == ["example.com"]
            token = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"
            challenge = call(method="GET", path=f"/.well-known/acme-challenge/{token}")
            assert challenge["statusCode"] == 200
            assert challenge["headers"]["Content-Type"] == "text/plain"
            assert challenge["body"] == f"{token}.{THUMBPRINT}"
            huge = call(method="POST", path="/api/v3/orders", key=made.key, body="x" * 200_000)
            assert huge["statusCode"] == 413
            patch = '{"dns_names": ["example.com"]}'
            patched = call(
                method="PATCH", path="/api/v3/orders/example.com", key=made.key, body=patch
            )
            assert patched["statusCode"] == 200
        # The first change started the sync at once; the second, within 30 s, did not.
        (started,) = lambda_calls
        assert (started["FunctionName"], started["InvocationType"]) == ("certfleet-Sync", "Event")
        scheduled = CloudWatchEvent(json.loads(started["Payload"]), None)
        assert scheduled.detail_type == "Scheduled Event"
        assert len(stand_in.calls) == 1  # the config is read once per cold start
    store = open_store(s3_url, endpoint=seaweedfs.endpoint)
    (order,) = OrderRegistry(store, secret, ["webservers"]).list("webservers")
    assert order.dns_names == ("example.com",)


def test_the_sync_trigger_is_debounced_and_never_fails_the_call(lambda_app: ModuleType) -> None:
    from chalicelib.synctrigger import SyncTrigger  # lambda/ is on sys.path (lambda_app)

    now = [0.0]
    calls: list[str] = []

    class Flaky:
        def invoke(self, **kwargs: Any) -> None:
            calls.append(kwargs["FunctionName"])
            if len(calls) == 2:
                raise RuntimeError("throttled")

    trigger = SyncTrigger("sync", Flaky, interval=30.0, clock=lambda: now[0])
    assert [trigger.changed(), trigger.changed()] == [True, False]
    now[0] = 31.0
    assert trigger.changed() is False  # invoked, failed, logged
    now[0] = 62.0
    assert trigger.changed() is True
    assert calls == ["sync", "sync", "sync"]


def test_without_its_config_the_function_answers_500_and_says_why_in_the_log(
    lambda_app: ModuleType, caplog: pytest.LogCaptureFixture
) -> None:
    from chalicelib.httpapi import HttpFunction  # lambda/ is on sys.path (lambda_app)

    function = HttpFunction(environ={})
    result = function.handle(event(method="GET", path="/api/v3/orders", key="k_x"))
    assert result["statusCode"] == 500
    assert json.loads(result["body"])["code"] == "internal_error"
    assert "CERTFLEET_HTTP_CONFIG_SECRET is not set" in caplog.text
