"""The deployable stack: template.yaml's least-privilege IAM and bucket settings, cfn-lint,
and the packaged Lambda zip (built by scripts/package.sh, imported in a fresh interpreter)."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import subprocess
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.plugins.binaries import missing

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "template.yaml"
NODE_POLICY_TEMPLATE = REPO / "infra" / "sam" / "node-policy.yaml"
BUCKET_ARN = "arn:${AWS::Partition}:s3:::${StoreBucket}"
CLUSTER = BUCKET_ARN + "/${StorePrefix}/v1/clusters/${NodeClusterName}"


class CfnLoader(yaml.SafeLoader):
    """Reads CloudFormation's short forms (!Ref, !Sub, ...) as their long forms."""


def _intrinsic(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    name = suffix if suffix in ("Ref", "Condition") else f"Fn::{suffix}"
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {name: value}


CfnLoader.add_multi_constructor("!", _intrinsic)


def load(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as f:
        return yaml.load(f, Loader=CfnLoader)


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load(TEMPLATE)


def listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def sub(value: Any) -> Any:
    """The string inside a ``Fn::Sub``, or the value itself."""
    return value["Fn::Sub"] if isinstance(value, dict) and "Fn::Sub" in value else value


def allow_statements(document: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in document["Statement"] if s["Effect"] == "Allow"]


def iam_documents(template: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, resource in template["Resources"].items():
        properties = resource.get("Properties", {})
        if resource["Type"] == "AWS::IAM::Role":
            for policy in properties.get("Policies", []):
                yield name, policy["PolicyDocument"]
            assert not properties.get("ManagedPolicyArns"), f"{name} attaches managed policies"
        elif resource["Type"] in ("AWS::IAM::ManagedPolicy", "AWS::IAM::Policy"):
            yield name, properties["PolicyDocument"]


def test_no_wildcard_actions_or_resources_in_any_allow(template: dict[str, Any]) -> None:
    documents = list(iam_documents(template)) + list(iam_documents(load(NODE_POLICY_TEMPLATE)))
    assert {name for name, _ in documents} == {
        "SyncRole",
        "HttpRole",
        "NodePolicy",
        "SyncRoute53Policy",
    }
    for name, document in documents:
        for statement in allow_statements(document):
            assert "NotAction" not in statement and "NotResource" not in statement, name
            for action in listed(statement["Action"]):
                assert "*" not in action, f"{name}: wildcard action {action}"
            for resource in listed(statement["Resource"]):
                text = sub(resource)
                if isinstance(text, str):
                    # AWS offers ListHostedZonesByName on * only (it reveals zone names)
                    unscoped = listed(statement["Action"]) == ["route53:ListHostedZonesByName"]
                    assert text != "*" or unscoped, f"{name}: Resource *"
                    # Only "every object under this prefix" may use a wildcard.
                    scoped = text.endswith("/*") and text.count("*") == 1
                    assert "*" not in text or scoped or unscoped, text


def test_sync_role_reaches_its_prefix_its_secret_and_its_logs_only(
    template: dict[str, Any],
) -> None:
    role = template["Resources"]["SyncRole"]["Properties"]
    principal = role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"]
    assert principal == {"Service": "lambda.amazonaws.com"}
    (policy,) = role["Policies"]
    grants = {
        (action, str(sub(resource)))
        for statement in allow_statements(policy["PolicyDocument"])
        for action in listed(statement["Action"])
        for resource in listed(statement["Resource"])
    }
    objects = BUCKET_ARN + "/${StorePrefix}/*"
    assert grants == {
        ("s3:GetObject", objects),
        ("s3:PutObject", objects),
        ("s3:DeleteObject", objects),
        ("s3:ListBucket", BUCKET_ARN),
        ("secretsmanager:GetSecretValue", str({"Ref": "SyncConfigSecret"})),
        ("logs:CreateLogStream", "${SyncLogGroup.Arn}"),
        ("logs:PutLogEvents", "${SyncLogGroup.Arn}"),
    }
    (listing,) = [
        s for s in policy["PolicyDocument"]["Statement"] if s["Action"] == "s3:ListBucket"
    ]
    assert sub(listing["Condition"]["StringLike"]["s3:prefix"]) == "${StorePrefix}/*"
    # The fleet check lists <prefix>/v1/clusters/<cluster>/acks/ and reads each ack: the
    # listing condition and the object grant both cover it.
    acks = "${StorePrefix}/v1/clusters/web/acks/"
    assert fnmatch.fnmatchcase(acks, sub(listing["Condition"]["StringLike"]["s3:prefix"]))
    assert fnmatch.fnmatchcase(BUCKET_ARN + "/" + acks + "node-1", objects)


def test_http_function_reaches_the_registry_its_secret_and_its_logs_only(
    template: dict[str, Any],
) -> None:
    resources = template["Resources"]
    function = resources["Http"]["Properties"]
    assert function["Handler"] == "app.http"
    assert function["Role"] == {"Fn::GetAtt": ["HttpRole", "Arn"]}
    assert function["FunctionUrlConfig"] == {"AuthType": {"Ref": "HttpAuthType"}}
    assert template["Parameters"]["HttpAuthType"]["AllowedValues"] == ["NONE", "AWS_IAM"]
    variables = function["Environment"]["Variables"]
    assert variables["CERTFLEET_HTTP_CONFIG_SECRET"] == {"Ref": "HttpConfigSecret"}
    assert variables["CERTFLEET_CONFIG_SECRET"] == ""
    assert variables["CERTFLEET_SYNC_FUNCTION"] == {"Ref": "Sync"}
    assert function["ReservedConcurrentExecutions"] == {
        "Fn::If": [
            "HasHttpReservedConcurrency",
            {"Ref": "HttpReservedConcurrency"},
            {"Ref": "AWS::NoValue"},
        ]
    }
    (policy,) = resources["HttpRole"]["Properties"]["Policies"]
    grants = {
        (action, str(sub(resource)))
        for statement in allow_statements(policy["PolicyDocument"])
        for action in listed(statement["Action"])
        for resource in listed(statement["Resource"])
    }
    registry = BUCKET_ARN + "/${StorePrefix}/v1/sync/orders/*"
    assert grants == {
        ("s3:GetObject", registry),
        ("s3:PutObject", registry),
        ("s3:ListBucket", BUCKET_ARN),
        ("secretsmanager:GetSecretValue", str({"Ref": "HttpConfigSecret"})),
        ("lambda:InvokeFunction", str({"Fn::GetAtt": ["Sync", "Arn"]})),
        ("logs:CreateLogStream", "${HttpLogGroup.Arn}"),
        ("logs:PutLogEvents", "${HttpLogGroup.Arn}"),
    }
    (listing,) = [
        s for s in policy["PolicyDocument"]["Statement"] if s["Action"] == "s3:ListBucket"
    ]
    prefix = sub(listing["Condition"]["StringLike"]["s3:prefix"])
    assert prefix == "${StorePrefix}/v1/sync/orders/*"
    assert not fnmatch.fnmatchcase("${StorePrefix}/v1/sync/state/web", prefix)
    assert template["Outputs"]["OrderApiUrl"]["Value"] == {"Fn::GetAtt": ["HttpUrl", "FunctionUrl"]}


def evaluate(value: Any, parameters: dict[str, Any]) -> Any:
    """``value`` with the intrinsics this template uses resolved for ``parameters`` (a
    CommaDelimitedList as a list): Ref, Fn::Join, Fn::Split, Fn::Sub, Fn::Not, Fn::Equals."""
    if isinstance(value, list):
        return [evaluate(item, parameters) for item in value]
    if not isinstance(value, dict) or len(value) != 1:
        return value
    ((name, argument),) = value.items()
    if name == "Ref":
        return parameters[argument]
    if name == "Fn::Join":
        return str(argument[0]).join(evaluate(argument[1], parameters))
    if name == "Fn::Split":
        return str(evaluate(argument[1], parameters)).split(argument[0])
    if name == "Fn::Sub":
        text, variables = (argument, {}) if isinstance(argument, str) else argument
        values = {**parameters, **{k: evaluate(v, parameters) for k, v in variables.items()}}
        return re.sub(r"\$\{([^}]+)\}", lambda match: str(values[match.group(1)]), text)
    if name == "Fn::Not":
        return not evaluate(argument[0], parameters)
    if name == "Fn::Equals":
        left, right = evaluate(argument, parameters)
        return bool(left == right)
    return value


def test_route53_policy_exists_only_with_zones_and_reaches_only_them(
    template: dict[str, Any],
) -> None:
    parameters = template["Parameters"]
    assert parameters["Route53HostedZoneIds"]["Type"] == "CommaDelimitedList"
    assert parameters["Route53HostedZoneIds"]["Default"] == ""
    assert parameters["Route53RecordNames"]["Default"] == "_acme-challenge.*"
    condition = template["Conditions"]["HasRoute53Zones"]
    assert evaluate(condition, {"Route53HostedZoneIds": [""]}) is False  # the default
    assert evaluate(condition, {"Route53HostedZoneIds": ["Z1"]}) is True

    policy = template["Resources"]["SyncRoute53Policy"]
    assert policy["Type"] == "AWS::IAM::Policy"
    assert policy["Condition"] == "HasRoute53Zones"
    assert policy["Properties"]["Roles"] == [{"Ref": "SyncRole"}]
    document = policy["Properties"]["PolicyDocument"]
    given = {
        "Route53HostedZoneIds": ["Z0123456789ABCDEFGHIJ", "Z9876543210ZYXWVUTSRQ"],
        "Route53RecordNames": ["_acme-challenge.*", "*.acme.example.net"],
    }
    grants = {
        (action, resource)
        for statement in allow_statements(document)
        for action in listed(statement["Action"])
        for resource in listed(evaluate(statement["Resource"], given))
    }
    zones = [f"arn:aws:route53:::hostedzone/{zone}" for zone in given["Route53HostedZoneIds"]]
    assert grants == {
        *(("route53:ChangeResourceRecordSets", zone) for zone in zones),
        *(("route53:ListResourceRecordSets", zone) for zone in zones),
        *(("route53:GetHostedZone", zone) for zone in zones),
        ("route53:GetChange", "arn:aws:route53:::change/*"),
        ("route53:ListHostedZonesByName", "*"),
    }
    # every Route 53 call the sync makes is granted
    source = (REPO / "certfleet" / "acme" / "dns" / "route53.py").read_text()
    calls = set(re.findall(r'self\._call\(\s*record,\s*"(\w+)"', source))
    assert calls and {f"route53:{call}" for call in calls} == {action for action, _ in grants}

    (change,) = [s for s in document["Statement"] if s["Sid"] == "ChallengeRecordsInTheseZones"]
    exact = change["Condition"]["ForAllValues:StringEquals"]
    assert exact["route53:ChangeResourceRecordSetsRecordTypes"] == "TXT"
    assert exact["route53:ChangeResourceRecordSetsActions"] == ["UPSERT", "DELETE"]
    names = change["Condition"]["ForAllValues:StringLike"]
    patterns = evaluate(names["route53:ChangeResourceRecordSetsNormalizedRecordNames"], given)
    assert patterns == given["Route53RecordNames"]
    assert fnmatch.fnmatchcase("_acme-challenge.www.example.com", patterns[0])
    assert not any(fnmatch.fnmatchcase("www.example.com", p) for p in patterns)


def test_node_policy_is_read_only_on_its_cluster_plus_its_acks(template: dict[str, Any]) -> None:
    resource = template["Resources"]["NodePolicy"]
    assert resource["Condition"] == "HasNodeCluster"
    document = resource["Properties"]["PolicyDocument"]
    grants = {
        (action, str(sub(r)))
        for statement in allow_statements(document)
        for action in listed(statement["Action"])
        for r in listed(statement["Resource"])
    }
    assert grants == {
        ("s3:GetObject", CLUSTER + "/*"),
        ("s3:ListBucket", BUCKET_ARN),
        ("s3:PutObject", CLUSTER + "/acks/*"),
    }
    (listing,) = [s for s in document["Statement"] if s["Action"] == "s3:ListBucket"]
    prefix = sub(listing["Condition"]["StringLike"]["s3:prefix"])
    assert prefix == "${StorePrefix}/v1/clusters/${NodeClusterName}/*"
    # The stand-alone template for further clusters grants exactly the same.
    other = load(NODE_POLICY_TEMPLATE)["Resources"]["NodePolicy"]["Properties"]["PolicyDocument"]
    assert other == document
    # Cluster names reach ARNs only through the cluster name pattern (docs/format.md).
    pattern = template["Parameters"]["NodeClusterName"]["AllowedPattern"]
    assert pattern == "^([a-z0-9][a-z0-9-]{0,39})?$"


def test_bucket_is_private_versioned_encrypted_and_tls_only(template: dict[str, Any]) -> None:
    resources = template["Resources"]
    bucket = resources["StoreBucket"]["Properties"]
    assert bucket["VersioningConfiguration"] == {"Status": "Enabled"}
    assert set(bucket["PublicAccessBlockConfiguration"].values()) == {True}
    assert len(bucket["PublicAccessBlockConfiguration"]) == 4
    (rule,) = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] in ("AES256", "aws:kms")
    lifecycle = bucket["LifecycleConfiguration"]["Rules"]
    assert any("NoncurrentVersionExpiration" in r and r["Status"] == "Enabled" for r in lifecycle)
    (deny,) = resources["StoreBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert deny["Effect"] == "Deny" and deny["Action"] == "s3:*"
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert resources["StoreBucket"]["DeletionPolicy"] == "Retain"


def test_function_schedule_secret_and_alarms(template: dict[str, Any]) -> None:
    resources = template["Resources"]
    function = resources["Sync"]["Properties"]
    # Reserved concurrency is a parameter, off (0) by default: the lease keeps runs apart.
    assert function["ReservedConcurrentExecutions"] == {
        "Fn::If": [
            "HasReservedConcurrency",
            {"Ref": "SyncReservedConcurrency"},
            {"Ref": "AWS::NoValue"},
        ]
    }
    assert template["Parameters"]["SyncReservedConcurrency"]["Default"] == 0
    assert template["Conditions"]["HasReservedConcurrency"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "SyncReservedConcurrency"}, "0"]}]
    }
    assert function["Timeout"] == 900 and function["MemorySize"] >= 256
    assert function["Handler"] == "app.sync"
    assert function["CodeUri"] == "build/package/deployment.zip"
    assert function["Events"]["SyncEvent"]["Properties"]["Schedule"] == {"Ref": "SyncSchedule"}
    # a schedule event throttled by a long run is dropped, not queued for hours
    assert function["EventInvokeConfig"] == {
        "MaximumRetryAttempts": 0,
        "MaximumEventAgeInSeconds": 60,
    }
    # "within minutes", as sslmate-agent: every minute by default, still a parameter
    assert template["Parameters"]["SyncSchedule"]["Default"] == "rate(1 minute)"
    assert (
        load(REPO / "infra" / "sam" / "stack.yaml")["Parameters"]["SyncSchedule"]["Default"]
        == "rate(1 minute)"
    )
    assert function["Role"] == {"Fn::GetAtt": ["SyncRole", "Arn"]}
    # The only variable names the secret; its value is put in after deploy, never here.
    assert function["Environment"]["Variables"] == {
        "CERTFLEET_CONFIG_SECRET": {"Ref": "SyncConfigSecret"}
    }
    secret = resources["SyncConfigSecret"]["Properties"]
    assert "SecretString" not in secret and "GenerateSecretString" not in secret
    # Retained, so named per stack *instance*: a delete-and-redeploy under the same stack name
    # gets a new name (the stack id's UUID) instead of colliding with the retained secret.
    assert resources["SyncConfigSecret"]["DeletionPolicy"] == "Retain"
    pattern, variables = secret["Name"]["Fn::Sub"]
    assert pattern == "${AWS::StackName}/sync-config-${StackUuid}"
    uuid_part = variables["StackUuid"]["Fn::Select"]
    assert uuid_part[0] == 0 and uuid_part[1]["Fn::Split"][1]["Fn::Select"][1] == {
        "Fn::Split": ["/", {"Ref": "AWS::StackId"}]
    }
    for name, parameter in template["Parameters"].items():
        assert not any(word in name.lower() for word in ("key", "secret", "password")), name
        assert "NoEcho" not in parameter
    alarms = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::CloudWatch::Alarm"]
    metrics = {
        (a["Namespace"] if isinstance(a["Namespace"], str) else "stack", a["MetricName"])
        for a in alarms
    }
    assert metrics == {
        ("AWS/Lambda", "Errors"),
        ("stack", "SyncOrderErrors"),
        ("stack", "FleetProblemNodes"),
    }
    filters = {
        name: r["Properties"]
        for name, r in resources.items()
        if r["Type"] == "AWS::Logs::MetricFilter"
    }
    assert set(filters) == {"SyncOrderErrorsFilter", "FleetProblemNodesFilter"}
    assert filters["SyncOrderErrorsFilter"]["FilterPattern"] == "{ $.error_count > 0 }"


