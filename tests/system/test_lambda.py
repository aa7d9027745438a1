"""The Lambda: lambda/app.py's scheduled handler driven through chalice.test.Client.

The sync runs for real against SeaweedFS and the APIv3 sandbox; its config comes from a
stand-in for Secrets Manager (``certfleet.sandbox.devstack.SecretsManager``: a loopback HTTP
server speaking GetSecretValue's JSON protocol, reached by boto3 through
AWS_ENDPOINT_URL_SECRETS_MANAGER).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import boto3
import pytest
import requests
from chalice.test import Client

from certfleet.bundle import ClusterSecret, SigningKey, decode_head
from certfleet.config import parse_agent_config
from certfleet.sandbox.devstack import SecretsManager
from node_agent.agent import Agent
from tests.plugins.faults import agent_config_text, cluster_stanza
from tests.plugins.lambda_app import LAMBDA_DIR
from tests.plugins.sandbox import unique_cluster

SECRET_NAME = "certfleet-sync-config"  # lambda/.chalice/config.json's CERTFLEET_CONFIG_SECRET


@pytest.fixture
def secrets_manager(monkeypatch: pytest.MonkeyPatch) -> Iterator[SecretsManager]:
    with SecretsManager() as stand_in:
        monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", stand_in.endpoint)
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        if "AWS_ACCESS_KEY_ID" not in os.environ:  # the seaweedfs fixture's keys sign for both
            monkeypatch.setenv("AWS_ACCESS_KEY_ID", "stand-in")
            monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "stand-in-secret")
        yield stand_in


def invoke(app_module: ModuleType) -> Any:
    with Client(app_module.app, project_dir=str(LAMBDA_DIR), stage_name="prod") as client:
        event = client.events.generate_cw_event(
            source="aws.events", detail_type="Scheduled Event", detail={}, resources=[]
        )
        return client.lambda_.invoke("sync", event).payload


def sync_config(
    sandbox: Any, s3_url: str, endpoint: str, cluster: str, secret: ClusterSecret | None = None
) -> tuple[str, SigningKey]:
    signing_key = SigningKey.generate()
    text = f"""
api_key        = "{sandbox.api_key}"
api_endpoint   = "{sandbox.url}"
store          = "{s3_url}"
store_endpoint = "{endpoint}"
signing_key    = "{signing_key.export()}"
cluster "{cluster}" {{
  secret   = "{(secret or ClusterSecret.generate("k1")).export()}"
  key_type = "ecdsa"
}}
"""
    return text, signing_key


def add_order(sandbox: Any, cluster: str, name: str) -> None:
    answer = requests.post(
        f"{sandbox.url}/orders",
        json={
            "cluster": cluster,
            "identifiers": [{"type": "dns", "value": name, "approval": "dns"}],
        },
        headers=sandbox.headers,
        timeout=10,
    )
    assert answer.status_code == 201, answer.text


def test_scheduled_run_publishes_the_cluster_from_the_secret_config(
    seaweedfs: Any,
    s3_url: str,
    sandbox: Any,
    secrets_manager: SecretsManager,
    lambda_app: ModuleType,
    caplog: pytest.LogCaptureFixture,
) -> None:
    cluster = unique_cluster()
    add_order(sandbox, cluster, f"www.{cluster}.example.com")
    add_order(sandbox, cluster, f"api.{cluster}.example.com")
    text, signing_key = sync_config(sandbox, s3_url, seaweedfs.endpoint, cluster)
    secrets_manager.secrets[SECRET_NAME] = text

    # The test client gives each invocation 3 s; a run that runs out resumes in the next one.
    published = 0
    for _ in range(5):
        payload = invoke(lambda_app)
        assert payload["errors"] == {}
        published += payload["certificates_published"]
        if payload["complete"]:
            break
    assert payload["complete"] is True
    assert payload["clusters"] == [cluster]
    assert published == 2

    # Read once per cold start, by a signed GetSecretValue for the configured name.
    assert len(secrets_manager.calls) == 1
    assert secrets_manager.calls[0]["body"] == {"SecretId": SECRET_NAME}
    assert secrets_manager.calls[0]["signed"]

    parts = urlsplit(s3_url)
    s3 = boto3.session.Session().client("s3", endpoint_url=seaweedfs.endpoint)
    key = f"{parts.path.strip('/')}/v1/clusters/{cluster}/head"
    data = s3.get_object(Bucket=parts.netloc, Key=key)["Body"].read()
    head = decode_head(
        data, cluster=cluster, publishers=[signing_key.public_key()], now=int(time.time())
    )
    assert head.generation == payload["generations"][cluster]

    finished = [r for r in caplog.records if r.getMessage() == "sync run finished"]
    assert finished and getattr(finished[-1], "summary", None) == payload
    assert getattr(finished[-1], "error_count", None) == 0
    assert sandbox.api_key not in caplog.text
    assert signing_key.export() not in caplog.text


def test_a_run_that_checks_the_fleet_logs_fleet_problem_nodes(
    seaweedfs: Any,
    s3_url: str,
    sandbox: Any,
    secrets_manager: SecretsManager,
    lambda_app: ModuleType,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    """What the template's FleetProblemNodes metric filter reads: a run that checked a
    cluster's acks logs fleet_problem_nodes on its "sync run finished" line."""
    cluster = unique_cluster()
    add_order(sandbox, cluster, f"www.{cluster}.example.com")
    secret = ClusterSecret.generate("k1")
    text, signing_key = sync_config(sandbox, s3_url, seaweedfs.endpoint, cluster, secret)
    secrets_manager.secrets[SECRET_NAME] = text.replace(
        "signing_key", 'fleet_check_interval = "1s"\nsigning_key', 1
    )
    for _ in range(5):  # each invocation has 3 s (see above)
        payload = invoke(lambda_app)
        if payload["complete"] and payload["certificates_published"] == 0:
            break
    stanza = cluster_stanza(cluster, [secret], [signing_key.public_key()])
    for name, extra in (("web-1", ""), ("web-2", 'default { on_update = ["exit 3"] }\n')):
        config = agent_config_text(
            s3_url, tmp_path / name, stanza, endpoint=seaweedfs.endpoint, extra=extra
        )
        Agent(parse_agent_config(config, str(tmp_path / f"{name}.conf"))).poll_once()
    time.sleep(1.1)  # the interval
    caplog.clear()
    payload = invoke(lambda_app)
    assert payload["errors"] == {}
    assert payload["fleet"] == {
        cluster: {
            "nodes": 2, "current": 2, "behind": 0, "stale": 0, "failing": 1,
            "unreadable": 0, "ahead": 0, "problem_nodes": 1,
        }
    }  # fmt: skip
    assert payload["fleet_problem_nodes"] == 1
    (finished,) = [r for r in caplog.records if r.getMessage() == "sync run finished"]
    assert getattr(finished, "fleet_problem_nodes", None) == 1
    assert finished.levelno == logging.WARNING
    from chalicelib.logformat import JsonFormatter

    line = json.loads(JsonFormatter().format(finished))
    assert line["fleet_problem_nodes"] == 1 and line["error_count"] == 0


