"""The agent's disk side without a store: installer, durable files, state, hostile names."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from certfleet.config import OrderSettings, UnsafeFilesPathError
from node_agent.agent import destinations
from node_agent.agentstate import AgentState, InstalledOrder, OwedCommand
from node_agent.diskfile import FileMode, write_atomic, write_new
from node_agent.errors import InstallError, StateError
from node_agent.identity import node_id
from node_agent.installer import FileModes, Installer, remove_copies, write_copies
from node_agent.material import FILE_TYPES, OrderFiles
from node_agent.statestore import StateStore

HOSTILE = [
    "../../etc/x", "a/b", ".", "..", "nul\0name", "x" * 300, "ünïcode.example",
    "", "/abs", ".hidden", "a*b", "..\\x",
]  # fmt: skip
# The names above that would leave a template's directory (".hidden" and "a*b" stay inside
# it; the agent refuses them earlier, by the order name rules).
ESCAPING = [name for name in HOSTILE if name not in (".hidden", "a*b")]
MODES = FileModes(FileMode(0o600), FileMode(0o644))


def files(tag: bytes = b"1") -> OrderFiles:
    return OrderFiles("ecdsa", {kind: kind.encode() + tag for kind in FILE_TYPES})


@pytest.fixture
def umask() -> Iterator[None]:
    previous = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(previous)


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_directory_names_are_refused_before_any_write(tmp_path: Path, name: str) -> None:
    installer = Installer(str(tmp_path / "state"))
    before = tree(tmp_path)
    with pytest.raises(InstallError):
        installer.prepare(name, files(), MODES, "label")
    with pytest.raises(InstallError):
        installer.switch(name, "v")
    with pytest.raises(InstallError):
        installer.order_path(name)
    assert tree(tmp_path) == before


@pytest.mark.parametrize("name", ESCAPING)
def test_hostile_names_never_escape_through_files_templates(name: str) -> None:
    settings = OrderSettings(files=(("crt", "/srv/certs/${ORDER_NAME}.pem"),))
    with pytest.raises(UnsafeFilesPathError):
        destinations(settings, name)


def test_safe_names_expand_inside_the_template_directory() -> None:
    settings = OrderSettings(
        files=(("crt", "/srv/certs/${ORDER_NAME}.pem"), ("key", "/srv/${ORDER_NAME}/k.pem"))
    )
    assert destinations(settings, "_.example.com") == {
        "crt": "/srv/certs/_.example.com.pem",
        "key": "/srv/_.example.com/k.pem",
    }


def test_version_switch_prune_and_rollback(tmp_path: Path) -> None:
    installer = Installer(str(tmp_path))
    versions = [installer.prepare("example.com", files(bytes([i])), MODES, "h") for i in range(3)]
    for version in versions:
        installer.switch("example.com", version)
        assert installer.current("example.com") == version
    installer.prune("example.com", versions[1:])
    assert sorted(os.listdir(tmp_path / "versions" / "example.com")) == sorted(versions[1:])
    installer.switch("example.com", versions[1])  # rollback
    link = tmp_path / "orders" / "example.com"
    assert (link / "ecdsa.key.pem").read_bytes() == b"key\x01"
    assert installer.read("example.com", versions[1], "ecdsa").contents["crt"] == b"crt\x01"
    installer.delete("example.com")
    assert not link.exists() and not (tmp_path / "versions" / "example.com").exists()


def test_files_are_created_with_their_final_mode_whatever_the_umask(
    tmp_path: Path, umask: None
) -> None:
    write_new(str(tmp_path / "cert"), b"c", FileMode(0o644))
    write_new(str(tmp_path / "key"), b"k", FileMode(0o640))
    write_atomic(str(tmp_path / "copy"), b"x", FileMode(0o604))
    write_atomic(str(tmp_path / "copy"), b"y", FileMode(0o604))
    assert stat.S_IMODE((tmp_path / "cert").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "key").stat().st_mode) == 0o640
    assert (tmp_path / "copy").read_bytes() == b"y"
    assert stat.S_IMODE((tmp_path / "copy").stat().st_mode) == 0o604
    assert sorted(os.listdir(tmp_path)) == ["cert", "copy", "key"]  # no temp file left


def test_an_existing_file_is_never_followed(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.write_bytes(b"keep")
    (tmp_path / "link").symlink_to(target)
    with pytest.raises(FileExistsError):
        write_new(str(tmp_path / "link"), b"x", FileMode(0o600))
    write_atomic(str(tmp_path / "link"), b"new", FileMode(0o600))  # replaces the link itself
    assert target.read_bytes() == b"keep"
    assert not (tmp_path / "link").is_symlink()


def test_a_planted_directory_in_orders_is_left_alone(tmp_path: Path) -> None:
    installer = Installer(str(tmp_path))
    planted = tmp_path / "orders" / "example.com"
    planted.mkdir()
    (planted / "mine").write_text("operator's file")
    version = installer.prepare("example.com", files(), MODES, "h")
    with pytest.raises(InstallError, match="not a symlink"):
        installer.switch("example.com", version)
    assert (planted / "mine").read_text() == "operator's file"


def test_write_copies_key_first_and_modes(tmp_path: Path) -> None:
    order = []
    destinations_ = {kind: str(tmp_path / "out" / f"{kind}.pem") for kind in ("crt", "key")}
    write_copies(files(), destinations_, FileModes(FileMode(0o640), FileMode(0o644)))
    for path in sorted((tmp_path / "out").iterdir(), key=lambda p: p.stat().st_mtime_ns):
        order.append(path.name)
    assert order == ["key.pem", "crt.pem"]
    assert stat.S_IMODE((tmp_path / "out" / "key.pem").stat().st_mode) == 0o640


@pytest.mark.parametrize("where", ["parent", "grandparent"])
def test_a_symlinked_directory_on_a_copy_path_is_refused(tmp_path: Path, where: str) -> None:
    """``/etc/haproxy/certs -> /somewhere`` planted by a neighbour: the agent, as root,
    would write the private key there. Refused, naming the link; nothing written."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "etc").mkdir()
    if where == "parent":
        (tmp_path / "etc" / "certs").symlink_to(elsewhere, target_is_directory=True)
        link = tmp_path / "etc" / "certs"
    else:
        (elsewhere / "certs").mkdir()
        (tmp_path / "etc" / "haproxy").symlink_to(elsewhere, target_is_directory=True)
        link = tmp_path / "etc" / "haproxy"
    prefix = "certs" if where == "parent" else "haproxy/certs"
    destinations_ = {
        kind: str(tmp_path / "etc" / prefix / f"{kind}.pem") for kind in ("crt", "key")
    }
    with pytest.raises(InstallError) as caught:
        write_copies(files(), destinations_, MODES)
    assert str(link) in str(caught.value) and "symlink" in str(caught.value)
    assert tree(elsewhere) <= {"certs"}  # no key, no certificate
    with pytest.raises(InstallError):
        remove_copies(destinations_)


