"""The node agent against a real S3 server (SeaweedFS), with publications from the publisher plugin.

Each test gets a fresh store prefix and state directory, publishes with
``tests.plugins.publisher`` (the format code, no sync engine), runs ``Agent.poll_once`` and
checks what reached the disk.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_private_key,
    pkcs12,
)

from certfleet.bundle import SigningKey, peek_head
from certfleet.config import AgentConfig, parse_agent_config
from node_agent.agent import Agent

if TYPE_CHECKING:  # registered in conftest.py, so that pytest rewrites its asserts
    from tests.plugins.publisher import Publisher

HOOK_SCRIPT = (
    'echo "$CERTFLEET_UPDATED_ORDERS|$CERTFLEET_REMOVED_ORDERS|$CERTFLEET_GENERATION" >> "$1"\n'
)


def hook_command(log: Path) -> str:
    """A command that appends its CERTFLEET_* environment to ``log``, one line per run."""
    script = log.parent / "hook.sh"
    script.write_text(HOOK_SCRIPT)
    return f"/bin/sh {script} {log}"


class World:
    """One store prefix, one publisher, and agents over one state directory."""

    def __init__(self, publisher: Publisher, tmp: Path, store_url: str, endpoint: str) -> None:
        self.pub = publisher
        self.tmp = tmp
        self.store_url = store_url
        self.endpoint = endpoint
        self.state_dir = tmp / "state"

    def config(self, extra: str = "", stanzas: str | None = None) -> AgentConfig:
        text = (
            f'store = "{self.store_url}"\nstore_endpoint = "{self.endpoint}"\n'
            f'state_dir = "{self.state_dir}"\nhook_timeout = "10s"\n'
            + (stanzas if stanzas is not None else self.pub.cluster_stanza())
            + extra
        )
        return parse_agent_config(text, str(self.tmp / "agent.conf"))

    def agent(self, extra: str = "", *, clock: Callable[[], float] = time.time, **kw: str) -> Agent:
        return Agent(self.config(extra, **kw), clock=clock)

    def order_dir(self, safe_name: str) -> Path:
        return self.state_dir / "orders" / safe_name


@pytest.fixture
def world(
    s3_url: str, seaweedfs: object, make_publisher: Callable[..., Publisher], tmp_path: Path
) -> World:
    return World(make_publisher(s3_url), tmp_path, s3_url, seaweedfs.endpoint)  # type: ignore[attr-defined]


def snapshot(root: Path) -> dict[str, object]:
    """Every path under ``root``: symlink targets, and content hash + mode of files."""
    found: dict[str, object] = {}
    for path in sorted(root.rglob("*")):
        relative = str(path.relative_to(root))
        if path.is_symlink():
            found[relative] = ("link", os.readlink(path))
        elif path.is_file():
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            found[relative] = (digest, stat.S_IMODE(path.stat().st_mode))
    return found


def installed_files(world: World) -> dict[str, object]:
    """The installed orders and files copies (not the agent's own state file)."""
    shot = {k: v for k, v in snapshot(world.state_dir).items() if k.startswith(("orders", "ver"))}
    copies = world.tmp / "copies"
    if copies.exists():
        shot.update({f"copies/{k}": v for k, v in snapshot(copies).items()})
    return shot


def spki(key_or_cert: object) -> bytes:
    return key_or_cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)  # type: ignore[attr-defined]


# -- formats, names, copies, modes --------------------------------------------------------