def test_an_empty_secret_fails_the_invocation_with_a_hint(
    secrets_manager: SecretsManager, lambda_app: ModuleType
) -> None:
    from chalicelib.configsecret import ConfigSecretError

    with pytest.raises(ConfigSecretError, match="put-secret-value") as caught:
        invoke(lambda_app)
    assert caught.value.secret_id == SECRET_NAME
    assert "ResourceNotFoundException" in str(caught.value)


def test_a_bad_config_fails_without_echoing_the_secret(
    secrets_manager: SecretsManager, lambda_app: ModuleType
) -> None:
    from certfleet.errors import CertfleetError

    secrets_manager.secrets[SECRET_NAME] = 'api_key = "very-secret-api-key"\nstore = "nowhere"\n'
    with pytest.raises(CertfleetError) as caught:
        invoke(lambda_app)
    assert f"secretsmanager:{SECRET_NAME}" in str(caught.value)
    assert "very-secret-api-key" not in str(caught.value)
    # A config that failed to load is read again next time (the operator may have fixed it).
    with pytest.raises(CertfleetError):
        invoke(lambda_app)
    assert len(secrets_manager.calls) == 2


@pytest.mark.parametrize(
    ("remaining_ms", "budget"),
    [
        (900_000, 870.0),  # a 15-minute Lambda keeps 30 s back
        (150_000, 120.0),
        (100_000, 80.0),  # below 150 s the margin is a fifth of what is left
        (3_000, 2.4),
        (0, 0.0),
        (-5, 0.0),
    ],
)
def test_budget_keeps_a_safety_margin(
    remaining_ms: float, budget: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(LAMBDA_DIR))
    from chalicelib.runner import budget_seconds

    assert budget_seconds(remaining_ms) == pytest.approx(budget)


def test_json_formatter_writes_one_object_per_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(LAMBDA_DIR))
    from chalicelib.logformat import JsonFormatter

    record = logging.LogRecord(
        "certfleet.sync", logging.ERROR, __file__, 1, "order %s\nfailed", ("a",), None
    )
    record.summary = {"errors": {"a": "boom"}}
    try:
        raise ValueError("inner")
    except ValueError:
        record.exc_info = sys.exc_info()
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["level"] == "ERROR"
    assert entry["logger"] == "certfleet.sync"
    assert entry["message"] == "order a\nfailed"
    assert entry["summary"] == {"errors": {"a": "boom"}}
    assert "ValueError: inner" in entry["exception"]
    assert entry["time"].endswith("Z")