def test_fleet_problem_nodes_filter_and_alarm(template: dict[str, Any]) -> None:
    """The sync log's fleet_problem_nodes (lambda/chalicelib/runner.py) becomes a metric,
    zero included (a healthy check clears the alarm), and more than zero raises the alarm."""
    resources = template["Resources"]
    metric_filter = resources["FleetProblemNodesFilter"]["Properties"]
    assert metric_filter["LogGroupName"] == {"Ref": "SyncLogGroup"}
    assert metric_filter["FilterPattern"] == "{ $.fleet_problem_nodes >= 0 }"
    (transformation,) = metric_filter["MetricTransformations"]
    assert transformation["MetricValue"] == "$.fleet_problem_nodes"
    assert transformation["MetricName"] == "FleetProblemNodes"
    alarm = resources["FleetProblemNodesAlarm"]["Properties"]
    assert alarm["MetricName"] == transformation["MetricName"]
    assert alarm["Namespace"] == transformation["MetricNamespace"]
    assert (alarm["ComparisonOperator"], alarm["Threshold"]) == ("GreaterThanThreshold", 0)
    assert alarm["Statistic"] == "Maximum"
    # a check comes once per fleet_check_interval: an hour without one changes nothing
    assert alarm["TreatMissingData"] == "ignore"
    assert alarm["AlarmActions"] == resources["SyncOrderErrorsAlarm"]["Properties"]["AlarmActions"]


