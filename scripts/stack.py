"""``make up`` / ``make down``: the demo's local stack, left running to explore by hand.

``up`` starts SeaweedFS (S3) and the APIv3 sandbox on 127.0.0.1 with their data in
``.stack/up/``, writes a sync config with one cluster (``web``) and two agent configs
(``server1``, ``server2``), records the pids and ports in ``.stack/up/state.json`` and
prints the commands to try. ``down`` stops both servers (the files stay until the next
``up``). ``up`` while the stack runs prints the same instructions again.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from certfleet.sandbox.devstack import (  # noqa: E402
    Sandbox,
    SeaweedFS,
    StackError,
    find_weed,
    pid_runs,
    stop_pid,
    write_private,
)

WORK = REPO / ".stack" / "up"
STATE = WORK / "state.json"
BIN = Path(sys.executable).parent
CLUSTER = "web"
SERVERS = ("server1", "server2")
PREFIX = "dev"


def read_state() -> dict[str, Any] | None:
    try:
        state: dict[str, Any] = json.loads(STATE.read_text())
    except (OSError, ValueError):
        return None
    return state


def running(state: dict[str, Any]) -> bool:
    return pid_runs(state["seaweedfs"]["pid"], "weed") and pid_runs(
        state["sandbox"]["pid"], "certfleet.sandbox"
    )


def certfleet(*args: str, stdout_to: Path | None = None) -> None:
    command = [str(BIN / "certfleet"), *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        raise StackError("certfleet " + args[0], done.stderr.strip() or f"exit {done.returncode}")
    if stdout_to is not None:
        write_private(stdout_to, done.stdout)


def up() -> int:
    state = read_state()
    if state is not None and running(state):
        print("the stack is already up (`make down` stops it):")
        print_guide(state)
        return 0
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    store = SeaweedFS(find_weed(), WORK / "seaweedfs", bucket="certfleet")
    provider = Sandbox(WORK / "sandbox" / "data")
    try:
        store.start()
        provider.start()
        configure(store, provider)
    except BaseException:
        provider.stop()
        store.stop()
        raise
    state = {
        "seaweedfs": {
            "pid": store.pid,
            "ports": store.ports,
            "endpoint": store.endpoint,
            "bucket": store.bucket,
            "env": store.env,
            "log": str(store.log_path),
        },
        "sandbox": {
            "pid": provider.pid,
            "port": provider.port,
            "url": provider.url,
            "api_key": provider.api_key,
            "log": str(provider.log_path),
        },
        "store": f"s3://{store.bucket}/{PREFIX}",
        "sync_config": str(WORK / "sync.conf"),
        "agent_configs": [str(WORK / f"{server}.conf") for server in SERVERS],
    }
    fd = os.open(STATE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # holds the S3 keys
    with os.fdopen(fd, "w") as handle:
        json.dump(state, handle, indent=2)
    write_env_file(state)
    print_guide(state)
    return 0


def configure(store: SeaweedFS, provider: Sandbox) -> None:
    """A sync config with the cluster ``web``, and one agent config per server."""
    sync_conf = WORK / "sync.conf"
    certfleet(
        "init", "--config", str(sync_conf), "--store", f"s3://{store.bucket}/{PREFIX}",
        "--store-endpoint", store.endpoint, "--api-endpoint", provider.url,
        "--api-key", provider.api_key,
    )  # fmt: skip
    stanza = WORK / f"cluster-{CLUSTER}.conf"
    certfleet("clusters", "add", CLUSTER, "--config", str(sync_conf), stdout_to=stanza)
    (WORK / "sandbox-root.pem").write_bytes(provider.root_pem)
    for server in SERVERS:
        write_private(
            WORK / f"{server}.conf",
            f'store          = "s3://{store.bucket}/{PREFIX}"\n'
            f'store_endpoint = "{store.endpoint}"\n'
            f'state_dir      = "{WORK / server}"\n' + stanza.read_text(),
        )


def write_env_file(state: dict[str, Any]) -> None:
    lines = [
        f"export {name}={shlex.quote(value)}" for name, value in state["seaweedfs"]["env"].items()
    ]
    lines.append(f"export PATH={shlex.quote(str(BIN))}:$PATH")
    path = WORK / "env.sh"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write("\n".join(lines) + "\n")


def print_guide(state: dict[str, Any]) -> None:
    rel = os.path.relpath(WORK, Path.cwd())
    conf = f"{rel}/sync.conf"
    bucket, prefix = state["seaweedfs"]["bucket"], PREFIX
    sandbox = state["sandbox"]
    www = f"{rel}/server1/orders/www.example.com"
    listing = (
        "import boto3; s3 = boto3.client('s3'); "
        f"[print(o['Key'], o['Size']) for o in s3.list_objects_v2(Bucket='{bucket}', "
        f"Prefix='{prefix}/').get('Contents', [])]"
    )
    print(
        f"""
certfleet local stack (all on 127.0.0.1; files in {rel}/):
  S3 store (SeaweedFS)  {state["seaweedfs"]["endpoint"]}  bucket {bucket}, prefix {prefix}/
  APIv3 sandbox         {sandbox["url"]}  (TEST DOUBLE of SSLMate, key {sandbox["api_key"]})
  sync config           {conf}   (cluster {CLUSTER!r})
  agent configs         {rel}/server1.conf, {rel}/server2.conf
  pids and ports        {rel}/state.json

In a shell (the S3 keys of the local store, and the venv's commands on PATH):
  source {rel}/env.sh

Order a certificate, publish it, install it on a server:
  certfleet add --config {conf} www.example.com example.com
  certfleet list --config {conf}
  certfleet sync --once --config {conf}
  certfleet-agent --config {rel}/server1.conf --once
  ls -l {www}/
  openssl verify -CAfile {rel}/sandbox-root.pem -untrusted {www}/rsa.chain.pem {www}/rsa.crt.pem

Look at the store (what anyone with read access sees: hashes and ciphertext):
  python -c "{listing}"

Then: certfleet edit --config {conf} --add-dnsname api.example.com www.example.com,
certfleet rm --config {conf} www.example.com, and sync and run an agent again.
Stop it all with: make down
"""
    )


def down() -> int:
    state = read_state()
    if state is None:
        print("the stack is not up (no .stack/up/state.json)")
        return 0
    stopped = [
        name
        for name, expect in (("sandbox", "certfleet.sandbox"), ("seaweedfs", "weed"))
        if stop_pid(state[name]["pid"], expect)
    ]
    STATE.unlink()
    print(f"stopped: {', '.join(stopped) or 'nothing was running'}; files kept in .stack/up/")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/stack.py", description=__doc__)
    parser.add_argument("action", choices=("up", "down"))
    args = parser.parse_args(argv)
    try:
        return up() if args.action == "up" else down()
    except StackError as err:
        print(f"stack: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
