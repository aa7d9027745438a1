"""SIGKILL at random instants while ``certfleet-agent --once`` installs 40 orders, 50 times.

Each round publishes a new certificate for all 40 orders (every fifth round also starts from
an empty state directory and no copies), runs ``python -m node_agent --once`` and kills it
after a seeded random delay that falls inside its install window. After every kill:

- every ``orders/<name>`` that exists points at a complete version whose key matches its
  certificate (and whose chained and combined files agree with them), and so does every
  version directory with a final name;
- the ``files`` copies: ``combined`` (written as one file) always holds a matching pair, and
  a certificate copy never exists without its key copy (keys are written first);

then a rerun exits 0 with every order installed at the newest serial and every copy
matching. ECDSA and a file:// store keep the 50 rounds within about a minute.
"""

from __future__ import annotations

import random
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_private_key,
)

if TYPE_CHECKING:
    from tests.plugins.publisher import Publisher

ORDERS = 40
ROUNDS = 50
FRESH_EVERY = 5
AGENT = [sys.executable, "-m", "node_agent"]


def spki_of_key(pem: bytes) -> bytes:
    key = load_pem_private_key(pem, password=None)
    return key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def spki_of_cert(pem: bytes) -> bytes:
    leaf = x509.load_pem_x509_certificates(pem)[0]
    return leaf.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def check_pair(directory: Path) -> str:
    """Assert the version directory is complete and consistent; return its leaf's serial."""
    key = (directory / "ecdsa.key.pem").read_bytes()
    crt = (directory / "ecdsa.crt.pem").read_bytes()
    chain = (directory / "ecdsa.chain.pem").read_bytes()
    assert spki_of_key(key) == spki_of_cert(crt), f"{directory}: key and certificate differ"
    assert (directory / "ecdsa.chained.pem").read_bytes() == crt + chain
    assert (directory / "ecdsa.combined.pem").read_bytes() == key + crt + chain
    assert (directory / "ecdsa.p12").stat().st_size > 0
    return format(x509.load_pem_x509_certificate(crt).serial_number, "x")


def check_after_kill(state: Path, copies: Path) -> None:
    orders = state / "orders"
    for link in orders.iterdir() if orders.exists() else []:
        if link.name.startswith("."):
            continue  # a half-made symlink of the switch, removed at the next start
        assert link.is_symlink(), link
        check_pair(link.resolve(strict=True))
    versions = state / "versions"
    for order in versions.iterdir() if versions.exists() else []:
        for version in order.iterdir():
            if not version.name.startswith("."):  # temp directories are incomplete by design
                check_pair(version)
    for combined in copies.glob("*.pem"):
        data = combined.read_bytes()
        assert spki_of_key(data) == spki_of_cert(data), f"{combined}: key and certificate differ"
    for crt in copies.glob("*.crt"):
        assert crt.with_suffix(".key").exists(), f"{crt} exists without its key"


def check_complete(state: Path, copies: Path, pub: Publisher) -> None:
    for index in range(ORDERS):
        name = f"o{index}.example"
        serial = check_pair((state / "orders" / name).resolve(strict=True))
        assert serial == pub.bundles[name].serial, f"{name}: not the newest certificate"
        key = (copies / f"{name}.key").read_bytes()
        assert spki_of_key(key) == spki_of_cert((copies / f"{name}.crt").read_bytes())
        assert (copies / f"{name}.pem").read_bytes().startswith(key)


def run_agent(config: Path, kill_after: float | None) -> subprocess.CompletedProcess[bytes]:
    process = subprocess.Popen(
        [*AGENT, "--config", str(config), "--once"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    if kill_after is None:
        _, stderr = process.communicate(timeout=60)
    else:
        time.sleep(kill_after)
        process.kill()
        _, stderr = process.communicate(timeout=60)
    return subprocess.CompletedProcess(process.args, process.returncode, b"", stderr)


def test_sigkill_at_random_instants(
    tmp_path: Path, make_publisher: Callable[..., Publisher]
) -> None:
    (tmp_path / "store").mkdir()
    pub = make_publisher(f"file://{tmp_path}/store")
    state, copies = tmp_path / "state", tmp_path / "copies"
    config = tmp_path / "agent.conf"
    config.write_text(
        f'store = "{pub.store.url}"\nstate_dir = "{state}"\n'
        + pub.cluster_stanza()
        + f'default {{\n  files {{\n    key = "{copies}/${{ORDER_NAME}}.key"\n'
        f'    crt = "{copies}/${{ORDER_NAME}}.crt"\n'
        f'    combined = "{copies}/${{ORDER_NAME}}.pem"\n  }}\n}}\n'
    )
    # How long a full run takes here: the kills fall between start-up and the end. The
    # machine's load changes during the 50 rounds, so a run that ends before its kill shortens
    # the window for the next ones.
    for index in range(ORDERS):
        pub.issue(f"o{index}.example")
    pub.publish()
    started = time.monotonic()
    assert run_agent(config, None).returncode == 0
    full = time.monotonic() - started
    killed_mid_run = 0
    for round_number in range(ROUNDS):
        rng = random.Random(round_number)
        if round_number % FRESH_EVERY == 0:
            shutil.rmtree(state)
            shutil.rmtree(copies, ignore_errors=True)
        for index in range(ORDERS):
            pub.issue(f"o{index}.example")
        pub.publish()
        killed = run_agent(config, rng.uniform(0.3 * full, 1.1 * full))
        if killed.returncode == -9:
            killed_mid_run += 1
        else:  # the run beat the kill: runs got faster (less load), so aim earlier
            full *= 0.85
        check_after_kill(state, copies)
        rerun = run_agent(config, None)
        assert rerun.returncode == 0, rerun.stderr.decode()
        check_complete(state, copies, pub)
    assert killed_mid_run >= ROUNDS // 2  # most kills landed before the run ended
