"""The file store against a hostile neighbour who can write in its directory: a FIFO, a
device or a symlink where an object should be, a symlinked directory in the tree, a
symlinked or FIFO lock file. Nothing blocks, nothing is read or written through a link."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from certfleet.store import FileStore, ObjectNotFound, StoreError
from certfleet.store.filesystem import LOCK_NAME
from certfleet.store.nofollow import UnsafePathError, open_directory

HEAD = "v1/clusters/web/head"
ACK = "v1/clusters/web/acks/node-1"


def bounded(call: Callable[[], object], seconds: float = 5.0) -> BaseException | None:
    """Run ``call`` in a thread; fail the test if it blocks (a FIFO would); its error."""
    caught: list[BaseException] = []

    def run() -> None:
        try:
            call()
        except BaseException as err:
            caught.append(err)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "the store blocked"
    return caught[0] if caught else None


@pytest.fixture
def store(tmp_path: Path) -> FileStore:
    store = FileStore(tmp_path / "store")
    store.put(HEAD, b"the real head")
    return store


def test_a_fifo_as_an_object_is_refused_without_blocking(store: FileStore) -> None:
    path = store.root / HEAD
    path.unlink()
    os.mkfifo(path)
    error = bounded(lambda: store.get(HEAD, max_bytes=65536))
    assert isinstance(error, StoreError) and "not a regular file" in str(error)


def test_a_device_as_an_object_is_refused(store: FileStore) -> None:
    path = store.root / HEAD
    path.unlink()
    path.symlink_to("/dev/zero")  # a symlink to a device: refused as a symlink
    error = bounded(lambda: store.get(HEAD, max_bytes=65536))
    assert isinstance(error, StoreError) and "symlink" in str(error)


def test_a_symlinked_object_is_not_followed(store: FileStore, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_bytes(b"not the head")
    (store.root / HEAD).unlink()
    (store.root / HEAD).symlink_to(elsewhere)
    with pytest.raises(StoreError) as caught:
        store.get(HEAD, max_bytes=65536)
    assert "symlink" in str(caught.value)
    store.delete(HEAD)  # removes the link itself, never its target
    assert elsewhere.read_bytes() == b"not the head"
    with pytest.raises(ObjectNotFound):
        store.get(HEAD, max_bytes=65536)


def test_a_symlinked_directory_in_the_tree_redirects_no_write(
    store: FileStore, tmp_path: Path
) -> None:
    """A node's ack written as root through ``acks -> /etc/cron.d`` would land there."""
    target = tmp_path / "cron.d"
    target.mkdir()
    (store.root / "v1/clusters/web/acks").symlink_to(target, target_is_directory=True)
    with pytest.raises(StoreError) as caught:
        store.put(ACK, b"sealed ack")
    assert "symlink" in str(caught.value)
    assert list(target.iterdir()) == []
    with pytest.raises(StoreError):
        store.get(ACK, max_bytes=65536)
    with pytest.raises(StoreError):
        list(store.list("v1/clusters/web/acks/"))


@pytest.mark.parametrize("kind", ["symlink", "fifo"])
def test_a_hostile_lock_file_is_refused(store: FileStore, tmp_path: Path, kind: str) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    lock = store.root / LOCK_NAME
    lock.unlink()
    if kind == "symlink":
        lock.symlink_to(victim)
    else:
        os.mkfifo(lock)
    error = bounded(lambda: store.put(HEAD, b"new head"))
    assert isinstance(error, StoreError) and LOCK_NAME in str(error)
    assert victim.read_bytes() == b"precious"
    assert store.get(HEAD, max_bytes=65536).data == b"the real head"


def test_a_file_growing_past_the_cap_while_read_is_cut(store: FileStore) -> None:
    with pytest.raises(StoreError):
        store.get(HEAD, max_bytes=4)  # 13 bytes on disk, the stat says so


def test_open_directory_refuses_a_symlink_anywhere_below_its_base(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real", target_is_directory=True)
    fd = open_directory(str(tmp_path / "real" / "a" / "b"), base=str(tmp_path), create=True)
    os.close(fd)
    assert (tmp_path / "real" / "a" / "b").is_dir()
    with pytest.raises(UnsafePathError) as caught:
        open_directory(str(tmp_path / "link" / "a"), base=str(tmp_path))
    assert caught.value.path == str(tmp_path / "link")
    with pytest.raises(FileNotFoundError):
        open_directory(str(tmp_path / "real" / "missing"), base=str(tmp_path))