def test_every_format_is_written_and_consistent(world: World) -> None:
    world.pub.issue("example.com", ["example.com", "www.example.com"], key_type="rsa")
    world.pub.issue("*.example.net", ["*.example.net", "example.net"])
    world.pub.publish()
    result = world.agent('default { p12_password = "p12-secret" }\n').poll_once()
    assert result.ok, result.problems
    assert sorted(result.installed) == ["*.example.net", "example.com"]
    for safe, key_type, names in (
        ("example.com", "rsa", {"example.com", "www.example.com"}),
        ("_.example.net", "ecdsa", {"*.example.net", "example.net"}),
    ):
        directory = world.order_dir(safe)
        assert directory.is_symlink()
        assert os.readlink(directory).startswith(f"../versions/{safe}/")
        read = {
            kind: (directory / f"{key_type}.{suffix}").read_bytes()
            for kind, suffix in (
                ("key", "key.pem"), ("crt", "crt.pem"), ("chain", "chain.pem"),
                ("chained", "chained.pem"), ("combined", "combined.pem"), ("p12", "p12"),
            )
        }  # fmt: skip
        assert read["key"].startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS#8
        key = load_pem_private_key(read["key"], None)
        leaf = x509.load_pem_x509_certificate(read["crt"])
        chain = x509.load_pem_x509_certificates(read["chain"])
        assert spki(key) == spki(leaf)
        leaf.verify_directly_issued_by(chain[0])
        chain[0].verify_directly_issued_by(world.pub.ca.root)
        sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert set(sans.get_values_for_type(x509.DNSName)) == names
        assert read["chained"] == read["crt"] + read["chain"]
        assert read["combined"] == read["key"] + read["crt"] + read["chain"]
        p12_key, p12_cert, p12_chain = pkcs12.load_key_and_certificates(read["p12"], b"p12-secret")
        assert p12_key is not None and spki(p12_key) == spki(leaf)
        assert p12_cert == leaf and p12_chain == chain
        with pytest.raises(ValueError):
            pkcs12.load_key_and_certificates(read["p12"], b"wrong")
        modes = {
            kind: stat.S_IMODE((directory / f"{key_type}.{suffix}").stat().st_mode)
            for kind, suffix in (("key", "key.pem"), ("combined", "combined.pem"),
                                 ("p12", "p12"), ("crt", "crt.pem"), ("chain", "chain.pem"))
        }  # fmt: skip
        assert modes == {
            "key": 0o600,
            "combined": 0o600,
            "p12": 0o600,
            "crt": 0o644,
            "chain": 0o644,
        }
    node_id = (world.state_dir / "node-id").read_text().strip()
    assert len(node_id) == 32
    assert world.agent().node_id == node_id  # made once


def test_files_copies_with_order_name_and_configured_modes(world: World) -> None:
    world.pub.issue("*.example.com", ["*.example.com"])
    world.pub.issue("mail.example.org")
    world.pub.publish()
    copies = world.tmp / "copies"
    extra = (
        'default {\n  key_perm = "0640"\n  cert_perm = "0604"\n  key_group = "nogroup"\n'
        f'  files {{\n    key = "{copies}/keys/${{ORDER_NAME}}.key"\n'
        f'    crt = "{copies}/${{ORDER_NAME}}/cert.pem"\n'
        f'    combined = "{copies}/haproxy/${{ORDER_NAME}}.pem"\n  }}\n}}\n'
    )
    result = world.agent(extra).poll_once()
    assert result.ok, result.problems
    for safe in ("_.example.com", "mail.example.org"):
        installed = world.order_dir(safe)
        key_copy = copies / "keys" / f"{safe}.key"
        crt_copy = copies / safe / "cert.pem"
        combined_copy = copies / "haproxy" / f"{safe}.pem"
        assert key_copy.read_bytes() == (installed / "ecdsa.key.pem").read_bytes()
        assert crt_copy.read_bytes() == (installed / "ecdsa.crt.pem").read_bytes()
        assert combined_copy.read_bytes() == (installed / "ecdsa.combined.pem").read_bytes()
        for path, mode in ((key_copy, 0o640), (combined_copy, 0o640), (crt_copy, 0o604),
                           (installed / "ecdsa.key.pem", 0o640)):  # fmt: skip
            info = path.stat()
            assert stat.S_IMODE(info.st_mode) == mode, path
        import grp

        assert key_copy.stat().st_gid == grp.getgrnam("nogroup").gr_gid
    assert not list(copies.rglob(".certfleet-*"))  # no temporary file left behind


def test_interrupted_copies_are_completed_at_next_start(world: World) -> None:
    world.pub.issue("example.com")
    world.pub.publish()
    copies = world.tmp / "copies"
    extra = f'default {{ files {{ crt = "{copies}/${{ORDER_NAME}}.crt" }} }}\n'
    agent = world.agent(extra)
    assert agent.poll_once().ok
    # Simulate a crash after the switch, before the copy: the copy is missing and the
    # state says it is not done.
    (copies / "example.com.crt").unlink()
    order = agent.state.orders["example.com"]
    agent.state.orders["example.com"] = dataclasses.replace(order, copies_version=None)
    agent.states.save(agent.state)
    result = world.agent(extra).poll_once()
    assert result.ok and not result.installed
    assert (copies / "example.com.crt").read_bytes() == (
        world.order_dir("example.com") / "ecdsa.crt.pem"
    ).read_bytes()


