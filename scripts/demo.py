"""``make demo``: the whole of certfleet on this machine, explained step by step.

It starts a local S3 store (SeaweedFS) and the APIv3 sandbox (a test double of SSLMate) on
127.0.0.1, writes a sync config and a cluster, orders two certificates, runs the sync
through the Lambda handler (``lambda/app.py`` driven by ``chalice.test.Client``, the
config served by a loopback stand-in for Secrets Manager), runs two node agents (two
state directories standing for two servers), and checks what they installed. Everything
lives in ``.stack/demo/`` (emptied at start, so the demo can be re-run); every server it
started is stopped at the end, also after a failure or Ctrl-C. Exit status 0 when every
step worked, 1 otherwise.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # certfleet, when the venv's editable install is missing

from certfleet.sandbox.devstack import (  # noqa: E402
    Sandbox,
    SeaweedFS,
    SecretsManager,
    StackError,
    find_weed,
    write_private,
)

WORK = REPO / ".stack" / "demo"
BIN = Path(sys.executable).parent
LAMBDA_DIR = REPO / "lambda"
# CERTFLEET_CONFIG_SECRET in lambda/.chalice/config.json: the name of the secret, not a secret
SECRET_NAME = "certfleet-sync-config"  # noqa: S105
CLUSTER = "web"
SERVERS = ("server1", "server2")
MAX_INVOCATIONS = 20  # the test client gives each invocation 3 s; the sync resumes


class DemoFailed(Exception):
    """A step did not do what it should; the message says what."""


class Stopped(BaseException):
    """SIGTERM or SIGHUP: unwind like Ctrl-C, through every ``finally``."""


def show(text: str = "") -> None:
    print(text, flush=True)


def heading(number: int, title: str, *explanation: str) -> None:
    show()
    show(f"== {number}. {title}")
    for line in explanation:
        show(f"   {line}")


def shown_path(path: Path | str) -> str:
    text = str(path)
    return text.replace(str(REPO) + "/", "") if text.startswith(str(REPO)) else text


def run(
    command: Sequence[str],
    *,
    env: dict[str, str],
    stdout_to: Path | None = None,
    only: str | None = None,
) -> str:
    """Run a command, show it and its output (only the lines containing ``only``, when
    given; all of it on a failure), fail the demo on a non-zero exit."""
    words = [shown_path(word) for word in command]
    words[0] = Path(command[0]).name
    redirect = f" > {shown_path(stdout_to)}" if stdout_to else ""
    show(f"   $ {shlex.join(words)}{redirect}")
    done = subprocess.run(
        list(command), env=env, capture_output=True, text=True, timeout=120, check=False
    )
    if stdout_to is not None:
        write_private(stdout_to, done.stdout)
    output = (done.stderr if stdout_to else done.stdout + done.stderr).rstrip()
    for line in output.splitlines():
        if only is None or only in line or done.returncode != 0:
            show(f"     {line}")
    if done.returncode != 0:
        raise DemoFailed(f"{words[0]} exited with status {done.returncode}")
    return done.stdout


def load_lambda_app() -> ModuleType:
    """``lambda/app.py``, imported as the Lambda runtime would (its directory on sys.path)."""
    import logging

    sys.path.insert(0, str(LAMBDA_DIR))
    spec = importlib.util.spec_from_file_location("certfleet_lambda_app", LAMBDA_DIR / "app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    logging.getLogger().setLevel(logging.WARNING)  # its JSON logs: warnings and errors only
    return module


@contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def invoke_sync_lambda(config_text: str, s3_env: dict[str, str]) -> list[dict[str, Any]]:
    """Invoke the scheduled handler until a run reports ``complete``; returns the summaries."""
    from chalice.test import Client

    app = load_lambda_app()
    summaries: list[dict[str, Any]] = []
    with SecretsManager({SECRET_NAME: config_text}) as secrets_manager:
        env = {**s3_env, "AWS_ENDPOINT_URL_SECRETS_MANAGER": secrets_manager.endpoint}
        with (
            environment(env),
            Client(app.app, project_dir=str(LAMBDA_DIR), stage_name="prod") as client,
        ):
            event = client.events.generate_cw_event(
                source="aws.events", detail_type="Scheduled Event", detail={}, resources=[]
            )
            for _ in range(MAX_INVOCATIONS):
                summary: dict[str, Any] = client.lambda_.invoke("sync", event).payload
                summaries.append(summary)
                if summary["errors"]:
                    raise DemoFailed(f"the sync reported errors: {summary['errors']}")
                if summary["complete"]:
                    return summaries
    raise DemoFailed(f"the sync was still not complete after {MAX_INVOCATIONS} invocations")


def installed_files(state_dir: Path) -> dict[str, list[Path]]:
    """Order directory name -> the files in it (following the ``orders/<name>`` symlink)."""
    orders = state_dir / "orders"
    if not orders.is_dir():
        return {}
    return {
        entry.name: sorted(p for p in entry.resolve().iterdir() if p.is_file())
        for entry in sorted(orders.iterdir())
    }


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@contextmanager
def started_servers(work: Path, stopped: str) -> Iterator[list[Any]]:
    """An emptied ``work`` directory and the list of the servers the demo starts: each is
    stopped at the end, last first, also after a failure or Ctrl-C (``stopped`` says so)."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    servers: list[Any] = []
    try:
        yield servers
    finally:
        show()
        show("== Stop what the demo started")
        for server in reversed(servers):
            try:
                server.stop()
            except StackError as err:
                show(f"   {err}")
        show(f"   {stopped}; the files stay in {shown_path(work)}/")


