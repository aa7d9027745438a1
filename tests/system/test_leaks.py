"""No secret leaks: a full cycle at DEBUG, with faults on both sides, leaves no secret behind.

The cycle: orders made on the sandbox, which is then restarted with a 30% fault rate;
sync runs in-process (one loses its store mid-run) and as ``certfleet sync --once -vv``
subprocesses; agents poll in-process and as ``certfleet-agent --once --verbose``, against
a genuine publication, a tampered bundle, with the wrong secret and with the store down.
Everything a human or a log pipeline could see is collected: every log record formatted
with its traceback, every exception text, every summary and poll result, the
subprocesses' stdout and stderr, the agent's state files, its ``--status`` output (text
and JSON), its metrics file and its acks (opened). None of it may contain the API key, a cluster
secret (its base64 part, or its raw bytes in hex), the signing key, or any private key
material (PEM body lines, base64 or hex of the key DER).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import random
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Callable

import pytest

from certfleet.bundle import ClusterSecret, FormatError, open_ack, open_pending
from certfleet.config import parse_agent_config
from certfleet.sandbox.tamper import Tamperer
from certfleet.sync.layout import pending_key
from certfleet.sync.state import read_bytes
from node_agent.agent import Agent
from tests.plugins.faults import Ledger, agent_config_text, cluster_stanza
from tests.plugins.sandbox import Sandbox
from tests.plugins.seaweedfs import SeaweedFS
from tests.plugins.sync_world import World, make_world, sync_config_text

FAULT_RATE = 0.3
SEED = 7
CHUNK = 20  # length of the pieces of key material searched for


class Capture(logging.Handler):
    """Keeps every record, formatted with its traceback."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def captured() -> Iterator[Capture]:
    handler = Capture()
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def needles_of_key(pem: bytes) -> list[str]:
    """Pieces of a private key that must never show: PEM body lines, base64/hex of DER."""
    body = "".join(line for line in pem.decode().splitlines() if not line.startswith("-----"))
    der = base64.b64decode(body)
    found = [body[i : i + CHUNK] for i in range(0, len(body) - CHUNK, CHUNK)]
    found += [der.hex()[i : i + CHUNK] for i in range(0, len(der.hex()) - CHUNK, CHUNK * 4)]
    return found


def secret_needles(world: World, api_key: str) -> dict[str, str]:
    needles = {api_key: "the API key"}
    for secret in world.secrets:
        needles[secret.export().split(":", 1)[1]] = f"cluster secret {secret.id}"
        needles[secret.key.hex()] = f"cluster secret {secret.id} (hex)"
        needles[base64.b64encode(secret.key).decode().rstrip("=")] = f"secret {secret.id} b64"
    signing = world.signing_key.export().split(":", 1)[1]
    needles[signing] = "the signing key"
    for name, bundle in world.published().bundles.items():
        for piece in needles_of_key(bundle.private_key_pem):
            needles[piece] = f"the private key of {name}"
    state = world.state()
    for name, record in state.pending.items():
        data = read_bytes(world.store, pending_key(world.cluster, record.object), max_bytes=1 << 24)
        pending = open_pending(
            data, cluster=world.cluster, order_name=name, secrets=[world.sync_keys().current]
        )
        for piece in needles_of_key(pending.private_key_pem):
            needles[piece] = f"the pending key of {name}"
    return needles