def test_an_oversized_head_is_refused_before_it_is_read(world: World) -> None:
    """A store writer puts a 2 MiB head: refused from its size (the head cap is 64 KiB),
    next to nothing downloaded, the installed files untouched; the real head then applies."""
    world.pub.issue("a.example")
    world.pub.publish()
    agent = world.agent()
    assert agent.poll_once().ok
    before = snapshot(world.state_dir / "orders")
    head_key = f"v1/clusters/{world.pub.cluster}/head"
    real = world.pub.store.get(head_key, max_bytes=1 << 24)
    world.pub.store.put(head_key, b"\x00" * (2 * 1024 * 1024))
    received = agent.store.stats.bytes_in
    result = agent.poll_once()
    assert not result.ok and result.clusters[0].head == "refused"  # not "unreachable"
    assert any("over the cap of 65536 bytes" in p.message for p in result.problems)
    assert agent.store.stats.bytes_in - received < 65536
    assert snapshot(world.state_dir / "orders") == before
    world.pub.store.put(head_key, real.data)
    assert agent.poll_once().ok


# -- on_update, check_command -------------------------------------------------------------


def hook_config(log: Path, command: str = "", extra: str = "") -> str:
    return f'default {{\n  on_update = ["{command or hook_command(log)}"]\n{extra}}}\n'


def test_on_update_runs_once_per_poll_with_the_changed_orders(world: World) -> None:
    log = world.tmp / "hook.log"
    other = world.tmp / "other.log"
    extra = hook_config(log) + f'order "b.example" {{ on_update = ["{hook_command(other)}"] }}\n'
    world.pub.issue("a.example")
    world.pub.issue("*.c.example")
    world.pub.issue("b.example")
    world.pub.publish()
    agent = world.agent(extra)
    result = agent.poll_once()
    assert result.ok, result.problems
    generation = world.pub.generation
    assert log.read_text().splitlines() == [f"_.c.example a.example||{generation}"]
    assert other.read_text().splitlines() == [f"b.example||{generation}"]
    assert agent.poll_once().commands == ()  # nothing changed: nothing runs
    world.pub.issue("a.example")  # a renewal
    world.pub.publish()
    assert agent.poll_once().installed == ("a.example",)
    assert log.read_text().splitlines()[1:] == [f"a.example||{world.pub.generation}"]
    assert len(other.read_text().splitlines()) == 1