def demo() -> None:
    env = dict(os.environ)
    sync_conf = WORK / "sync.conf"
    stanza = WORK / f"cluster-{CLUSTER}.conf"
    with started_servers(WORK, "SeaweedFS and the sandbox are stopped") as servers:
        heading(
            1,
            "Start a local object store and a local certificate provider",
            "SeaweedFS stands in for Amazon S3; the sandbox is a TEST DOUBLE of SSLMate's APIv3",
            "with its own throw-away test CA. Both listen on 127.0.0.1 only, data in .stack/demo/.",
        )
        store = SeaweedFS(find_weed(), WORK / "seaweedfs", bucket="certfleet")
        provider = Sandbox(WORK / "sandbox" / "data")
        servers += [store, provider]
        started = time.monotonic()
        store.start()
        provider.start()
        show(f"   S3 store (SeaweedFS weed mini): {store.endpoint}, bucket {store.bucket!r}")
        show(f"   APIv3 sandbox:                  {provider.url} (API key {provider.api_key!r})")
        show(f"   both up in {time.monotonic() - started:.1f} s")
        env.update(store.env)  # the agents' S3 credentials: read access to the bucket
        root = WORK / "sandbox-root.pem"
        root.write_bytes(provider.root_pem)
        steps(env, store, provider, sync_conf, stanza, root)