def test_a_symlink_at_the_copy_itself_is_replaced_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "victim"
    target.write_bytes(b"keep")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "key.pem").symlink_to(target)
    write_copies(files(), {"key": str(tmp_path / "out" / "key.pem")}, MODES)
    assert target.read_bytes() == b"keep"
    assert not (tmp_path / "out" / "key.pem").is_symlink()


def test_a_symlinked_versions_directory_or_an_open_state_dir_is_refused(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    state = tmp_path / "state"
    state.mkdir()
    (state / "versions").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(InstallError, match="symlink"):
        Installer(str(state))
    (state / "versions").unlink()
    installer = Installer(str(state))
    (state / "versions" / "example.com").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(InstallError, match="symlink"):
        installer.prepare("example.com", files(), MODES, "h")
    assert tree(elsewhere) == set()
    state.chmod(0o777)
    with pytest.raises(InstallError, match="writable by anyone"):
        Installer(str(state))


def test_state_round_trip_and_corruption(tmp_path: Path) -> None:
    store = StateStore(str(tmp_path))
    assert store.load() == AgentState()
    state = AgentState()
    state.cluster("web").accepted_generation = 5
    previous = InstalledOrder("web", "a", "00" * 32, "1", "rsa", 9, "v0")
    state.orders["a"] = InstalledOrder(
        "web", "a", "11" * 32, "2", "ecdsa", 10, "v1", previous, {"crt": "/x/a.pem"}, "v1"
    )
    state.owed.append(OwedCommand("reload", ["a"], [], 5, 1, "exit 1"))
    store.save(state)
    assert stat.S_IMODE((tmp_path / "state.json").stat().st_mode) == 0o600
    assert store.load() == state
    (tmp_path / "state.json").write_text("{not json")
    with pytest.raises(StateError, match="unreadable"):
        store.load()


def test_node_id_is_made_once(tmp_path: Path) -> None:
    first = node_id(str(tmp_path))
    assert first == node_id(str(tmp_path))
    assert len(first) == 32 and first.isalnum()