def test_commands_get_a_clean_environment_and_what_hook_env_names(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The agent's store credentials never reach a hook; hook_env passes what it names."""
    secret = os.environ.get("AWS_SECRET_ACCESS_KEY") or "not-a-real-secret-value"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    monkeypatch.setenv("CERTFLEET_TEST_HIDDEN", "hidden-value")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    dump = world.tmp / "env.txt"
    script = world.tmp / "env.sh"
    script.write_text(f'env > "{dump}"\n')
    extra = (
        'hook_env = ["HTTPS_PROXY", "NOT_SET_ANYWHERE"]\n'
        f'default {{\n  check_command = "/bin/sh {script}"\n'
        f'  on_update = ["/bin/sh {script}"]\n}}\n'
    )
    world.pub.issue("a.example")
    world.pub.publish()
    assert world.agent(extra).poll_once().ok
    env = dict(line.split("=", 1) for line in dump.read_text().splitlines() if "=" in line)
    assert secret not in dump.read_text()
    assert "AWS_SECRET_ACCESS_KEY" not in env and "CERTFLEET_TEST_HIDDEN" not in env
    assert env["HTTPS_PROXY"] == "http://proxy.example:3128"
    assert env["CERTFLEET_UPDATED_ORDERS"] == "a.example" and env["PATH"]
    assert set(env) - {"PWD", "SHLVL", "_", "OLDPWD"} <= {
        "PATH", "LANG", "LC_ALL", "HTTPS_PROXY",
        "CERTFLEET_UPDATED_ORDERS", "CERTFLEET_REMOVED_ORDERS", "CERTFLEET_GENERATION",
    }  # fmt: skip


def test_failed_on_update_is_retried_after_a_restart(world: World) -> None:
    log = world.tmp / "hook.log"
    flag = world.tmp / "broken"
    flag.touch()
    command = f"test ! -e {flag} && {hook_command(log)}"
    world.pub.issue("a.example")
    world.pub.publish()
    result = world.agent(hook_config(log, command)).poll_once()
    assert not result.ok
    assert result.installed == ("a.example",)  # installing is not blocked by the command
    assert "on_update command" in result.problems[0].message
    assert result.clusters[0].applied_generation == world.pub.generation
    flag.unlink()
    restarted = world.agent(hook_config(log, command))  # a new process: state from disk
    assert [owed.updated for owed in restarted.state.owed] == [["a.example"]]
    result = restarted.poll_once()
    assert result.ok, result.problems
    assert log.read_text().splitlines() == [f"a.example||{world.pub.generation}"]
    assert restarted.state.owed == []
    assert world.agent(hook_config(log, command)).poll_once().commands == ()


def test_failed_check_command_rolls_back_the_switched_orders(world: World) -> None:
    log = world.tmp / "hook.log"
    flag = world.tmp / "check-fails"
    copies = world.tmp / "copies"
    extra = hook_config(
        log,
        extra=f'  check_command = "test ! -e {flag}"\n'
        f'  files {{ chained = "{copies}/${{ORDER_NAME}}.pem" }}\n',
    )
    world.pub.issue("a.example")
    world.pub.issue("b.example")
    world.pub.publish()
    assert world.agent(extra).poll_once().ok
    before = installed_files(world)
    first_target = os.readlink(world.order_dir("a.example"))
    flag.touch()
    world.pub.issue("a.example")
    world.pub.publish()
    result = world.agent(extra).poll_once()
    assert not result.ok
    assert result.rolled_back == ("a.example",) and result.installed == ()
    assert "check_command" in result.problems[0].message
    assert os.readlink(world.order_dir("a.example")) == first_target
    after = installed_files(world)
    assert {k: v for k, v in after.items() if not k.startswith("versions")} == {
        k: v for k, v in before.items() if not k.startswith("versions")
    }
    assert len(log.read_text().splitlines()) == 1  # on_update did not run for the rollback
    flag.unlink()
    held = world.agent(extra).poll_once()  # a restart keeps the backoff (1 min ± 10 %)
    assert not held.ok and held.commands == () and held.installed == ()
    result = world.agent(extra, clock=lambda: time.time() + 120).poll_once()
    assert result.ok and result.installed == ("a.example",)
    assert os.readlink(world.order_dir("a.example")) != first_target


# -- refusals -----------------------------------------------------------------------------


def _tamper(world: World) -> str:
    key = world.pub.bundle_key("a.example")
    data = world.pub.store.get(key, max_bytes=1 << 24).data
    world.pub.store.put(key, data[:100] + bytes([data[100] ^ 1]) + data[101:])
    return "integrity check failed"


def _truncate(world: World) -> str:
    key = world.pub.bundle_key("a.example")
    data = world.pub.store.get(key, max_bytes=1 << 24).data
    world.pub.store.put(key, data[: len(data) // 2])
    return "integrity check failed"


def _swap(world: World) -> str:
    # a.example's entry now points at b.example's (genuine) bundle.
    world.pub.set_entry(world.pub.bundles["a.example"], world.pub.entries["b.example"].bundle_hash)
    world.pub.publish()
    return "integrity check failed"


def _tamper_head(world: World) -> str:
    data = world.pub.heads[-1]
    world.pub.put_head(data[:-1] + bytes([data[-1] ^ 1]))
    return "bad signature"


def _truncate_head(world: World) -> str:
    world.pub.put_head(world.pub.heads[-1][:40])
    return "truncated"


def _replay(world: World) -> str:
    world.pub.put_head(world.pub.heads[0])
    return "rollback refused"


def _expire(world: World) -> str:
    world.pub.publish(now=int(time.time()) - 4 * 86400, valid_for=86400)
    return "EXPIRED"


def _foreign_publisher(world: World) -> str:
    world.pub.signing_key = SigningKey.generate()
    world.pub.publish()
    return "not a pinned publisher"


def _tamper_shard(world: World) -> str:
    prefix = f"{world.pub.prefix()}/shards/"
    index = world.pub.index_of("a.example")
    digest = peek_head(world.pub.heads[-1]).shard_hashes[index].hex()
    data = world.pub.store.get(prefix + digest, max_bytes=1 << 24).data
    world.pub.store.put(prefix + digest, data + b"x")
    return "integrity check failed"


ATTACKS: dict[str, tuple[Callable[[World], str], str]] = {
    "tampered bundle": (_tamper, "bundle"),
    "truncated bundle": (_truncate, "bundle"),
    "swapped bundle": (_swap, "bundle"),
    "tampered head": (_tamper_head, "head of cluster"),
    "truncated head": (_truncate_head, "head of cluster"),
    "replayed head": (_replay, "head of cluster"),
    "expired head": (_expire, "head of cluster"),
    "foreign publisher": (_foreign_publisher, "head of cluster"),
    "tampered shard": (_tamper_shard, "shard"),
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_bad_objects_are_refused_and_files_untouched(world: World, attack: str) -> None:
    world.pub.issue("a.example")
    world.pub.issue("b.example")
    world.pub.publish()
    agent = world.agent()
    assert agent.poll_once().ok
    world.pub.issue("a.example")  # a renewal, which the attack then spoils
    world.pub.publish()
    config = world.config()  # pins the publisher key of before the attack
    before = installed_files(world)
    if attack == "replayed head":  # the node must first have seen the newer head
        assert agent.poll_once().ok
        before = installed_files(world)
    attack_fn, object_kind = ATTACKS[attack]
    reason = attack_fn(world)
    result = Agent(config).poll_once()
    assert not result.ok
    messages = " / ".join(problem.message for problem in result.problems)
    assert reason in messages and object_kind in messages and "web" in messages, messages
    if object_kind == "bundle":
        assert "'a.example'" in messages
    assert installed_files(world) == before
    assert result.installed == ()


# -- hostile names ------------------------------------------------------------------------

HOSTILE = ["../../etc/x", "a/b", ".", "..", "nul\0name", "x" * 300, "ünïcode.example", "*/..", ""]


def test_hostile_order_names_never_escape(world: World) -> None:
    copies = world.tmp / "copies"
    extra = f'default {{ files {{ crt = "{copies}/${{ORDER_NAME}}.pem" }} }}\n'
    hostile_shards = set()
    for name in HOSTILE:
        digest = world.pub.put_raw_bundle(name or "empty", payload_name=name or "x")
        world.pub.inject_raw_entry(name, digest)
        hostile_shards.add(world.pub.index_of(name))
    good = next(
        f"good{i}.example"
        for i in range(200)
        if world.pub.index_of(f"good{i}.example") not in hostile_shards
    )
    world.pub.issue(good)
    world.pub.publish()
    outside = world.tmp.parent
    before = {p for p in outside.rglob("*") if world.tmp not in p.parents}
    result = world.agent(extra).poll_once()
    assert not result.ok
    assert result.installed == (good,)
    assert all(problem.kind == "refused" for problem in result.problems)
    assert all("shard" in problem.message for problem in result.problems)
    assert any("order name" in problem.message for problem in result.problems)
    assert sorted(os.listdir(world.state_dir / "orders")) == [good]
    assert sorted(os.listdir(copies)) == [f"{good}.pem"]
    after = {p for p in outside.rglob("*") if world.tmp not in p.parents}
    assert after == before
    assert not Path("/etc/x").exists()


# -- two clusters, deferral, removal, the store going away --------------------------------


def test_two_clusters_sharing_an_order_name(
    world: World, make_publisher: Callable[..., Publisher]
) -> None:
    second = make_publisher(world.store_url, "mail")
    first_bundle = world.pub.issue("shared.example")
    world.pub.issue("web-only.example")
    world.pub.publish()
    second.issue("shared.example")
    second.issue("mail-only.example")
    second.publish()
    stanzas = world.pub.cluster_stanza() + second.cluster_stanza()
    result = world.agent(stanzas=stanzas).poll_once()
    assert not result.ok
    assert sorted(result.installed) == ["mail-only.example", "shared.example", "web-only.example"]
    assert [p.cluster for p in result.problems] == ["mail"]
    assert "'shared.example' of cluster mail" in result.problems[0].message
    assert "web" in result.problems[0].message
    installed = (world.order_dir("shared.example") / "ecdsa.crt.pem").read_bytes()
    assert installed == x509.load_pem_x509_certificate(first_bundle.certificate_pem).public_bytes(
        Encoding.PEM
    )


def test_install_after_defers_until_due_even_on_304(world: World) -> None:
    now = time.time()
    world.pub.issue("later.example", install_after=int(now) + 600)
    world.pub.issue("now.example")
    world.pub.publish()
    clock = [now]
    agent = world.agent(clock=lambda: clock[0])
    result = agent.poll_once()
    assert result.ok and result.installed == ("now.example",)
    assert result.deferred == ("later.example",)
    assert result.clusters[0].applied_generation == world.pub.generation  # applied
    clock[0] = now + 601
    reads = agent.store.stats.reads
    result = agent.poll_once()
    assert result.clusters[0].head == "unchanged"
    assert result.ok and result.installed == ("later.example",)
    assert agent.store.stats.reads == reads + 2  # the head (304) and the bundle (acks are writes)


def test_removed_orders_are_kept_by_default_and_deleted_when_configured(world: World) -> None:
    log = world.tmp / "hook.log"
    world.pub.issue("keep.example")
    world.pub.issue("drop.example")
    world.pub.publish()
    extra = (
        hook_config(log) + 'order "drop.example" {\n remove = "delete"\n remove_after = "60s"\n}\n'
    )
    now = time.time()
    clock = [now]
    agent = world.agent(extra, clock=lambda: clock[0])
    assert agent.poll_once().ok
    world.pub.remove("keep.example", int(now))
    world.pub.remove("drop.example", int(now))
    world.pub.publish()
    result = agent.poll_once()
    assert result.ok and sorted(result.retired) == ["drop.example", "keep.example"]
    assert world.order_dir("drop.example").is_symlink()  # grace period
    clock[0] = now + 61
    result = agent.poll_once()
    assert result.ok and result.removed == ("drop.example",) and result.retired == ("keep.example",)
    assert not world.order_dir("drop.example").exists()
    assert not (world.state_dir / "versions" / "drop.example").exists()
    assert (world.order_dir("keep.example") / "ecdsa.key.pem").exists()
    assert log.read_text().splitlines()[-1] == f"|drop.example|{world.pub.generation}"


def test_only_changed_shards_and_bundles_are_fetched(world: World) -> None:
    for i in range(20):
        world.pub.issue(f"o{i}.example")
    world.pub.publish()
    agent = world.agent()
    assert agent.poll_once().ok
    stats = agent.store.stats
    before = stats.as_dict()
    state_file = world.state_dir / "state.json"
    written = state_file.stat().st_mtime_ns
    assert agent.poll_once().ok
    idle = {k: stats.as_dict()[k] - before[k] for k in before}
    assert idle["requests"] == 1 and idle["bytes_in"] == 0
    assert state_file.stat().st_mtime_ns == written  # an idle poll writes nothing
    world.pub.issue("o7.example")
    world.pub.publish()
    before = stats.as_dict()
    result = agent.poll_once()
    assert result.ok and result.installed == ("o7.example",)
    assert stats.as_dict()["reads"] - before["reads"] == 3  # head, one shard, one bundle


def test_the_store_down_then_back(world: World, seaweedfs: object) -> None:
    world.pub.issue("a.example")
    world.pub.publish()
    agent = world.agent()
    assert agent.poll_once().ok
    before = installed_files(world)
    seaweedfs.stop()  # type: ignore[attr-defined]
    try:
        result = agent.poll_once()
    finally:
        seaweedfs.start()  # type: ignore[attr-defined]
    assert not result.ok and result.clusters[0].head == "unreachable"
    assert "head of cluster web" in result.problems[0].message
    assert installed_files(world) == before
    world.pub.issue("a.example")
    world.pub.publish()
    result = agent.poll_once()
    assert result.ok and result.installed == ("a.example",)