def steps(
    env: dict[str, str],
    store: SeaweedFS,
    provider: Sandbox,
    sync_conf: Path,
    stanza: Path,
    root: Path,
) -> None:
    certfleet, agent = str(BIN / "certfleet"), str(BIN / "certfleet-agent")
    store_url = f"s3://{store.bucket}/demo"

    heading(
        2,
        "Write the sync config",
        "The sync config holds the provider API key and a new publisher signing key (Ed25519).",
        "In AWS it lives in Secrets Manager; only the sync ever reads it.",
    )
    run(
        [
            certfleet, "init", "--config", str(sync_conf), "--store", store_url,
            "--store-endpoint", store.endpoint, "--api-endpoint", provider.url,
            "--api-key", provider.api_key,
        ],
        env=env,
    )  # fmt: skip

    heading(
        3,
        f"Add the cluster {CLUSTER!r} and configure two servers for it",
        "A cluster is a group of servers that share certificates. Its secret encrypts the",
        "private keys; the stanza printed on stdout is what each of its servers needs.",
    )
    run(
        [certfleet, "clusters", "add", CLUSTER, "--config", str(sync_conf)],
        env=env,
        stdout_to=stanza,
    )
    for server in SERVERS:
        text = (
            f'store          = "{store_url}"\n'
            f'store_endpoint = "{store.endpoint}"\n'
            f'state_dir      = "{WORK / server}"\n' + stanza.read_text()
        )
        write_private(WORK / f"{server}.conf", text)
    show(f"   {shown_path(WORK / 'server1.conf')} (secret elided):")
    for line in (WORK / "server1.conf").read_text().splitlines():
        shown = line.split('"')[0] + '"…"' if line.strip().startswith("secret") else line
        show(f"     {shown}")

    heading(
        4,
        "Order two certificates at the provider",
        "One for two names, one wildcard. The order is only recorded at the provider;",
        "no key exists yet.",
    )
    run([certfleet, "add", "--config", str(sync_conf), "www.example.com", "example.com"], env=env)
    run([certfleet, "add", "--config", str(sync_conf), "*.example.com"], env=env)

    heading(
        5,
        "Run the sync, as the scheduled AWS Lambda does",
        "lambda/app.py's handler, through chalice.test.Client, with the sync config served by a",
        "local stand-in for Secrets Manager. It makes each key, stores it encrypted, sends the",
        "CSR, collects the certificate, and publishes signed, encrypted objects to S3.",
    )
    show("   invoke lambda/app.py sync (scheduled event), until a run reports complete")
    summaries = invoke_sync_lambda(sync_conf.read_text(), store.env)
    published = sum(s["certificates_published"] for s in summaries)
    last = summaries[-1]
    show(
        f"     {len(summaries)} invocation(s): {published} certificate(s) published, "
        f"head generation {last['generation']}, {sum(s['store_writes'] for s in summaries)} "
        "store writes"
    )
    if published != 2:
        raise DemoFailed(f"expected 2 certificates published, got {published}")
    keys = list_store(store)
    show(f"   the store now holds {len(keys)} objects, none named after an order or a DNS name:")
    for key in keys[:8]:
        show(f"     {key}")
    if len(keys) > 8:
        show(f"     … and {len(keys) - 8} more")

    heading(
        6,
        "Run the node agent on both servers, once",
        "Each agent reads only its cluster's objects, checks the signature and the hashes,",
        "decrypts with the cluster secret and installs the files.",
    )
    for server in SERVERS:
        run([agent, "--config", str(WORK / f"{server}.conf"), "--once"], env=env, only="poll done")

    heading(7, "What was installed", "Each order gets a directory of ready-to-use files:")
    found = {server: installed_files(WORK / server) for server in SERVERS}
    for server in SERVERS:
        show(f"   {shown_path(WORK / server)}/orders/")
        for order, files in found[server].items():
            show(f"     {order}/  {' '.join(f.name for f in files)}")
    expected = {"www.example.com", "_.example.com"}
    for server in SERVERS:
        if set(found[server]) != expected:
            raise DemoFailed(f"{server} has orders {sorted(found[server])}, not {sorted(expected)}")

    www = WORK / SERVERS[0] / "orders" / "www.example.com" / "rsa.crt.pem"
    show("   The certificate of the order www.example.com covers both its names:")
    run(["openssl", "x509", "-in", str(www), "-noout", "-ext", "subjectAltName"], env=env)

    heading(
        8,
        "Check every certificate chain with openssl",
        "Against the sandbox's test root (saved as .stack/demo/sandbox-root.pem).",
    )
    for server in SERVERS:
        for order in sorted(found[server]):
            directory = WORK / server / "orders" / order
            run(
                [
                    "openssl", "verify", "-CAfile", str(root),
                    "-untrusted", str(directory / "rsa.chain.pem"), str(directory / "rsa.crt.pem"),
                ],
                env=env,
            )  # fmt: skip

    heading(
        9,
        "Both servers hold the same key and certificate",
        "SHA-256 of the installed files (the key never left the sync unencrypted):",
    )
    for order in sorted(expected):
        hashes = {}
        for server in SERVERS:
            directory = WORK / server / "orders" / order
            hashes[server] = (sha256(directory / "rsa.key.pem"), sha256(directory / "rsa.crt.pem"))
            show(
                f"   {server} {order}: key {hashes[server][0][:16]}…  "
                f"certificate {hashes[server][1][:16]}…"
            )
        if len(set(hashes.values())) != 1:
            raise DemoFailed(f"the servers hold different files for {order}")
    show("   identical on both servers")


def list_store(store: SeaweedFS) -> list[str]:
    import boto3

    s3 = boto3.client(
        "s3",
        endpoint_url=store.endpoint,
        aws_access_key_id=store.access_key,
        aws_secret_access_key=store.secret_key,
        region_name="us-east-1",
    )
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=store.bucket, Prefix="demo/v1/")
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


def on_signal(signum: int, frame: FrameType | None) -> None:
    raise Stopped(signal.Signals(signum).name)


def run_demo(
    body: Callable[[], None],
    name: str,
    failures: tuple[type[BaseException], ...],
    *closing: str,
) -> int:
    """Run ``body`` as the demo ``name``: SIGTERM/SIGHUP unwind like Ctrl-C (130), an
    exception of ``failures`` is reported as the demo's failure (1); on success the time
    taken and the ``closing`` lines are shown (0)."""
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with it ignored
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, on_signal)
    started = time.monotonic()
    try:
        body()
    except (KeyboardInterrupt, Stopped):
        show("\ndemo interrupted; everything it started is stopped")
        return 130
    except failures as err:
        show(f"\ndemo FAILED: {err}")
        return 1
    show()
    show(f"{name} finished in {time.monotonic() - started:.1f} s: every step worked.")
    for line in closing:
        show(line)
    return 0


def main() -> int:
    return run_demo(
        demo,
        "demo",
        (DemoFailed, StackError),
        "Next: `make up` leaves the same stack running for you to explore (README.md).",
    )


if __name__ == "__main__":
    sys.exit(main())