def cfn_lint() -> str:
    beside = REPO / ".venv-lint" / "bin" / "cfn-lint"
    if beside.exists():
        return str(beside)
    found = subprocess.run(["which", "cfn-lint"], capture_output=True, text=True, check=False)
    if found.returncode != 0:
        missing(
            "cfn-lint is not installed: python3 -m venv .venv-lint && "
            ".venv-lint/bin/pip install cfn-lint"
        )
    return found.stdout.strip()


def test_cfn_lint_passes() -> None:
    result = subprocess.run(
        [cfn_lint(), str(TEMPLATE), str(NODE_POLICY_TEMPLATE)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@dataclass(frozen=True)
class Package:
    out: Path
    check: subprocess.CompletedProcess[str]


def packaging_python() -> str:
    """The Python 3.12 that scripts/package.sh packages with (the Lambda's runtime)."""
    found = subprocess.run(
        [str(REPO / "scripts" / "package.sh"), "--find-python"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if found.returncode == 3:
        missing(found.stderr.strip())
    assert found.returncode == 0, found.stderr
    return found.stdout.strip()


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Package:
    """scripts/package.sh --check: builds the zip; exits 1 at the end if template.yaml is stale."""
    packaging_python()
    out = tmp_path_factory.mktemp("package") / "package"
    result = subprocess.run(
        [str(REPO / "scripts" / "package.sh"), "--check", "--no-lint"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "CERTFLEET_BUILD_DIR": str(out)},
    )
    assert (out / "deployment.zip").exists(), result.stdout + result.stderr
    return Package(out, result)


def test_committed_template_is_what_make_package_writes(package: Package) -> None:
    assert package.check.returncode == 0, package.check.stdout + package.check.stderr
    assert (package.out / "template.yaml").read_bytes() == TEMPLATE.read_bytes()


def test_zip_holds_the_app_the_library_and_its_dependencies(package: Package) -> None:
    with zipfile.ZipFile(package.out / "deployment.zip") as archive:
        names = set(archive.namelist())
    for expected in (
        "app.py",
        "chalicelib/runner.py",
        "chalicelib/logformat.py",
        "certfleet/__init__.py",
        "certfleet/sync/__init__.py",
        "certfleet/bundle/__init__.py",
        "certfleet/store/s3.py",
        "chalice/app.py",
        "cryptography/__init__.py",
        "requests/__init__.py",
        "hcl/__init__.py",
    ):
        assert expected in names, expected
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert not [n for n in names if n.startswith(("tests/", "node_agent/", "boto3/"))]


def zip_names(package: Package) -> set[str]:
    with zipfile.ZipFile(package.out / "deployment.zip") as archive:
        return set(archive.namelist())


def test_zip_holds_no_test_tooling(package: Package) -> None:
    """The test tooling, one package (the sandbox CA, the process launcher and the
    store-tampering tool), stays out of the production artifact, and so does anything of
    the test suite."""
    names = zip_names(package)
    tooling = ("certfleet/sandbox/", "tests/")
    assert not [n for n in names if n.startswith(tooling)]
    assert not [n for n in names if n.rsplit("/", 1)[-1] in ("devstack.py", "tamper.py")]
    # Only the tooling is left out: the rest of the library is there (the CLI module that
    # starts the sandbox included: it imports the sandbox only when run).
    library = {n for n in names if n.startswith("certfleet/") and n.endswith(".py")}
    sources = {
        p.relative_to(REPO).as_posix()
        for p in (REPO / "certfleet").rglob("*.py")
        if not p.relative_to(REPO).as_posix().startswith(tooling)
    }
    assert library == sources
    assert "certfleet/cli/sandbox.py" in names


def test_zip_wheels_are_for_the_runtime_of_the_template(
    package: Package, template: dict[str, Any]
) -> None:
    assert template["Resources"]["Sync"]["Properties"]["Runtime"] == "python3.12"
    tags = {m.group(1) for n in zip_names(package) if (m := re.search(r"\.cpython-(\d+)-", n))}
    assert tags == {"312"}, tags


# Run in the packaging venv's Python, without site processing (the editable certfleet of the
# venv is invisible; only boto3 & co. come from site-packages): imports app.py and every module
# of the library from the unpacked zip, and reports what it loaded from where.
IMPORT_EVERYTHING = """
import importlib, json, pkgutil, sys
unpacked, site = sys.argv[1:3]
sys.path[:0] = [unpacked]
sys.path.append(site)
import app, certfleet, cryptography, hcl, requests, acme, josepy, dns
names = sorted(
    m.name for m in pkgutil.walk_packages(certfleet.__path__, "certfleet.")
    if not m.name.endswith(".__main__")
)
for name in names:
    importlib.import_module(name)
loaded = [m for m in list(sys.modules.values()) if getattr(m, "__file__", None)]
print(json.dumps({
    "python": list(sys.version_info[:2]),
    "app": [app.app.app_name, sorted(app.app.handler_map)],
    "modules": names,
    "outside": sorted(
        m.__name__ for m in loaded
        if m.__name__.split(".")[0] in ("app", "chalicelib", "certfleet", "cryptography", "hcl",
                                         "requests", "acme", "josepy", "dns", "chalice")
        and not m.__file__.startswith(unpacked)
    ),
    "tooling": sorted(
        m for m in sys.modules
        if m.startswith("certfleet.sandbox")
    ),
}))
"""


def test_zip_imports_in_a_fresh_interpreter(package: Package, tmp_path: Path) -> None:
    unpacked = tmp_path / "zip"
    with zipfile.ZipFile(package.out / "deployment.zip") as archive:
        archive.extractall(unpacked)
    # The interpreter that built the zip: Python 3.12, whose wheels the zip holds.
    python = REPO / ".venv-package" / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    result = subprocess.run(
        [str(python), "-S", "-c", IMPORT_EVERYTHING, str(unpacked), site],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["python"] == [3, 12]
    assert report["app"] == ["certfleet-sync", ["http", "sync"]]
    for module in (
        "certfleet.sync.engine",
        "certfleet.sync.runner",
        "certfleet.store.s3",
        "certfleet.apiv3.client",
        "certfleet.acme.flow",
        "certfleet.acme.dns.rfc2136",
        "certfleet.acme.dns.route53",
        "certfleet.bundle.envelope",
        "certfleet.config.sync",
        "certfleet.cli.sandbox",
        "certfleet.serve.api",
        "certfleet.registry.registry",
    ):
        assert module in report["modules"], module
    assert report["outside"] == []
    assert report["tooling"] == []