def run(command: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(
        command, capture_output=True, text=True, env=env, timeout=120, check=False
    )
    return f"$ {' '.join(command)} -> {done.returncode}\n{done.stdout}\n{done.stderr}"


@pytest.mark.fault
def test_a_full_cycle_at_debug_with_faults_leaks_no_secret(
    make_sandbox: Callable[..., Sandbox],
    s3_url: str,
    seaweedfs: SeaweedFS,
    tmp_path: Path,
    captured: Capture,
    faults: Ledger,
) -> None:
    api_key = "cfk-" + secrets.token_urlsafe(24)
    sandbox = make_sandbox(api_key=api_key)
    world = make_world(sandbox, s3_url, seaweedfs.endpoint)
    world.secrets = (ClusterSecret.generate("k2"), ClusterSecret.generate("k1"))
    names = [world.add(f"leak{i}.{world.cluster}.example") for i in range(3)]
    sandbox.options += ["--fault-rate", str(FAULT_RATE), "--seed", str(SEED)]
    sandbox.stop()
    sandbox.start()
    corpus: list[str] = []
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}

    # the sync, in-process: faulty provider, then the store lost mid-run
    for _ in range(3):
        corpus.append(json.dumps(world.sync().as_dict()))

    def outage(step: str) -> None:
        if step == "listed" and seaweedfs.running:
            seaweedfs.stop()
            faults.injected()

    try:
        corpus.append(json.dumps(world.sync(checkpoint=outage).as_dict()))
    finally:
        seaweedfs.start()
    world.offset += world.config().lease_duration + 1
    config = tmp_path / "sync.conf"
    config.write_text(sync_config_text(world).replace('lease_duration = "60s"', ""))
    for flags in (["-vv"], ["-vv", "--json"]):
        corpus.append(
            run(
                [
                    sys.executable,
                    "-m",
                    "certfleet",
                    "sync",
                    "--once",
                    *flags,
                    "--config",
                    str(config),
                ],
                env,
            )
        )
    for _ in range(3):  # until everything is published despite the faults
        if set(world.published().entries) == set(names):
            break
        world.offset += world.config().lease_duration + 1
        corpus.append(json.dumps(world.sync().as_dict()))
    corpus.append(repr(world.config()))
    needles = secret_needles(world, api_key)  # before the store is tampered with
    faults.injected(sandbox.log_path.read_text().count("injecting fault"))

    # the agents: genuine, tampered bundle, wrong secret, store down
    stanza = cluster_stanza(world.cluster, world.secrets, [world.signing_key.public_key()])
    metrics = tmp_path / "metrics.prom"
    extra = f'metrics_file = "{metrics}"\n'
    text = agent_config_text(
        world.store.url, tmp_path / "state", stanza, endpoint=seaweedfs.endpoint, extra=extra
    )
    agent_conf = tmp_path / "agent.conf"
    agent_conf.write_text(text)
    config_obj = parse_agent_config(text, str(agent_conf))
    corpus.append(repr(config_obj))
    result = Agent(config_obj).poll_once()
    corpus += [str(p) for p in result.problems] + [repr(result)]
    tool = Tamperer(world.store, random.Random(SEED))
    tool.flip(tool.pick(world.cluster, "bundle"))
    faults.injected()
    wrong = cluster_stanza(
        world.cluster, (ClusterSecret.generate("k2"),), [world.signing_key.public_key()]
    )
    for variant in (
        text,
        agent_config_text(
            world.store.url, tmp_path / "w", wrong, endpoint=seaweedfs.endpoint, extra=extra
        ),
        agent_config_text(
            world.store.url, tmp_path / "d", stanza, endpoint="http://127.0.0.1:9", extra=extra
        ),
    ):
        agent_conf.write_text(variant)
        corpus.append(run([sys.executable, "-m", "node_agent", "--once", "--verbose",
                           "--config", str(agent_conf)], env))  # fmt: skip
        for flags in (["--status"], ["--status", "--json"]):
            status = run([sys.executable, "-m", "node_agent", *flags, "--config", str(agent_conf)],
                         env)  # fmt: skip
            assert " -> 2\n" not in status.partition("\n")[0] + "\n", status  # not a usage error
            corpus.append(status)
        assert metrics.exists(), "the agent wrote no metrics file"
        corpus.append(metrics.read_text())
        try:
            polled = Agent(parse_agent_config(variant, str(agent_conf))).poll_once()
            corpus += [str(p) for p in polled.problems] + [repr(polled)]
        except Exception as err:
            corpus.append(f"{type(err).__name__}: {err!r} {err}")
    faults.injected(2)
    acks = Tamperer(world.store, random.Random(0)).objects(world.cluster, "ack")
    assert acks, "the agents wrote no ack"
    for key in acks:
        try:  # the agents' acks, opened: what the sync (or an operator) would read
            ack = open_ack(tool.read(key), cluster=world.cluster, node_id=key.rsplit("/", 1)[1],
                           secrets=world.secrets)  # fmt: skip
            corpus.append(repr(ack))
        except FormatError as err:
            corpus.append(str(err))
    for path in tmp_path.rglob("*"):  # the agents' state files and node ids (not the sandbox's)
        if path.name.startswith("sandbox") or any(p.startswith("sandbox") for p in path.parts):
            continue
        if path.is_file() and not path.is_symlink() and "versions" not in path.parts:
            if path.suffix != ".pem" and path.name not in ("sync.conf", "agent.conf"):
                corpus.append(path.read_text(errors="replace"))
    corpus += captured.lines

    text_all = "\n".join(corpus)
    flat = text_all.replace("\n", "")
    # the check means something only if both halves really logged at DEBUG (the line count
    # varies with timing, so look for each program's debug lines rather than counting)
    debug_from = {
        line.split()[1].split(".")[0] for line in captured.lines if line.startswith("DEBUG")
    }
    assert {"certfleet", "node_agent"} <= debug_from, f"the cycle logged too little: {debug_from}"
    faults.tried(len(needles))
    leaks = sorted(
        {what for needle, what in needles.items() if needle in text_all or needle in flat}
    )
    assert leaks == [], f"leaked: {leaks}"
