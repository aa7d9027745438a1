"""``certfleet.sealedobject``: one sync-private object read bounded, opened with the sync
secret (older sealings only when asked) and written back conditionally on the ETag read.

Against a real ``file://`` store: two writers that read the same object race, and the one
that writes second gets the caller's error, never an overwrite.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from certfleet.bundle import ClusterSecret, FormatError, NoUsableSecretError, SigningKey, seal
from certfleet.errors import CertfleetError
from certfleet.sealedobject import CURRENT, LEGACY, PREVIOUS, SealedObject, SealingKeys
from certfleet.store import ObjectTooLarge, PreconditionFailed, Store, open_store

KEY = "v1/sync/test/web"
CURRENT_SECRET = SigningKey.generate().sync_secret("state")
PREVIOUS_SECRET = SigningKey.generate().sync_secret("state")
CLUSTER_SECRET = ClusterSecret("node", b"\x07" * 32)


class Lost(CertfleetError):
    """The caller's own error for a lost race."""


def sealed_object(store: Store, keys: SealingKeys, max_bytes: int = 4096) -> SealedObject:
    return SealedObject(
        store,
        KEY,
        keys,
        kind="pending",
        cluster="web",
        identity="/test",
        max_bytes=max_bytes,
        lost_race=lambda: Lost("changed by another writer"),
    )


def seal_as(secret: ClusterSecret, plain: bytes) -> bytes:
    return seal("pending", "web", "/test", plain, [secret])


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return open_store((tmp_path / "store").as_uri())


def test_no_object_loads_as_none_and_the_first_save_creates_it(store: Store) -> None:
    obj = sealed_object(store, SealingKeys(CURRENT_SECRET))
    assert obj.load(json.loads, accept_old=False) is None
    assert obj.etag is None
    assert obj.save(b'{"a":1}') is True
    again = sealed_object(store, SealingKeys(CURRENT_SECRET))
    assert again.load(json.loads, accept_old=False) == {"a": 1}
    assert again.etag == obj.etag and again.sealing == CURRENT


def test_saving_what_was_read_writes_nothing(store: Store) -> None:
    sealed_object(store, SealingKeys(CURRENT_SECRET)).save(b"{}")
    before = store.get(KEY, max_bytes=4096)
    obj = sealed_object(store, SealingKeys(CURRENT_SECRET))
    obj.load(json.loads, accept_old=False)
    assert obj.save(b"{}") is False
    after = store.get(KEY, max_bytes=4096)
    assert before is not None and after is not None and after.data == before.data


def test_what_was_read_or_written_is_remembered_by_digest_not_kept(store: Store) -> None:
    """A large object's plaintext is not held for the run: only its SHA-256."""
    obj = sealed_object(store, SealingKeys(CURRENT_SECRET))
    obj.save(b'{"a":1}')
    assert obj.saved == hashlib.sha256(b'{"a":1}').digest()
    assert obj.holds(hashlib.sha256(b'{"a":1}').digest())
    reader = sealed_object(store, SealingKeys(CURRENT_SECRET))
    reader.load(json.loads, accept_old=False)
    assert reader.saved == obj.saved
    assert not reader.holds(hashlib.sha256(b'{"a":2}').digest())
    assert reader.save(b'{"a":2}') is True and reader.holds(hashlib.sha256(b'{"a":2}').digest())


def test_the_second_of_two_writers_loses_the_race_with_the_callers_error(store: Store) -> None:
    sealed_object(store, SealingKeys(CURRENT_SECRET)).save(b"{}")
    first = sealed_object(store, SealingKeys(CURRENT_SECRET))
    second = sealed_object(store, SealingKeys(CURRENT_SECRET))
    first.load(json.loads, accept_old=False)
    second.load(json.loads, accept_old=False)
    assert first.save(b'{"by":"first"}') is True
    with pytest.raises(Lost, match="another writer") as caught:
        second.save(b'{"by":"second"}')
    assert isinstance(caught.value.__cause__, PreconditionFailed)
    reader = sealed_object(store, SealingKeys(CURRENT_SECRET))
    assert reader.load(json.loads, accept_old=False) == {"by": "first"}


def test_two_creators_race_on_if_none_match(store: Store) -> None:
    first = sealed_object(store, SealingKeys(CURRENT_SECRET))
    second = sealed_object(store, SealingKeys(CURRENT_SECRET))
    assert first.load(json.loads, accept_old=False) is None
    assert second.load(json.loads, accept_old=False) is None
    first.save(b"{}")
    with pytest.raises(Lost):
        second.save(b"[]")


def test_without_lost_race_the_stores_precondition_failed_propagates(store: Store) -> None:
    store.put(KEY, seal_as(CURRENT_SECRET, b"{}"))
    obj = SealedObject(
        store, KEY, SealingKeys(CURRENT_SECRET), kind="pending", cluster="web",
        identity="/test", max_bytes=4096,
    )  # fmt: skip
    with pytest.raises(PreconditionFailed):
        obj.save(b"[]")  # nothing read: If-None-Match: * on an existing object


def test_an_object_over_the_cap_is_refused_before_it_is_opened(store: Store) -> None:
    store.put(KEY, seal_as(CURRENT_SECRET, b"x" * 5000))
    obj = sealed_object(store, SealingKeys(CURRENT_SECRET), max_bytes=4096)
    with pytest.raises(ObjectTooLarge):
        obj.load(bytes, accept_old=True)
    assert obj.etag is None


@pytest.mark.parametrize(
    ("secret", "keys", "sealing"),
    [
        (PREVIOUS_SECRET, SealingKeys(CURRENT_SECRET, (PREVIOUS_SECRET,)), PREVIOUS),
        (CLUSTER_SECRET, SealingKeys(CURRENT_SECRET, (), (CLUSTER_SECRET,)), LEGACY),
    ],
)
def test_an_older_sealing_opens_only_when_accepted_and_is_rewritten(
    store: Store, secret: ClusterSecret, keys: SealingKeys, sealing: str
) -> None:
    store.put(KEY, seal_as(secret, b'{"old":true}'))
    with pytest.raises(FormatError):
        sealed_object(store, keys).load(json.loads, accept_old=False)
    obj = sealed_object(store, keys)
    assert obj.load(json.loads, accept_old=True) == {"old": True}
    assert obj.sealing == sealing and obj.saved is None
    assert obj.save(b'{"old":true}') is True  # the same plaintext, now under the sync secret
    fresh = sealed_object(store, SealingKeys(CURRENT_SECRET))
    assert fresh.load(json.loads, accept_old=False) == {"old": True}
    assert fresh.sealing == CURRENT


def test_a_stranger_sealed_object_names_the_ids_and_holds_no_etag(store: Store) -> None:
    store.put(KEY, seal_as(CLUSTER_SECRET, b"{}"))
    obj = sealed_object(store, SealingKeys(CURRENT_SECRET))
    with pytest.raises(NoUsableSecretError, match="wrapped for secret ids node"):
        obj.load(json.loads, accept_old=True)
    assert obj.etag is None


def test_what_decode_refuses_leaves_nothing_remembered(store: Store) -> None:
    sealed_object(store, SealingKeys(CURRENT_SECRET)).save(b"not json")
    obj = sealed_object(store, SealingKeys(CURRENT_SECRET))
    with pytest.raises(ValueError):
        obj.load(json.loads, accept_old=False)
    assert obj.etag is None and obj.saved is None
    with pytest.raises(Lost):  # a save now would create, and the object exists
        obj.save(b"{}")


def test_overwrite_writes_without_a_condition_and_only_a_change(store: Store) -> None:
    store.put(KEY, seal_as(CURRENT_SECRET, b"{}"))
    obj = sealed_object(store, SealingKeys(CURRENT_SECRET))
    assert obj.overwrite(b"[1]") is True
    assert obj.overwrite(b"[1]") is False
    reader = sealed_object(store, SealingKeys(CURRENT_SECRET))
    assert reader.load(json.loads, accept_old=False) == [1]


def test_the_keys_repr_shows_no_secret() -> None:
    shown = repr(SealingKeys(CURRENT_SECRET, (PREVIOUS_SECRET,), (CLUSTER_SECRET,)))
    assert shown == "SealingKeys(previous=1, legacy=1, <redacted>)"
    assert CURRENT_SECRET.key.hex() not in shown
